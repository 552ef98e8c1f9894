//! The router's decisions after every kind of answer, as tables.

#![allow(clippy::unwrap_used)]

use super::*;

fn node(port: u16) -> NodeAddress {
    NodeAddress {
        host: Some("10.0.0.1".into()),
        port,
    }
}

/// An error reply exactly as redis-rs reads it off the wire.
fn reply_error(text: &str) -> Error {
    let bytes = format!("-{text}\r\n");
    let error = redis::parse_redis_value(bytes.as_bytes())
        .unwrap()
        .extract_error()
        .unwrap_err();
    Error::from_redis(ErrorKind::Server, "command", error)
}

fn pipeline_of(count: usize) -> redis::Pipeline {
    let mut pipeline = redis::pipe();
    for n in 0..count {
        pipeline.cmd("GET").arg(format!("{{k}}{n}"));
    }
    pipeline
}

fn server_error(text: &str) -> Value {
    let bytes = format!("-{text}\r\n");
    redis::parse_redis_value(bytes.as_bytes()).unwrap()
}

struct Case<'a> {
    request: Request<'a>,
    is_shutting_down: bool,
    target: NodeAddress,
    is_idempotent: bool,
    is_out_of_time: bool,
    is_replica: bool,
    reads_replica: bool,
    is_replica_read: bool,
    unreachable: Vec<NodeAddress>,
}

impl<'a> Case<'a> {
    fn new(cmd: &'a redis::Cmd) -> Self {
        Self::of(Request::Single(cmd))
    }

    fn of(request: Request<'a>) -> Self {
        Self {
            request,
            is_shutting_down: false,
            target: node(7000),
            is_idempotent: true,
            is_out_of_time: false,
            is_replica: false,
            reads_replica: false,
            is_replica_read: false,
            unreachable: Vec::new(),
        }
    }

    fn decide(&self, ended: Ended) -> Step {
        let seen = Seen {
            request: self.request,
            target: &self.target,
            is_idempotent: self.is_idempotent,
            is_out_of_time: self.is_out_of_time,
            is_shutting_down: self.is_shutting_down,
            is_replica: self.is_replica,
            reads_replica: self.reads_replica,
            is_replica_read: self.is_replica_read,
            unreachable: &self.unreachable,
        };
        decide(ended, &seen)
    }
}

fn get() -> redis::Cmd {
    redis::cmd("GET").arg("k").clone()
}

#[test]
fn every_server_answer_leads_to_the_step_the_cluster_rules_ask_for() {
    let cmd = get();
    let case = Case::new(&cmd);
    let table: &[(&str, &str)] = &[
        ("MOVED 3999 10.0.0.2:7001", "Moved(10.0.0.2:7001)"),
        ("MOVED 3999 :7001", "Moved(10.0.0.1:7001)"),
        ("ASK 3999 10.0.0.3:7002", "Ask(10.0.0.3:7002)"),
        (
            "READONLY You can't write against a read only replica.",
            "AwaitRefresh",
        ),
        (
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "AwaitRefresh",
        ),
        ("CLUSTERDOWN The cluster is down", "AwaitRefresh"),
        (
            "UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)",
            "AwaitRefresh",
        ),
        ("UNBLOCKED client unblocked via CLIENT UNBLOCK", "Fail"),
        ("MASTERDOWN Link with MASTER is down", "AwaitRefresh"),
        (
            "LOADING Redis is loading the dataset in memory",
            "AwaitLoading",
        ),
        (
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "Fail",
        ),
        ("ERR unknown command", "Fail"),
    ];
    for (reply, expected) in table {
        let step = case.decide(Ended::Failed(reply_error(reply)));
        let shown = match &step {
            Step::Moved(to) => format!("Moved({to})"),
            Step::Ask(to) => format!("Ask({to})"),
            Step::AwaitRefresh => "AwaitRefresh".into(),
            Step::AwaitLoading => "AwaitLoading".into(),
            Step::Fail(_) => "Fail".into(),
            other => format!("{other:?}"),
        };
        assert_eq!(&shown, expected, "after -{reply}");
    }
}

#[test]
fn redirections_are_counted_but_waiting_for_a_loading_node_or_a_takeover_is_not() {
    let cmd = get();
    let mut case = Case::new(&cmd);
    let counted = |case: &Case<'_>, reply: &str| {
        case.decide(Ended::Failed(reply_error(reply)))
            .is_redirection()
    };
    assert!(counted(&case, "MOVED 1 10.0.0.2:7001"));
    assert!(counted(&case, "ASK 1 10.0.0.2:7001"));
    assert!(counted(&case, "TRYAGAIN later"));
    assert!(!counted(&case, "LOADING Redis is loading"));
    case.unreachable = vec![node(7001)];
    assert!(!counted(&case, "MOVED 1 10.0.0.1:7001"));
    case.is_replica_read = true;
    assert!(counted(&case, "LOADING Redis is loading"));
}

#[test]
fn a_moved_back_to_a_primary_found_unreachable_means_no_takeover_yet() {
    let cmd = get();
    let mut case = Case::new(&cmd);
    case.is_replica = true;
    case.target = node(7001);
    case.unreachable = vec![node(7000)];
    let step = case.decide(Ended::Failed(reply_error("MOVED 3999 10.0.0.1:7000")));
    assert!(
        matches!(&step, Step::NotTakenOver(to) if *to == node(7000)),
        "{step:?}"
    );
}

#[test]
fn a_replica_that_serves_a_takeover_probe_is_the_new_primary_but_a_replica_read_is_not() {
    let cmd = get();
    let mut case = Case::new(&cmd);
    case.is_replica = true;
    let step = case.decide(Ended::Replied(Reply::Single(Value::Okay)));
    assert!(matches!(step, Step::TakenOver(_)), "{step:?}");
    case.reads_replica = true;
    let step = case.decide(Ended::Replied(Reply::Single(Value::Okay)));
    assert!(matches!(step, Step::Done(_)), "{step:?}");
}

#[test]
fn a_loading_replica_read_is_read_elsewhere_while_a_loading_primary_is_waited_for() {
    let cmd = get();
    let mut case = Case::new(&cmd);
    let loading = || Ended::Failed(reply_error("LOADING Redis is loading"));
    assert!(matches!(case.decide(loading()), Step::AwaitLoading));
    case.reads_replica = true;
    assert!(
        matches!(case.decide(loading()), Step::AwaitLoading),
        "a read replicas may serve that found none usable went to the primary"
    );
    case.is_replica_read = true;
    case.is_replica = true;
    assert!(matches!(case.decide(loading()), Step::AvoidLoading));
}

#[test]
fn an_unreachable_node_is_left_unless_the_command_may_have_been_applied_and_is_not_idempotent() {
    let cmd = redis::cmd("INCR").arg("k").clone();
    let mut case = Case::new(&cmd);
    let refused = || Error::new(ErrorKind::Connect, "link down");
    let sent = || Error::deadline(std::time::Duration::from_secs(5), true, None, None);
    let step = case.decide(Ended::Failed(refused()));
    assert!(
        matches!(step, Step::Unreachable { again: false, .. }),
        "{step:?}"
    );
    case.is_idempotent = false;
    let step = case.decide(Ended::Failed(sent()));
    assert!(matches!(step, Step::Fail(_)), "{step:?}");
    case.is_idempotent = true;
    let step = case.decide(Ended::Failed(sent()));
    assert!(matches!(step, Step::Unreachable { .. }), "{step:?}");
    case.unreachable = vec![node(7000)];
    let step = case.decide(Ended::Failed(refused()));
    assert!(
        matches!(step, Step::Unreachable { again: true, .. }),
        "{step:?}"
    );
}

#[test]
fn a_deadline_that_ran_out_ends_the_command_and_says_whether_it_was_written() {
    let cmd = get();
    let mut case = Case::new(&cmd);
    case.is_out_of_time = true;
    let late = Error::deadline(std::time::Duration::from_secs(5), true, None, None);
    let step = case.decide(Ended::Failed(late));
    assert!(
        matches!(step, Step::OutOfTime { is_ambiguous: true }),
        "{step:?}"
    );
}

#[test]
fn a_stalled_node_is_left() {
    let cmd = get();
    assert!(matches!(
        Case::new(&cmd).decide(Ended::Stalled),
        Step::LeaveStalled
    ));
}

#[test]
fn a_node_shutting_down_is_unreachable_unless_the_router_is_shutting_down_too() {
    let cmd = get();
    let mut case = Case::new(&cmd);
    let closed = || Ended::Failed(Error::new(ErrorKind::Shutdown, "closed"));
    assert!(matches!(case.decide(closed()), Step::Unreachable { .. }));
    case.is_shutting_down = true;
    assert!(matches!(case.decide(closed()), Step::Fail(_)));
}

#[test]
fn a_pipeline_refused_in_part_sends_only_the_refused_commands_again() {
    let pipeline = pipeline_of(3);
    let reply = Reply::Pipeline(vec![
        Value::Okay,
        server_error("TRYAGAIN Multiple keys request during rehashing of slot"),
        Value::Okay,
    ]);
    let case = Case::of(Request::Pipeline {
        pipeline: &pipeline,
        offset: 0,
        count: 3,
    });
    let step = case.decide(Ended::Replied(reply));
    assert!(
        matches!(&step, Step::SendAgain { indexes, .. } if *indexes == [1]),
        "{step:?}"
    );
    let whole = Reply::Pipeline(vec![server_error("MOVED 1 10.0.0.2:7001"); 3]);
    let step = case.decide(Ended::Replied(whole));
    assert!(matches!(step, Step::Moved(_)), "{step:?}");
}

#[test]
fn a_transaction_aborted_for_anything_but_a_cluster_refusal_fails() {
    let cmd = get();
    let step = Case::new(&cmd).decide(Ended::Failed(reply_error(
        "EXECABORT Transaction discarded because of previous errors.",
    )));
    assert!(matches!(step, Step::Fail(_)), "{step:?}");
}

#[test]
fn the_breaker_counts_a_failure_only_where_the_command_had_nowhere_else_to_go() {
    use breaker::Outcome::{Answered, TransportFailure};
    let down = || Ended::Failed(Error::new(ErrorKind::Connect, "refused"));
    let late = || {
        Ended::Failed(Error::deadline(
            std::time::Duration::from_secs(5),
            false,
            None,
            None,
        ))
    };
    let answer = || Ended::Replied(Reply::Single(Value::Okay));
    let refusal = || Ended::Failed(reply_error("MOVED 1 10.0.0.2:7001"));
    // (ended, took_long, is_last_resort, expected)
    let table: Vec<(Ended, bool, bool, Option<breaker::Outcome>)> = vec![
        (down(), false, true, Some(TransportFailure)),
        (down(), false, false, Some(Answered)),
        (Ended::Stalled, false, true, Some(TransportFailure)),
        (Ended::Stalled, false, false, Some(Answered)),
        (late(), false, true, None),
        (late(), true, true, Some(TransportFailure)),
        (answer(), false, true, Some(Answered)),
        (refusal(), true, true, Some(Answered)),
    ];
    for (n, (ended, took_long, last, expected)) in table.into_iter().enumerate() {
        assert_eq!(
            breaker_outcome(&ended, took_long, last),
            expected,
            "row {n}: {ended:?}"
        );
    }
}
