//! Who the client says it is: a password that never prints, credentials, and the trait a source
//! of changing credentials implements (short-lived tokens of ElastiCache IAM or Entra ID,
//! rotated ACL passwords).
//!
//! # Behaviour
//! - With a [`CredentialsProvider`] in `endpoint.credentials`, every connection attempt asks it
//!   for credentials (fresh ones on every reconnect); `endpoint.username` / `password` are unused.
//! - Live links are re-authenticated before the credentials expire by the client's re-auth
//!   worker: at four fifths of their remaining lifetime, at least one second ahead, with `AUTH`
//!   on the same link (no reconnect, no command disturbed). Credentials without an expiry are
//!   refreshed every `endpoint.credentials_refresh`. A failed refresh is retried with backoff
//!   and reported; the link keeps working on its current authentication until the server says
//!   otherwise.

use std::fmt::{self, Debug};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::SystemTime;

/// A secret that prints as `***` everywhere.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the handshake only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Credentials for `AUTH` / `HELLO ... AUTH`.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// ACL user; `None` authenticates as `default`.
    pub username: Option<String>,
    /// The password or token; never printed.
    pub password: Password,
    /// When they stop working, if they do.
    pub expires_at: Option<SystemTime>,
}

/// A boxed future returned by [`CredentialsProvider::credentials`].
pub type CredentialsFuture = Pin<Box<dyn Future<Output = io::Result<Credentials>> + Send>>;

/// Where fresh credentials come from.
pub trait CredentialsProvider: Debug + Send + Sync + 'static {
    /// The credentials to use now.
    ///
    /// # Errors
    /// Any failure to obtain them; the connection attempt fails and is retried with backoff.
    fn credentials(&self) -> CredentialsFuture;
}
