//! The task that keeps a subscriber's subscriptions on whatever link serves, and passes its
//! messages on.
//!
//! # Behaviour
//! - It reads the subscriber link's push frames and hands messages to the application's
//!   bounded queue without ever waiting for room: a full queue drops the message and counts
//!   it, and a slow-consumer [`Gap`] goes in as soon as there is room again (whether or not
//!   another message comes).
//! - When a new link is published, it first passes on what the old link had delivered, then
//!   makes every wanted subscription on the new link, then puts a [`Gap`] in the stream (from
//!   the old link's last read to the new link's confirmation), so the gap sits exactly between
//!   the old link's messages and the new one's. A first link has nothing to make up for.
//! - A subscription that could not be made again (the new link died too) is tried again on the
//!   next link, or after a short pause while the same link serves; the gap stays open and ends
//!   when it is made.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use redis::PushInfo;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::frames::{self, Frame};
use super::{Delivery, Gap, GapCause, Kind, Wanted};
use crate::connect::Link;
use crate::emitter::Emitter;
use crate::event::Event;
use crate::shared::Shared;

/// The pause before making the subscriptions again on a link that refused or failed it.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(100);

pub(super) struct Follower {
    pub(super) core: Arc<Shared>,
    pub(super) wanted: Arc<Mutex<Wanted>>,
    pub(super) deliver: mpsc::Sender<Delivery>,
    /// The lending client's: gaps are told where the application listens.
    pub(super) emitter: Emitter,
    pub(super) stop: CancellationToken,
    /// Told of subscriptions the server ended unasked (`None`: made again on the next link).
    pub(super) unsolicited: Option<super::Unsolicited>,
    /// When the frame before the one at hand was read: the server ended a subscription after
    /// it had sent that frame, so messages published since may be missing.
    pub(super) last_frame: Mutex<Option<SystemTime>>,
}

/// Subscriptions down since `from`, not yet made again.
struct Open {
    from: SystemTime,
    why: String,
}

pub(super) fn spawn(follower: Follower) {
    let pushes = follower.core.pushes.subscribe();
    let tasks = follower.core.tasks.clone();
    tasks.spawn(follower.run(pushes));
}

/// `at` on the wall clock.
pub(super) fn wall(at: Instant) -> SystemTime {
    SystemTime::now() - Instant::now().saturating_duration_since(at)
}

impl Follower {
    async fn run(self, mut pushes: broadcast::Receiver<PushInfo>) {
        let mut published = self.core.link.published.clone();
        // The link the subscriptions were made on, while it serves.
        let mut serving: Option<Arc<Link>> = None;
        let mut open: Option<Open> = None;
        let mut dropped = Dropped::default();
        loop {
            let retry = match (&serving, &open) {
                (None, Some(_)) => Some(Instant::now() + RESUBSCRIBE_PAUSE),
                _ => None,
            };
            tokio::select! {
                () = self.stop.cancelled() => return,
                changed = published.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = sleep_until(retry) => {}
                // Dropped messages are told as soon as the application makes room, even if
                // nothing else is ever published.
                permit = self.deliver.reserve(), if dropped.since.is_some() => {
                    match permit {
                        Ok(permit) => self.tell_dropped(permit, &mut dropped),
                        Err(_) => return,
                    }
                    continue;
                }
                push = pushes.recv() => {
                    match push {
                        Ok(push) => self.pass_on(&push, &mut dropped),
                        Err(RecvError::Lagged(missed)) => dropped.add(missed),
                        Err(RecvError::Closed) => return,
                    }
                    continue;
                }
            }
            let current = published
                .borrow_and_update()
                .link
                .clone()
                .filter(|l| !l.is_closed());
            if let Some(old) = &serving
                && current.as_ref().map(|l| l.generation) != Some(old.generation)
            {
                // The subscriptions died with the old link: anything published after its last
                // read may be missing. What it delivered goes before the gap.
                if open.is_none() {
                    open = Some(Open {
                        from: wall(old.activity.last_read()),
                        why: format!(
                            "the subscribed link (generation {}) was lost",
                            old.generation
                        ),
                    });
                }
                while let Ok(push) = pushes.try_recv() {
                    self.pass_on(&push, &mut dropped);
                }
                serving = None;
            }
            let Some(link) = current else {
                continue;
            };
            if serving.is_some() {
                continue;
            }
            let wanted = self.snapshot();
            if wanted.is_empty() {
                (serving, open) = (Some(link), None);
                continue;
            }
            if self.resubscribe(&wanted).await {
                serving = Some(link);
                if let Some(gap) = open.take() {
                    self.tell_gap(gap, &wanted, &mut dropped);
                }
            } else if open.is_none() {
                open = Some(Open {
                    from: SystemTime::now(),
                    why: "the subscriptions could not be made on a new link".into(),
                });
            }
        }
    }

    fn snapshot(&self) -> Vec<(Kind, String)> {
        let wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        wanted.0.iter().cloned().collect()
    }

    /// Makes every subscription in `wanted` on the link now serving.
    async fn resubscribe(&self, wanted: &[(Kind, String)]) -> bool {
        for kind in [Kind::Channel, Kind::Pattern, Kind::Shard] {
            let names: Vec<String> = wanted
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, n)| n.clone())
                .collect();
            if names.is_empty() {
                continue;
            }
            if let Err(error) = super::send(&self.core, kind.subscribe(), &names).await {
                tracing::warn!(%error, "subscriptions not made again yet");
                return false;
            }
        }
        true
    }

    fn tell_gap(&self, open: Open, wanted: &[(Kind, String)], dropped: &mut Dropped) {
        let gap = gap_of(wanted, open.from, GapCause::LinkLost(open.why.clone()));
        let lasted = gap.until.duration_since(gap.from).unwrap_or_default();
        tracing::info!(?gap, "subscriptions made again after a gap");
        if self.deliver.try_send(Delivery::Gap(gap)).is_err() {
            // No room: the application is behind. Told once there is room: as this lost
            // link when nothing was dropped, else within the slow-consumer gap, which then
            // starts no later than this one, so the stream still marks it.
            tracing::warn!("subscriber queue full: the gap is told with the dropped messages");
            dropped.cover(open.from, open.why);
        }
        // After the attempt: whoever acts on the event finds the gap queued or folded in.
        self.emitter.emit(Event::SubscriptionGap {
            subscriptions: wanted.len(),
            lasted,
            is_slow_consumer: false,
        });
    }

    /// Hands a message to the application, or counts it dropped.
    fn pass_on(&self, push: &PushInfo, dropped: &mut Dropped) {
        let before = self
            .last_frame
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(SystemTime::now());
        let message = match frames::read(push) {
            Frame::Message(message) => message,
            Frame::Unsubscribed { kind, channel } => {
                return self.unsubscribed(kind, channel, before.unwrap_or_else(SystemTime::now));
            }
            Frame::Other => return,
        };
        if dropped.since.is_some() {
            match self.deliver.try_reserve() {
                Ok(permit) => self.tell_dropped(permit, dropped),
                Err(_) => {
                    dropped.add(1);
                    return;
                }
            }
        }
        if self.deliver.try_send(Delivery::Message(message)).is_err() {
            dropped.add(1);
        }
    }
}

impl Follower {
    /// Puts the slow-consumer gap for what was dropped in the room `permit` holds.
    fn tell_dropped(&self, permit: mpsc::Permit<'_, Delivery>, dropped: &mut Dropped) {
        let Some(since) = dropped.since else {
            return;
        };
        let wanted = self.snapshot();
        // A lost link folded in with nothing dropped is told as what it was.
        let (cause, is_slow_consumer) = match dropped.lost_link.take() {
            Some(why) if dropped.count == 0 => (GapCause::LinkLost(why), false),
            _ => (
                GapCause::SlowConsumer {
                    dropped: dropped.count,
                },
                true,
            ),
        };
        let gap = gap_of(&wanted, since, cause);
        permit.send(Delivery::Gap(gap));
        // A lost link folded in alone had its event when it was lost.
        if is_slow_consumer {
            self.emitter.emit(Event::SubscriptionGap {
                subscriptions: wanted.len(),
                lasted: since.elapsed().unwrap_or_default(),
                is_slow_consumer,
            });
        }
        *dropped = Dropped::default();
    }

    /// The server ended the subscription of `kind` to `channel`: unasked if it is still
    /// wanted (a shard channel whose slot moved away). It is handed to whoever places
    /// subscriptions (the cluster subscriber), and the link is replaced: the server's
    /// unsolicited confirmation may have been taken as the reply to a command in flight.
    fn unsubscribed(&self, kind: Kind, channel: String, since: SystemTime) {
        let Some(unsolicited) = &self.unsolicited else {
            return;
        };
        let key = (kind, channel);
        let was_wanted = self
            .wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .remove(&key);
        if !was_wanted {
            return;
        }
        tracing::info!(channel = %key.1, "the server ended a subscription: placed again");
        let _ = unsolicited.send((key.0, key.1, since));
        if let Some(link) = self.core.link.current() {
            link.activity.mark_closed();
            self.core.link.reporter.link_lost(
                link.generation,
                crate::event::DisconnectReason::Closed(
                    "the server ended a subscription unasked".into(),
                ),
            );
        }
    }
}

/// Messages dropped for a slow consumer since the last slow-consumer gap, and a lost link's
/// gap that found no room in the queue either.
#[derive(Default)]
struct Dropped {
    count: u64,
    since: Option<SystemTime>,
    /// Why the link was lost, when its gap is folded in here.
    lost_link: Option<String>,
}

impl Dropped {
    fn add(&mut self, count: u64) {
        self.count += count;
        self.since.get_or_insert_with(SystemTime::now);
    }

    /// Widens the gap to be told so it starts no later than `from`, where a link was lost
    /// (`why`).
    fn cover(&mut self, from: SystemTime, why: String) {
        self.since = Some(self.since.map_or(from, |since| since.min(from)));
        self.lost_link.get_or_insert(why);
    }
}

/// A gap over `wanted`, from `from` until now.
fn gap_of(wanted: &[(Kind, String)], from: SystemTime, cause: GapCause) -> Gap {
    let names = |kind: Kind| -> Vec<String> {
        wanted
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| n.clone())
            .collect()
    };
    Gap {
        channels: names(Kind::Channel),
        patterns: names(Kind::Pattern),
        shard_channels: names(Kind::Shard),
        from,
        until: SystemTime::now(),
        cause,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
