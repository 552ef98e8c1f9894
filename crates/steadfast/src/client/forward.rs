//! Commands sent as the caller already holds them encoded, answered with the server's bytes: a
//! proxy's way through the client, with nothing decoded and encoded again.
//!
//! # Behaviour
//! - [`Client::forward`] and [`Client::forward_pipeline`] take the command(s) twice: as
//!   [`Cmd`] / [`Pipeline`], which the command path reads (what it does, whether it may be
//!   sent again, where it may go), and as the RESP bytes to write (as a client sent them).
//! - Everything [`Client::query`] does holds: the deadline, the wait for a link, the retry
//!   policy (a refused command is sent again; one that may have been applied only if it is
//!   idempotent or allowed); commands a shared link must not carry are refused unsent.
//! - A reply with no error in it comes back as the server's frames
//!   ([`Forwarded::Frames`]), in the client's protocol; any other is decoded
//!   ([`Forwarded::Values`]; a single command's server error is its `Err`, as in `query`).
//! - The bytes must be the commands, one RESP array each: a count that differs from the
//!   commands' is refused unsent ([`ErrorKind::Unsupported`]).
//! - Blocking commands and transactions are sent from the [`Cmd`] / [`Pipeline`], their
//!   replies decoded: they are rewritten or read on the way.

use redis::{Cmd, Pipeline, Value};

use super::Client;
use crate::command::{self, Reply, Request};
use crate::connect::wire;
use crate::error::{Error, ErrorKind};

/// The replies to commands sent with [`Client::forward`] or [`Client::forward_pipeline`].
#[derive(Debug, Clone, PartialEq)]
pub enum Forwarded {
    /// Every reply's frame, exactly as the server sent it, in order; none is an error.
    Frames(Vec<u8>),
    /// The replies decoded, one per command: the reply had an error in it (a pipeline's server
    /// errors are values here), or the request was one the command path rewrites or reads.
    Values(Vec<Value>),
}

impl Client {
    /// Sends `cmd`, written as `encoded` (the same command as one RESP array), and answers
    /// with its reply's bytes where they hold no error.
    ///
    /// ```no_run
    /// # async fn run(client: steadfast::Client) -> Result<(), steadfast::Error> {
    /// use steadfast::Forwarded;
    /// let mut get = redis::cmd("GET");
    /// get.arg("greeting");
    /// match client.forward(&get, b"*2\r\n$3\r\nGET\r\n$8\r\ngreeting\r\n").await? {
    ///     Forwarded::Frames(bytes) => println!("{}", String::from_utf8_lossy(&bytes)),
    ///     Forwarded::Values(values) => println!("{values:?}"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`Client::query`]; [`ErrorKind::Unsupported`] when `encoded` is not one command.
    pub async fn forward(&self, cmd: &Cmd, encoded: &[u8]) -> Result<Forwarded, Error> {
        check(encoded, 1)?;
        let reply = command::execute_encoded(
            &self.shared,
            Request::Single(cmd),
            encoded,
            self.is_ambiguous_allowed,
        );
        Ok(forwarded(reply.await?))
    }

    /// Sends `pipeline`, written as `encoded` (its commands as RESP arrays, in order), and
    /// answers with its replies' bytes where they hold no error.
    ///
    /// # Errors
    /// As [`Client::query`] for the pipeline as a whole; [`ErrorKind::Unsupported`] when
    /// `encoded` holds another number of commands than `pipeline`.
    pub async fn forward_pipeline(
        &self,
        pipeline: &Pipeline,
        encoded: &[u8],
    ) -> Result<Forwarded, Error> {
        let count = pipeline.len();
        check(encoded, count)?;
        let request = Request::Pipeline {
            pipeline,
            offset: 0,
            count,
        };
        let reply =
            command::execute_encoded(&self.shared, request, encoded, self.is_ambiguous_allowed);
        Ok(forwarded(reply.await?))
    }
}

fn forwarded(reply: Reply) -> Forwarded {
    match reply {
        Reply::Frames(frames) => Forwarded::Frames(frames),
        other => Forwarded::Values(other.into_values()),
    }
}

/// Refuses `encoded` unless it is `count` whole RESP arrays.
fn check(encoded: &[u8], count: usize) -> Result<(), Error> {
    let mut at = 0;
    let mut found = 0;
    while at < encoded.len() {
        match (encoded[at], wire::frame_length(&encoded[at..])) {
            (b'*', Ok(Some(length))) => at += length,
            _ => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "encoded: command {} is not a whole RESP array; not sent",
                        found + 1
                    ),
                ));
            }
        }
        found += 1;
    }
    if found != count {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("encoded: {found} commands for {count}; not sent"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_commands_are_counted_and_anything_else_is_refused() {
        assert!(check(b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n", 2).is_ok());
        let short = check(b"*1\r\n$4\r\nPING\r\n", 2).unwrap_err();
        assert_eq!(short.kind(), ErrorKind::Unsupported);
        assert!(short.to_string().contains("1 commands for 2"), "{short}");
        let inline = check(b"PING\r\n", 1).unwrap_err();
        assert!(inline.to_string().contains("command 1"), "{inline}");
        assert!(check(b"*2\r\n$3\r\nGET\r\n", 1).is_err(), "cut short");
    }
}
