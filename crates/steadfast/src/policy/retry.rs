//! The retry policy: given a failed attempt, send again, and how; or give up.
//!
//! # Behaviour
//! Every failure falls in one of three classes, decided here and nowhere else:
//! - *not executed*: the server refused the command (`READONLY`, `LOADING`, `MASTERDOWN`,
//!   `TRYAGAIN`, `CLUSTERDOWN`, `BUSY`), released a blocked one with nothing done because it
//!   stopped being a primary (`UNBLOCKED ... master -> replica`, `REDIRECT`), or it never left
//!   the client: always safe to send again; `READONLY`, `UNBLOCKED` and `REDIRECT` also replace
//!   the link, since the endpoint's primary moved. An `UNBLOCKED` someone asked for with
//!   `CLIENT UNBLOCK ... ERROR` is final: whoever sent it wanted the command to end;
//! - *ambiguous*: written, then the link died before the reply: sent again only if idempotent or
//!   allowed by the caller, otherwise reported as "may have been applied";
//! - *final*: anything else the server said (`WRONGTYPE`, `NOPERM`, syntax ...): returned at once.
//!
//! The classification reads redis-rs's error kinds; only `BUSY`, which redis-rs does not name, is
//! recognised by its error code.

use redis::{ErrorKind, RedisError, ServerErrorKind};

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Not executed; the link is fine but the server is busy: wait a little and send again.
    WaitAndRetry,
    /// Not executed; the link must be replaced first (READONLY, or it died before the write).
    ReconnectAndRetry { is_read_only: bool },
    /// Written, then the link died: may have been applied. Replace the link; send again only if
    /// the command is idempotent or the caller allowed it.
    Ambiguous,
    /// Give the error to the caller.
    Fail,
}

/// Whether a failed attempt's command may have reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Handover {
    /// Handed to the link: it may have been written, and applied.
    Written,
    /// The link was known closed before the command was handed to it: it was never written.
    Unsent,
}

/// Classifies one failed attempt.
pub(crate) fn decide(error: &RedisError, handover: Handover) -> Decision {
    match error.kind() {
        ErrorKind::Server(ServerErrorKind::ReadOnly) => {
            Decision::ReconnectAndRetry { is_read_only: true }
        }
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ClusterDown,
        ) => Decision::WaitAndRetry,
        ErrorKind::Extension if error.code() == Some("BUSY") => Decision::WaitAndRetry,
        ErrorKind::Extension if is_released_by_role_change(error) => {
            Decision::ReconnectAndRetry { is_read_only: true }
        }
        ErrorKind::Io | ErrorKind::Parse => {
            if handover == Handover::Written {
                Decision::Ambiguous
            } else {
                Decision::ReconnectAndRetry {
                    is_read_only: false,
                }
            }
        }
        _ if error.is_connection_dropped() || error.is_unrecoverable_error() => {
            if handover == Handover::Written {
                Decision::Ambiguous
            } else {
                Decision::ReconnectAndRetry {
                    is_read_only: false,
                }
            }
        }
        _ => Decision::Fail,
    }
}

/// A refusal only a cluster router can act on: the slot lives elsewhere (`MOVED`, `ASK`), the
/// node is a replica now (`READONLY`), the cluster is between states (`TRYAGAIN`,
/// `CLUSTERDOWN`, `MASTERDOWN`), or the node is loading its data (`LOADING`: another replica,
/// or a refresh, may serve). The command was not executed.
pub(crate) fn is_cluster_refusal(error: &RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Server(
            ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::BusyLoading
        )
    ) || is_released_by_role_change(error)
}

/// A blocked command the server released with nothing done because it is no primary any more:
/// `-UNBLOCKED force unblock from blocking operation, instance state changed (master ->
/// replica?)`, or `-REDIRECT host:port`; not an `UNBLOCKED` that `CLIENT UNBLOCK` asked for.
pub(crate) fn is_released_by_role_change(error: &RedisError) -> bool {
    match error.code() {
        Some("REDIRECT") => true,
        Some("UNBLOCKED") => !error
            .detail()
            .is_some_and(|detail| detail.contains("CLIENT UNBLOCK")),
        _ => false,
    }
}

/// Whether `error` says the server is there and not ready: `LOADING`, `MASTERDOWN`, `BUSY`
/// (polled until it answers, never backed off: see `command::ready`).
pub(crate) fn is_not_ready(error: &RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Server(ServerErrorKind::BusyLoading | ServerErrorKind::MasterDown)
    ) || error.code() == Some("BUSY")
}

/// Whether a server error inside a pipeline reply means "this command was not executed".
pub(crate) fn is_not_executed(error: &RedisError) -> bool {
    matches!(
        decide(error, Handover::Written),
        Decision::WaitAndRetry | Decision::ReconnectAndRetry { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(kind: ServerErrorKind) -> RedisError {
        RedisError::from((ErrorKind::Server(kind), "refused"))
    }

    /// An error exactly as redis-rs builds it from the server's reply bytes.
    fn wire(reply: &[u8]) -> RedisError {
        redis::parse_redis_value(reply)
            .unwrap()
            .extract_error()
            .unwrap_err()
    }

    #[test]
    fn readonly_reply_from_the_wire_replaces_the_link() {
        let readonly = wire(b"-READONLY You can't write against a read only replica.\r\n");
        assert_eq!(
            decide(&readonly, Handover::Written),
            Decision::ReconnectAndRetry { is_read_only: true }
        );
        let loading = wire(b"-LOADING Redis is loading the dataset in memory\r\n");
        assert_eq!(decide(&loading, Handover::Written), Decision::WaitAndRetry);
    }

    #[test]
    fn a_blocked_command_released_by_a_demotion_is_sent_again_on_a_new_link_and_one_released_by_request_is_final()
     {
        let demoted = wire(
            b"-UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)\r\n",
        );
        let moved_on = wire(b"-REDIRECT 10.0.0.2:6379\r\n");
        for released in [&demoted, &moved_on] {
            assert_eq!(
                decide(released, Handover::Written),
                Decision::ReconnectAndRetry { is_read_only: true }
            );
            assert!(is_cluster_refusal(released));
        }
        let asked = wire(b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n");
        assert_eq!(decide(&asked, Handover::Written), Decision::Fail);
        assert!(!is_cluster_refusal(&asked));
    }

    #[test]
    fn readonly_replaces_the_link_and_retries() {
        assert_eq!(
            decide(&server(ServerErrorKind::ReadOnly), Handover::Written),
            Decision::ReconnectAndRetry { is_read_only: true }
        );
    }

    #[test]
    fn loading_and_tryagain_wait_and_retry() {
        for kind in [
            ServerErrorKind::BusyLoading,
            ServerErrorKind::TryAgain,
            ServerErrorKind::MasterDown,
        ] {
            assert_eq!(
                decide(&server(kind), Handover::Written),
                Decision::WaitAndRetry
            );
        }
    }

    #[test]
    fn loading_masterdown_and_busy_are_not_ready_and_tryagain_is_not_one_of_them() {
        for reply in [
            &b"-LOADING Redis is loading the dataset in memory\r\n"[..],
            b"-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n",
            b"-BUSY Redis is busy running a script.\r\n",
        ] {
            assert!(is_not_ready(&wire(reply)), "{}", String::from_utf8_lossy(reply));
        }
        for reply in [
            &b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"[..],
            b"-ERR unknown command\r\n",
        ] {
            assert!(
                !is_not_ready(&wire(reply)),
                "{}",
                String::from_utf8_lossy(reply)
            );
        }
    }

    #[test]
    fn busy_script_is_recognised_by_its_code() {
        let busy = wire(b"-BUSY Redis is busy running a script\r\n");
        assert_eq!(busy.code(), Some("BUSY"));
        assert_eq!(decide(&busy, Handover::Written), Decision::WaitAndRetry);
    }

    #[test]
    fn dropped_connection_after_write_is_ambiguous() {
        let io: RedisError = std::io::Error::from(std::io::ErrorKind::BrokenPipe).into();
        assert_eq!(decide(&io, Handover::Written), Decision::Ambiguous);
        assert_eq!(
            decide(&io, Handover::Unsent),
            Decision::ReconnectAndRetry {
                is_read_only: false
            }
        );
    }

    #[test]
    fn wrongtype_and_noperm_are_final() {
        let wrongtype =
            wire(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
        assert_eq!(decide(&wrongtype, Handover::Written), Decision::Fail);
        assert_eq!(
            decide(&server(ServerErrorKind::NoPerm), Handover::Written),
            Decision::Fail
        );
        assert_eq!(
            decide(&server(ServerErrorKind::ResponseError), Handover::Written),
            Decision::Fail
        );
    }
}
