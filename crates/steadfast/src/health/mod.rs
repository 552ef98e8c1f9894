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
//! - **Probe: the verdict.** A fresh connection, dialled in this task (never in a caller's path,
//!   one at a time, backed off from `read_stall` doubling to 30 s while the link stays stalled),
//!   answers. It dials the name's addresses with the stalled link's own address last (and the
//!   others staggered, as every dial: [`connect::dial`](crate::connect)), so a name that lists a
//!   dead address beside a live one is judged by the live one. Then:
//!   - the name now resolves elsewhere (the old address is not in the answer) ->
//!     [`Verdict::Dead`], without a probe;
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
//! # Why a probe and not a timeout
//! From the client, a server busy with a slow command (`DEBUG SLEEP 3`, a big `KEYS`), a blocked
//! `BLPOP` and a host that vanished look the same: nothing comes back. Dropping a link to a slow
//! server gains nothing and turns every write in flight into an ambiguous outcome, so only a
//! second opinion from a fresh connection may condemn a link. A server blocked by a slow command
//! cannot answer the probe's handshake either, which keeps the verdict at `Unknown`.

pub(crate) mod probe;

use std::sync::Weak;
use std::time::Duration;

use redis::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::backoff::{Backoff, Jitter};
use crate::connect::Connector;
use crate::event::{DisconnectReason, Event};
use crate::shared::Shared;

pub use crate::verdict::Verdict;

const PROBE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Starts the monitor; it ends when `cancel` fires or the client is gone.
pub(crate) fn spawn(
    shared: Weak<Shared>,
    connector: Connector,
    cancel: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) {
    let tracker = tasks.clone();
    tasks.spawn(run(shared, connector, cancel, tracker));
}

async fn run(
    shared: Weak<Shared>,
    connector: Connector,
    cancel: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
) {
    let Some(config) = shared.upgrade().map(|s| std::sync::Arc::clone(&s.config)) else {
        return;
    };
    let health = config.health.clone();
    let tick = (health.ping_interval.min(health.read_stall) / 10).max(Duration::from_millis(20));
    // Suspect links are looked at every tick, busy ones when they could first become suspect,
    // idle ones when their heartbeat is due. A stall is measured from the first command in
    // flight, not from the look, so a command that starts while the monitor sleeps is still
    // judged within read_stall of being sent (plus one tick).
    let mut next_look = Instant::now() + tick;
    let sleep = tokio::time::sleep_until(next_look);
    let cancelled = cancel.cancelled();
    tokio::pin!(sleep, cancelled);
    // The heartbeat PING in flight, driven here: no task and no timer per PING, so 1,000 idle
    // clients cost little. It counts as in flight, so the watchdog judges it like any command.
    let mut ping: Option<Heartbeat> = None;
    let mut watched: u64 = 0;
    let mut probe: Option<tokio::task::JoinHandle<Verdict>> = None;
    let mut name_check: Option<tokio::task::JoinHandle<probe::Name>> = None;
    // Every address the name has listed since this link was made: a new one (a promoted
    // replica added beside the old primary) restarts a probe that may be stuck on the old.
    let mut listed: Vec<std::net::SocketAddr> = Vec::new();
    // Between probes of a link that stays stalled: read_stall, doubling to 30 s; one monitor
    // per client probes, at moments set by its own stall, so no jitter.
    let mut probe_backoff = Backoff::new(health.read_stall, PROBE_BACKOFF_MAX, Jitter::None, 0);
    let mut next_probe_at = Instant::now();
    // The name is looked at once per tick: a lookup that answers at once (an IP address, a
    // cached name) must not turn the loop into a spin.
    let mut next_name_check_at = Instant::now();
    loop {
        sleep.as_mut().reset(next_look);
        let verdict = tokio::select! {
            () = &mut cancelled => break,
            () = &mut sleep => None,
            () = async { ping.as_mut().expect("guarded").reply.as_mut().await }, if ping.is_some() => {
                ping = None;
                None
            }
            joined = async { probe.as_mut().expect("guarded").await }, if probe.is_some() => {
                probe = None;
                joined.ok()
            }
            joined = async { name_check.as_mut().expect("guarded").await }, if name_check.is_some() => {
                name_check = None;
                match joined {
                    Ok(probe::Name::Moved(reason)) => Some(Verdict::Dead(reason)),
                    Ok(probe::Name::Lists(addresses)) => {
                        let mut is_new = false;
                        for address in addresses {
                            if !listed.contains(&address) {
                                listed.push(address);
                                is_new = true;
                            }
                        }
                        if is_new {
                            // Judge again at once, with the new address to dial.
                            if let Some(stale) = probe.take() {
                                stale.abort();
                            }
                            next_probe_at = Instant::now();
                        }
                        None
                    }
                    Ok(probe::Name::Silent) | Err(_) => None,
                }
            }
        };
        let Some(shared) = shared.upgrade() else {
            break;
        };
        let now = Instant::now();
        next_look = now + tick;
        let Some(link) = shared.link.current() else {
            ping = None;
            continue;
        };
        if ping
            .as_ref()
            .is_some_and(|p| p.generation != link.generation || now >= p.deadline)
        {
            // The link was replaced, or the PING outlived a command's deadline: give it up
            // (the watchdog has judged the stall meanwhile).
            ping = None;
        }
        if probe.is_none() && name_check.is_none() {
            let due = if link.activity.in_flight() == 0 {
                // Idle: nothing can stall; wake when the heartbeat is due.
                link.activity.last_traffic() + health.ping_interval
            } else {
                // Busy: it can first become suspect read_stall after its last progress.
                now + shared
                    .timeouts
                    .read_stall()
                    .saturating_sub(link.activity.stalled_for(now))
            };
            // Never longer than read_stall: a command may start, or a relaxed threshold end,
            // while the monitor sleeps. Never sooner than a tick: a suspect link is looked at
            // every tick.
            next_look = due.min(now + health.read_stall).max(now + tick);
        }
        if link.generation != watched {
            watched = link.generation;
            listed = link.address.tcp().into_iter().collect();
            probe_backoff.reset();
            next_probe_at = now;
            for stale in [
                probe.take().map(|p| p.abort_handle()),
                name_check.take().map(|c| c.abort_handle()),
            ]
            .into_iter()
            .flatten()
            {
                stale.abort();
            }
            continue;
        }
        if let Some(verdict) = verdict {
            debug!(generation = link.generation, ?verdict, "verdict");
            shared.emitter.emit(Event::ProbeVerdict {
                generation: link.generation,
                verdict: verdict.clone(),
            });
            if let Verdict::Dead(reason) = verdict {
                warn!(generation = link.generation, %reason, "link judged dead");
                shared
                    .link
                    .reporter
                    .link_lost(link.generation, DisconnectReason::Dead(reason));
                continue;
            }
            next_probe_at = now + probe_backoff.next().unwrap_or(PROBE_BACKOFF_MAX);
        }
        let stalled_for = link.activity.stalled_for(now);
        if stalled_for >= shared.timeouts.read_stall() {
            if shared.is_cluster_node() {
                shared.stalled.notify_waiters();
            }
            // Suspect: look at the name on every tick (cheap), probe with backoff (a connection).
            if name_check.is_none() && now >= next_name_check_at {
                next_name_check_at = now + tick;
                let (config, link, cancel) =
                    (std::sync::Arc::clone(&config), link.clone(), cancel.clone());
                name_check = Some(tasks.spawn(async move {
                    tokio::select! {
                        name = probe::look_at_name(&config, &link) => name,
                        () = cancel.cancelled() => probe::Name::Silent,
                    }
                }));
            }
            if probe.is_none() && now >= next_probe_at {
                shared.emitter.emit(Event::HeartbeatMissed {
                    generation: link.generation,
                    stalled_for,
                });
                let (connector, config, cancel) = (
                    connector.clone(),
                    std::sync::Arc::clone(&config),
                    cancel.clone(),
                );
                probe = Some(tasks.spawn(async move {
                    tokio::select! {
                        verdict = probe::judge(&connector, &config, &link) => verdict,
                        () = cancel.cancelled() => Verdict::Unknown("client shut down".into()),
                    }
                }));
            }
        } else if stalled_for.is_zero() {
            if link.activity.in_flight() == 0 {
                probe_backoff.reset();
            }
            let is_idle = link.activity.in_flight() == 0
                && now.saturating_duration_since(link.activity.last_traffic())
                    >= health.ping_interval;
            if is_idle && ping.is_none() {
                ping = Some(Heartbeat::send(&link, now + config.command.deadline));
            }
        }
    }
    if let Some(task) = probe {
        task.abort();
    }
    if let Some(task) = name_check {
        task.abort();
    }
}

/// A PING on an idle link. It counts as in flight until its reply, so the watchdog judges it.
struct Heartbeat {
    generation: u64,
    deadline: Instant,
    reply: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl Heartbeat {
    fn send(link: &std::sync::Arc<crate::connect::Link>, deadline: Instant) -> Self {
        let in_flight = link.activity.begin();
        let mut connection = link.connection.clone();
        let reply = Box::pin(async move {
            let reply = connection.send_packed_command(&redis::cmd("PING")).await;
            if !matches!(reply, Ok(Value::SimpleString(_) | Value::Okay)) {
                debug!(?reply, "heartbeat PING failed");
            }
            drop(in_flight);
        });
        Self {
            generation: link.generation,
            deadline,
            reply,
        }
    }
}
