//! Write batching for one link: single commands sent by many tasks at once go out as one
//! pipeline, so the connection's driver writes them with one system call instead of one each.
//!
//! # Behaviour
//! - Used for single commands on cluster nodes' links when another command is in flight on
//!   the same link (`CLUSTER_BATCH_FROM` in the command path decides; alone, a command is sent
//!   directly), and on a single endpoint's shared link only under heavy load, above 128
//!   commands in flight (`ENDPOINT_BATCH_FROM`; see the command path and BENCHMARKS.md). A
//!   blocking command is never batched: the other replies of its batch would wait for it.
//! - A caller queues its command; the first caller to find no batch forming spawns the task
//!   that sends it: the task puts itself once at the back of the scheduler's run queue, so that
//!   every task already runnable (the callers a reply just woke) can queue too, then takes the
//!   whole queue and sends it as one pipeline. Callers arriving after that start the next
//!   batch, so several batches may be in flight on the link at once. (Measured: tokio's
//!   `yield_now` defers the task until the worker next polls for I/O, which the scheduler
//!   also does every 61 tasks: batches then split mid-round, 4.3 commands each against 5.4
//!   with a plain wake, and the client spent 20 % more CPU per command.)
//! - Each caller gets its own command's reply: a server error reply is that caller's error only;
//!   a transport error is every caller's in the batch.
//! - No caller's future owns a batch: a caller that gives up (its deadline, a `select!` that
//!   dropped it) loses only its own reply. (A first version let the first caller send the batch;
//!   a refresh that stopped waiting for a third `CLUSTER NODES` dropped such a caller mid-yield
//!   and stranded its node's queue: the cluster drill caught it.) The queue is bounded by the
//!   callers waiting: each waits for its own reply.
//! - Measured by the cluster throughput bench (BENCHMARKS.md): it is what redis-rs
//!   `cluster_async` gets from routing every request through one task.

use std::sync::{Arc, Mutex};

use super::wire::Connection;
use redis::{Cmd, RedisError, Value};
use tokio::sync::oneshot;

type Reply = Result<Value, RedisError>;

#[derive(Default)]
struct Queue {
    commands: Vec<(Cmd, oneshot::Sender<Reply>)>,
    is_forming: bool,
}

/// The batch forming on one link.
#[derive(Default)]
pub(crate) struct Batcher {
    queue: Mutex<Queue>,
}

impl Batcher {
    /// Sends `cmd` on `connection`, in a batch with whatever other commands are ready now.
    pub(crate) async fn send(self: &Arc<Self>, connection: &Connection, cmd: &Cmd) -> Reply {
        let (reply, answer) = oneshot::channel();
        let starts = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.commands.push((cmd.clone(), reply));
            !std::mem::replace(&mut queue.is_forming, true)
        };
        if starts {
            // The batch is sent by its own task: no caller's future owns it, so a caller that
            // gives up (its deadline, a select that dropped it) cannot strand the others.
            let (batcher, connection) = (Arc::clone(self), connection.clone());
            tokio::spawn(async move {
                to_the_back_of_the_queue().await;
                let commands = {
                    let mut queue = batcher.queue.lock().unwrap_or_else(|e| e.into_inner());
                    queue.is_forming = false;
                    std::mem::take(&mut queue.commands)
                };
                send_batch(connection, commands).await;
            });
        }
        answer.await.unwrap_or_else(|_| {
            Err(RedisError::from((
                redis::ErrorKind::Io,
                "the batch carrying this command was dropped",
            )))
        })
    }
}

/// Returns after one trip to the back of the run queue: a task that wakes itself while being
/// polled is queued behind every task already runnable (not deferred past the next poll for
/// I/O, as `tokio::task::yield_now` is).
async fn to_the_back_of_the_queue() {
    let mut is_queued = false;
    std::future::poll_fn(|cx| {
        if std::mem::replace(&mut is_queued, true) {
            std::task::Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
}

async fn send_batch(mut connection: Connection, commands: Vec<(Cmd, oneshot::Sender<Reply>)>) {
    let mut pipeline = redis::pipe();
    let mut replies = Vec::with_capacity(commands.len());
    for (cmd, reply) in commands {
        pipeline.add_command(cmd);
        replies.push(reply);
    }
    match connection
        .send_packed_commands(&pipeline, 0, replies.len())
        .await
    {
        Ok(values) => {
            for (reply, value) in replies.into_iter().zip(values) {
                let _ = reply.send(match value {
                    Value::ServerError(error) => Err(error.into()),
                    value => Ok(value),
                });
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
