//! Whether the server a name moved away from has gone silent (killed, unreachable, frozen), so
//! the commands in flight on its link may be cut off and the ones that can be sent again go to
//! the new link.
//!
//! # Behaviour
//! - The old server is asked for a fresh handshake, and the new one for one at the same moment:
//!   the old one is given a few times what the new one took ([`SILENCE_FACTOR`], at least
//!   [`SILENCE_FLOOR`], at most the probe timeout).
//! - A handshake refused outright (the process is gone) is a verdict at once.
//! - One late handshake is not yet silence: a busy machine (every core taken by the application
//!   or the server's neighbours) delays a live server as much. The old server is judged silent
//!   only once the new one has also completed [`CONFIRMATIONS`] further handshakes, one after
//!   the other, while the old one's first still goes unanswered: a machine too busy to run the
//!   old one's delays the new one's too, and so gives the old one that much longer. A frozen
//!   server costs a few new-server round trips more; a slow one is not cut off.
//! - Where the new server cannot be measured (it fails its handshake), the old one has the whole
//!   probe timeout.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::connect::Connector;

/// How many times the new server's handshake the old one is given before it is late.
const SILENCE_FACTOR: u32 = 4;
/// The least time the old server is given, however fast the new one answered.
const SILENCE_FLOOR: Duration = Duration::from_millis(25);
/// How many handshakes, one after the other, the new server completes while a late old server
/// still does not before the old one is judged silent.
const CONFIRMATIONS: usize = 2;

/// How long the server a name moved away from is given to complete a handshake: a few times
/// what the new server took (`measured`; same network, same handshake), at least
/// [`SILENCE_FLOOR`], at most `ceiling` (the probe timeout).
fn silence_bound(measured: Duration, ceiling: Duration) -> Duration {
    (measured * SILENCE_FACTOR).clamp(SILENCE_FLOOR.min(ceiling), ceiling)
}

/// Whether the server at `old` fails to complete a fresh handshake (see the module's
/// behaviour), judged against the server at `new`, within `ceiling` at most.
pub(super) async fn is_silent(
    connector: &Connector,
    old: SocketAddr,
    new: Option<SocketAddr>,
    ceiling: Duration,
) -> bool {
    let started = Instant::now();
    let old_answers = connector.answers(old, ceiling);
    tokio::pin!(old_answers);
    let Some(new) = new else {
        return !old_answers.await;
    };
    let measured = tokio::select! {
        biased;
        answered = &mut old_answers => return !answered,
        answered = connector.answers(new, ceiling) => answered.then(|| started.elapsed()),
    };
    let Some(measured) = measured else {
        return !old_answers.await;
    };
    tokio::select! {
        biased;
        answered = &mut old_answers => return !answered,
        () = tokio::time::sleep_until(started + silence_bound(measured, ceiling)) => {}
    }
    // Late: silent only if the new server keeps answering meanwhile.
    for _ in 0..CONFIRMATIONS {
        tokio::select! {
            biased;
            answered = &mut old_answers => return !answered,
            answered = connector.answers(new, ceiling) => {
                if !answered {
                    return !old_answers.await;
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use steadfast_testkit::TestServer;

    use crate::config::Config;
    use crate::connect::PushRoutes;

    fn ip(n: u8) -> std::net::IpAddr {
        std::net::IpAddr::from([127, 219, (std::process::id() % 250) as u8, n])
    }

    fn connector_for(server: &TestServer) -> Connector {
        let (application, _) = tokio::sync::broadcast::channel(16);
        let (maintenance, _) = tokio::sync::mpsc::channel(16);
        Connector::new(
            Arc::new(Config::from_url(&server.url()).expect("a test server's url")),
            PushRoutes {
                application,
                maintenance,
            },
            tokio_util::task::TaskTracker::new(),
        )
        .expect("no TLS files to read")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frozen_or_killed_old_server_is_silent_and_a_live_one_is_not() {
        let mut old = TestServer::start(ip(1), &[]).await;
        let new = TestServer::start(ip(2), &[]).await;
        let connector = connector_for(&old);
        let ceiling = Duration::from_secs(1);
        let (at, new_at) = (old.address, Some(new.address));
        let judge = || is_silent(&connector, at, new_at, ceiling);

        assert!(!judge().await, "both answer");
        assert!(
            !is_silent(&connector, at, None, ceiling).await,
            "the new one unmeasured: the old one answers within the ceiling"
        );
        old.pause();
        let frozen = judge().await;
        old.resume();
        assert!(frozen, "a frozen server completes no handshake");
        assert!(!judge().await, "running again, it answers");
        old.kill();
        assert!(judge().await, "a killed server refuses the connection");
    }

    #[test]
    fn the_old_server_gets_a_few_times_the_new_ones_handshake_within_the_floor_and_the_probe_timeout()
     {
        let ceiling = Duration::from_secs(1);
        assert_eq!(
            silence_bound(Duration::from_millis(1), ceiling),
            SILENCE_FLOOR
        );
        assert_eq!(
            silence_bound(Duration::from_millis(20), ceiling),
            Duration::from_millis(80)
        );
        assert_eq!(silence_bound(Duration::from_millis(900), ceiling), ceiling);
        assert_eq!(
            silence_bound(Duration::from_millis(1), Duration::from_millis(10)),
            Duration::from_millis(10),
            "a probe timeout below the floor wins"
        );
    }
}
