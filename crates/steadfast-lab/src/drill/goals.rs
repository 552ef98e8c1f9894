//! The goals each client's [`Outcome`] is held to in a scenario: steadfast's own (the library
//! and applications through the proxy), and the comparisons' that are reported but not held.

use super::report::{Goal, Outcome, ms};
use super::scenario::Scenario;
use super::shards::resumed;

pub(super) fn goal(text: &str, measured: String, is_met: bool) -> Goal {
    Goal {
        goal: text.to_owned(),
        measured,
        is_met,
        is_held: true,
    }
}

pub(super) fn goals(scenario: Scenario, o: &Outcome, fault_window_ms: f64) -> Vec<Goal> {
    let failed = |limit: usize| {
        goal(
            &format!("at most {limit} failed operations"),
            format!("{} failed {:?}", o.failed, o.errors),
            o.failed <= limit,
        )
    };
    let recovery = |limit_ms: f64| {
        goal(
            &format!("recovery within {limit_ms:.0} ms of restore"),
            ms(o.recovery_from_restore_ms),
            o.recovered && o.recovery_from_restore_ms.is_some_and(|r| r <= limit_ms),
        )
    };
    let detection = |limit_ms: f64| {
        goal(
            &format!("detection within {limit_ms:.0} ms"),
            ms(o.detection_ms),
            o.detection_ms.is_some_and(|d| d <= limit_ms),
        )
    };
    let in_use = |limit_ms: f64| {
        goal(
            &format!("new primary in use within {limit_ms:.0} ms of the fault"),
            ms(o.recovery_from_fault_ms),
            o.recovered && o.recovery_from_fault_ms.is_some_and(|r| r <= limit_ms),
        )
    };
    let only_deadlines = goal(
        "only failures are deadlines that ran out",
        format!("{:?}", o.errors),
        o.errors.keys().all(|k| k == "DeadlineExceeded"),
    );
    let handoff = |limit_ms: f64| {
        goal(
            &format!("longest operation during the handoff within {limit_ms:.0} ms"),
            ms(Some(o.longest_in_window_ms)),
            o.longest_in_window_ms <= limit_ms,
        )
    };
    let reconnects = |limit: usize| {
        goal(
            &format!("at most {limit} reconnects"),
            o.reconnects.map_or("-".into(), |r| r.to_string()),
            o.reconnects.is_some_and(|r| r <= limit),
        )
    };
    match scenario {
        Scenario::Restart
        | Scenario::RestartLoading
        | Scenario::ClientKill
        | Scenario::Demotion
        | Scenario::CoordinatedFailover
        | Scenario::DownAtStart => {
            vec![failed(0), recovery(100.0)]
        }
        Scenario::FailoverDnsFlip | Scenario::HungPrimary => {
            vec![detection(1_500.0), recovery(250.0), failed(0)]
        }
        Scenario::FailoverDeadFirst => vec![
            detection(1_500.0),
            in_use(1_500.0),
            recovery(250.0),
            failed(0),
        ],
        Scenario::Blackhole => vec![detection(1_500.0), recovery(250.0), only_deadlines],
        Scenario::SlowServer | Scenario::ClientPause => vec![reconnects(0), failed(0)],
        Scenario::Moving => vec![failed(0), handoff(100.0), reconnects(1)],
        Scenario::FailingOver => vec![failed(0), reconnects(0)],
        Scenario::AzureMaintenance => vec![failed(0), handoff(100.0), switch_at_start(o)],
        // The other shards' goal needs the floor's outcome: see judge_shards.
        Scenario::ClusterKill | Scenario::ClusterBlackhole | Scenario::ClusterPause => {
            vec![resumed(o, 250.0)]
        }
        Scenario::ClusterFailover | Scenario::ClusterTakeover => {
            vec![resumed(o, 250.0), failed(0)]
        }
        Scenario::ClusterAzureMaintenance => {
            vec![resumed(o, 250.0), failed(0), switch_at_start(o)]
        }
        Scenario::ClusterReshard => vec![failed(0)],
        Scenario::ClusterShardDown => Vec::new(),
        Scenario::LossyLink => {
            // One per full 5 s of the spell; the spell ends a few ms after its nominal length.
            let allowed = (fault_window_ms / 5_000.0).round().max(1.0) as usize;
            vec![reconnects(allowed), only_deadlines]
        }
    }
}

/// Azure maintenance: the lab cuts the server off and moves the name only at the announced
/// start, so the link made during the handoff still reached it; the operations caught at the
/// start wait for the switch, which the announcement lets the client make within a few ticks
/// (it watches the name closely from the start) instead of a read stall. On a cluster the
/// router goes round the announced node from the start, so its shard's operations move to
/// the replica at once instead of waiting for the node to be judged gone.
fn switch_at_start(o: &Outcome) -> Goal {
    goal(
        "longest operation, the switch at the announced start included, within 250 ms",
        ms(Some(o.longest_ms)),
        o.longest_ms <= 250.0,
    )
}

/// `goals`, measured and reported but not failing the drill yet.
pub(super) fn tracked(mut goals: Vec<Goal>) -> Vec<Goal> {
    for goal in &mut goals {
        goal.is_held = false;
    }
    goals
}

/// redis-rs through the proxy, held whatever its other goals: nothing reaches it but its own
/// response timeout (500 ms) or a deadline that ran out, never a refusal the proxy should have
/// sent again (`READONLY`, `LOADING` ...). A shard left down is the one fault with errors to
/// tell.
pub(super) fn only_timeouts_through_proxy(scenario: Scenario, o: &Outcome) -> Option<Goal> {
    (scenario != Scenario::ClusterShardDown).then(|| {
        goal(
            "no error but its own timeout or a deadline that ran out",
            format!("{:?}", o.errors),
            o.errors
                .keys()
                .all(|k| k == "timeout" || k == "DeadlineExceeded"),
        )
    })
}

/// An application through the proxy (issue 18): steadfast's own numbers where the library
/// promises them, recovery within 250 ms of the server being reachable. Reconnects are the
/// proxy's business, not counted here.
pub(super) fn proxy_goals(scenario: Scenario, o: &Outcome) -> Vec<Goal> {
    let failed = goal(
        "at most 0 failed operations",
        format!("{} failed {:?}", o.failed, o.errors),
        o.failed == 0,
    );
    let recovery = goal(
        "recovery within 250 ms of restore",
        ms(o.recovery_from_restore_ms),
        o.recovered && o.recovery_from_restore_ms.is_some_and(|r| r <= 250.0),
    );
    let only_deadlines = goal(
        "only failures are deadlines that ran out",
        format!("{:?}", o.errors),
        o.errors.keys().all(|k| k == "DeadlineExceeded"),
    );
    match scenario {
        Scenario::Restart
        | Scenario::RestartLoading
        | Scenario::ClientKill
        | Scenario::Demotion
        | Scenario::CoordinatedFailover
        | Scenario::DownAtStart
        | Scenario::FailoverDnsFlip
        | Scenario::FailoverDeadFirst
        | Scenario::HungPrimary
        | Scenario::Moving
        | Scenario::FailingOver => vec![failed, recovery],
        // steadfast's own goals: its restore is the announced start, when the lab cuts A off
        // and moves the name (so "recovery" would time whichever operation was in flight
        // then); the handoff is the announced window.
        Scenario::AzureMaintenance => vec![
            failed,
            goal(
                "longest operation during the handoff within 100 ms",
                ms(Some(o.longest_in_window_ms)),
                o.longest_in_window_ms <= 100.0,
            ),
            switch_at_start(o),
        ],
        Scenario::Blackhole => vec![recovery, only_deadlines],
        Scenario::SlowServer | Scenario::ClientPause => vec![failed],
        Scenario::LossyLink => vec![only_deadlines],
        // A cluster behind the proxy: steadfast's own cluster goals.
        Scenario::ClusterFailover | Scenario::ClusterTakeover => {
            vec![super::shards::resumed(o, 250.0), failed]
        }
        Scenario::ClusterAzureMaintenance => {
            vec![super::shards::resumed(o, 250.0), failed, switch_at_start(o)]
        }
        Scenario::ClusterKill | Scenario::ClusterBlackhole | Scenario::ClusterPause => {
            vec![super::shards::resumed(o, 250.0), only_deadlines]
        }
        Scenario::ClusterReshard => vec![failed],
        Scenario::ClusterShardDown => Vec::new(),
    }
}
