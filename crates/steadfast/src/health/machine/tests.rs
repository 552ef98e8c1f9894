//! The monitor driven through time with made-up facts: no socket, no task, no timer.

use std::net::SocketAddr;

use super::*;

const MS: Duration = Duration::from_millis(1);

fn health() -> HealthConfig {
    HealthConfig {
        ping_interval: Duration::from_secs(1),
        read_stall: Duration::from_secs(1),
        ..HealthConfig::default()
    }
}

fn address(last: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], 6379))
}

/// A monitor watching generation 1 from `start`, with its first look done.
struct Bench {
    monitor: Monitor,
    start: Instant,
    link: LinkFacts,
}

impl Bench {
    fn new() -> Self {
        let start = Instant::now();
        let mut monitor = Monitor::new(&health(), Duration::from_secs(5), start);
        let link = LinkFacts {
            generation: 1,
            in_flight: 0,
            stalled_for: Duration::ZERO,
            last_traffic: start,
            read_stall: Duration::from_secs(1),
            address: Some(address(1)),
            alert: None,
        };
        let first = monitor.step(News::Timer, Some(&link), start);
        assert!(first.actions.is_empty(), "a new link: {first:?}");
        Self {
            monitor,
            start,
            link,
        }
    }

    fn at(&self, after: Duration) -> Instant {
        self.start + after
    }

    fn step(&mut self, news: News, after: Duration) -> Plan {
        let now = self.at(after);
        self.monitor.step(news, Some(&self.link), now)
    }

    /// Commands in flight since `since`, nothing read since.
    fn busy_since(&mut self, since: Duration, now: Duration) {
        self.link.in_flight = 3;
        self.link.stalled_for = now.saturating_sub(since);
    }

    fn probes(plan: &Plan) -> bool {
        plan.actions
            .iter()
            .any(|a| matches!(a, Action::Probe { .. }))
    }
}

#[test]
fn an_idle_link_gets_a_ping_once_its_heartbeat_is_due_and_not_before() {
    let mut bench = Bench::new();
    let early = bench.step(News::Timer, 500 * MS);
    assert!(early.actions.is_empty(), "{early:?}");
    assert_eq!(
        early.next_look,
        Some(bench.at(Duration::from_secs(1))),
        "an idle link is looked at when its heartbeat is due"
    );
    let due = bench.step(News::Timer, 1000 * MS);
    assert_eq!(
        due.actions,
        [Action::Ping {
            deadline: bench.at(Duration::from_secs(6))
        }]
    );
    let again = bench.step(News::Timer, 1100 * MS);
    assert!(again.actions.is_empty(), "one PING at a time: {again:?}");
}

#[test]
fn a_ping_that_outlives_a_command_deadline_is_given_up() {
    let mut bench = Bench::new();
    bench.step(News::Timer, 1000 * MS);
    let late = bench.step(News::Timer, 6000 * MS);
    assert_eq!(late.actions.first(), Some(&Action::DropPing));
}

#[test]
fn a_busy_link_is_looked_at_when_it_could_first_become_suspect() {
    let mut bench = Bench::new();
    bench.busy_since(100 * MS, 400 * MS);
    let plan = bench.step(News::Timer, 400 * MS);
    assert!(plan.actions.is_empty(), "{plan:?}");
    assert_eq!(plan.next_look, Some(bench.at(1100 * MS)));
}

#[test]
fn a_link_that_read_nothing_for_read_stall_is_probed_once_and_its_name_looked_at() {
    let mut bench = Bench::new();
    bench.busy_since(100 * MS, 1100 * MS);
    let plan = bench.step(News::Timer, 1100 * MS);
    assert_eq!(
        plan.actions,
        [
            Action::WakeStallWaiters,
            Action::LookAtName,
            Action::Probe {
                stalled_for: Duration::from_secs(1)
            }
        ]
    );
    assert_eq!(
        plan.next_look,
        Some(bench.at(1200 * MS)),
        "a suspect link is looked at every tick"
    );
    bench.busy_since(100 * MS, 1200 * MS);
    let next = bench.step(News::Timer, 1200 * MS);
    assert_eq!(
        next.actions,
        [Action::WakeStallWaiters],
        "one probe and one lookup at a time"
    );
}

#[test]
fn slow_is_not_dead_a_link_judged_alive_or_unknown_is_kept_and_probed_ever_less_often() {
    let mut bench = Bench::new();
    let mut now = 1100 * MS;
    bench.busy_since(100 * MS, now);
    assert!(Bench::probes(&bench.step(News::Timer, now)));
    bench.step(News::NameLooked(Some(Name::Lists(vec![address(1)]))), now);
    let mut gaps = Vec::new();
    let mut probed_at = now;
    // Three minutes of a server busy with a slow command: every probe says Alive or Unknown.
    for round in 0..1800u32 {
        now += 100 * MS;
        bench.busy_since(100 * MS, now);
        let verdict = if round % 2 == 0 {
            Verdict::Alive("busy with our command".into())
        } else {
            Verdict::Unknown("no answer".into())
        };
        let plan = if bench.monitor.is_probing && round % 5 == 4 {
            bench.step(News::ProbeEnded(Some(verdict)), now)
        } else {
            bench.step(News::Timer, now)
        };
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::ReportDead(_))),
            "a slow link was reported dead: {plan:?}"
        );
        if Bench::probes(&plan) {
            gaps.push(now - probed_at);
            probed_at = now;
        }
        if plan.actions.contains(&Action::LookAtName) {
            bench.step(News::NameLooked(Some(Name::Silent)), now);
        }
    }
    assert!(gaps.len() >= 5, "probes: {gaps:?}");
    assert!(
        gaps.windows(2).all(|w| w[1] >= w[0]),
        "probes come ever less often: {gaps:?}"
    );
    assert!(
        gaps.iter()
            .all(|g| *g <= PROBE_BACKOFF_MAX + Duration::from_secs(1)),
        "at most 30 s apart (plus the probe's own time): {gaps:?}"
    );
}

#[test]
fn a_dead_verdict_is_told_and_reports_the_link_lost() {
    let mut bench = Bench::new();
    bench.busy_since(100 * MS, 1100 * MS);
    bench.step(News::Timer, 1100 * MS);
    let plan = bench.step(
        News::ProbeEnded(Some(Verdict::Dead("gone".into()))),
        1300 * MS,
    );
    assert_eq!(
        plan.actions,
        [
            Action::Tell(Verdict::Dead("gone".into())),
            Action::ReportDead("gone".into())
        ]
    );
}

#[test]
fn a_name_that_no_longer_lists_the_address_replaces_the_link_without_waiting_for_the_probe() {
    let mut bench = Bench::new();
    bench.busy_since(100 * MS, 1100 * MS);
    let plan = bench.step(News::Timer, 1100 * MS);
    assert!(Bench::probes(&plan), "{plan:?}");
    let plan = bench.step(
        News::NameLooked(Some(Name::Moved("now elsewhere".into()))),
        1150 * MS,
    );
    assert_eq!(
        plan.actions,
        [
            Action::Tell(Verdict::Moved("now elsewhere".into())),
            Action::AbandonProbe,
            Action::ReportMoved("now elsewhere".into())
        ]
    );
}

#[test]
fn a_link_kept_after_its_name_moved_is_replaced_again_only_after_the_probe_backoff() {
    let mut bench = Bench::new();
    bench.busy_since(100 * MS, 1100 * MS);
    bench.step(News::Timer, 1100 * MS);
    bench.step(
        News::NameLooked(Some(Name::Moved("now elsewhere".into()))),
        1150 * MS,
    );
    // The replacement could not be made: the same link, still stalled.
    bench.busy_since(100 * MS, 1500 * MS);
    let plan = bench.step(News::Timer, 1500 * MS);
    assert!(
        !plan.actions.contains(&Action::LookAtName) && !Bench::probes(&plan),
        "looked again within the backoff: {plan:?}"
    );
    bench.busy_since(100 * MS, 2200 * MS);
    let plan = bench.step(News::Timer, 2200 * MS);
    assert!(plan.actions.contains(&Action::LookAtName), "{plan:?}");
}

#[test]
fn a_new_address_under_the_name_abandons_the_probe_and_starts_a_fresh_one_at_once() {
    let mut bench = Bench::new();
    bench.busy_since(100 * MS, 1100 * MS);
    bench.step(News::Timer, 1100 * MS);
    bench.busy_since(100 * MS, 1150 * MS);
    let plan = bench.step(
        News::NameLooked(Some(Name::Lists(vec![address(1), address(2)]))),
        1150 * MS,
    );
    assert_eq!(plan.actions.first(), Some(&Action::AbandonProbe));
    assert!(Bench::probes(&plan), "a fresh probe at once: {plan:?}");
    bench.busy_since(100 * MS, 1300 * MS);
    let same = bench.step(
        News::NameLooked(Some(Name::Lists(vec![address(2), address(1)]))),
        1300 * MS,
    );
    assert!(
        !same.actions.contains(&Action::AbandonProbe),
        "the same addresses again change nothing: {same:?}"
    );
}

#[test]
fn a_replaced_link_abandons_what_was_under_way_and_is_watched_afresh() {
    let mut bench = Bench::new();
    bench.busy_since(100 * MS, 1100 * MS);
    bench.step(News::Timer, 1100 * MS);
    bench.link = LinkFacts {
        generation: 2,
        in_flight: 0,
        stalled_for: Duration::ZERO,
        last_traffic: bench.at(1200 * MS),
        ..bench.link
    };
    let plan = bench.step(News::Timer, 1200 * MS);
    assert_eq!(
        plan.actions,
        [Action::AbandonProbe, Action::AbandonNameLook]
    );
    bench.busy_since(1300 * MS, 2300 * MS);
    assert!(
        Bench::probes(&bench.step(News::Timer, 2300 * MS)),
        "the new link's first stall is probed at once, not after the old backoff"
    );
}

#[test]
fn a_verdict_about_a_replaced_link_is_not_acted_on() {
    let mut bench = Bench::new();
    bench.busy_since(100 * MS, 1100 * MS);
    bench.step(News::Timer, 1100 * MS);
    bench.link.generation = 2;
    bench.link.in_flight = 0;
    bench.link.stalled_for = Duration::ZERO;
    let plan = bench.step(
        News::ProbeEnded(Some(Verdict::Dead("old link".into()))),
        1200 * MS,
    );
    assert!(
        !plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::ReportDead(_))),
        "{plan:?}"
    );
}

#[test]
fn a_relaxed_threshold_during_maintenance_delays_suspicion() {
    let mut bench = Bench::new();
    bench.link.read_stall = Duration::from_secs(10);
    bench.busy_since(100 * MS, 2100 * MS);
    let plan = bench.step(News::Timer, 2100 * MS);
    assert!(plan.actions.is_empty(), "{plan:?}");
    assert_eq!(
        plan.next_look,
        Some(bench.at(3100 * MS)),
        "still looked at every configured read_stall, in case the relaxation ends"
    );
}

#[test]
fn without_a_link_the_ping_is_given_up_and_nothing_else_happens() {
    let mut bench = Bench::new();
    bench.step(News::Timer, 1000 * MS);
    let plan = bench.monitor.step(News::Timer, None, bench.at(1100 * MS));
    assert_eq!(plan.actions, [Action::DropPing]);
    assert_eq!(plan.next_look, None);
}

/// An alert (announced maintenance) starting `from` after the bench's start.
fn alert_at(bench: &mut Bench, from: Duration) {
    let from = bench.at(from);
    bench.link.alert = Some(Alert {
        from,
        until: from + Duration::from_secs(15),
    });
}

#[test]
fn an_announced_start_wakes_the_monitor_and_from_then_the_name_is_looked_at_every_tick() {
    let mut bench = Bench::new();
    alert_at(&mut bench, 300 * MS);
    let before = bench.step(News::Timer, 100 * MS);
    assert!(
        before.actions.is_empty(),
        "nothing before the start: {before:?}"
    );
    assert_eq!(
        before.next_look,
        Some(bench.at(300 * MS)),
        "an idle link is looked at again at the announced start, not at its heartbeat"
    );
    let start = bench.step(News::Timer, 300 * MS);
    assert_eq!(start.actions, [Action::LookAtName]);
    let answered = bench.step(
        News::NameLooked(Some(Name::Lists(vec![address(1)]))),
        310 * MS,
    );
    assert!(
        answered.actions.is_empty(),
        "one look per tick: {answered:?}"
    );
    assert_eq!(answered.next_look, Some(bench.at(410 * MS)));
    let next = bench.step(News::Timer, 410 * MS);
    assert_eq!(next.actions, [Action::LookAtName], "and again a tick later");
}

#[test]
fn during_an_alert_a_name_that_moved_has_the_link_replaced_without_waiting_for_a_stall() {
    let mut bench = Bench::new();
    alert_at(&mut bench, Duration::ZERO);
    bench.step(News::Timer, 100 * MS);
    let moved = bench.step(
        News::NameLooked(Some(Name::Moved("now 10.0.0.2".into()))),
        120 * MS,
    );
    assert!(
        moved
            .actions
            .contains(&Action::ReportMoved("now 10.0.0.2".into())),
        "{moved:?}"
    );
}

#[test]
fn during_an_alert_a_link_is_suspect_after_a_quarter_of_the_read_stall() {
    let mut bench = Bench::new();
    alert_at(&mut bench, Duration::ZERO);
    bench.busy_since(100 * MS, 300 * MS);
    let early = bench.step(News::Timer, 300 * MS);
    assert!(
        !Bench::probes(&early),
        "200 ms is not yet a stall: {early:?}"
    );
    bench.busy_since(100 * MS, 350 * MS);
    let stalled = bench.step(News::Timer, 350 * MS);
    assert!(Bench::probes(&stalled), "250 ms is: {stalled:?}");
}

#[test]
fn without_an_alert_a_quarter_of_the_read_stall_is_no_stall() {
    let mut bench = Bench::new();
    bench.busy_since(100 * MS, 350 * MS);
    let plan = bench.step(News::Timer, 350 * MS);
    assert!(
        !Bench::probes(&plan),
        "no alert, no early suspicion: {plan:?}"
    );
    assert!(
        !plan.actions.contains(&Action::LookAtName),
        "nor a look at the name: {plan:?}"
    );
}
