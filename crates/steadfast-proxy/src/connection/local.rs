//! The commands a downstream connection's state answers without the server: `HELLO`, `AUTH`,
//! `SELECT` (through the client, which replays it), `CLIENT ...`.

use redis::Value;

use super::{Connection, text, upper};
use crate::backend::Backend;
use crate::resp::{self, Protocol};

impl Connection<'_> {
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
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Map(vec![
            (bulk("server"), bulk("redis")),
            (bulk("version"), bulk("7.0.0")),
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
