//! What a link has read and written, and how many commands it carries, recorded as it happens.
//!
//! # Behaviour
//! - [`MeteredStream`] wraps the socket handed to redis-rs and stamps the time of every read and
//!   write that moved bytes. It is the only place that sees bytes arrive, so the read-progress
//!   watchdog needs no help from the protocol layer.
//! - The command path counts commands in flight ([`InFlight`] guards); the first command after an
//!   idle spell stamps `busy_since`.
//! - The end of the stream or a failed read or write marks the link closed at once, before
//!   redis-rs's driver has failed the commands in flight: a command that starts after that
//!   waits for the next link and is "not executed", never "may have been applied".
//! - Times are nanoseconds since the link was made, in atomics: one relaxed store per read.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Shared record of one link's traffic.
#[derive(Debug)]
pub(crate) struct Activity {
    origin: Instant,
    last_read: AtomicU64,
    last_write: AtomicU64,
    busy_since: AtomicU64,
    in_flight: AtomicUsize,
    is_closed: AtomicBool,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            last_read: AtomicU64::new(0),
            last_write: AtomicU64::new(0),
            busy_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            is_closed: AtomicBool::new(false),
        })
    }

    /// When the link this records was made.
    pub(crate) fn opened_at(&self) -> Instant {
        self.origin
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn instant(&self, nanos: u64) -> Instant {
        self.origin + Duration::from_nanos(nanos)
    }

    /// Marks a command as written to this link until the guard drops. The guard borrows: the
    /// command path holds the link anyway, and a second reference count per command would be
    /// two more contended atomic operations.
    pub(crate) fn begin(&self) -> InFlight<&Self> {
        self.enter();
        InFlight(self)
    }

    /// [`Activity::begin`] for a guard that outlives the borrow (a task of its own).
    pub(crate) fn begin_owned(self: &Arc<Self>) -> InFlight<Arc<Self>> {
        self.enter();
        InFlight(Arc::clone(self))
    }

    fn enter(&self) {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            self.busy_since.store(self.now(), Ordering::Relaxed);
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub(crate) fn last_read(&self) -> Instant {
        self.instant(self.last_read.load(Ordering::Relaxed))
    }

    pub(crate) fn last_traffic(&self) -> Instant {
        let read = self.last_read.load(Ordering::Relaxed);
        let write = self.last_write.load(Ordering::Relaxed);
        self.instant(read.max(write))
    }

    pub(crate) fn busy_since(&self) -> Instant {
        self.instant(self.busy_since.load(Ordering::Relaxed))
    }

    /// How long the link has had commands in flight and read nothing; zero when idle.
    pub(crate) fn stalled_for(&self, now: Instant) -> Duration {
        if self.in_flight() == 0 {
            return Duration::ZERO;
        }
        let since = self.last_read().max(self.busy_since());
        now.saturating_duration_since(since)
    }

    pub(crate) fn mark_closed(&self) {
        self.is_closed.store(true, Ordering::Release);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.is_closed.load(Ordering::Acquire)
    }
}

/// A command in flight on a link; dropping it ends the count.
#[derive(Debug)]
pub(crate) struct InFlight<A: std::ops::Deref<Target = Activity>>(A);

impl<A: std::ops::Deref<Target = Activity>> Drop for InFlight<A> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream that records read and write progress into an [`Activity`].
#[derive(Debug)]
pub(crate) struct MeteredStream<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> MeteredStream<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S> MeteredStream<S> {
    /// Stamps a write that moved bytes; a failed one marks the link closed.
    fn stamp_write(&self, poll: &Poll<io::Result<usize>>) {
        match poll {
            Poll::Ready(Ok(n)) if *n > 0 => {
                let now = self.activity.now();
                self.activity.last_write.store(now, Ordering::Relaxed);
            }
            Poll::Ready(Err(_)) => self.activity.mark_closed(),
            _ => {}
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for MeteredStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let had_room = buf.remaining() > 0;
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &poll {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                let now = self.activity.now();
                self.activity.last_read.store(now, Ordering::Relaxed);
            }
            // End of stream, or a failed read: the link takes no new command from now on, so
            // none is handed to a dead socket and mistaken for one that may have been applied.
            Poll::Ready(Ok(())) if had_room => self.activity.mark_closed(),
            Poll::Ready(Err(_)) => self.activity.mark_closed(),
            _ => {}
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for MeteredStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.stamp_write(&poll);
        poll
    }

    /// Forwarded, so a writer that gathers buffers (redis-rs's driver) writes them with one
    /// system call, as it would on the bare socket.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.stamp_write(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_link_is_never_stalled() {
        let activity = Activity::new();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(activity.stalled_for(Instant::now()), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn busy_link_stalls_from_its_first_command_until_a_read() {
        let activity = Activity::new();
        tokio::time::advance(Duration::from_secs(10)).await;
        let guard = activity.begin();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(activity.stalled_for(Instant::now()), Duration::from_secs(3));
        drop(guard);
        assert_eq!(activity.stalled_for(Instant::now()), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_read_reset_the_stall() {
        let (client, mut server) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut metered = MeteredStream::new(client, Arc::clone(&activity));
        let _guard = activity.begin();
        tokio::time::advance(Duration::from_secs(2)).await;
        tokio::io::AsyncWriteExt::write_all(&mut server, b"+PONG\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::io::AsyncReadExt::read(&mut metered, &mut buf)
            .await
            .unwrap();
        assert_eq!(n, 7);
        assert_eq!(activity.stalled_for(Instant::now()), Duration::ZERO);
        assert!(!activity.is_closed());
    }

    #[tokio::test]
    async fn gathered_writes_reach_the_socket_whole_and_are_stamped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let activity = Activity::new();
        let mut metered = MeteredStream::new(client, Arc::clone(&activity));
        assert!(metered.is_write_vectored());
        let parts = [io::IoSlice::new(b"PI"), io::IoSlice::new(b"NG\r\n")];
        let written = tokio::io::AsyncWriteExt::write_vectored(&mut metered, &parts)
            .await
            .unwrap();
        assert_eq!(written, 6);
        assert!(activity.last_traffic() > activity.opened_at());
        let mut buf = [0u8; 6];
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::io::AsyncReadExt::read_exact(&mut server, &mut buf),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(&buf, b"PING\r\n");
    }

    #[tokio::test]
    async fn the_end_of_the_stream_marks_the_link_closed_at_once() {
        let (client, server) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut metered = MeteredStream::new(client, Arc::clone(&activity));
        drop(server);
        let mut buf = [0u8; 16];
        let n = tokio::io::AsyncReadExt::read(&mut metered, &mut buf)
            .await
            .unwrap();
        assert_eq!(n, 0);
        assert!(activity.is_closed());
    }
}
