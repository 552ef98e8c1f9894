//! `WATCH` / `MULTI` ... `EXEC` on a session of the connection's client, and what a lost guard
//! turns them into.

use redis::Value;
use steadfast::ErrorKind;

use super::{Connection, Transaction, command_of, error_reply};
use crate::resp::{self, Protocol};

impl Connection<'_> {
    /// A command other than `WATCH` / `MULTI` / `EXEC` / `DISCARD` / `UNWATCH` while a
    /// transaction is under way: on its session; once the guard is lost, queued (`+QUEUED`,
    /// never sent: `EXEC` will abort) inside `MULTI`, and on the connection's client outside.
    pub(super) async fn in_transaction(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        let Some(transaction) = self.transaction.as_mut() else {
            return self.forward(args, out).await;
        };
        if !transaction.is_lost {
            match transaction.session.query::<Value>(&command_of(args)).await {
                Ok(value) => return resp::write_value(out, &value, self.protocol),
                Err(error) if error.kind() == ErrorKind::WatchLost => transaction.is_lost = true,
                // The session's server turned replica under the transaction: nothing of it can
                // run there, so it goes on as a lost guard (EXEC aborts, the client retries).
                Err(error) if transaction.is_in_multi && is_demoted(&error) => {
                    transaction.is_lost = true;
                }
                Err(error) => return resp::write_error(out, &error_reply(&error)),
            }
        }
        if transaction.is_in_multi {
            out.extend_from_slice(b"+QUEUED\r\n");
        } else {
            self.forward(args, out).await;
        }
    }

    pub(super) async fn transaction_step(
        &mut self,
        name: &str,
        args: &[Vec<u8>],
        out: &mut Vec<u8>,
    ) {
        if name == "WATCH"
            && self
                .transaction
                .as_ref()
                .is_some_and(|t| t.is_lost && !t.is_in_multi)
        {
            // Starting over after a lost guard: a fresh session.
            self.transaction = None;
        }
        if self.transaction.is_none() {
            match name {
                "WATCH" | "MULTI" => {}
                "UNWATCH" => return out.extend_from_slice(b"+OK\r\n"),
                _ => {
                    return resp::write_error(out, &format!("ERR {name} without MULTI"));
                }
            }
            let client = match self.upstream() {
                Ok(client) => client,
                Err(error) => return resp::write_error(out, &error_reply(&error)),
            };
            match client.session().await {
                Ok(session) => {
                    self.transaction = Some(Transaction {
                        session,
                        is_watching: false,
                        is_in_multi: false,
                        is_lost: false,
                    });
                }
                Err(error) => return resp::write_error(out, &error_reply(&error)),
            }
        }
        let protocol = self.protocol;
        let Some(transaction) = self.transaction.as_mut() else {
            return;
        };
        let reply = if transaction.is_lost {
            None
        } else {
            match transaction.session.query::<Value>(&command_of(args)).await {
                Err(error) if error.kind() == ErrorKind::WatchLost => {
                    transaction.is_lost = true;
                    None
                }
                Err(error) if name == "EXEC" && is_demoted(&error) => {
                    transaction.is_lost = true;
                    None
                }
                other => Some(other),
            }
        };
        let null = if protocol == Protocol::Resp3 {
            &b"_\r\n"[..]
        } else {
            &b"*-1\r\n"[..]
        };
        match (name, reply) {
            // The guard died with its link: the transaction goes on as the server would after
            // a watched key changed (MULTI OK, commands QUEUED, EXEC null), nothing is sent.
            ("MULTI", None) => {
                transaction.is_in_multi = true;
                out.extend_from_slice(b"+OK\r\n");
            }
            ("EXEC", None) | ("EXEC", Some(Ok(Value::Nil))) => {
                out.extend_from_slice(null);
                transaction.is_watching = false;
                transaction.is_in_multi = false;
            }
            ("DISCARD", None) if !transaction.is_in_multi => {
                resp::write_error(out, "ERR DISCARD without MULTI");
            }
            ("DISCARD", None) => {
                out.extend_from_slice(b"+OK\r\n");
                transaction.is_watching = false;
                transaction.is_in_multi = false;
            }
            (_, None) => {
                // UNWATCH, or a WATCH inside MULTI after the loss.
                if name == "UNWATCH" {
                    transaction.is_watching = false;
                }
                out.extend_from_slice(b"+OK\r\n");
            }
            (_, Some(Ok(value))) => {
                match name {
                    "WATCH" => transaction.is_watching = true,
                    "MULTI" => transaction.is_in_multi = true,
                    "UNWATCH" => transaction.is_watching = false,
                    _ => {
                        transaction.is_watching = false;
                        transaction.is_in_multi = false;
                    }
                }
                resp::write_value(out, &value, protocol);
            }
            (_, Some(Err(error))) => {
                if matches!(name, "EXEC" | "DISCARD") {
                    transaction.is_watching = false;
                    transaction.is_in_multi = false;
                }
                resp::write_error(out, &error_reply(&error));
            }
        }
        if !transaction.is_watching && !transaction.is_in_multi {
            // Back to the connection's shared link; the session's link goes back to the pool.
            self.transaction = None;
        }
    }
}

/// Whether the server refused `error`'s command because it is a replica now (`READONLY`, or
/// an `EXECABORT` because of one): not executed, and nothing of a transaction can run there.
fn is_demoted(error: &steadfast::Error) -> bool {
    error.redis_error().is_some_and(|e| match e.code() {
        Some("READONLY") => true,
        Some("EXECABORT") => e.detail().is_some_and(|d| d.contains("READONLY")),
        _ => false,
    })
}
