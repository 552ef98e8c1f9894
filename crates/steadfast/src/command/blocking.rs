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
//! - Announced maintenance (Azure `NodeMaintenanceStarting` from shortly before the start, a
//!   RESP3 `MOVING` as the shared link moves): a command blocked on the announced server is
//!   unblocked (it took nothing) and, like any new one, waits until the client's shared link
//!   has left that server (or the hold's end), then is sent again for what is left of its
//!   wait: it does not die with the server.
//! - A command whose deadline ran out while written (the server did not answer within its own
//!   timeout and the command deadline) closes its dedicated link for the same reason: nothing
//!   may stay blocked on the server for a caller that has gone.

use std::sync::Arc;

use redis::{Cmd, Pipeline, Value};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::unblock::{UNBLOCK_LIMIT, unblock};
use super::{Reply, Request, Sending};
use crate::emitter::Emitter;
use crate::error::{Error, ErrorKind};
use crate::event::{Abandoned, DisconnectReason, Event};
use crate::policy::effect;
use crate::shared::dedicated::Hold;
use crate::shared::{Dedicated, Lent, Shared, Use};
use crate::supervisor::Published;

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
        hold: dedicated.hold.subscribe(),
        shared_link: shared.link.published.clone(),
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
    /// Announced maintenance: hold off the server it names.
    hold: watch::Receiver<Option<Hold>>,
    /// The lending client's shared link: a hold ends when it has moved.
    shared_link: watch::Receiver<Published>,
}

/// How one send of the job ended.
enum Ended {
    Done(Result<Reply, Error>),
    CallerGone,
    /// A hold began while the command was on its way.
    Held,
}

/// The hold in force now, if any: until its time, while the shared link has not left the
/// announced server.
fn hold_in_force(
    hold: &watch::Receiver<Option<Hold>>,
    shared_link: &watch::Receiver<Published>,
) -> Option<Hold> {
    let held = hold.borrow().clone()?;
    let on = shared_link.borrow().link.clone();
    held.is_in_force(on.as_deref(), Instant::now())
        .then_some(held)
}

impl Job {
    async fn serve(mut self, tell: oneshot::Sender<Result<Reply, Error>>) {
        let mut tell = tell;
        let core = Arc::clone(self.lent.core());
        let original = self.request.as_request();
        let mut is_resend = false;
        // The hold that last made the command step off its server.
        let mut stepped_off: Option<Hold> = None;
        loop {
            let deadline = self.sending.deadline;
            let Some(waited_out) =
                wait_out_hold(&mut self.hold, &mut self.shared_link, deadline, &mut tell).await
            else {
                return; // the caller left while it was held: nothing was sent
            };
            // The shared link has left the announced server: this link leaves it too before
            // anything is sent (`follow` or its own notice do the same, perhaps a moment later).
            if let Some(held) = waited_out.or(stepped_off.take())
                && let Some(link) = core.link.current()
                && held.is_stale(&link, self.shared_link.borrow().link.as_deref())
                && !link.is_closed()
            {
                link.activity.mark_closed();
                core.link.reporter.link_lost(
                    link.generation,
                    DisconnectReason::Closed("it is on a server announced for maintenance".into()),
                );
            }
            // Sent again after a hold: only for what is left of its wait.
            let rewritten;
            let request = match (is_resend, original, self.sending.plan.block) {
                (true, Request::Single(cmd), Some(Some(block))) => {
                    let left = block.saturating_sub(self.sending.started.elapsed());
                    match effect::with_remaining_block(cmd, left) {
                        Some(cmd) => {
                            rewritten = cmd;
                            Request::Single(&rewritten)
                        }
                        None => original,
                    }
                }
                _ => original,
            };
            // The link it goes on (its core's own notice may replace the link while it is
            // blocked there: a hold and an unblock concern this one). A new core's first link
            // is waited for here, so that it is known.
            let on = match core.link.current() {
                Some(link) => Some(link),
                None => super::wait_for_link(&core, deadline).await.ok(),
            };
            let mut running = Box::pin(super::run_here(&core, request, self.sending, None));
            let ended = tokio::select! {
                outcome = &mut running => Ended::Done(outcome),
                () = tell.closed() => Ended::CallerGone,
                () = hold_begins(&mut self.hold, &core, on.as_deref()) => Ended::Held,
            };
            match ended {
                Ended::Done(outcome) => {
                    if matches!(&outcome, Err(e) if e.kind() == ErrorKind::DeadlineExceeded && e.is_ambiguous())
                    {
                        close_link(&core, "a blocking command's deadline ran out");
                    }
                    let _ = tell.send(outcome);
                    return;
                }
                Ended::CallerGone => {
                    self.abandoned(&core, request, running).await;
                    return;
                }
                Ended::Held => {
                    // Off the announced server before it goes: unblocked, it took nothing and
                    // is sent again once the hold ends; what it took meanwhile is delivered.
                    if let Some(link) = on.clone().or_else(|| core.link.current()) {
                        unblock(&core.connector, &core.tasks, link);
                    }
                    stepped_off = self.hold.borrow().clone();
                    match tokio::time::timeout(UNBLOCK_LIMIT, running).await {
                        Ok(Ok(reply)) if is_empty(&reply) => is_resend = true,
                        Ok(outcome) => {
                            let _ = tell.send(outcome);
                            return;
                        }
                        Err(_) => {
                            if let Some(link) = &on {
                                link.close();
                            }
                            close_link(&core, "a held blocking command did not end");
                            let _ = tell.send(Err(Error::new(
                                ErrorKind::MayHaveBeenApplied,
                                format!(
                                    "{} was blocked on a server announced for maintenance and did not end when unblocked: it may have taken something",
                                    request.label()
                                ),
                            )));
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The caller gave up while the command was on its way or blocked.
    async fn abandoned<F>(
        &self,
        core: &Shared,
        request: Request<'_>,
        running: std::pin::Pin<Box<F>>,
    ) where
        F: std::future::Future<Output = Result<Reply, Error>>,
    {
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
                close_link(core, "an abandoned blocking command did not end");
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

/// Waits while a hold is in force (until `deadline`): `Some(the hold waited out, if any)`;
/// `None` when the caller left.
async fn wait_out_hold(
    hold: &mut watch::Receiver<Option<Hold>>,
    shared_link: &mut watch::Receiver<Published>,
    deadline: Instant,
    tell: &mut oneshot::Sender<Result<Reply, Error>>,
) -> Option<Option<Hold>> {
    let mut waited_out = None;
    loop {
        // Seen now: `changed` below waits for the next change of either.
        drop(hold.borrow_and_update());
        drop(shared_link.borrow_and_update());
        let Some(held) = hold_in_force(hold, shared_link) else {
            return Some(waited_out);
        };
        let until = held.until.min(deadline);
        if Instant::now() >= until {
            return Some(waited_out);
        }
        waited_out = Some(held);
        tokio::select! {
            _ = hold.changed() => {}
            _ = shared_link.changed() => {}
            () = tokio::time::sleep_until(until) => return Some(waited_out),
            () = tell.closed() => return None,
        }
    }
}

/// Resolves when a hold begins for the server the command is on (`on`, else `core`'s link
/// now), whether or not the shared link has already moved off it: a `MOVING` moves it within
/// a millisecond.
async fn hold_begins(
    hold: &mut watch::Receiver<Option<Hold>>,
    core: &Shared,
    on: Option<&crate::connect::Link>,
) {
    loop {
        if hold.changed().await.is_err() {
            return std::future::pending().await;
        }
        let held = hold.borrow_and_update().clone();
        let address = match on {
            Some(link) => Some(link.address.clone()),
            None => core.link.current().map(|link| link.address.clone()),
        };
        if let (Some(held), Some(address)) = (held, address)
            && Instant::now() < held.until
            && address == held.address
        {
            return;
        }
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
        // Blocking commands are never sent from the caller's bytes.
        Reply::Frames(_) => false,
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
