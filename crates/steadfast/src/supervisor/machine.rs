//! The supervisor's state machine: pure, no sockets, no clocks.
//!
//! ```text
//!              start
//!                |
//!                v        dial failed          delay elapsed
//!   +------> Dialling ------------------> BackingOff ----------+
//!   |            |  ^                                          |
//!   |  dial ok   |  +------------------------------------------+
//!   |            v
//!   +------- Connected{generation}     (link lost / dead / READONLY / forced,
//!  link lost                            for the current generation only)
//!
//!   Connected{old} --planned replace--> Replacing{old, new}: new commands held, old link kept
//!   Replacing --hold limit--> Replacing: commands released to the old link, the dial goes on
//!   Replacing --dial ok--> Connected{new}: publish new, drain then close old
//!   Replacing --dial failed--> Connected{old}: release the held commands to the old link
//!   Replacing --old link lost--> Dialling{new}
//!
//!   any state --shutdown--> Stopped (terminal)
//! ```
//!
//! # Behaviour
//! - Single flight: a loss reported for a generation that is not the current one is ignored, so
//!   a hundred commands that all saw the same link die cause one dial.
//! - The first dial after a lost link starts at once; later ones wait: briefly after a refusal,
//!   an unanswered attempt (nothing was asked of any server) or a server that answered "not
//!   ready" (`LOADING` ...: there, and cheap to ask again), exponentially after an attempt that
//!   reached a server and failed otherwise.
//! - It never gives up: there is no path to `Stopped` but shutdown.
//! - Every replaced link is closed (an explicit [`Action::Close`]); one whose server still
//!   answers (it refused a write as a replica, or the link is outdated by a state command) is
//!   retired instead ([`Action::Retire`]): no new command goes to it, and it is closed once the
//!   commands already on it are answered.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::connect::{FailureClass, Target};
use crate::event::{DisconnectReason, Event};

/// Where the supervisor stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    Dialling {
        generation: u64,
        attempt: u32,
    },
    BackingOff {
        attempt: u32,
    },
    Connected {
        generation: u64,
    },
    /// A planned move: the old link still exists, new commands are held, the new one is dialled.
    Replacing {
        old: u64,
        new: u64,
        /// Why the replacement was asked for: told when the old link goes.
        reason: DisconnectReason,
    },
    Stopped,
}

/// What happened.
#[derive(Debug, Clone)]
pub(crate) enum Input {
    DialSucceeded {
        generation: u64,
    },
    DialFailed {
        class: FailureClass,
        error: String,
    },
    BackoffElapsed,
    LinkLost {
        generation: u64,
        reason: DisconnectReason,
    },
    /// Replace this link, making the new one before breaking the old (planned maintenance, a
    /// name that moved away from a server that still answers); `reason` is told when the old
    /// one goes.
    Replace {
        generation: u64,
        target: Target,
        reason: DisconnectReason,
    },
    /// Commands were held for a planned replacement for as long as they may be.
    HoldExpired {
        generation: u64,
    },
    Shutdown,
}

/// What the task must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Start dialling; the link gets this generation.
    Dial {
        generation: u64,
        target: Target,
    },
    /// Stop handing out the current link: new commands wait, for at most the hold limit, after
    /// which [`Input::HoldExpired`] for the link being dialled comes.
    Hold {
        generation: u64,
    },
    /// Hand out the current link again (a planned replacement failed).
    Release,
    /// Close the link of this generation once its commands in flight are answered; at once if
    /// `unless_silent` and its server does not complete a fresh handshake (the server a name
    /// moved away from may be dead).
    Drain {
        generation: u64,
        unless_silent: bool,
    },
    /// Wait, then feed [`Input::BackoffElapsed`].
    Wait(Duration),
    /// Serve commands on the dialled link.
    Publish {
        generation: u64,
    },
    /// Close the link of this generation and stop serving it.
    Close {
        generation: u64,
    },
    /// Stop serving the link of this generation, and close it once its commands in flight are
    /// answered (bounded): its server answers (it refused a write as a replica), so each of
    /// them gets its reply, a refusal to send again or a read's answer, instead of an unknown
    /// outcome.
    Retire {
        generation: u64,
    },
    /// Abandon a dial in progress.
    CancelDial,
    Emit(Event),
}

#[derive(Debug)]
pub(crate) struct Machine {
    state: State,
    last_generation: u64,
    backoff: Backoff,
}

impl Machine {
    /// A machine that dials at once.
    pub(crate) fn start(backoff: Backoff) -> (Self, Vec<Action>) {
        let machine = Self {
            state: State::Dialling {
                generation: 1,
                attempt: 1,
            },
            last_generation: 1,
            backoff,
        };
        (
            machine,
            vec![Action::Dial {
                generation: 1,
                target: Target::Configured,
            }],
        )
    }

    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    pub(crate) fn on(&mut self, input: Input) -> Vec<Action> {
        let state = std::mem::replace(&mut self.state, State::Stopped);
        let (next, actions) = self.transition(state, input);
        self.state = next;
        actions
    }

    fn next_dial(&mut self, attempt: u32) -> (State, Vec<Action>) {
        self.last_generation += 1;
        let generation = self.last_generation;
        (
            State::Dialling {
                generation,
                attempt,
            },
            vec![Action::Dial {
                generation,
                target: Target::Configured,
            }],
        )
    }

    fn transition(&mut self, state: State, input: Input) -> (State, Vec<Action>) {
        match (state, input) {
            (State::Stopped, _) => (State::Stopped, vec![]),
            (State::Connected { generation }, Input::Shutdown) => (
                State::Stopped,
                vec![
                    Action::Close { generation },
                    Action::Emit(Event::Disconnected {
                        generation,
                        reason: DisconnectReason::Shutdown,
                    }),
                ],
            ),
            (State::Dialling { .. }, Input::Shutdown) => (State::Stopped, vec![Action::CancelDial]),
            (State::Replacing { old, .. }, Input::Shutdown) => (
                State::Stopped,
                vec![
                    Action::CancelDial,
                    Action::Close { generation: old },
                    Action::Emit(Event::Disconnected {
                        generation: old,
                        reason: DisconnectReason::Shutdown,
                    }),
                ],
            ),
            (_, Input::Shutdown) => (State::Stopped, vec![]),

            (
                State::Dialling { generation, .. },
                Input::DialSucceeded {
                    generation: dialled,
                },
            ) if generation == dialled => {
                self.backoff.reset();
                (
                    State::Connected { generation },
                    vec![Action::Publish { generation }],
                )
            }
            (State::Dialling { attempt, .. }, Input::DialFailed { class, error }) => {
                let delay = match class {
                    FailureClass::Refused | FailureClass::Unanswered | FailureClass::NotReady => {
                        self.backoff.quick()
                    }
                    FailureClass::Rejected => self.backoff.next().unwrap_or_default(),
                };
                (
                    State::BackingOff { attempt },
                    vec![
                        Action::Emit(Event::ReconnectScheduled {
                            attempt,
                            delay,
                            error,
                        }),
                        Action::Wait(delay),
                    ],
                )
            }
            (State::BackingOff { attempt }, Input::BackoffElapsed) => {
                self.next_dial(attempt.saturating_add(1))
            }
            (
                State::Connected { generation },
                Input::LinkLost {
                    generation: lost,
                    reason,
                },
            ) if generation == lost => {
                let (next, dial) = self.next_dial(1);
                let mut actions = vec![let_go(generation, &reason)];
                if reason == DisconnectReason::ReadOnly {
                    // The server behind the link refused a write: it is a replica now.
                    actions.push(Action::Emit(Event::RoleChanged {
                        generation,
                        role: crate::event::Role::Replica,
                    }));
                }
                actions.push(Action::Emit(Event::Disconnected { generation, reason }));
                actions.extend(dial);
                (next, actions)
            }
            (
                State::Connected { generation },
                Input::Replace {
                    generation: old,
                    target,
                    reason,
                },
            ) if generation == old => {
                self.last_generation += 1;
                let new = self.last_generation;
                (
                    State::Replacing { old, new, reason },
                    vec![
                        Action::Hold { generation: new },
                        Action::Dial {
                            generation: new,
                            target,
                        },
                    ],
                )
            }
            (State::Replacing { old, new, reason }, Input::DialSucceeded { generation })
                if generation == new =>
            {
                self.backoff.reset();
                let unless_silent = matches!(reason, DisconnectReason::NameMoved(_));
                (
                    State::Connected { generation: new },
                    vec![
                        Action::Publish { generation: new },
                        Action::Drain {
                            generation: old,
                            unless_silent,
                        },
                        Action::Emit(Event::Disconnected {
                            generation: old,
                            reason,
                        }),
                    ],
                )
            }
            (State::Replacing { old, new, reason }, Input::HoldExpired { generation })
                if generation == new =>
            {
                // The old link still answers: let commands use it while the dial goes on.
                (State::Replacing { old, new, reason }, vec![Action::Release])
            }
            (State::Replacing { old, reason, .. }, Input::DialFailed { error, .. }) => {
                let what = match reason {
                    DisconnectReason::NameMoved(_) => "replacement at the moved name failed",
                    _ => "planned move abandoned",
                };
                (
                    State::Connected { generation: old },
                    vec![
                        Action::Release,
                        Action::Emit(Event::ReconnectScheduled {
                            attempt: 1,
                            delay: std::time::Duration::ZERO,
                            error: format!("{what}, old link kept: {error}"),
                        }),
                    ],
                )
            }
            (State::Replacing { old, new, .. }, Input::LinkLost { generation, reason })
                if generation == old =>
            {
                (
                    State::Dialling {
                        generation: new,
                        attempt: 1,
                    },
                    vec![
                        let_go(old, &reason),
                        Action::Emit(Event::Disconnected {
                            generation: old,
                            reason,
                        }),
                    ],
                )
            }
            // Stale or duplicate reports: a link already replaced, a dial result from the past.
            (state, _) => (state, vec![]),
        }
    }
}

/// How a lost link of `generation` is let go: retired where its server still answers (it
/// refused a write as a replica, or the link only lacks a state command the caller sent on
/// another: the replies of the commands on it are on their way), closed at once otherwise.
fn let_go(generation: u64, reason: &DisconnectReason) -> Action {
    if matches!(
        reason,
        DisconnectReason::ReadOnly | DisconnectReason::Outdated
    ) {
        Action::Retire { generation }
    } else {
        Action::Close { generation }
    }
}

#[cfg(test)]
mod tests;
