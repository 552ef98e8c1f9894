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
        if self
            .transaction
            .as_ref()
            .is_some_and(|t| t.session.is_none() && !t.is_lost)
        {
            // A cluster's MULTI waits for its first command: its key picks the session.
            if let Err(error) = self.open_session(args, true).await {
                // As a command refused while queueing: EXEC will abort.
                if let Some(transaction) = self.transaction.as_mut() {
                    transaction.is_lost = true;
                }
                return resp::write_error(out, &error_reply(&error));
            }
        }
        let Some(transaction) = self.transaction.as_mut() else {
            return self.forward(args, out).await;
        };
        if let (false, Some(session)) = (transaction.is_lost, transaction.session.as_mut()) {
            match session.query(&command_of(args)).await {
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
            if name == "MULTI" && self.shared.config.is_cluster {
                // The session's slot is the first queued command's: opened with it.
                self.transaction = Some(Transaction {
                    session: None,
                    is_watching: false,
                    is_in_multi: true,
                    is_lost: false,
                });
                return out.extend_from_slice(b"+OK\r\n");
            }
            if let Err(error) = self.open_session(args, false).await {
                return resp::write_error(out, &error_reply(&error));
            }
        }
        let protocol = self.protocol;
        let Some(transaction) = self.transaction.as_mut() else {
            return;
        };
        let null = if protocol == Protocol::Resp3 {
            &b"_\r\n"[..]
        } else {
            &b"*-1\r\n"[..]
        };
        let Some(session) = transaction.session.as_mut() else {
            // A cluster's MULTI with nothing queued yet (or whose first command was refused).
            match name {
                "EXEC" if transaction.is_lost => out.extend_from_slice(null),
                "EXEC" => out.extend_from_slice(b"*0\r\n"),
                "DISCARD" => out.extend_from_slice(b"+OK\r\n"),
                "MULTI" => resp::write_error(out, "ERR MULTI calls can not be nested"),
                "WATCH" => resp::write_error(out, "ERR WATCH inside MULTI is not allowed"),
                _ => return out.extend_from_slice(b"+QUEUED\r\n"),
            }
            if matches!(name, "EXEC" | "DISCARD") {
                self.transaction = None;
            }
            return;
        };
        let reply = if transaction.is_lost {
            None
        } else {
            match session.query(&command_of(args)).await {
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

impl Connection<'_> {
    /// Opens the transaction's session: on a cluster, for the slot of the first key of `args`
    /// (a `WATCH`'s, or a queued command's: then `MULTI` is sent first, as the client sent it
    /// before).
    async fn open_session(
        &mut self,
        args: &[Vec<u8>],
        is_after_multi: bool,
    ) -> Result<(), steadfast::Error> {
        let backend = self.upstream().await?;
        let cmd = command_of(args);
        let key = steadfast::cluster::command_keys(&cmd)
            .first()
            .map(|k| k.to_vec())
            .unwrap_or_default();
        let mut session = backend.session(&key).await?;
        if is_after_multi {
            session.query(&redis::cmd("MULTI")).await?;
        }
        match self.transaction.as_mut() {
            Some(transaction) => transaction.session = Some(session),
            None => {
                self.transaction = Some(Transaction {
                    session: Some(session),
                    is_watching: false,
                    is_in_multi: false,
                    is_lost: false,
                });
            }
        }
        Ok(())
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
