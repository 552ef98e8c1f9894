//! Blocking commands on dedicated links.
//!
//! # Behaviour
//! - A request with a blocking command (`BLPOP`, `BLMOVE`, `XREAD ... BLOCK`, `WAIT` ...; see
//!   [`crate::policy::effect`]) never goes on the shared link, where every command behind it
//!   would wait on the server. It borrows a dedicated link ([`crate::shared::dedicated`]) and
//!   runs there alone, through the same command path as any other command: a link that was
//!   never written, or a refusal that says nothing was done (`UNBLOCKED ... master -> replica`,
//!   `READONLY`, `LOADING`, `MOVED` in a cluster) sends it again, on the new primary, blocking
//!   only for what is left of its timeout; a link that died while it was blocked ends it with an
//!   "outcome unknown" error unless it is idempotent or the caller allowed a resend.
//! - Its deadline is its own block timeout plus the command deadline; a timeout of 0 blocks with
//!   no deadline of ours, while the health monitor watches the link (a blocked link is alive).
//! - It runs in a task of its own, so a caller that gives up (drops the future) does not take
//!   the reply with it. The task then asks the server to end the wait (`CLIENT UNBLOCK`, see
//!   [`unblock`](super::unblock)) and reads how it ended: with nothing taken
//!   ([`Abandoned::Unblocked`]), with a reply that took data nobody will receive (an item
//!   popped just before: [`Abandoned::ReplyLost`]), or not within [`UNBLOCK_LIMIT`], when the
//!   link is closed, which ends the wait on the server ([`Abandoned::LinkClosed`]). Each is an
//!   event and a metric.
//! - A command whose deadline ran out while written (the server did not answer within its own
//!   timeout and the command deadline) closes its dedicated link for the same reason: nothing
//!   may stay blocked on the server for a caller that has gone.

use std::sync::Arc;

use redis::{Cmd, Pipeline, Value};
use tokio::sync::oneshot;

use super::unblock::{UNBLOCK_LIMIT, unblock};
use super::{Reply, Request, Sending};
use crate::emitter::Emitter;
use crate::error::{Error, ErrorKind};
use crate::event::{Abandoned, DisconnectReason, Event};
use crate::shared::{Dedicated, Lent, Shared, Use};

/// Runs `request`, which blocks, on a dedicated link of `shared`'s, until `deadline`.
pub(super) async fn run(
    shared: &Shared,
    dedicated: &Dedicated,
    request: Request<'_>,
    sending: Sending,
) -> Result<Reply, Error> {
    let lent = dedicated.lend(Use::Blocking, sending.deadline).await?;
    let (tell, told) = oneshot::channel();
    let job = Job {
        lent,
        request: Owned::from(request),
        sending,
        emitter: shared.emitter.clone(),
    };
    shared.tasks.spawn(job.serve(tell));
    told.await
        .unwrap_or_else(|_| Err(Error::new(ErrorKind::Shutdown, "the client was shut down")))
}

/// A request that outlives its caller's borrow.
enum Owned {
    Single(Cmd),
    Pipeline {
        pipeline: Pipeline,
        offset: usize,
        count: usize,
    },
}

impl From<Request<'_>> for Owned {
    fn from(request: Request<'_>) -> Self {
        match request {
            Request::Single(cmd) => Self::Single(cmd.clone()),
            Request::Pipeline {
                pipeline,
                offset,
                count,
            } => Self::Pipeline {
                pipeline: pipeline.clone(),
                offset,
                count,
            },
        }
    }
}

impl Owned {
    fn as_request(&self) -> Request<'_> {
        match self {
            Self::Single(cmd) => Request::Single(cmd),
            Self::Pipeline {
                pipeline,
                offset,
                count,
            } => Request::Pipeline {
                pipeline,
                offset: *offset,
                count: *count,
            },
        }
    }
}

struct Job {
    lent: Lent,
    request: Owned,
    sending: Sending,
    /// The lending client's: what a caller lost is told where the application listens.
    emitter: Emitter,
}

impl Job {
    async fn serve(self, tell: oneshot::Sender<Result<Reply, Error>>) {
        let mut tell = tell;
        let core = Arc::clone(self.lent.core());
        let request = self.request.as_request();
        let mut running = Box::pin(super::run_here(&core, request, self.sending));
        let outcome = tokio::select! {
            outcome = &mut running => Some(outcome),
            () = tell.closed() => None,
        };
        if let Some(outcome) = outcome {
            if matches!(&outcome, Err(e) if e.kind() == ErrorKind::DeadlineExceeded && e.is_ambiguous())
            {
                close_link(&core, "a blocking command's deadline ran out");
            }
            let _ = tell.send(outcome);
            return;
        }
        // The caller gave up while the command was on its way or blocked.
        if let Some(link) = core.link.current() {
            unblock(&core.connector, &core.tasks, link);
        }
        let ended = tokio::time::timeout(UNBLOCK_LIMIT, running).await;
        let outcome = match ended {
            Ok(Ok(reply)) if is_empty(&reply) || request.is_idempotent() => Abandoned::Unblocked,
            Ok(Ok(_)) => Abandoned::ReplyLost,
            Ok(Err(error)) if !error.is_ambiguous() => Abandoned::Unblocked,
            Ok(Err(_)) => Abandoned::LinkClosed,
            Err(_) => {
                close_link(&core, "an abandoned blocking command did not end");
                Abandoned::LinkClosed
            }
        };
        tracing::info!(command = %request.label(), ?outcome, "blocking command abandoned by its caller");
        self.emitter.emit(Event::BlockingAbandoned {
            command: request.label(),
            outcome,
        });
    }
}

/// The reply of a blocking command that took nothing: its timeout's `nil` (or an empty array).
fn is_empty(reply: &Reply) -> bool {
    let empty = |value: &Value| match value {
        Value::Nil => true,
        Value::Array(values) | Value::Set(values) => values.is_empty(),
        Value::Map(pairs) => pairs.is_empty(),
        _ => false,
    };
    match reply {
        Reply::Single(value) => empty(value),
        Reply::Pipeline(values) => values.iter().all(empty),
    }
}

/// Closes the dedicated link `core` serves on: the server ends whatever waits on it.
fn close_link(core: &Shared, why: &str) {
    if let Some(link) = core.link.current() {
        tracing::debug!(
            generation = link.generation,
            why,
            "closing a dedicated link"
        );
        link.close();
        core.link
            .reporter
            .link_lost(link.generation, DisconnectReason::Closed(why.to_owned()));
    }
}
