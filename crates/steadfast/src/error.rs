//! The one public error type.
//!
//! # Behaviour
//! - [`Error::kind`] says what happened; [`Error::is_ambiguous`] says whether the command may have
//!   been applied on the server (the only case where sending it again could apply it twice).
//! - Server replies that are final (WRONGTYPE, NOPERM, syntax ...) keep the original
//!   [`redis::RedisError`] as their source, and convert back to it unchanged through the
//!   [`redis::aio::ConnectionLike`] impl, so code written against redis-rs sees the same errors.
//! - Every other error converts to a [`redis::RedisError`] of kind `Io` that carries the
//!   [`Error`]: [`RedisErrorExt`] reads it back ("may this have been applied?"), and walking
//!   [`std::error::Error::source`] from the `RedisError` reaches it too.
//! - Messages name the step and the address ("tcp connect to 10.0.0.5:6379 timed out after 5s")
//!   and never contain a password.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What went wrong, coarsely.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A config field or URL is invalid; the message names the field and the value.
    InvalidConfig,
    /// Resolving, dialling or the handshake failed (the command was never sent).
    Connect,
    /// The server rejected the credentials.
    Auth,
    /// The TLS handshake failed on a certificate: the server's was not trusted or did not match
    /// the name, or the server refused ours. Waiting does not fix it.
    Tls,
    /// The endpoint answered with bytes that are not the Redis protocol (an HTTP server, TLS
    /// to a plain port, another service): waiting does not fix it. Commands fail at once with
    /// this while the supervisor keeps trying in the background.
    Protocol,
    /// The command's deadline ran out. [`Error::is_ambiguous`] says whether it had been written.
    DeadlineExceeded,
    /// The command was written and the link died before its reply came: it may have been
    /// applied. It was not sent again because it is not idempotent and the caller did not allow it.
    MayHaveBeenApplied,
    /// Too many commands were already waiting for a link.
    QueueFull,
    /// The server answered with an error that sending again cannot fix.
    Server,
    /// The client was shut down.
    Shutdown,
    /// The command would take over the client's shared link or change it in a way no
    /// reconnect can keep (`SUBSCRIBE`, `MONITOR`, `WATCH`, `MULTI` on its own, `AUTH`,
    /// `HELLO` ...): it was not sent. The message says what to use instead.
    Unsupported,
    /// A cluster command or pipeline names keys in different slots; it was not sent.
    CrossSlot,
    /// A [`Session`](crate::Session)'s link was replaced while a `WATCH` or a `MULTI` was
    /// active: the guard (or the queued commands) died with the old connection, and the
    /// command was not sent, so an `EXEC` never runs unguarded. Start the transaction again
    /// (`WATCH`, read, `MULTI` ... `EXEC`).
    WatchLost,
    /// The cluster shard that serves the command has no node answering (its circuit breaker is
    /// open): the command was refused at once, not sent. Safe to retry.
    NotAttempted,
}

/// The error type of every steadfast operation.
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    is_ambiguous: bool,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    redis: Option<redis::RedisError>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            is_ambiguous: matches!(kind, ErrorKind::MayHaveBeenApplied),
            source: None,
            redis: None,
        }
    }

    pub(crate) fn invalid_config(field: &str, value: &str, problem: &str) -> Self {
        Self::new(
            ErrorKind::InvalidConfig,
            format!("invalid {field} = {value}: {problem}"),
        )
    }

    /// The command's deadline ran out. `last` is the last error it or the supervisor met;
    /// `attempt` what the connection attempt under way was waiting for then, if one was.
    pub(crate) fn deadline(
        deadline: Duration,
        is_ambiguous: bool,
        last: Option<&Error>,
        attempt: Option<String>,
    ) -> Self {
        let state = if is_ambiguous {
            "after it was written; it may have been applied"
        } else {
            "before it was written; it was not applied"
        };
        let mut message = format!("command deadline of {deadline:?} ran out {state}");
        if let Some(last) = last {
            message.push_str(&format!(" (last error: {last})"));
        }
        if let Some(attempt) = attempt {
            message.push_str(&format!(" (connection attempt: {attempt})"));
        }
        let mut error = Self::new(ErrorKind::DeadlineExceeded, message);
        error.is_ambiguous = is_ambiguous;
        error
    }

    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    pub(crate) fn from_redis(kind: ErrorKind, context: &str, err: redis::RedisError) -> Self {
        let mut error = Self::new(kind, format!("{context}: {err}"));
        error.redis = Some(err);
        error
    }

    /// What happened.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The command may have been applied on the server even though the caller got an error.
    pub fn is_ambiguous(&self) -> bool {
        self.is_ambiguous
    }

    /// Sending the command again could succeed and could not apply it twice.
    pub fn is_retryable(&self) -> bool {
        !self.is_ambiguous
            && matches!(
                self.kind,
                ErrorKind::Connect
                    | ErrorKind::DeadlineExceeded
                    | ErrorKind::QueueFull
                    | ErrorKind::NotAttempted
            )
    }

    /// The link this error came from should be replaced.
    pub fn needs_reconnect(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Connect | ErrorKind::MayHaveBeenApplied
        )
    }

    /// The server's error reply or redis-rs's error, if this came from one.
    pub fn redis_error(&self) -> Option<&redis::RedisError> {
        self.redis.as_ref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("is_ambiguous", &self.is_ambiguous)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        if let Some(redis) = &self.redis {
            return Some(redis);
        }
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<Error> for redis::RedisError {
    fn from(error: Error) -> Self {
        if let Some(redis) = error.redis.clone()
            && error.kind == ErrorKind::Server
        {
            return redis;
        }
        if error.kind == ErrorKind::CrossSlot {
            // As redis-rs's cluster client refuses it: code CROSSSLOT, our words as the detail.
            return (
                redis::ErrorKind::Server(redis::ServerErrorKind::CrossSlot),
                "Keys in request don't hash to the same slot",
                error.message,
            )
                .into();
        }
        let io_kind = match error.kind {
            ErrorKind::DeadlineExceeded => std::io::ErrorKind::TimedOut,
            ErrorKind::Connect | ErrorKind::Shutdown | ErrorKind::NotAttempted => {
                std::io::ErrorKind::NotConnected
            }
            ErrorKind::MayHaveBeenApplied => std::io::ErrorKind::ConnectionAborted,
            ErrorKind::WatchLost => std::io::ErrorKind::ConnectionReset,
            ErrorKind::QueueFull => std::io::ErrorKind::WouldBlock,
            ErrorKind::InvalidConfig | ErrorKind::CrossSlot | ErrorKind::Unsupported => {
                std::io::ErrorKind::InvalidInput
            }
            ErrorKind::Protocol => std::io::ErrorKind::InvalidData,
            ErrorKind::Auth | ErrorKind::Tls => std::io::ErrorKind::PermissionDenied,
            ErrorKind::Server => std::io::ErrorKind::Other,
        };
        std::io::Error::new(io_kind, Carried(error)).into()
    }
}

/// How an [`Error`] travels inside a [`redis::RedisError`]: an I/O error's `source()` is its
/// payload's `source()`, so the payload itself must name the [`Error`] as its source for a
/// walk along `source()` to reach it.
struct Carried(Error);

impl fmt::Display for Carried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Carried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::error::Error for Carried {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// What a redis-rs-style caller can ask of a [`redis::RedisError`] returned through
/// [`Client`](crate::Client)'s [`redis::aio::ConnectionLike`] impl (every
/// [`redis::AsyncCommands`] method and [`redis::Pipeline::query_async`]).
///
/// ```no_run
/// use redis::AsyncCommands;
/// use steadfast::RedisErrorExt;
///
/// # async fn demo(mut client: steadfast::Client) {
/// match client.incr::<_, _, i64>("visits", 1).await {
///     Ok(n) => println!("visit {n}"),
///     Err(e) if e.may_have_been_applied() => println!("unknown outcome, do not resend: {e}"),
///     Err(e) => println!("not applied, safe to resend: {e}"),
/// }
/// # }
/// ```
pub trait RedisErrorExt {
    /// The steadfast [`Error`] this error carries, if it came from steadfast's command path
    /// (not for the server's own final replies, which come back as redis-rs made them, nor for
    /// a cluster command refused up front for its keys' slots, which comes back as redis-rs's
    /// cluster client makes it: `ErrorKind::Server(CrossSlot)`, code `CROSSSLOT`).
    fn steadfast_error(&self) -> Option<&Error>;

    /// Whether the command may have been applied on the server although the caller got an
    /// error: the one case where sending it again could apply it twice. For an error that
    /// carries a steadfast [`Error`] this is [`Error::is_ambiguous`]; a server's error reply
    /// means not applied; any other redis-rs error (I/O, a reply that did not convert to the
    /// asked type) counts as applied, since nothing says otherwise.
    fn may_have_been_applied(&self) -> bool;
}

impl RedisErrorExt for redis::RedisError {
    fn steadfast_error(&self) -> Option<&Error> {
        let mut next = std::error::Error::source(self);
        while let Some(error) = next {
            if let Some(found) = error.downcast_ref::<Error>() {
                return Some(found);
            }
            next = error.source();
        }
        None
    }

    fn may_have_been_applied(&self) -> bool {
        if let Some(error) = self.steadfast_error() {
            return error.is_ambiguous();
        }
        !matches!(
            self.kind(),
            redis::ErrorKind::Server(_)
                | redis::ErrorKind::Extension
                | redis::ErrorKind::Client
                | redis::ErrorKind::InvalidClientConfig
                | redis::ErrorKind::AuthenticationFailed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_after_write_is_ambiguous_and_not_retryable() {
        let err = Error::deadline(Duration::from_secs(5), true, None, None);
        assert!(err.is_ambiguous());
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("may have been applied"));
    }

    #[test]
    fn deadline_before_write_says_it_was_not_applied() {
        let err = Error::deadline(Duration::from_secs(5), false, None, None);
        assert!(!err.is_ambiguous());
        assert!(err.is_retryable());
        assert!(err.to_string().contains("not applied"));
    }

    #[test]
    fn final_server_error_converts_back_to_the_original_redis_error() {
        let original = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm),
            "no permission",
        ));
        let err = Error::from_redis(ErrorKind::Server, "GET", original);
        let back: redis::RedisError = err.into();
        assert_eq!(
            back.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
        );
    }

    #[test]
    fn a_converted_error_answers_whether_it_may_have_been_applied() {
        let unknown: redis::RedisError =
            Error::new(ErrorKind::MayHaveBeenApplied, "INCR was written").into();
        assert!(unknown.may_have_been_applied());
        assert_eq!(
            unknown.steadfast_error().map(Error::kind),
            Some(ErrorKind::MayHaveBeenApplied)
        );
        let not_sent: redis::RedisError =
            Error::deadline(Duration::from_secs(5), false, None, None).into();
        assert!(!not_sent.may_have_been_applied());
        assert!(not_sent.steadfast_error().is_some());
        let refused = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm),
            "no permission",
        ));
        assert!(!refused.may_have_been_applied());
    }

    #[test]
    fn the_source_chain_of_a_converted_error_reaches_the_steadfast_error() {
        let converted: redis::RedisError =
            Error::new(ErrorKind::MayHaveBeenApplied, "INCR was written").into();
        let mut next = std::error::Error::source(&converted);
        let mut found = false;
        while let Some(error) = next {
            found |= error.is::<Error>();
            next = error.source();
        }
        assert!(found);
    }

    #[test]
    fn deadline_converts_to_a_redis_timeout() {
        let back: redis::RedisError =
            Error::deadline(Duration::from_secs(1), false, None, None).into();
        assert!(back.is_timeout());
    }
}
