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

/// Link 1 is to be replaced for planned maintenance.
fn planned_replace() -> Input {
    Input::Replace {
        generation: 1,
        target: moved_to(),
        reason: DisconnectReason::Planned,
    }
}

fn lost(generation: u64) -> Input {
    lost_because(generation, DisconnectReason::Closed("reset".into()))
}

fn lost_because(generation: u64, reason: DisconnectReason) -> Input {
    Input::LinkLost { generation, reason }
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
fn readonly_reports_the_role_change_retires_the_link_and_redials() {
    let mut m = connected();
    let actions = m.on(lost_because(1, DisconnectReason::ReadOnly));
    assert_eq!(
        actions[0],
        Action::Retire { generation: 1 },
        "the demoted server answers: the commands on it get their replies"
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::Close { .. })));
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
    assert!(matches!(actions.last(), Some(Action::Wait(d)) if *d <= Duration::from_millis(100)));
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
    let actions = m.on(planned_replace());
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
    assert_eq!(
        actions[1],
        Action::Drain {
            generation: 1,
            unless_silent: false
        }
    );
    assert_eq!(m.state(), &State::Connected { generation: 2 });
}

#[test]
fn a_slow_planned_dial_releases_held_commands_to_the_old_link_and_still_completes() {
    let mut m = connected();
    m.on(planned_replace());
    assert!(
        m.on(Input::HoldExpired { generation: 9 }).is_empty(),
        "stale expiry"
    );
    assert_eq!(
        m.on(Input::HoldExpired { generation: 2 }),
        vec![Action::Release]
    );
    assert_eq!(
        m.state(),
        &State::Replacing {
            old: 1,
            new: 2,
            reason: DisconnectReason::Planned
        }
    );
    let actions = m.on(Input::DialSucceeded { generation: 2 });
    assert_eq!(actions[0], Action::Publish { generation: 2 });
    assert_eq!(
        actions[1],
        Action::Drain {
            generation: 1,
            unless_silent: false
        }
    );
}

#[test]
fn a_replace_for_a_moved_name_drains_the_old_link_unless_its_server_is_silent_and_says_why() {
    let mut m = connected();
    m.on(Input::Replace {
        generation: 1,
        target: Target::Configured,
        reason: DisconnectReason::NameMoved("primary.test moved".into()),
    });
    let actions = m.on(Input::DialSucceeded { generation: 2 });
    assert_eq!(
        actions[1..],
        [
            Action::Drain {
                generation: 1,
                unless_silent: true
            },
            Action::Emit(Event::Disconnected {
                generation: 1,
                reason: DisconnectReason::NameMoved("primary.test moved".into()),
            })
        ]
    );
    // The next planned replace is planned again.
    m.on(Input::Replace {
        generation: 2,
        target: moved_to(),
        reason: DisconnectReason::Planned,
    });
    let actions = m.on(Input::DialSucceeded { generation: 3 });
    assert_eq!(
        actions[1],
        Action::Drain {
            generation: 2,
            unless_silent: false
        }
    );
}

#[test]
fn a_failed_planned_replace_keeps_the_old_link() {
    let mut m = connected();
    m.on(planned_replace());
    let actions = m.on(Input::DialFailed {
        class: FailureClass::Unanswered,
        error: "no answer".into(),
    });
    assert_eq!(actions[0], Action::Release);
    assert_eq!(m.state(), &State::Connected { generation: 1 });
}

#[test]
fn a_failed_replace_says_whether_it_was_a_planned_move_or_a_moved_name() {
    for (reason, told) in [
        (DisconnectReason::Planned, "planned move abandoned"),
        (
            DisconnectReason::NameMoved("primary.test moved".into()),
            "replacement at the moved name failed",
        ),
    ] {
        let mut m = connected();
        m.on(Input::Replace {
            generation: 1,
            target: Target::Configured,
            reason,
        });
        let actions = m.on(Input::DialFailed {
            class: FailureClass::Unanswered,
            error: "no answer".into(),
        });
        let Action::Emit(Event::ReconnectScheduled { error, .. }) = &actions[1] else {
            panic!("{actions:?}");
        };
        assert_eq!(error, &format!("{told}, old link kept: no answer"));
    }
}

#[test]
fn losing_the_old_link_during_a_planned_replace_keeps_dialling() {
    let mut m = connected();
    m.on(planned_replace());
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
            target: moved_to(),
            reason: DisconnectReason::Planned,
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
    assert!(matches!(actions.last(), Some(Action::Wait(d)) if *d <= Duration::from_millis(100)));
}

#[test]
fn a_link_refused_as_a_replica_while_being_replaced_is_retired_not_cut_off() {
    let mut m = connected();
    m.on(planned_replace());
    let actions = m.on(lost_because(1, DisconnectReason::ReadOnly));
    assert_eq!(actions[0], Action::Retire { generation: 1 });
    assert_eq!(
        m.state(),
        &State::Dialling {
            generation: 2,
            attempt: 1
        },
        "the replacement's dial goes on"
    );
}

#[test]
fn an_outdated_link_is_retired_and_a_dead_one_closed() {
    let mut m = connected();
    let actions = m.on(lost_because(1, DisconnectReason::Outdated));
    assert_eq!(actions[0], Action::Retire { generation: 1 });
    m.on(Input::DialSucceeded { generation: 2 });
    let actions = m.on(lost_because(2, DisconnectReason::Dead("no answer".into())));
    assert_eq!(actions[0], Action::Close { generation: 2 });
}
