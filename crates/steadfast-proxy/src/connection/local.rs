//! The commands a downstream connection's state answers without the server: `HELLO`, `AUTH`,
//! `SELECT` (through the client, which replays it), `CLIENT ...`. `HELLO` tells the upstream's
//! own name and version (`INFO server`, asked at most every 10 s and waited for 250 ms).

use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use super::{Connection, text, upper};
use crate::backend::Backend;
use crate::resp::{self, Protocol};

/// What the upstream server is, as `HELLO` tells it: `server` and `version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServerKind {
    name: String,
    version: String,
}

/// How long what the upstream said it is stays good: a rolling upgrade or a failover to a
/// server of another version is told to the connections made a little later.
const SERVER_KIND_FOR: Duration = Duration::from_secs(10);
/// How long a `HELLO` waits for the upstream's `INFO server` before it answers with what was
/// last known (or [`ServerKind::default`]): a client connecting while the upstream is away
/// still gets its `HELLO` answered at once.
const SERVER_KIND_WAIT: Duration = Duration::from_millis(250);

impl Default for ServerKind {
    /// What a `HELLO` says before the upstream ever answered.
    fn default() -> Self {
        Self {
            name: "redis".to_owned(),
            version: "7.0.0".to_owned(),
        }
    }
}

impl ServerKind {
    /// From the text of `INFO server`: Valkey by `valkey_version`, Redis by `redis_version`.
    pub(crate) fn from_info(info: &[u8]) -> Option<Self> {
        let info = String::from_utf8_lossy(info);
        let field = |key: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        match (field("valkey_version"), field("redis_version")) {
            (Some(version), _) => Some(Self {
                name: "valkey".to_owned(),
                version,
            }),
            (None, Some(version)) => Some(Self {
                name: "redis".to_owned(),
                version,
            }),
            (None, None) => None,
        }
    }
}

impl Connection<'_> {
    /// What the upstream is: asked with `INFO server` when not known for [`SERVER_KIND_FOR`],
    /// waited for at most [`SERVER_KIND_WAIT`].
    async fn upstream_server(&mut self) -> ServerKind {
        let known = self
            .shared
            .upstream_server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some((kind, at)) = &known
            && at.elapsed() < SERVER_KIND_FOR
        {
            return kind.clone();
        }
        let mut reply = Vec::new();
        let ask = [b"INFO".to_vec(), b"server".to_vec()];
        let asked = tokio::time::timeout(SERVER_KIND_WAIT, self.forward(&ask, &mut reply)).await;
        match asked.ok().and_then(|()| ServerKind::from_info(&reply)) {
            Some(kind) => {
                *self
                    .shared
                    .upstream_server
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((kind.clone(), Instant::now()));
                kind
            }
            None => known.map(|(kind, _)| kind).unwrap_or_default(),
        }
    }

    pub(super) async fn hello(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        let mut protocol = self.protocol;
        let mut at = 1;
        if let Some(version) = args.get(1) {
            protocol = match text(version).as_str() {
                "2" => Protocol::Resp2,
                "3" => Protocol::Resp3,
                _ => return resp::write_error(out, "NOPROTO unsupported protocol version"),
            };
            at = 2;
        }
        let mut name = None;
        let mut is_authenticated = self.is_authenticated;
        while at < args.len() {
            match upper(&args[at]).as_str() {
                "AUTH" if at + 2 < args.len() => {
                    if !self.password_matches(&args[at + 2]) {
                        return resp::write_error(
                            out,
                            "WRONGPASS invalid username-password pair or user is disabled.",
                        );
                    }
                    is_authenticated = true;
                    at += 3;
                }
                "SETNAME" if at + 1 < args.len() => {
                    name = Some(text(&args[at + 1]));
                    at += 2;
                }
                other => {
                    return resp::write_error(
                        out,
                        &format!(
                            "ERR Syntax error in HELLO option '{}'",
                            other.to_lowercase()
                        ),
                    );
                }
            }
        }
        if !is_authenticated {
            return resp::write_error(
                out,
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
        }
        if protocol != self.protocol && self.invalidations.is_some() {
            // A new protocol needs a new client, and tracking is the old one's.
            return resp::write_error(
                out,
                "ERR steadfast proxy: HELLO cannot change the protocol of a connection with tracking on; CLIENT TRACKING off first",
            );
        }
        if protocol != self.protocol && self.subscriptions.is_active() {
            // A new protocol needs a new client, and the subscriptions are the old one's.
            return resp::write_error(
                out,
                "ERR steadfast proxy: HELLO cannot change the protocol of a connection with subscriptions; unsubscribe first",
            );
        }
        self.is_authenticated = true;
        if let Some(name) = name {
            let is_own = self.upstream.as_ref().is_some_and(Backend::is_own);
            if is_own && protocol == self.protocol {
                // Through the client, which replays it on every new link.
                let mut reply = Vec::new();
                let setname = [
                    b"CLIENT".to_vec(),
                    b"SETNAME".to_vec(),
                    name.clone().into_bytes(),
                ];
                self.forward(&setname, &mut reply).await;
                if !reply.starts_with(b"+OK") {
                    out.extend_from_slice(&reply);
                    return;
                }
            } else if !self.shared.config.is_cluster {
                self.drop_upstream();
            }
            self.name = Some(name);
        }
        if protocol != self.protocol {
            self.protocol = protocol;
            self.drop_upstream();
        }
        let version = if self.protocol == Protocol::Resp3 {
            3
        } else {
            2
        };
        let server = self.upstream_server().await;
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Map(vec![
            (bulk("server"), bulk(&server.name)),
            (bulk("version"), bulk(&server.version)),
            (bulk("proto"), Value::Int(version)),
            (
                bulk("id"),
                Value::Int(i64::try_from(self.id).unwrap_or(i64::MAX)),
            ),
            (
                bulk("mode"),
                bulk(if self.shared.config.is_cluster {
                    "cluster"
                } else {
                    "standalone"
                }),
            ),
            (bulk("role"), bulk("master")),
            (bulk("modules"), Value::Array(Vec::new())),
        ]);
        resp::write_value(out, &reply, self.protocol);
    }

    pub(super) fn password_matches(&self, given: &[u8]) -> bool {
        match &self.shared.config.password {
            // Compared in full whatever the first difference, so timing says nothing.
            Some(password) => {
                let expected = password.as_bytes();
                expected.len() == given.len()
                    && expected
                        .iter()
                        .zip(given)
                        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                        == 0
            }
            None => false,
        }
    }

    pub(super) fn auth(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        if !(2..=3).contains(&args.len()) {
            return resp::write_error(out, "ERR wrong number of arguments for 'auth' command");
        }
        if self.shared.config.password.is_none() {
            return resp::write_error(
                out,
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            );
        }
        let given = &args[args.len() - 1];
        if self.password_matches(given) {
            self.is_authenticated = true;
            out.extend_from_slice(b"+OK\r\n");
        } else {
            resp::write_error(
                out,
                "WRONGPASS invalid username-password pair or user is disabled.",
            );
        }
    }

    pub(super) async fn select(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        let Some(database) = args
            .get(1)
            .and_then(|a| text(a).parse::<i64>().ok())
            .filter(|_| args.len() == 2)
        else {
            return resp::write_error(out, "ERR value is not an integer or out of range");
        };
        if self.shared.config.is_cluster {
            return if database == 0 {
                out.extend_from_slice(b"+OK\r\n");
            } else {
                resp::write_error(out, "ERR SELECT is not allowed in cluster mode");
            };
        }
        // Through the client (which replays it on every new link), so the server checks it.
        let mut before = Vec::new();
        self.forward(args, &mut before).await;
        if before.starts_with(b"+OK") {
            self.database = database;
        }
        out.extend_from_slice(&before);
    }

    pub(super) async fn client(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        let sub = args.get(1).map(|a| upper(a)).unwrap_or_default();
        match sub.as_str() {
            "ID" => resp::write_value(
                out,
                &Value::Int(i64::try_from(self.id).unwrap_or(i64::MAX)),
                self.protocol,
            ),
            "GETNAME" => {
                let name = self
                    .name
                    .as_ref()
                    .map_or(Value::Nil, |n| Value::BulkString(n.as_bytes().to_vec()));
                resp::write_value(out, &name, self.protocol);
            }
            "SETNAME" if args.len() == 3 => {
                let name = text(&args[2]);
                if name.bytes().any(|b| b == b' ' || b == b'\n') {
                    return resp::write_error(
                        out,
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                self.name = (!name.is_empty()).then_some(name);
                if self.upstream.as_ref().is_some_and(Backend::is_own) {
                    self.forward(args, out).await;
                } else {
                    out.extend_from_slice(b"+OK\r\n");
                }
            }
            "SETINFO" if args.len() == 4 => {
                match upper(&args[2]).as_str() {
                    "LIB-NAME" => self.library.0 = Some(text(&args[3])),
                    "LIB-VER" => self.library.1 = Some(text(&args[3])),
                    _ => {
                        return resp::write_error(
                            out,
                            &format!("ERR Unrecognized option '{}'", text(&args[2])),
                        );
                    }
                }
                out.extend_from_slice(b"+OK\r\n");
            }
            "INFO" => {
                let line = format!(
                    "id={} addr={} name={} db={} resp={} lib-name={} lib-ver={}\n",
                    self.id,
                    self.peer,
                    self.name.as_deref().unwrap_or_default(),
                    self.database,
                    if self.protocol == Protocol::Resp3 {
                        3
                    } else {
                        2
                    },
                    self.library.0.as_deref().unwrap_or_default(),
                    self.library.1.as_deref().unwrap_or_default(),
                );
                resp::write_value(out, &Value::BulkString(line.into_bytes()), self.protocol);
            }
            "TRACKING" => self.tracking(args, out).await,
            "REPLY" => resp::write_error(
                out,
                "ERR steadfast proxy: CLIENT REPLY is not supported (replies pair with commands in order)",
            ),
            _ => self.forward(args, out).await,
        }
    }

    /// `CLIENT TRACKING ON|OFF ...` (client-side caching): through the connection's own client,
    /// which replays it on every new link; the server's `invalidate` pushes are passed on to a
    /// RESP3 connection, and so is the library's "flush everything" (an `invalidate` with a
    /// null key list) whenever a link is lost or replaced, so the application's cache never
    /// keeps what nobody would invalidate any more.
    async fn tracking(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        if self.shared.config.is_cluster {
            return resp::write_error(
                out,
                "ERR steadfast proxy: CLIENT TRACKING is not supported with a cluster upstream yet",
            );
        }
        let pushes = match self.upstream().await {
            Ok(backend) => backend.pushes(),
            Err(error) => return resp::write_error(out, &super::error_reply(&error)),
        };
        let mut reply = Vec::new();
        self.forward(args, &mut reply).await;
        if reply.starts_with(b"+OK") {
            let is_on = args.get(2).is_some_and(|on| on.eq_ignore_ascii_case(b"ON"));
            self.invalidations = pushes.filter(|_| is_on && self.protocol == Protocol::Resp3);
        }
        out.extend_from_slice(&reply);
    }
}

#[cfg(test)]
mod tests {
    use super::ServerKind;

    #[test]
    fn info_server_names_the_server_and_its_version_and_valkey_wins_over_its_redis_compatibility_field()
     {
        let redis = ServerKind::from_info(
            b"$40\r\n# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n",
        );
        assert_eq!(
            redis,
            Some(ServerKind {
                name: "redis".into(),
                version: "7.0.15".into()
            })
        );
        let valkey =
            ServerKind::from_info(b"# Server\nredis_version:7.2.4\nvalkey_version:8.0.1\n");
        assert_eq!(
            valkey,
            Some(ServerKind {
                name: "valkey".into(),
                version: "8.0.1".into()
            })
        );
        assert_eq!(ServerKind::from_info(b"-NOPERM no INFO for you\r\n"), None);
        assert_eq!(ServerKind::from_info(b"redis_version:\r\n"), None, "empty");
    }
}
