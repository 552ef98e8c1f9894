//! Commands the proxy passes on: a read's plain commands as one pipeline (or one command),
//! within the proxy's bound on commands held at once, through the connection's backend.

use std::sync::atomic::Ordering;

use super::batch::Batch;
use super::{Connection, SHRINK_ABOVE, command_of, error_reply};
use crate::backend::Backend;
use crate::resp;
use crate::server::Shared;

/// Commands the proxy holds (read, sent upstream or waiting to be, not yet answered), counted
/// against [`crate::ProxyConfig::max_queued`] until dropped.
struct Held<'a> {
    shared: &'a Shared,
    count: usize,
}

impl<'a> Held<'a> {
    /// Holds `count` more commands, or `None` when that would pass the bound.
    fn admit(shared: &'a Shared, count: usize) -> Option<Self> {
        let before = shared.queued.fetch_add(count, Ordering::AcqRel);
        if before + count > shared.config.max_queued {
            shared.queued.fetch_sub(count, Ordering::AcqRel);
            return None;
        }
        Some(Self { shared, count })
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.shared.queued.fetch_sub(self.count, Ordering::AcqRel);
    }
}

impl Connection<'_> {
    /// Sends the commands of `batch` and empties it (keeping its room for the next read).
    pub(super) async fn forward_batch(&mut self, batch: &mut Batch, out: &mut Vec<u8>) {
        if batch.is_empty() {
            return;
        }
        self.commands_total.increment(batch.len() as u64);
        let (commands, encoded) = batch.parts();
        self.forward_commands(commands, encoded, out).await;
        batch.clear(SHRINK_ABOVE);
    }

    /// Sends `commands` (taken; sent as `encoded` where given) as one pipeline, their replies
    /// in order: each its own value or server error. When the pipeline failed as a whole after
    /// it was written (the link died: any of it may have been applied), each idempotent command
    /// is sent again on its own and a non-idempotent one is answered `UNKNOWNOUTCOME`, as the
    /// library treats single commands; any other failure (nothing was sent) is every command's
    /// answer.
    async fn forward_commands(
        &mut self,
        commands: &mut Vec<redis::Cmd>,
        encoded: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) {
        if let [cmd] = commands.as_slice() {
            let Some(_held) = Held::admit(self.shared, 1) else {
                return resp::write_error(out, &self.queue_full());
            };
            return self.send_one(cmd, encoded, out).await;
        }
        let count = commands.len();
        let Some(_held) = Held::admit(self.shared, count) else {
            let full = self.queue_full();
            for _ in 0..count {
                resp::write_error(out, &full);
            }
            return;
        };
        let mut pipeline = redis::Pipeline::with_capacity(count);
        for cmd in commands.drain(..) {
            pipeline.add_command(cmd);
        }
        let backend = match self.backend_for(pipeline.cmd_iter()).await {
            Ok(backend) => backend,
            Err(error) => {
                // Counted and logged once for the pipeline, as the failures below.
                let reply = error_reply(&error);
                for _ in 0..count {
                    resp::write_error(out, &reply);
                }
                return;
            }
        };
        if let Backend::Cluster(_) = &backend
            && spans_slots(&pipeline)
        {
            // Split by the cluster, a pipeline that failed in one part would leave the others'
            // outcomes unknown: each command goes on its own (all at once), with its own.
            let sends = pipeline.cmd_iter().map(|cmd| backend.query(cmd));
            for reply in futures_util::future::join_all(sends).await {
                match reply {
                    Ok(value) => resp::write_value(out, &value, self.protocol),
                    Err(error) => resp::write_error(out, &error_reply(&error)),
                }
            }
            return;
        }
        let failure = match (&backend, encoded) {
            (Backend::Endpoint(client), Some(encoded)) => {
                match client.forward_pipeline(&pipeline, encoded).await {
                    Ok(steadfast::Forwarded::Frames(frames)) => {
                        return out.extend_from_slice(&frames);
                    }
                    Ok(steadfast::Forwarded::Values(values)) => {
                        for value in &values {
                            resp::write_value(out, value, self.protocol);
                        }
                        return;
                    }
                    Err(failure) => failure,
                }
            }
            _ => match backend.pipeline(&pipeline, count).await {
                Ok(values) => {
                    for value in &values {
                        resp::write_value(out, value, self.protocol);
                    }
                    return;
                }
                Err(error) => match steadfast::RedisErrorExt::steadfast_error(&error) {
                    Some(failure) => failure.clone(),
                    None => {
                        let reply = match (error.code(), error.detail()) {
                            (Some(code), Some(detail)) => format!("{code} {detail}"),
                            (Some(code), None) => code.to_owned(),
                            _ => format!("ERR {error}"),
                        };
                        for _ in 0..count {
                            resp::write_error(out, &reply);
                        }
                        return;
                    }
                },
            },
        };
        if !failure.is_ambiguous() {
            let reply = error_reply(&failure);
            for _ in 0..count {
                resp::write_error(out, &reply);
            }
            return;
        }
        let unknown = error_reply(&failure);
        for cmd in pipeline.cmd_iter() {
            if steadfast::is_idempotent(cmd) {
                self.send_one(cmd, None, out).await;
            } else {
                resp::write_error(out, &unknown);
            }
        }
    }

    /// Sends one command through the connection's client, within the proxy's bound on
    /// commands held at once.
    pub(super) async fn forward(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        let Some(_held) = Held::admit(self.shared, 1) else {
            return resp::write_error(out, &self.queue_full());
        };
        self.send_one(&command_of(args), None, out).await;
    }

    /// What a command the proxy cannot hold now is answered.
    fn queue_full(&self) -> String {
        metrics::counter!("steadfast_proxy_refused_total", "reason" => "max_queued").increment(1);
        format!(
            "UNAVAILABLE steadfast proxy: {} commands are waiting for the server already (max_queued); not sent",
            self.shared.config.max_queued
        )
    }

    /// Sends one command (as `encoded`, the bytes the client sent, when given and the
    /// connection's commands go to a single endpoint).
    async fn send_one(&mut self, cmd: &redis::Cmd, encoded: Option<&[u8]>, out: &mut Vec<u8>) {
        let backend = match self.backend_for(std::iter::once(cmd)).await {
            Ok(backend) => backend,
            Err(error) => return resp::write_error(out, &error_reply(&error)),
        };
        let reply = match (&backend, encoded) {
            (Backend::Endpoint(client), Some(encoded)) => client.forward(cmd, encoded).await,
            _ => backend
                .query(cmd)
                .await
                .map(|value| steadfast::Forwarded::Values(vec![value])),
        };
        match reply {
            Ok(steadfast::Forwarded::Frames(frames)) => out.extend_from_slice(&frames),
            Ok(steadfast::Forwarded::Values(values)) => {
                for value in &values {
                    resp::write_value(out, value, self.protocol);
                }
            }
            Err(error) => resp::write_error(out, &error_reply(&error)),
        }
    }
}

/// Whether the commands of `pipeline` go to more than one slot of a cluster.
fn spans_slots(pipeline: &redis::Pipeline) -> bool {
    use steadfast::cluster::{Slot, command_slot};
    let mut first = None;
    for cmd in pipeline.cmd_iter() {
        match command_slot(cmd) {
            Slot::Any => {}
            Slot::Cross(..) => return true,
            Slot::One(slot) if *first.get_or_insert(slot) != slot => return true,
            Slot::One(_) => {}
        }
    }
    false
}
