//! The library's own multiplexed connection: requests go out as RESP bytes, replies come back
//! as the bytes of their frames, in order, with nothing parsed into values on the way.
//!
//! # Behaviour
//! - A [`Wire`] is a cheap handle (clone it freely) on one connection driven by one task (the
//!   future [`Wire::new`] returns). [`Wire::send`] queues a request (one command or many,
//!   already encoded) with the number of replies it owes, and resolves with those replies'
//!   frames, concatenated, exactly as the server sent them.
//! - Requests queued while the connection writes are written together with one system call
//!   (up to [`WRITE_BATCH`] bytes); replies are matched to requests in order.
//! - Push frames (`>`, RESP3) go to the push handler given to [`Wire::new`] (called on the
//!   connection's task: it must not block), or are dropped without one. They are nobody's reply,
//!   except a subscription change's confirmation (`subscribe`, `unsubscribe` ...) while the
//!   oldest request waiting was sent with `confirms` ([`Wire::request`]): then it is that
//!   request's reply too (a server's own `sunsubscribe`, after a slot moved, is only a push).
//!   RESP2 Pub/Sub messages look like replies and are not told apart: a subscribed RESP2
//!   connection is not a wire's.
//! - When the connection fails (closed, reset, bytes that are not RESP, a reply nobody asked
//!   for), every request waiting for a reply or queued gets an error, the task ends, and later
//!   requests fail at once. Dropping every handle ends the task too.
//! - Deadlines belong to the caller: a `send` waits as long as the connection lives. Bounds
//!   too: at most `queue` requests wait to be written; those written wait for replies as long
//!   as their callers do (the library's own queue bounds how many callers there are).

mod connection;
mod decode;
mod frame;

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

pub(crate) use connection::{Connection, failed, queued_refusals, values};
pub(crate) use frame::length as frame_length;

/// What is done with each push frame: see the module's documentation.
pub(crate) type Pushes = Box<dyn FnMut(&[u8]) + Send>;

/// Requests written together with one system call, at most (bytes).
pub(crate) const WRITE_BATCH: usize = 64 * 1024;

/// Read buffer kept between reads; it grows for a large reply and shrinks back after.
const READ_BUFFER: usize = 16 * 1024;

/// A request waiting for its replies.
struct Job {
    bytes: Vec<u8>,
    replies: usize,
    confirms: bool,
    tell: oneshot::Sender<io::Result<Replies>>,
}

/// A request written, and the replies read for it so far.
struct Waiter {
    owed: usize,
    confirms: bool,
    got: Replies,
    tell: oneshot::Sender<io::Result<Replies>>,
}

/// The replies to one request: their frames, concatenated as the server sent them.
#[derive(Debug, Default)]
pub(crate) struct Replies {
    pub(crate) bytes: Vec<u8>,
    /// Some frame is an error (simple or bulk) or an attribute (which annotates a reply).
    pub(crate) has_error: bool,
}

/// A handle on one connection; see the module's documentation.
#[derive(Clone, Debug)]
pub(crate) struct Wire {
    jobs: mpsc::Sender<Job>,
}

impl Wire {
    /// A wire over `stream`, with room for `queue` requests waiting to be written; push frames
    /// go to `pushes`. The returned future drives the connection: spawn it.
    pub(crate) fn new<S>(
        stream: S,
        queue: usize,
        pushes: Option<Pushes>,
    ) -> (Self, impl Future<Output = ()> + Send + 'static)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (jobs, queued) = mpsc::channel(queue.max(1));
        (Self { jobs }, drive(stream, queued, pushes))
    }

    /// Sends `bytes` (encoded commands) and resolves with the frames of the `replies` replies
    /// they owe, concatenated. An error when the connection failed before they all came.
    pub(crate) async fn send(&self, bytes: Vec<u8>, replies: usize) -> io::Result<Vec<u8>> {
        Ok(self.request(bytes, replies, false).await?.bytes)
    }

    /// [`Wire::send`], for a request whose replies may be subscription confirmations
    /// (`confirms`: see the module's documentation).
    pub(crate) async fn request(
        &self,
        bytes: Vec<u8>,
        replies: usize,
        confirms: bool,
    ) -> io::Result<Replies> {
        if replies == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a request owes at least one reply",
            ));
        }
        let (tell, told) = oneshot::channel();
        let job = Job {
            bytes,
            replies,
            confirms,
            tell,
        };
        if self.jobs.send(job).await.is_err() {
            return Err(closed());
        }
        told.await.unwrap_or_else(|_| Err(closed()))
    }
}

/// Whether the connection failed because the server's bytes were not RESP (not because the
/// stream under it failed).
pub(crate) fn is_malformed(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|e| e.downcast_ref::<frame::Malformed>().is_some())
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the connection is closed")
}

/// The connection's task: writes what is queued, reads what comes back, until either fails or
/// every handle is gone; then fails whatever still waits.
async fn drive<S>(stream: S, mut queued: mpsc::Receiver<Job>, mut pushes: Option<Pushes>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    // Written requests, in the order their replies will come.
    let (written, mut waiting) = mpsc::unbounded_channel::<Waiter>();
    let writing = async {
        let mut out = Vec::new();
        while let Some(job) = queued.recv().await {
            let mut next = Some(job);
            while let Some(job) = next.take() {
                out.extend_from_slice(&job.bytes);
                let waiter = Waiter {
                    owed: job.replies,
                    confirms: job.confirms,
                    got: Replies::default(),
                    tell: job.tell,
                };
                // The reader holds the other end while it runs; when it ended, so does this.
                if written.send(waiter).is_err() {
                    return Err(closed());
                }
                if out.len() < WRITE_BATCH {
                    next = queued.try_recv().ok();
                }
            }
            writer.write_all(&out).await?;
            out.clear();
            // What a large write grew is given back; small writes keep their room.
            if out.capacity() > READ_BUFFER {
                out.shrink_to(READ_BUFFER);
            }
        }
        // Every handle is gone: nothing more will be asked.
        Ok(())
    };
    let mut current: Option<Waiter> = None;
    let reading = async {
        let mut buf: Vec<u8> = Vec::with_capacity(READ_BUFFER);
        loop {
            if buf.capacity() - buf.len() < READ_BUFFER / 4 {
                // Doubling for a reply that outgrows the buffer: it is scanned again after
                // each read, so few reads keep a large aggregate's scans few.
                buf.reserve(buf.len().max(READ_BUFFER));
            }
            if reader.read_buf(&mut buf).await? == 0 {
                return Err::<(), _>(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            let mut used = 0;
            while let Some(length) = frame::length(&buf[used..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                let frame = &buf[used..used + length];
                used += length;
                let is_push = frame.first() == Some(&b'>');
                if is_push && let Some(pushes) = &mut pushes {
                    pushes(frame);
                }
                if current.is_none() {
                    current = waiting.try_recv().ok();
                }
                let is_reply = !is_push
                    || (current.as_ref().is_some_and(|w| w.confirms)
                        && frame::is_confirmation(frame));
                if !is_reply {
                    continue;
                }
                let Some(mut waiter) = current.take() else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        frame::Malformed("a reply nobody asked for"),
                    ));
                };
                waiter.got.bytes.extend_from_slice(frame);
                waiter.got.has_error |= matches!(frame.first(), Some(b'-' | b'!' | b'|'));
                waiter.owed -= 1;
                if waiter.owed == 0 {
                    let _ = waiter.tell.send(Ok(waiter.got));
                } else {
                    current = Some(waiter);
                }
            }
            buf.drain(..used);
            if buf.is_empty() && buf.capacity() > 4 * READ_BUFFER {
                buf.shrink_to(READ_BUFFER);
            }
        }
    };
    let failure = tokio::select! {
        written = writing => written.err(),
        read = reading => read.err(),
    };
    let failure = failure.unwrap_or_else(closed);
    // Fail everything still waiting: written, queued, and what the reader held.
    let fail = |tell: oneshot::Sender<io::Result<Replies>>| {
        let copy = match failure
            .get_ref()
            .and_then(|e| e.downcast_ref::<frame::Malformed>())
        {
            Some(malformed) => io::Error::new(failure.kind(), malformed.clone()),
            None => io::Error::new(failure.kind(), failure.to_string()),
        };
        let _ = tell.send(Err(copy));
    };
    if let Some(waiter) = current {
        fail(waiter.tell);
    }
    waiting.close();
    while let Ok(waiter) = waiting.try_recv() {
        fail(waiter.tell);
    }
    queued.close();
    while let Ok(job) = queued.try_recv() {
        fail(job.tell);
    }
}

#[cfg(test)]
mod tests;
