//! The one way anything tells the application what happened.
//!
//! # Behaviour
//! - [`Emitter::emit`] records the event's metrics, logs the events worth a line of their own
//!   (a lost link, a scheduled reconnect), and broadcasts it to every receiver; a receiver that
//!   is gone or lagging costs the sender nothing.
//! - Cheap to clone: every part of a client holds the same channel.

use tokio::sync::broadcast;
use tracing::{debug, info};

use crate::event::Event;

/// Events a slow receiver may fall behind by before it is told it lagged. Events are rare (a
/// handful per failover), and a broadcast channel allocates every slot up front, per client.
const EVENT_CAPACITY: usize = 128;

/// Metrics, tracing and the broadcast to the application, in one call.
#[derive(Clone, Debug)]
pub(crate) struct Emitter {
    events: broadcast::Sender<Event>,
    /// A dedicated link's: its comings and goings are logged at debug level only, never
    /// counted nor broadcast (the `steadfast_link_up` gauge is the shared link's).
    is_quiet: bool,
}

impl Emitter {
    /// A new channel, and a receiver subscribed before anything is emitted.
    pub(crate) fn new() -> (Self, broadcast::Receiver<Event>) {
        let (events, first) = broadcast::channel(EVENT_CAPACITY);
        (
            Self {
                events,
                is_quiet: false,
            },
            first,
        )
    }

    /// An emitter for a dedicated link: see `is_quiet`.
    pub(crate) fn quiet() -> Self {
        let (events, _) = broadcast::channel(1);
        Self {
            events,
            is_quiet: true,
        }
    }

    pub(crate) fn emit(&self, event: Event) {
        if self.is_quiet {
            debug!(?event, "dedicated link");
            return;
        }
        match &event {
            Event::Disconnected { generation, reason } => {
                info!(generation, ?reason, "disconnected");
            }
            Event::ReconnectScheduled {
                attempt,
                delay,
                error,
            } => debug!(attempt, ?delay, %error, "reconnect scheduled"),
            _ => {}
        }
        crate::metrics::record(&event);
        let _ = self.events.send(event);
    }

    /// Broadcasts an event another emitter has already recorded (a cluster node's, passed on
    /// by the cluster client): no second count in the metrics, no second log line.
    pub(crate) fn forward(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// A receiver of every later event.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DisconnectReason;

    #[test]
    fn an_emitted_event_reaches_every_receiver_subscribed_before_it() {
        let (emitter, mut first) = Emitter::new();
        let mut second = emitter.subscribe();
        emitter.emit(Event::Disconnected {
            generation: 3,
            reason: DisconnectReason::Forced,
        });
        for receiver in [&mut first, &mut second] {
            assert!(matches!(
                receiver.try_recv(),
                Ok(Event::Disconnected { generation: 3, .. })
            ));
        }
    }

    #[test]
    fn an_event_emitted_with_no_receiver_is_dropped_and_later_ones_still_arrive() {
        let (emitter, first) = Emitter::new();
        drop(first);
        emitter.emit(Event::Relaxed { is_relaxed: true });
        let mut later = emitter.subscribe();
        emitter.emit(Event::Relaxed { is_relaxed: false });
        assert!(matches!(
            later.try_recv(),
            Ok(Event::Relaxed { is_relaxed: false })
        ));
        assert!(later.try_recv().is_err(), "only the later event");
    }
}
