//! The re-auth worker: keeps the live link authenticated with fresh credentials from the
//! configured [`CredentialsProvider`] (see [`crate::connect::credentials`] for the contract).

use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::backoff::{Backoff, Jitter};
use crate::endpoint::credentials::{Credentials, CredentialsProvider};
use crate::event::Event;
use crate::shared::LinkParts;

/// How long until credentials that expire at `expires_at` should be replaced.
pub(crate) fn refresh_after(
    now: SystemTime,
    expires_at: Option<SystemTime>,
    default: Duration,
) -> Duration {
    let Some(expires_at) = expires_at else {
        return default;
    };
    let remaining = expires_at.duration_since(now).unwrap_or_default();
    let ahead = (remaining / 5).max(Duration::from_secs(1));
    remaining.saturating_sub(ahead)
}

/// Keeps the current link authenticated with fresh credentials until the client ends.
pub(crate) fn spawn_refresher(
    link: LinkParts,
    provider: std::sync::Arc<dyn CredentialsProvider>,
    every: Duration,
    cancel: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) {
    tasks.spawn(async move {
        tokio::select! {
            () = refresh(link, provider, every) => {}
            () = cancel.cancelled() => {}
        }
    });
}

async fn refresh(
    link: LinkParts,
    provider: std::sync::Arc<dyn CredentialsProvider>,
    every: Duration,
) {
    let mut wait = match provider.credentials().await {
        Ok(current) => refresh_after(SystemTime::now(), current.expires_at, every),
        Err(_) => Duration::from_secs(1),
    };
    // After a failed refresh: 400 ms, doubling to 12.8 s (never past the refresh interval).
    let mut retry = Backoff::new(
        Duration::from_millis(400),
        Duration::from_millis(12_800).min(every),
        Jitter::None,
        0,
    );
    loop {
        tokio::time::sleep(wait).await;
        let outcome = match provider.credentials().await {
            Ok(fresh) => reauthenticate(&link, &fresh).await.map(|()| fresh),
            Err(e) => Err(format!("credentials provider: {e}")),
        };
        match outcome {
            Ok(fresh) => {
                retry.reset();
                wait = refresh_after(SystemTime::now(), fresh.expires_at, every);
            }
            Err(error) => {
                wait = retry.next().unwrap_or(every);
                warn!(%error, ?wait, "re-authentication failed; retrying");
                link.emitter.emit(Event::ReauthenticationFailed { error });
            }
        }
    }
}

async fn reauthenticate(parts: &LinkParts, fresh: &Credentials) -> Result<(), String> {
    let Some(link) = parts.current() else {
        return Ok(());
    };
    let mut auth = redis::cmd("AUTH");
    if let Some(user) = &fresh.username {
        auth.arg(user);
    }
    auth.arg(fresh.password.expose());
    let mut connection = link.connection.clone();
    let bound = parts.config.connect.connect_timeout;
    match tokio::time::timeout(bound, connection.send_packed_command(&auth)).await {
        Ok(Ok(redis::Value::Okay | redis::Value::SimpleString(_))) => {
            debug!(generation = link.generation, "re-authenticated");
            parts.emitter.emit(Event::Reauthenticated {
                generation: link.generation,
            });
            Ok(())
        }
        Ok(Ok(redis::Value::ServerError(e))) => Err(format!("AUTH refused: {}", e.code())),
        Ok(Ok(other)) => Err(format!("AUTH answered {other:?}")),
        Ok(Err(e)) => Err(format!("AUTH: {}", e.kind_description())),
        Err(_) => Err(format!("AUTH got no answer within {bound:?}")),
    }
}

trait KindDescription {
    fn kind_description(&self) -> String;
}

impl KindDescription for redis::RedisError {
    /// The error's kind and code only: an AUTH error's detail never carries the password, but a
    /// kind is all the log needs.
    fn kind_description(&self) -> String {
        format!("{:?} {}", self.kind(), self.code().unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_refreshed_at_four_fifths_of_their_life() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let in_15_min = now + Duration::from_secs(900);
        assert_eq!(
            refresh_after(now, Some(in_15_min), Duration::from_secs(300)),
            Duration::from_secs(720)
        );
    }

    #[test]
    fn nearly_expired_tokens_are_refreshed_at_once_and_missing_expiry_uses_the_interval() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(
            refresh_after(now, Some(now), Duration::from_secs(300)),
            Duration::ZERO
        );
        assert_eq!(
            refresh_after(
                now,
                Some(now - Duration::from_secs(5)),
                Duration::from_secs(300)
            ),
            Duration::ZERO
        );
        assert_eq!(
            refresh_after(now, None, Duration::from_secs(300)),
            Duration::from_secs(300)
        );
    }
}
