//! The health monitor's decisions, as a pure machine: fed what happened and the link's facts
//! (time, commands in flight, how long it has read nothing, its last traffic, the read-stall
//! threshold in force), it answers what to do (PING, look at the name, probe, abandon a probe,
//! tell a verdict, report the link dead) and when to look next. It owns no socket, task or
//! timer, so its tests drive it through time without any (below); the driver
//! ([`super::run`]) carries its actions out.
//!
//! "Slow is not dead" lives here: nothing but a probe's [`Verdict::Dead`] ever reports a link
//! dead; a name that no longer lists the link's address has it replaced, made before broken
//! (the supervisor's drain decides whether its commands in flight may finish there).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::probe::Name;
use crate::backoff::{Backoff, Jitter};
use crate::config::HealthConfig;
use crate::shared::timeouts::Alert;
use crate::verdict::Verdict;

/// The longest pause between probes of a link that stays stalled.
pub(super) const PROBE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What woke the monitor.
#[derive(Debug)]
pub(super) enum News {
    /// Its timer: time to look.
    Timer,
    /// The heartbeat PING got its reply (or failed).
    PingAnswered,
    /// The probe ended: its verdict, `None` if its task did not finish.
    ProbeEnded(Option<Verdict>),
    /// The name lookup ended: what the name says, `None` if its task did not finish.
    NameLooked(Option<Name>),
}

/// The current link, as the monitor sees it at one moment.
#[derive(Clone, Copy, Debug)]
pub(super) struct LinkFacts {
    pub(super) generation: u64,
    /// Commands (and the heartbeat PING) waiting for a reply.
    pub(super) in_flight: usize,
    /// How long it has had commands in flight and read nothing.
    pub(super) stalled_for: Duration,
    /// When it last read or wrote.
    pub(super) last_traffic: Instant,
    /// The read-stall threshold in force (relaxed during announced maintenance).
    pub(super) read_stall: Duration,
    /// The link's TCP address, if it has one.
    pub(super) address: Option<SocketAddr>,
    /// Announced maintenance: from its start the link is watched closely.
    pub(super) alert: Option<Alert>,
}

/// What the driver does.
#[derive(Debug, PartialEq)]
pub(super) enum Action {
    /// Send a heartbeat `PING` on the link, given up at `deadline`.
    Ping { deadline: Instant },
    /// Give up the heartbeat `PING` (the link was replaced, or it outlived a deadline).
    DropPing,
    /// Resolve the endpoint's name again.
    LookAtName,
    /// The link is suspect: tell it (`HeartbeatMissed`) and start a probe.
    Probe { stalled_for: Duration },
    /// Abandon the probe under way (the link was replaced, or a new address appeared).
    AbandonProbe,
    /// Abandon the name lookup under way (the link was replaced).
    AbandonNameLook,
    /// Tell the probe's verdict (`ProbeVerdict`).
    Tell(Verdict),
    /// The link is dead: report it lost, with the reason.
    ReportDead(String),
    /// The name moved away from a server that still answers: have the link replaced, made
    /// before broken, its commands in flight left to finish.
    ReportMoved(String),
    /// The link is stalled: wake whoever waits for that (a cluster router's commands).
    WakeStallWaiters,
}

/// The machine's answer to one piece of news.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Plan {
    /// In order.
    pub(super) actions: Vec<Action>,
    /// When to look again, unless news comes sooner. `None`: one tick from now.
    pub(super) next_look: Option<Instant>,
}

/// The health monitor's state for one client.
#[derive(Debug)]
pub(super) struct Monitor {
    ping_interval: Duration,
    /// The configured read-stall threshold: the longest sleep between looks.
    read_stall: Duration,
    command_deadline: Duration,
    /// How often a suspect link is looked at.
    tick: Duration,
    /// The link generation being watched.
    watched: u64,
    /// The heartbeat in flight: its link's generation and when it is given up.
    ping: Option<(u64, Instant)>,
    is_probing: bool,
    is_looking_at_name: bool,
    /// Every address the name has listed since this link was made: a new one (a promoted
    /// replica beside the old primary) restarts a probe that may be stuck on the old.
    listed: Vec<SocketAddr>,
    /// Between probes of a link that stays stalled: read_stall, doubling to 30 s. One monitor
    /// per client, probing at moments set by its own stall: no jitter.
    probe_backoff: Backoff,
    next_probe_at: Instant,
    /// The name is looked at once per tick: a lookup that answers at once (an IP address, a
    /// cached name) must not turn the loop into a spin.
    next_name_look_at: Instant,
}

impl Monitor {
    pub(super) fn new(health: &HealthConfig, command_deadline: Duration, now: Instant) -> Self {
        Self {
            ping_interval: health.ping_interval,
            read_stall: health.read_stall,
            command_deadline,
            tick: tick(health),
            watched: 0,
            ping: None,
            is_probing: false,
            is_looking_at_name: false,
            listed: Vec::new(),
            probe_backoff: Backoff::new(health.read_stall, PROBE_BACKOFF_MAX, Jitter::None, 0),
            next_probe_at: now,
            next_name_look_at: now,
        }
    }

    /// How often a suspect link is looked at.
    pub(super) fn tick(&self) -> Duration {
        self.tick
    }

    /// Takes `news` in, looks at `link` (`None`: no link now) at `now`, and says what to do.
    pub(super) fn step(&mut self, news: News, link: Option<&LinkFacts>, now: Instant) -> Plan {
        let mut plan = Plan::default();
        let verdict = self.hear(news, now, &mut plan);
        let Some(link) = link else {
            if self.ping.take().is_some() {
                plan.actions.push(Action::DropPing);
            }
            return plan;
        };
        if self
            .ping
            .is_some_and(|(generation, deadline)| generation != link.generation || now >= deadline)
        {
            // The link was replaced, or the PING outlived a command's deadline: give it up
            // (the watchdog has judged the stall meanwhile).
            self.ping = None;
            plan.actions.push(Action::DropPing);
        }
        let is_alert = link.alert.is_some_and(|a| a.from <= now);
        let read_stall = if is_alert {
            self.alert_stall()
        } else {
            link.read_stall
        };
        if !self.is_probing && !self.is_looking_at_name {
            plan.next_look = Some(self.next_look(link, read_stall, now));
        }
        if link.generation != self.watched {
            self.watch(link, now, &mut plan);
            return plan;
        }
        if let Some(verdict) = verdict {
            plan.actions.push(Action::Tell(verdict.clone()));
            match verdict {
                Verdict::Dead(reason) => {
                    plan.actions.push(Action::ReportDead(reason));
                    return plan;
                }
                Verdict::Moved(reason) => {
                    // Asked again, if the link stays (its replacement could not be made), only
                    // with the probe's backoff.
                    let next = now + self.probe_backoff.next().unwrap_or(PROBE_BACKOFF_MAX);
                    self.next_probe_at = next;
                    self.next_name_look_at = next;
                    if std::mem::take(&mut self.is_probing) {
                        plan.actions.push(Action::AbandonProbe);
                    }
                    plan.actions.push(Action::ReportMoved(reason));
                    return plan;
                }
                _ => {}
            }
            self.next_probe_at = now + self.probe_backoff.next().unwrap_or(PROBE_BACKOFF_MAX);
        }
        if is_alert {
            self.look_at_name(now, &mut plan);
        }
        if link.stalled_for >= read_stall {
            self.suspect(link, now, &mut plan);
        } else if link.stalled_for.is_zero() {
            if link.in_flight == 0 {
                self.probe_backoff.reset();
            }
            let is_idle = link.in_flight == 0
                && now.saturating_duration_since(link.last_traffic) >= self.ping_interval;
            if is_idle && self.ping.is_none() {
                let deadline = now + self.command_deadline;
                self.ping = Some((link.generation, deadline));
                plan.actions.push(Action::Ping { deadline });
            }
        }
        plan
    }

    /// Takes the news in; a verdict to act on, if it brought one.
    fn hear(&mut self, news: News, now: Instant, plan: &mut Plan) -> Option<Verdict> {
        match news {
            News::Timer => None,
            News::PingAnswered => {
                self.ping = None;
                None
            }
            News::ProbeEnded(verdict) => {
                self.is_probing = false;
                verdict
            }
            News::NameLooked(name) => {
                self.is_looking_at_name = false;
                match name? {
                    Name::Moved(reason) => Some(Verdict::Moved(reason)),
                    Name::Lists(addresses) => {
                        let mut is_new = false;
                        for address in addresses {
                            if !self.listed.contains(&address) {
                                self.listed.push(address);
                                is_new = true;
                            }
                        }
                        if is_new {
                            // Judge again at once, with the new address to dial.
                            if std::mem::take(&mut self.is_probing) {
                                plan.actions.push(Action::AbandonProbe);
                            }
                            self.next_probe_at = now;
                        }
                        None
                    }
                    Name::Silent => None,
                }
            }
        }
    }

    /// When to look at `link` again: an idle one when its heartbeat is due, a busy one when it
    /// could first become suspect (`read_stall` after its last progress); never later than
    /// the configured `read_stall` (a command may start, or a relaxed threshold end, while the
    /// monitor sleeps), never sooner than a tick (a suspect link is looked at every tick).
    /// During an alert every tick; before one, at its start at the latest.
    fn next_look(&self, link: &LinkFacts, read_stall: Duration, now: Instant) -> Instant {
        let due = if link.in_flight == 0 {
            link.last_traffic + self.ping_interval
        } else {
            now + read_stall.saturating_sub(link.stalled_for)
        };
        let due = match link.alert {
            Some(alert) if alert.from <= now => now,
            Some(alert) => due.min(alert.from),
            None => due,
        };
        due.min(now + self.read_stall).max(now + self.tick)
    }

    /// The read-stall threshold during an alert: a quarter of the configured one, at least a
    /// tick. Suspicion only looks and asks (the name, a probe); it never drops a link.
    fn alert_stall(&self) -> Duration {
        (self.read_stall / 4).max(self.tick)
    }

    /// A new link: watch it afresh, abandoning what was under way for the old one.
    fn watch(&mut self, link: &LinkFacts, now: Instant, plan: &mut Plan) {
        self.watched = link.generation;
        self.listed = link.address.into_iter().collect();
        self.probe_backoff.reset();
        self.next_probe_at = now;
        if std::mem::take(&mut self.is_probing) {
            plan.actions.push(Action::AbandonProbe);
        }
        if std::mem::take(&mut self.is_looking_at_name) {
            plan.actions.push(Action::AbandonNameLook);
        }
    }

    /// Resolves the name, unless a lookup is under way or one was started less than a tick ago.
    fn look_at_name(&mut self, now: Instant, plan: &mut Plan) {
        if !self.is_looking_at_name && now >= self.next_name_look_at {
            self.next_name_look_at = now + self.tick;
            self.is_looking_at_name = true;
            plan.actions.push(Action::LookAtName);
        }
    }

    /// A suspect link: look at the name on every tick (cheap), probe with backoff (a
    /// connection).
    fn suspect(&mut self, link: &LinkFacts, now: Instant, plan: &mut Plan) {
        plan.actions.push(Action::WakeStallWaiters);
        self.look_at_name(now, plan);
        if !self.is_probing && now >= self.next_probe_at {
            self.is_probing = true;
            plan.actions.push(Action::Probe {
                stalled_for: link.stalled_for,
            });
        }
    }
}

/// A tenth of the shorter of the heartbeat interval and the read-stall threshold, at least
/// 20 ms.
fn tick(health: &HealthConfig) -> Duration {
    (health.ping_interval.min(health.read_stall) / 10).max(Duration::from_millis(20))
}

#[cfg(test)]
mod tests;
