//! Health: a dead link is judged dead in bounded time, a slow one is left alone.
//!
//! # Behaviour
//! - **Heartbeat.** A link with nothing in flight and no traffic for `health.ping_interval`
//!   (1 s) gets a `PING`. The PING counts as a command in flight, so the watchdog below judges it.
//! - **Read-progress watchdog.** A link with commands in flight that has read no byte for
//!   `health.read_stall` (1 s) becomes *suspect*: a [`HeartbeatMissed`](crate::Event::HeartbeatMissed)
//!   event, the endpoint's name is resolved again on every tick (100 ms) while it stays suspect,
//!   and a probe (below) runs. Suspicion alone never drops a link. A name that starts listing
//!   an address it did not list before (a promoted replica beside the old primary) starts a
//!   fresh probe at once, abandoning one that may be stuck dialling the old address. An idle link is looked at only
//!   when its heartbeat is due, a busy one when it could first become suspect (`read_stall`
//!   after its last read), both at least every `read_stall`; a suspect one every tick. The PING
//!   is sent and awaited by the monitor itself, no task per PING: 1,000 idle clients cost about
//!   3 % of one core of this 2-core VM, almost all of it the PING round trips (BENCHMARKS.md).
//! - **Alert.** From an announced maintenance start (Azure `NodeMaintenanceStarting`), for
//!   15 s, the name is resolved on every tick and a link becomes suspect after a quarter of
//!   `read_stall`: the server named goes away around then, and a name that moves only at the
//!   start is seen within a tick (`shared::Timeouts::alert`).
//! - **Probe: the verdict.** A fresh connection, dialled in this task (never in a caller's path,
//!   one at a time, backed off from `read_stall` doubling to 30 s while the link stays stalled),
//!   answers. It dials the name's addresses with the stalled link's own address last (and the
//!   others staggered, as every dial: [`connect::dial`](crate::connect)), so a name that lists a
//!   dead address beside a live one is judged by the live one. Then:
//!   - the name now resolves elsewhere (the old address is not in the answer) ->
//!     [`Verdict::Moved`], without a probe: the link is replaced made before broken, like
//!     planned maintenance, new commands go to the new link at once, and the old one drains:
//!     if its server still completes a handshake within four times what the new server's
//!     took (25 ms to `health.probe_timeout`), or before the new server completes two more
//!     (the supervisor's `silence` module: a busy machine delays both alike; a
//!     coordinated failover: the old primary pauses writes, then refuses them `READONLY`), its
//!     commands in flight finish there (a reply, or a refusal sent again on the new link)
//!     instead of being cut off into unknown outcomes; if not (killed, unreachable, frozen)
//!     it is closed at once, as a dead one. Further moves of the same link are acted on with
//!     the probe's backoff (a new link that cannot be made leaves the old one serving);
//!   - the fresh connection reached **the old link's address**: `CLIENT LIST ID <id>` (the id
//!     recorded at handshake) that no longer lists our connection, or lists it idle since before
//!     our commands were sent (they never arrived) -> [`Verdict::Dead`]; lists it busy with a
//!     command (or blocked, flag `b`) -> [`Verdict::Alive`]: slow, not dead; the command
//!     deadline decides;
//!   - the fresh connection reached **another address**: a server there that does not list a
//!     connection from our old link's own address (`addr=`; ids are counted per server, so the
//!     id alone proves nothing) is a different server -> [`Verdict::Dead`], and the old address
//!     is dialled last for a while, so the new link goes where the probe went; one that lists it
//!     is the same server by another way, judged as above;
//!   - the fresh connection gets no answer within `health.probe_timeout` either ->
//!     [`Verdict::Unknown`]: nothing better exists, keep the link and probe again later.
//!     `TCP_USER_TIMEOUT` and keepalive still kill a path that stops acknowledging.
//!   - Where `CLIENT LIST` is refused, the fallback is: a fresh link that answers while the old
//!     one has read nothing for longer than `read_stall` means the old one is dead.
//! - The kernel's `TCP_USER_TIMEOUT` and keepalive, set by the connector, are the backstop.
//!
//! # Layout
//! The decisions are a pure machine (`machine`: facts in, actions out, tested without
//! sockets or timers); this module's loop is its driver: it gathers the facts, runs the PING,
//! the name lookups and the probes (`probe`), and reports.
//!
//! # Why a probe and not a timeout
//! From the client, a server busy with a slow command (`DEBUG SLEEP 3`, a big `KEYS`), a blocked
//! `BLPOP` and a host that vanished look the same: nothing comes back. Dropping a link to a slow
//! server gains nothing and turns every write in flight into an ambiguous outcome, so only a
//! second opinion from a fresh connection may condemn a link. A server blocked by a slow command
//! cannot answer the probe's handshake either, which keeps the verdict at `Unknown`.

mod machine;
pub(crate) mod probe;

use std::sync::Arc;

use redis::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::connect::{Connector, Link, Target};
use crate::event::{DisconnectReason, Event};
use crate::shared::{LinkParts, Timeouts};
use machine::{Action, LinkFacts, Monitor, News};

pub use crate::verdict::Verdict;

/// What the monitor watches and uses.
pub(crate) struct Watched {
    pub(crate) link: LinkParts,
    /// The read-stall threshold in force.
    pub(crate) timeouts: Arc<Timeouts>,
    /// Woken on every look at a stalled link (cluster nodes: the router waits on it).
    pub(crate) stalled: Arc<tokio::sync::Notify>,
    /// Dials the probes' fresh connections.
    pub(crate) connector: Connector,
}

/// Starts the monitor; it ends when `cancel` fires (the client's end).
pub(crate) fn spawn(watched: Watched, cancel: CancellationToken, tasks: &TaskTracker) {
    let tracker = tasks.clone();
    tasks.spawn(run(watched, cancel, tracker));
}

/// A heartbeat `PING` waiting for its reply.
type Heartbeat = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The driver: feeds the [`Monitor`] what happened and the link's facts, and carries out its
/// actions. The PING is sent and awaited here (no task and no timer per PING, so 1,000 idle
/// clients cost little); name lookups and probes run as tasks of the client's tracker.
async fn run(watched: Watched, cancel: CancellationToken, tasks: TaskTracker) {
    let Watched {
        link: parts,
        timeouts,
        stalled,
        connector,
    } = watched;
    let config = Arc::clone(&parts.config);
    let mut monitor = Monitor::new(&config.health, config.command.deadline, Instant::now());
    let tick = monitor.tick();
    let mut next_look = Instant::now() + tick;
    let sleep = tokio::time::sleep_until(next_look);
    let cancelled = cancel.cancelled();
    tokio::pin!(sleep, cancelled);
    let mut ping: Option<Heartbeat> = None;
    let mut probe: Option<JoinHandle<Verdict>> = None;
    let mut name_look: Option<JoinHandle<probe::Name>> = None;
    loop {
        sleep.as_mut().reset(next_look);
        let news = tokio::select! {
            () = &mut cancelled => break,
            () = &mut sleep => News::Timer,
            () = async { ping.as_mut().expect("guarded").as_mut().await }, if ping.is_some() => {
                ping = None;
                News::PingAnswered
            }
            joined = async { probe.as_mut().expect("guarded").await }, if probe.is_some() => {
                probe = None;
                News::ProbeEnded(joined.ok())
            }
            joined = async { name_look.as_mut().expect("guarded").await }, if name_look.is_some() => {
                name_look = None;
                News::NameLooked(joined.ok())
            }
        };
        let now = Instant::now();
        let link = parts.current();
        let facts = link.as_ref().map(|link| LinkFacts {
            generation: link.generation,
            in_flight: link.activity.in_flight(),
            stalled_for: link.activity.stalled_for(now),
            last_traffic: link.activity.last_traffic(),
            read_stall: timeouts.read_stall(),
            address: link.address.tcp(),
            alert: timeouts.alert(now),
        });
        let plan = monitor.step(news, facts.as_ref(), now);
        next_look = plan.next_look.unwrap_or(now + tick);
        for action in plan.actions {
            let Some(link) = &link else {
                // Without a link the only action is dropping the PING.
                ping = None;
                continue;
            };
            match action {
                Action::Ping { .. } => ping = Some(heartbeat(link)),
                Action::DropPing => ping = None,
                Action::LookAtName => {
                    let (config, link, cancel) =
                        (Arc::clone(&config), Arc::clone(link), cancel.clone());
                    name_look = Some(tasks.spawn(async move {
                        tokio::select! {
                            name = probe::look_at_name(&config, &link) => name,
                            () = cancel.cancelled() => probe::Name::Silent,
                        }
                    }));
                }
                Action::Probe { stalled_for } => {
                    parts.emitter.emit(Event::HeartbeatMissed {
                        generation: link.generation,
                        stalled_for,
                    });
                    let (connector, config, link, cancel) = (
                        connector.clone(),
                        Arc::clone(&config),
                        Arc::clone(link),
                        cancel.clone(),
                    );
                    probe = Some(tasks.spawn(async move {
                        tokio::select! {
                            verdict = probe::judge(&connector, &config, &link) => verdict,
                            () = cancel.cancelled() => Verdict::Unknown("client shut down".into()),
                        }
                    }));
                }
                Action::AbandonProbe => {
                    if let Some(stale) = probe.take() {
                        stale.abort();
                    }
                }
                Action::AbandonNameLook => {
                    if let Some(stale) = name_look.take() {
                        stale.abort();
                    }
                }
                Action::Tell(verdict) => {
                    debug!(generation = link.generation, ?verdict, "verdict");
                    parts.emitter.emit(Event::ProbeVerdict {
                        generation: link.generation,
                        verdict,
                    });
                }
                Action::ReportDead(reason) => {
                    warn!(generation = link.generation, %reason, "link judged dead");
                    parts
                        .reporter
                        .link_lost(link.generation, DisconnectReason::Dead(reason));
                }
                Action::ReportMoved(reason) => {
                    info!(
                        generation = link.generation,
                        %reason,
                        "name moved; replacing the link, made before broken"
                    );
                    parts.reporter.replace(
                        link.generation,
                        Target::Configured,
                        DisconnectReason::NameMoved(reason),
                    );
                }
                Action::WakeStallWaiters => {
                    if parts.is_cluster_node() {
                        stalled.notify_waiters();
                    }
                }
            }
        }
    }
    for task in [
        probe.map(|p| p.abort_handle()),
        name_look.map(|n| n.abort_handle()),
    ]
    .into_iter()
    .flatten()
    {
        task.abort();
    }
}

/// A `PING` on an idle link. It counts as in flight until its reply, so the watchdog judges it
/// like any command.
fn heartbeat(link: &Arc<Link>) -> Heartbeat {
    let in_flight = link.activity.begin_owned();
    let mut connection = link.connection.clone();
    Box::pin(async move {
        let reply = connection.send_packed_command(&redis::cmd("PING")).await;
        if !matches!(reply, Ok(Value::SimpleString(_) | Value::Okay)) {
            debug!(?reply, "heartbeat PING failed");
        }
        drop(in_flight);
    })
}
