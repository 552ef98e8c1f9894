//! Waiting out a server that is there and not ready: `LOADING` (reading its dataset after a
//! restart), `MASTERDOWN` (a replica that lost its primary and serves no stale data), `BUSY` (a
//! script or function past its time limit).
//!
//! # Behaviour
//! - One command per link polls: the first to meet the refusal sends `PING` on the same link
//!   every `reconnect.refused_retry` (50 ms) until the server answers it; the others wait for
//!   that answer, then send again at once. A loading server gets one `PING` per poll from each
//!   client, however many commands wait, and they resume within one poll of its being ready.
//! - Bounded by the command's deadline; a link that closes ends the wait (the command path then
//!   waits for the next link, as for any lost link).
//!
//! # Why not the backoff
//! The exponential backoff is for servers that do not answer, where trying again costs them
//! work. A server that answers "not yet" is cheap to ask and will be ready at a moment nobody
//! knows in advance (`loading_eta_seconds` is an estimate): a backoff that has grown to a second
//! by then keeps every command away for up to that second after it is ready.

use std::time::Duration;

use redis::Value;
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::connect::Link;
use crate::policy::retry::is_not_ready;

/// Waits until the server behind `link` answers `PING`, polling every `poll`, or `deadline`,
/// or the link closes. `refused_at` is when the caller's command was refused: a readiness seen
/// since then ends the wait at once.
pub(crate) async fn wait(link: &Link, refused_at: Instant, poll: Duration, deadline: Instant) {
    let Ok(mut ready) = timeout_at(deadline, link.ready.lock()).await else {
        return;
    };
    if ready.is_some_and(|at| at >= refused_at) {
        return;
    }
    let mut connection = link.connection.clone();
    let ping = redis::cmd("PING");
    loop {
        let next = (Instant::now() + poll).min(deadline);
        tokio::select! {
            () = sleep_until(next) => {}
            () = link.closed() => return,
        }
        if next >= deadline {
            return;
        }
        let reply = timeout_at(deadline, connection.send_packed_command(&ping)).await;
        // A refusal comes back as an error value, not as an `Err`.
        match reply.map(|reply| reply.and_then(Value::extract_error)) {
            Ok(Ok(_)) => {
                *ready = Some(Instant::now());
                return;
            }
            Ok(Err(error)) if is_not_ready(&error) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}
