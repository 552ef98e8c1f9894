//! A [`Wire`] as redis-rs's connections are used: commands and pipelines in, values out.
//!
//! # Behaviour
//! - [`Connection::send_packed_command`] answers one command with its value; a server error is
//!   a value too ([`Value::ServerError`]), as redis-rs's own connections answer, and its callers
//!   (`query_async` ...) make it an error.
//! - [`Connection::send_packed_commands`] answers `count` commands of a pipeline from `offset`:
//!   a plain pipeline's replies, server errors among them as values; a transaction's `EXEC`
//!   reply (`MULTI` and the `QUEUED` replies skipped). A transaction the server discarded
//!   because it refused commands as they were queued fails as a whole with `EXECABORT`, the
//!   refusals listed in its detail ([`queued_refusals`] reads them back).
//! - Subscription commands (`SUBSCRIBE` ..., one name each) are answered by their confirmation
//!   (a push in RESP3). One with several names, or none (unsubscribe from all), is refused
//!   unsent: how many confirmations it earns is not known here.
//! - A failed connection is an I/O error ([`redis::ErrorKind::Io`]); bytes that are not RESP
//!   (another service on the port) are reported as such.

use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use super::Wire;
pub(crate) use super::decode::values;

/// The commands answered by confirmations.
const SUBSCRIBE_LIKE: [&[u8]; 6] = [
    b"SUBSCRIBE",
    b"PSUBSCRIBE",
    b"SSUBSCRIBE",
    b"UNSUBSCRIBE",
    b"PUNSUBSCRIBE",
    b"SUNSUBSCRIBE",
];

/// How an `EXECABORT` built here lists the refusals that caused it.
const REFUSALS: &str = "Transaction discarded because of previous errors: ";

/// A link's connection; see the module's documentation. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Connection {
    wire: Wire,
    database: i64,
}

impl Connection {
    pub(crate) fn new(wire: Wire, database: i64) -> Self {
        Self { wire, database }
    }

    /// The wire under it, for requests already encoded.
    pub(crate) fn wire(&self) -> &Wire {
        &self.wire
    }

    /// One command's reply.
    pub(crate) async fn send_packed_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        let confirms = confirmations(cmd)?;
        let bytes = self
            .wire
            .request(cmd.get_packed_command(), 1, confirms)
            .await
            .map_err(failed)?
            .bytes;
        let mut values = values(&bytes)?;
        Ok(values.pop().unwrap_or(Value::Nil))
    }

    /// `count` replies of `pipeline`'s, from `offset`; see the module's documentation.
    pub(crate) async fn send_packed_commands(
        &mut self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let mut confirms = false;
        for cmd in pipeline.cmd_iter() {
            confirms |= confirmations(cmd)?;
        }
        let total = offset + count;
        let bytes = self
            .wire
            .request(pipeline.get_packed_pipeline(), total, confirms)
            .await
            .map_err(failed)?
            .bytes;
        let mut values = values(&bytes)?;
        let answers = values.split_off(offset.min(values.len()));
        if pipeline.is_transaction() {
            // The first skipped reply is MULTI's; the others say whether each was queued.
            let refusals: Vec<String> = values
                .iter()
                .skip(1)
                .filter_map(|value| match value {
                    Value::ServerError(e) => {
                        Some(format!("{} {}", e.code(), e.details().unwrap_or("")))
                    }
                    _ => None,
                })
                .collect();
            if !refusals.is_empty() {
                let line = format!("-EXECABORT {REFUSALS}{}\r\n", refusals.join("; "));
                return match redis::parse_redis_value(line.as_bytes())? {
                    Value::ServerError(e) => Err(e.into()),
                    _ => Err(RedisError::from((
                        redis::ErrorKind::Client,
                        "transaction aborted",
                    ))),
                };
            }
        }
        Ok(answers)
    }

    /// Subscribes to `channel` (for a dedicated link's listener).
    pub(crate) async fn subscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self
            .send_packed_command(redis::cmd("SUBSCRIBE").arg(channel))
            .await?
        {
            Value::ServerError(e) => Err(e.into()),
            _ => Ok(()),
        }
    }
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.send_packed_command(cmd))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(self.send_packed_commands(pipeline, offset, count))
    }

    fn get_db(&self) -> i64 {
        self.database
    }
}

/// Whether `cmd` is answered by a subscription confirmation; an error for one whose number of
/// confirmations is not one.
fn confirmations(cmd: &Cmd) -> RedisResult<bool> {
    let mut args = cmd.args_iter();
    let Some(redis::Arg::Simple(name)) = args.next() else {
        return Ok(false);
    };
    if !SUBSCRIBE_LIKE.iter().any(|s| s.eq_ignore_ascii_case(name)) {
        return Ok(false);
    }
    if args.count() != 1 {
        return Err(RedisError::from((
            redis::ErrorKind::Client,
            "a subscription command names one channel or pattern here",
            String::from_utf8_lossy(name).into_owned(),
        )));
    }
    Ok(true)
}

/// A failed connection as redis-rs says it: bytes that are not RESP are a parse error, the
/// rest I/O errors.
pub(crate) fn failed(error: std::io::Error) -> RedisError {
    if super::is_malformed(&error) {
        RedisError::from((redis::ErrorKind::Parse, "bad reply", error.to_string()))
    } else {
        error.into()
    }
}

/// The refusals that made the server discard a transaction, from an `EXECABORT` this module
/// built (a cluster's `MOVED` ... among them); empty for any other error.
pub(crate) fn queued_refusals(error: &RedisError) -> Vec<RedisError> {
    if error.code() != Some("EXECABORT") {
        return Vec::new();
    }
    let Some(list) = error.detail().and_then(|d| d.strip_prefix(REFUSALS)) else {
        return Vec::new();
    };
    list.split("; ")
        .filter_map(|refusal| {
            match redis::parse_redis_value(format!("-{}\r\n", refusal.trim_end()).as_bytes()) {
                Ok(Value::ServerError(e)) => Some(e.into()),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aborted_transaction_lists_its_refusals_and_they_read_back() {
        let line =
            format!("-EXECABORT {REFUSALS}MOVED 3999 127.0.0.1:7001; READONLY You can't write\r\n");
        let Value::ServerError(e) = redis::parse_redis_value(line.as_bytes()).unwrap() else {
            panic!("an error frame");
        };
        let refusals = queued_refusals(&e.into());
        assert_eq!(refusals.len(), 2);
        assert_eq!(
            refusals[0].kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::Moved)
        );
        assert_eq!(refusals[0].redirect_node(), Some(("127.0.0.1:7001", 3999)));
        assert_eq!(
            refusals[1].kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        );
    }

    #[test]
    fn a_subscription_command_with_several_names_is_refused_unsent() {
        assert!(confirmations(redis::cmd("SUBSCRIBE").arg("a").arg("b")).is_err());
        assert!(confirmations(&redis::cmd("UNSUBSCRIBE")).is_err());
        assert!(confirmations(redis::cmd("subscribe").arg("a")).unwrap());
        assert!(!confirmations(redis::cmd("GET").arg("a")).unwrap());
    }
}
