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
//! - Every replaced link is closed (an explicit [`Action::Close`]).

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
    /// Planned maintenance: replace this link, making the new one before breaking the old.
    Replace {
        generation: u64,
        target: Target,
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
    /// Close the link of this generation once its commands in flight are answered.
    Drain {
        generation: u64,
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
                let mut actions = vec![Action::Close { generation }];
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
                },
            ) if generation == old => {
                self.last_generation += 1;
                let new = self.last_generation;
                (
                    State::Replacing { old, new },
                    vec![
                        Action::Hold { generation: new },
                        Action::Dial {
                            generation: new,
                            target,
                        },
                    ],
                )
            }
            (State::Replacing { old, new }, Input::DialSucceeded { generation })
                if generation == new =>
            {
                self.backoff.reset();
                (
                    State::Connected { generation: new },
                    vec![
                        Action::Publish { generation: new },
                        Action::Drain { generation: old },
                        Action::Emit(Event::Disconnected {
                            generation: old,
                            reason: DisconnectReason::Planned,
                        }),
                    ],
                )
            }
            (State::Replacing { old, new }, Input::HoldExpired { generation })
                if generation == new =>
            {
                // The old link still answers: let commands use it while the dial goes on.
                (State::Replacing { old, new }, vec![Action::Release])
            }
            (State::Replacing { old, .. }, Input::DialFailed { error, .. }) => (
                State::Connected { generation: old },
                vec![
                    Action::Release,
                    Action::Emit(Event::ReconnectScheduled {
                        attempt: 1,
                        delay: std::time::Duration::ZERO,
                        error: format!("planned move abandoned, old link kept: {error}"),
                    }),
                ],
            ),
            (State::Replacing { old, new }, Input::LinkLost { generation, reason })
                if generation == old =>
            {
                (
                    State::Dialling {
                        generation: new,
                        attempt: 1,
                    },
                    vec![
                        Action::Close { generation: old },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::Jitter;

    fn machine() -> Machine {
        let backoff = Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(5),
            Jitter::Full,
            7,
        );
        Machine::start(backoff).0
    }

    fn connected() -> Machine {
        let mut m = machine();
        m.on(Input::DialSucceeded { generation: 1 });
        m
    }

    fn lost(generation: u64) -> Input {
        Input::LinkLost {
            generation,
            reason: DisconnectReason::Closed("reset".into()),
        }
    }

    #[test]
    fn starting_dials_generation_one() {
        let backoff = Backoff::new(
            Duration::from_millis(1),
            Duration::from_secs(1),
            Jitter::Full,
            0,
        );
        let (m, actions) = Machine::start(backoff);
        assert_eq!(
            actions,
            vec![Action::Dial {
                generation: 1,
                target: Target::Configured
            }]
        );
        assert_eq!(
            m.state(),
            &State::Dialling {
                generation: 1,
                attempt: 1
            }
        );
    }

    #[test]
    fn successful_dial_publishes_the_link() {
        let mut m = machine();
        let actions = m.on(Input::DialSucceeded { generation: 1 });
        assert_eq!(actions, vec![Action::Publish { generation: 1 }]);
        assert_eq!(m.state(), &State::Connected { generation: 1 });
    }

    #[test]
    fn lost_link_is_closed_and_redialled_at_once() {
        let mut m = connected();
        let actions = m.on(lost(1));
        assert_eq!(actions[0], Action::Close { generation: 1 });
        assert!(matches!(
            actions[1],
            Action::Emit(Event::Disconnected { generation: 1, .. })
        ));
        assert_eq!(
            actions[2],
            Action::Dial {
                generation: 2,
                target: Target::Configured
            }
        );
    }

    #[test]
    fn hundred_reports_of_the_same_loss_cause_one_dial() {
        let mut m = connected();
        let dials: usize = (0..100)
            .flat_map(|_| m.on(lost(1)))
            .filter(|a| matches!(a, Action::Dial { .. }))
            .count();
        assert_eq!(dials, 1);
    }

    #[test]
    fn readonly_reports_the_role_change_and_redials() {
        let mut m = connected();
        let actions = m.on(Input::LinkLost {
            generation: 1,
            reason: DisconnectReason::ReadOnly,
        });
        assert!(actions.iter().any(|a| matches!(
            a,
            Action::Emit(Event::RoleChanged { generation: 1, role }) if *role == crate::event::Role::Replica
        )));
        assert_eq!(
            actions.last(),
            Some(&Action::Dial {
                generation: 2,
                target: Target::Configured
            })
        );
    }

    #[test]
    fn failed_dial_waits_then_dials_again_with_a_new_generation() {
        let mut m = machine();
        let actions = m.on(Input::DialFailed {
            class: FailureClass::Rejected,
            error: "timeout".into(),
        });
        assert!(
            matches!(actions.last(), Some(Action::Wait(d)) if *d <= Duration::from_millis(100))
        );
        assert_eq!(m.state(), &State::BackingOff { attempt: 1 });
        let actions = m.on(Input::BackoffElapsed);
        assert_eq!(
            actions,
            vec![Action::Dial {
                generation: 2,
                target: Target::Configured
            }]
        );
        assert_eq!(
            m.state(),
            &State::Dialling {
                generation: 2,
                attempt: 2
            }
        );
    }

    #[test]
    fn refused_dials_retry_quickly_however_many_fail() {
        let mut m = machine();
        for _ in 0..50 {
            let actions = m.on(Input::DialFailed {
                class: FailureClass::Refused,
                error: "refused".into(),
            });
            let Some(Action::Wait(delay)) = actions.last() else {
                panic!("{actions:?}")
            };
            assert!(*delay <= Duration::from_millis(100));
            m.on(Input::BackoffElapsed);
        }
    }

    #[test]
    fn unanswered_dials_retry_quickly_since_the_attempt_itself_waited() {
        let mut m = machine();
        for _ in 0..20 {
            let actions = m.on(Input::DialFailed {
                class: FailureClass::Unanswered,
                error: "no answer".into(),
            });
            let Some(Action::Wait(delay)) = actions.last() else {
                panic!("{actions:?}")
            };
            assert!(*delay <= Duration::from_millis(100));
            m.on(Input::BackoffElapsed);
        }
    }

    #[test]
    fn it_never_stops_dialling_without_a_shutdown() {
        let mut m = machine();
        for _ in 0..1000 {
            m.on(Input::DialFailed {
                class: FailureClass::Rejected,
                error: "x".into(),
            });
            let actions = m.on(Input::BackoffElapsed);
            assert!(matches!(actions.as_slice(), [Action::Dial { .. }]));
        }
    }

    fn moved_to() -> Target {
        Target::Endpoint(crate::notices::push::Endpoint {
            host: "10.0.0.9".into(),
            port: 12000,
        })
    }

    #[test]
    fn planned_replace_holds_commands_and_dials_the_target_while_the_old_link_lives() {
        let mut m = connected();
        let actions = m.on(Input::Replace {
            generation: 1,
            target: moved_to(),
        });
        assert_eq!(
            actions,
            vec![
                Action::Hold { generation: 2 },
                Action::Dial {
                    generation: 2,
                    target: moved_to()
                }
            ]
        );
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Close { .. })),
            "make before break"
        );
        let actions = m.on(Input::DialSucceeded { generation: 2 });
        assert_eq!(actions[0], Action::Publish { generation: 2 });
        assert_eq!(actions[1], Action::Drain { generation: 1 });
        assert_eq!(m.state(), &State::Connected { generation: 2 });
    }

    #[test]
    fn a_slow_planned_dial_releases_held_commands_to_the_old_link_and_still_completes() {
        let mut m = connected();
        m.on(Input::Replace {
            generation: 1,
            target: moved_to(),
        });
        assert!(
            m.on(Input::HoldExpired { generation: 9 }).is_empty(),
            "stale expiry"
        );
        assert_eq!(
            m.on(Input::HoldExpired { generation: 2 }),
            vec![Action::Release]
        );
        assert_eq!(m.state(), &State::Replacing { old: 1, new: 2 });
        let actions = m.on(Input::DialSucceeded { generation: 2 });
        assert_eq!(actions[0], Action::Publish { generation: 2 });
        assert_eq!(actions[1], Action::Drain { generation: 1 });
    }

    #[test]
    fn a_failed_planned_replace_keeps_the_old_link() {
        let mut m = connected();
        m.on(Input::Replace {
            generation: 1,
            target: moved_to(),
        });
        let actions = m.on(Input::DialFailed {
            class: FailureClass::Unanswered,
            error: "no answer".into(),
        });
        assert_eq!(actions[0], Action::Release);
        assert_eq!(m.state(), &State::Connected { generation: 1 });
    }

    #[test]
    fn losing_the_old_link_during_a_planned_replace_keeps_dialling() {
        let mut m = connected();
        m.on(Input::Replace {
            generation: 1,
            target: moved_to(),
        });
        let actions = m.on(lost(1));
        assert_eq!(actions[0], Action::Close { generation: 1 });
        assert_eq!(
            m.state(),
            &State::Dialling {
                generation: 2,
                attempt: 1
            }
        );
        assert_eq!(
            m.on(Input::DialSucceeded { generation: 2 }),
            vec![Action::Publish { generation: 2 }]
        );
    }

    #[test]
    fn a_replace_for_a_stale_generation_is_ignored() {
        let mut m = connected();
        assert!(
            m.on(Input::Replace {
                generation: 7,
                target: moved_to()
            })
            .is_empty()
        );
    }

    #[test]
    fn shutdown_closes_the_link_and_nothing_follows() {
        let mut m = connected();
        let actions = m.on(Input::Shutdown);
        assert_eq!(actions[0], Action::Close { generation: 1 });
        assert_eq!(m.state(), &State::Stopped);
        assert!(m.on(lost(1)).is_empty());
        assert!(m.on(Input::DialSucceeded { generation: 2 }).is_empty());
    }

    #[test]
    fn stale_dial_success_is_ignored() {
        let mut m = connected();
        assert!(m.on(Input::DialSucceeded { generation: 1 }).is_empty());
        assert_eq!(m.state(), &State::Connected { generation: 1 });
    }

    #[test]
    fn success_after_failures_resets_the_backoff() {
        let mut m = machine();
        for _ in 0..8 {
            m.on(Input::DialFailed {
                class: FailureClass::Rejected,
                error: "x".into(),
            });
            m.on(Input::BackoffElapsed);
        }
        let State::Dialling { generation, .. } = *m.state() else {
            panic!()
        };
        m.on(Input::DialSucceeded { generation });
        m.on(lost(generation));
        let actions = m.on(Input::DialFailed {
            class: FailureClass::Rejected,
            error: "x".into(),
        });
        assert!(
            matches!(actions.last(), Some(Action::Wait(d)) if *d <= Duration::from_millis(100))
        );
    }
}
