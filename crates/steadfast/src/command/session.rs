//! Sessions: a link of the caller's own for `WATCH` ... `MULTI` ... `EXEC`.
//!
//! # Behaviour
//! - [`Client::session`](crate::Client::session) lends one of the client's dedicated links
//!   (`command.session_links`) to one caller until the session is dropped. It follows failovers
//!   like the shared link and replays the client's state (database, name ...) on every new link.
//! - While a `WATCH` or a `MULTI` is active, the session's commands go only to the link that
//!   holds it. If that link is replaced (a failover, a restart, a dead link), the guard died
//!   with it: the next command of the transaction fails with [`ErrorKind::WatchLost`] before
//!   anything is sent, an [`Event::WatchLost`] is emitted and counted, and an `EXEC` never runs
//!   unguarded on the new link. `DISCARD` or `UNWATCH` then answer `OK` without being sent (what
//!   they would undo is gone), `EXEC` ends the failed transaction, and a new `WATCH` starts
//!   over. A command that was written when the link died is "may have been applied" as
//!   anywhere else (an `EXEC` among them).
//! - Outside a transaction, a session whose link was replaced goes on like any client.
//! - A session dropped in the middle of a transaction is cleaned up before its link is lent
//!   again (`DISCARD` / `UNWATCH`; closing the link if that fails).
//! - Blocking commands run on the session's own link; state commands (`SELECT`,
//!   `CLIENT SETNAME` ...) are refused: they belong to the client, which replays them on every
//!   link, the session's included.

use std::sync::Arc;

use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, Value};

use super::{Reply, Request, Sending, WaitError, healthy_link, run_here, wait_for_link};
use crate::emitter::Emitter;
use crate::error::{Error, ErrorKind};
use crate::event::{DisconnectReason, Event};
use crate::policy::effect::Destination;
use crate::policy::name::Name;
use crate::shared::{Dedicated, Lent, Use};

/// A link of the caller's own, for `WATCH` / `MULTI` / `EXEC` and other sequences that need
/// one connection. Made by [`Client::session`](crate::Client::session); implements
/// [`redis::aio::ConnectionLike`], so redis-rs commands and pipelines work on it.
///
/// ```no_run
/// use redis::AsyncCommands;
/// use steadfast::{ErrorKind, RedisErrorExt};
///
/// # async fn demo(client: steadfast::Client) -> Result<(), Box<dyn std::error::Error>> {
/// let mut session = client.session().await?;
/// loop {
///     redis::cmd("WATCH").arg("balance").query_async::<()>(&mut session).await?;
///     let balance: i64 = session.get("balance").await?;
///     let committed: Option<(i64,)> = redis::pipe()
///         .atomic()
///         .set("balance", balance + 10)
///         .ignore()
///         .incr("deposits", 1)
///         .query_async(&mut session)
///         .await
///         .or_else(|e| match e.steadfast_error().map(|e| e.kind()) {
///             // The link was replaced under the WATCH: nothing was sent; start over.
///             Some(ErrorKind::WatchLost) => Ok(None),
///             _ => Err(e),
///         })?;
///     if committed.is_some() {
///         break; // applied exactly once, guarded
///     }
///     // Someone changed `balance` meanwhile (or the guard was lost): read again.
/// }
/// # Ok(()) }
/// ```
pub struct Session {
    lent: Option<Lent>,
    /// The lending client's: a lost guard is told where the application listens.
    emitter: Emitter,
    guard: Guard,
}

/// The transaction state the session's link holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Guard {
    None,
    /// Held by the link of `generation`.
    Active {
        generation: u64,
        is_watching: bool,
        is_in_multi: bool,
    },
    /// The link that held it was replaced (or, in a cluster, its slot moved to another
    /// node): refused until the caller starts over. `is_told` once the caller got a
    /// [`ErrorKind::WatchLost`]: only then may a new `WATCH` start over (a second `WATCH`
    /// sent while the first one's guard died must not go on as if both held).
    Lost {
        was_in_multi: bool,
        is_told: bool,
    },
}

/// What a command does to the guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Watch,
    Unwatch,
    Multi,
    /// Ends the transaction and every `WATCH`, whatever the reply.
    Exec,
    /// Ends the transaction and every `WATCH`, whatever the reply.
    Discard,
    Other,
}

impl Step {
    fn starts_state(self) -> bool {
        matches!(self, Self::Watch | Self::Multi)
    }

    fn ends_state(self) -> bool {
        matches!(self, Self::Exec | Self::Discard)
    }
}

fn step_of(cmd: &Cmd) -> Step {
    match Name::of(cmd).as_ref().map(Name::as_bytes) {
        Some(b"WATCH") => Step::Watch,
        Some(b"UNWATCH") => Step::Unwatch,
        Some(b"MULTI") => Step::Multi,
        Some(b"EXEC") => Step::Exec,
        Some(b"DISCARD") => Step::Discard,
        _ => Step::Other,
    }
}

fn steps(request: Request<'_>) -> Vec<Step> {
    match request {
        Request::Single(cmd) => vec![step_of(cmd)],
        Request::Pipeline {
            pipeline,
            offset: _,
            count: _,
        } => {
            let mut steps: Vec<Step> = Vec::new();
            if pipeline.is_transaction() {
                steps.push(Step::Multi);
            }
            steps.extend(pipeline.cmd_iter().map(step_of));
            if pipeline.is_transaction() {
                steps.push(Step::Exec);
            }
            steps
        }
    }
}

impl Guard {
    /// The guard after `steps` succeeded on the link of `generation`.
    fn after(self, steps: &[Step], generation: u64) -> Self {
        let (mut is_watching, mut is_in_multi) = match self {
            Self::Active {
                is_watching,
                is_in_multi,
                ..
            } => (is_watching, is_in_multi),
            Self::None | Self::Lost { .. } => (false, false),
        };
        for step in steps {
            match step {
                Step::Watch => is_watching = true,
                Step::Unwatch => is_watching = false,
                Step::Multi => is_in_multi = true,
                Step::Exec | Step::Discard => (is_watching, is_in_multi) = (false, false),
                Step::Other => {}
            }
        }
        if is_watching || is_in_multi {
            Self::Active {
                generation,
                is_watching,
                is_in_multi,
            }
        } else {
            Self::None
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Active {
                is_watching: true,
                is_in_multi: true,
                ..
            } => "a WATCH and a MULTI",
            Self::Active {
                is_in_multi: true, ..
            }
            | Self::Lost {
                was_in_multi: true, ..
            } => "a MULTI",
            Self::Active { .. } | Self::Lost { .. } | Self::None => "a WATCH",
        }
    }
}

/// What to do with a request, given the guard and the link that serves now.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Send it, on the link of this generation only (`None`: any link).
    Send { pin: Option<u64> },
    /// Answer `OK` without sending: what it would undo is already gone.
    AnswerOk,
    /// Refuse it: the guard was lost. `ends` says whether this ends the failed transaction.
    Refuse { ends: bool },
}

/// Decides what to do with a request made of `steps` while the guard is `guard` and the link
/// of `current` serves (`None`: no link now).
fn plan(guard: Guard, steps: &[Step], current: Option<u64>) -> Plan {
    match guard {
        Guard::Active { generation, .. } if current == Some(generation) => Plan::Send {
            pin: Some(generation),
        },
        Guard::Active { .. } | Guard::Lost { .. } => {
            let is_told = matches!(guard, Guard::Lost { is_told: true, .. });
            if steps.first() == Some(&Step::Watch) && is_told {
                // Starting over.
                Plan::Send { pin: current }
            } else if steps.iter().all(|s| *s == Step::Unwatch) || steps == [Step::Discard] {
                Plan::AnswerOk
            } else {
                Plan::Refuse {
                    ends: steps.iter().any(|s| s.ends_state()),
                }
            }
        }
        Guard::None if steps.iter().any(|s| s.starts_state()) => Plan::Send { pin: current },
        Guard::None => Plan::Send { pin: None },
    }
}

/// The error of a request refused because the guard it relied on was lost.
fn lost(request: Request<'_>, what: &str, ends: bool) -> Error {
    let then = if ends { "" } else { " (or DISCARD / UNWATCH)" };
    Error::new(
        ErrorKind::WatchLost,
        format!(
            "{} was not sent: the session's link was replaced while {what} was active, and \
             the guard died with the old connection; start the transaction again with WATCH{then}",
            request.label()
        ),
    )
}

/// How often a request that starts a `WATCH` or a `MULTI` is sent again when the link it was
/// meant for was replaced before it went out (nothing was sent).
const STARTS_AGAIN: usize = 3;

impl Session {
    pub(crate) async fn lend(
        dedicated: &Dedicated,
        emitter: Emitter,
        deadline: tokio::time::Instant,
    ) -> Result<Self, Error> {
        let lent = dedicated.lend(Use::Session, deadline).await?;
        Ok(Self {
            lent: Some(lent),
            emitter,
            guard: Guard::None,
        })
    }

    fn core(&self) -> Result<&Arc<crate::shared::Shared>, Error> {
        self.lent
            .as_ref()
            .map(Lent::core)
            .ok_or_else(|| Error::new(ErrorKind::Shutdown, "the session was closed"))
    }

    /// Sends one command and converts the reply.
    ///
    /// # Errors
    /// As [`Client::query`](crate::Client::query), and [`ErrorKind::WatchLost`] when the link
    /// that held this session's `WATCH` or `MULTI` was replaced.
    pub async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> Result<T, Error> {
        let value = self.send(Request::Single(cmd)).await?.into_value();
        redis::from_redis_value(value).map_err(|e| {
            Error::from_redis(
                ErrorKind::Server,
                "reply conversion",
                redis::RedisError::from(e),
            )
        })
    }

    pub(crate) async fn send(&mut self, request: Request<'_>) -> Result<Reply, Error> {
        let core = Arc::clone(self.core()?);
        let effects = request.plan(Destination::Session)?;
        let steps = steps(request);
        let starts_state = steps.iter().any(|s| s.starts_state());
        let ends_state = steps.iter().any(|s| s.ends_state());
        for _ in 0..STARTS_AGAIN {
            let mut sending = Sending::new(&core, effects, false, None);
            // A request that starts a WATCH or a MULTI waits for a link, to know which one
            // will hold it.
            let current = if starts_state {
                match wait_for_link(&core, sending.deadline).await {
                    Ok(link) => Some(link.generation),
                    Err(WaitError::Other(error)) => return Err(error),
                    Err(WaitError::Deadline(last)) => {
                        return Err(Error::deadline(
                            sending.deadline_length,
                            false,
                            last.as_ref(),
                            core.progress.describe(),
                        ));
                    }
                }
            } else {
                healthy_link(&core).map(|link| link.generation)
            };
            if let Guard::Active { generation, .. } = self.guard
                && current != Some(generation)
            {
                self.lose(generation);
            }
            let pin = match plan(self.guard, &steps, current) {
                Plan::AnswerOk => {
                    self.guard = Guard::None;
                    return Ok(match request {
                        Request::Single(_) => Reply::Single(Value::Okay),
                        Request::Pipeline { count, .. } => {
                            Reply::Pipeline(vec![Value::Okay; count])
                        }
                    });
                }
                Plan::Refuse { ends } => return Err(self.refuse(request, ends)),
                Plan::Send { pin } => pin,
            };
            sending.pin = pin;
            let was_active = matches!(self.guard, Guard::Active { .. });
            match run_here(&core, request, sending, None).await {
                Ok(reply) => {
                    if let Some(generation) = pin.or(current) {
                        self.guard = self.guard.after(&steps, generation);
                    }
                    return Ok(reply);
                }
                // The link meant for a new WATCH or MULTI went before anything was sent.
                Err(error) if error.kind() == ErrorKind::WatchLost && !was_active => {}
                Err(error) => {
                    if ends_state {
                        self.guard = Guard::None;
                    } else if let Guard::Active { generation, .. } = self.guard
                        && (error.kind() == ErrorKind::WatchLost || error.is_ambiguous())
                    {
                        self.lose(generation);
                        if error.kind() == ErrorKind::WatchLost {
                            return Err(self.refuse(request, false));
                        }
                    }
                    return Err(error);
                }
            }
        }
        Err(Error::new(
            ErrorKind::Connect,
            format!(
                "{} was not sent: the session's link was replaced {STARTS_AGAIN} times before \
                 it could go out",
                request.label()
            ),
        ))
    }

    /// The link of `generation`, which held the guard, is gone: tell it, once.
    fn lose(&mut self, generation: u64) {
        let Guard::Active { is_in_multi, .. } = self.guard else {
            return;
        };
        let what = self.guard.what();
        tracing::info!(generation, what, "a session's guard died with its link");
        self.tell_lost(what);
        self.guard = Guard::Lost {
            was_in_multi: is_in_multi,
            is_told: false,
        };
    }

    /// Tells the application (an event, counted) that the guard `what` was lost.
    fn tell_lost(&self, what: &str) {
        self.emitter.emit(Event::WatchLost {
            state: what.trim_start_matches("a ").replace(" and a ", " and "),
        });
    }

    /// Refuses `request` because the guard was lost, and notes that the caller was told;
    /// `ends`: the request ends the failed transaction.
    fn refuse(&mut self, request: Request<'_>, ends: bool) -> Error {
        let error = lost(request, self.guard.what(), ends);
        self.guard = match self.guard {
            _ if ends => Guard::None,
            Guard::Lost { was_in_multi, .. } => Guard::Lost {
                was_in_multi,
                is_told: true,
            },
            other => other,
        };
        error
    }

    /// Whether the session's link holds a `WATCH` or a `MULTI`, or held one whose loss the
    /// caller has to hear of: a cluster session sends such a session's commands to its node.
    pub(crate) fn is_guarding(&self) -> bool {
        !matches!(self.guard, Guard::None)
    }

    /// Whether `request` starts a `WATCH` or a `MULTI` (an atomic pipeline included).
    pub(crate) fn starts_guard(request: Request<'_>) -> bool {
        steps(request).iter().any(|s| s.starts_state())
    }

    /// Takes over the guard `from` held (a cluster session moving to another node): an
    /// active one is lost (told as an event; `from`'s link is cleaned when it is dropped), a
    /// lost one stays lost, so this session refuses the transaction as `from` would have.
    pub(crate) fn inherit_loss(&mut self, from: &Self) {
        match from.guard {
            Guard::Active { is_in_multi, .. } => {
                self.guard = from.guard;
                self.lose_told(false);
                self.guard = Guard::Lost {
                    was_in_multi: is_in_multi,
                    is_told: false,
                };
            }
            Guard::Lost { .. } => self.guard = from.guard,
            Guard::None => {}
        }
    }

    /// Tells the loss of the active guard (an event), then marks it lost.
    fn lose_told(&mut self, is_told: bool) {
        if let Guard::Active {
            generation,
            is_in_multi,
            ..
        } = self.guard
        {
            self.lose(generation);
            self.guard = Guard::Lost {
                was_in_multi: is_in_multi,
                is_told,
            };
        }
    }

    /// The answer when the node refused `request` because the slot moved (nothing ran) while
    /// this session's guard was active: the link's `WATCH` / `MULTI` is undone (the link is
    /// closed if that fails), the guard is lost and the caller told; `ends`: the request
    /// ended the transaction (an aborted `EXEC`).
    pub(crate) async fn refuse_moved(&mut self, request: Request<'_>, ends: bool) -> Error {
        let what = match self.guard {
            Guard::None => "a MULTI",
            guard => guard.what(),
        };
        if let (
            Guard::Active {
                generation,
                is_in_multi,
                ..
            },
            Some(lent),
        ) = (self.guard, self.lent.as_ref())
            && !ends
        {
            undo(lent.core(), generation, is_in_multi).await;
        }
        if matches!(self.guard, Guard::Active { .. }) {
            self.lose_told(true);
        } else {
            // An aborted EXEC already ended the guard: its loss is told here.
            tracing::info!(
                what,
                "a cluster session's transaction was refused: the slot moved"
            );
            self.tell_lost(what);
        }
        if ends {
            self.guard = Guard::None;
        }
        let then = if ends { "" } else { " (or DISCARD / UNWATCH)" };
        Error::new(
            ErrorKind::WatchLost,
            format!(
                "{} did not run: the slot moved to another node while {what} was active on \
                 the old one, which refused it; start the transaction again with WATCH{then}",
                request.label()
            ),
        )
    }
}

/// Ends the `WATCH` / `MULTI` the link of `generation` holds (`DISCARD` / `UNWATCH`), if it is
/// still `core`'s link; closes it if that fails, so no later user inherits the state.
async fn undo(core: &crate::shared::Shared, generation: u64, is_in_multi: bool) {
    let undo = if is_in_multi { "DISCARD" } else { "UNWATCH" };
    let Some(link) = core.link.current().filter(|l| l.generation == generation) else {
        return;
    };
    let mut connection = link.connection.clone();
    let undone = tokio::time::timeout(
        core.timeouts.deadline(),
        redis::cmd(undo).query_async::<()>(&mut connection),
    )
    .await;
    if !matches!(undone, Ok(Ok(()))) {
        link.close();
        core.link.reporter.link_lost(
            generation,
            DisconnectReason::Closed(format!("a session's {undo} failed")),
        );
    }
}

impl ConnectionLike for Session {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move { Ok(self.send(Request::Single(cmd)).await?.into_value()) })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let request = Request::Pipeline {
                pipeline,
                offset,
                count,
            };
            Ok(self.send(request).await?.into_values())
        })
    }

    fn get_db(&self) -> i64 {
        self.core().map_or(0, |core| {
            core.journal
                .database()
                .unwrap_or(core.config.endpoint.database)
        })
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("guard", &self.guard)
            .finish()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some(lent) = self.lent.take() else {
            return;
        };
        let Guard::Active {
            generation,
            is_in_multi,
            ..
        } = self.guard
        else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        // The link holds a WATCH or a MULTI: undo it before the link is lent again (the
        // task holds the lent core until then).
        let core = Arc::clone(lent.core());
        core.tasks.clone().spawn(async move {
            undo(&core, generation, is_in_multi).await;
            drop(lent);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WATCHING_ON_3: Guard = Guard::Active {
        generation: 3,
        is_watching: true,
        is_in_multi: false,
    };

    #[test]
    fn a_watch_and_its_transaction_go_only_to_the_link_that_holds_the_watch() {
        assert_eq!(
            plan(Guard::None, &[Step::Watch], Some(3)),
            Plan::Send { pin: Some(3) }
        );
        let guard = Guard::None.after(&[Step::Watch], 3);
        assert_eq!(guard, WATCHING_ON_3);
        assert_eq!(
            plan(guard, &[Step::Other], Some(3)),
            Plan::Send { pin: Some(3) }
        );
        let transaction = [Step::Multi, Step::Other, Step::Exec];
        assert_eq!(
            plan(guard, &transaction, Some(3)),
            Plan::Send { pin: Some(3) }
        );
        assert_eq!(
            guard.after(&transaction, 3),
            Guard::None,
            "EXEC ends the WATCH"
        );
    }

    #[test]
    fn after_the_link_is_replaced_the_transaction_is_refused_until_the_caller_starts_over() {
        let lost = Guard::Lost {
            was_in_multi: false,
            is_told: true,
        };
        assert_eq!(
            plan(lost, &[Step::Other], Some(4)),
            Plan::Refuse { ends: false }
        );
        assert_eq!(
            plan(lost, &[Step::Multi, Step::Other, Step::Exec], Some(4)),
            Plan::Refuse { ends: true },
            "an atomic pipeline never runs unguarded"
        );
        assert_eq!(
            plan(lost, &[Step::Exec], Some(4)),
            Plan::Refuse { ends: true },
            "EXEC is refused and ends the failed transaction"
        );
        assert_eq!(plan(lost, &[Step::Unwatch], Some(4)), Plan::AnswerOk);
        assert_eq!(plan(lost, &[Step::Discard], Some(4)), Plan::AnswerOk);
        assert_eq!(
            plan(lost, &[Step::Watch], Some(4)),
            Plan::Send { pin: Some(4) },
            "a new WATCH starts over on the new link"
        );
        assert_eq!(
            plan(WATCHING_ON_3, &[Step::Other], Some(4)),
            Plan::Refuse { ends: false },
            "a guard whose link is not the one serving now is as good as lost"
        );
        let untold = Guard::Lost {
            was_in_multi: false,
            is_told: false,
        };
        assert_eq!(
            plan(untold, &[Step::Watch], Some(4)),
            Plan::Refuse { ends: false },
            "a second WATCH while the first one's guard died is refused, not a silent restart"
        );
        assert_eq!(
            plan(WATCHING_ON_3, &[Step::Watch], Some(4)),
            Plan::Refuse { ends: false }
        );
    }

    #[test]
    fn outside_a_transaction_a_session_uses_any_link() {
        assert_eq!(
            plan(Guard::None, &[Step::Other], Some(9)),
            Plan::Send { pin: None }
        );
        assert_eq!(
            plan(Guard::None, &[Step::Unwatch], None),
            Plan::Send { pin: None }
        );
        assert_eq!(Guard::None.after(&[Step::Other], 9), Guard::None);
    }

    #[test]
    fn an_atomic_pipeline_counts_as_multi_to_exec() {
        let mut pipe = redis::pipe();
        pipe.atomic().set("a", 1).incr("b", 1);
        let request = Request::Pipeline {
            pipeline: &pipe,
            offset: 3,
            count: 1,
        };
        let found = steps(request);
        assert_eq!(found.first(), Some(&Step::Multi));
        assert_eq!(found.last(), Some(&Step::Exec));
    }
}
