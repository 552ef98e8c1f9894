//! The supervisor's handle: what every other part reads the link from and reports through.
//!
//! # Behaviour
//! - [`Handle::published`] is the link to use and the state to report, as the supervisor last
//!   published them; [`Handle::current`] reads its link without a lock.
//! - [`Handle::reporter`] asks the supervisor for a new link (see [`Reporter`]).
//! - The force-reconnect bookkeeping: [`Handle::record_error`] and [`Handle::record_success`]
//!   feed the [`ForcePolicy`]; when it fires, the link is reported lost and
//!   [`Event::ForcedReconnect`] is emitted. Successes outside an error spell touch no lock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use tokio::time::Instant;

use super::force::ForcePolicy;
use super::{FastLink, Published, Reporter};
use crate::config::Config;
use crate::emitter::Emitter;
use crate::event::{DisconnectReason, Event};

/// Shared by every clone of a client.
pub(crate) struct Handle {
    pub(crate) published: watch::Receiver<Published>,
    /// The link of `published`, read without a lock.
    fast: FastLink,
    pub(crate) reporter: Reporter,
    force: Mutex<ForcePolicy>,
    is_in_error_spell: AtomicBool,
    emitter: Emitter,
}

impl Handle {
    pub(crate) fn new(
        config: &Config,
        published: watch::Receiver<Published>,
        fast: FastLink,
        reporter: Reporter,
        emitter: Emitter,
    ) -> Self {
        Self {
            published,
            fast,
            reporter,
            force: Mutex::new(ForcePolicy::new(
                config.reconnect.force_after_errors_for,
                config.reconnect.force_min_interval,
            )),
            is_in_error_spell: AtomicBool::new(false),
            emitter,
        }
    }

    /// The published link, if one serves.
    pub(crate) fn current(&self) -> Option<std::sync::Arc<crate::connect::Link>> {
        self.fast.load_full()
    }

    /// A command succeeded: ends an error spell, if one is open.
    pub(crate) fn record_success(&self) {
        if self.is_in_error_spell.load(Ordering::Relaxed) {
            self.force
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .on_success();
            self.is_in_error_spell.store(false, Ordering::Relaxed);
        }
    }

    /// A command on the link of `generation` failed; forces a reconnect when the policy says so.
    pub(crate) fn record_error(&self, generation: u64) {
        let mut force = self.force.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(errors_for) = force.on_error(Instant::now()) {
            tracing::warn!(generation, ?errors_for, "forcing a reconnect");
            self.emitter.emit(Event::ForcedReconnect {
                generation,
                errors_for,
            });
            self.reporter
                .link_lost(generation, DisconnectReason::Forced);
        }
        self.is_in_error_spell
            .store(force.is_in_spell(), Ordering::Relaxed);
    }
}
