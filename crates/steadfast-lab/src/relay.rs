//! Added latency without netem: a userspace relay inside the server's namespace.
//!
//! # Behaviour
//! - [`delay`] starts a relay on the server's address, port [`RELAY_PORT`], in the server's
//!   namespace, and adds an iptables `REDIRECT` there so that *new* connections from the client
//!   to port 6379 reach the relay. Every chunk read from either side is written to the other
//!   `delay` later, in order.
//! - Connections made before the guard exist stay direct (conntrack remembers them): use the
//!   delay before the client connects, or make it reconnect.
//! - Dropping the guard removes the rule and stops the relay, closing the connections it carried.
//!
//! # Why a relay
//! This kernel has no `netem` qdisc (and no modprobe), so delay cannot come from `tc`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::LabError;
use crate::fault::Rules;
use crate::server::Server;

/// The port the relay listens on, inside the server's namespace.
pub const RELAY_PORT: u16 = 16379;

/// Chunks waiting to be written, per direction.
const QUEUE: usize = 1024;

/// A running delay; removed on drop.
#[derive(Debug)]
#[must_use = "the delay ends when this guard is dropped"]
pub struct Delayed {
    _redirect: Rules,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Delayed {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Delays every new connection from `peer` to `server` by `delay` each way.
///
/// # Errors
/// When the server runs on loopback, the relay cannot listen, or iptables fails.
pub fn delay(server: &Server, peer: Ipv4Addr, delay: Duration) -> Result<Delayed, LabError> {
    let namespace = server
        .namespace()
        .ok_or_else(|| LabError::new("delay needs the lab's namespaces"))?
        .name()
        .to_owned();
    let listen = SocketAddr::new(server.ip.into(), RELAY_PORT);
    let upstream = server.address();
    let stop = CancellationToken::new();
    let thread = {
        let stop = stop.clone();
        crate::net::serve_in(Some(&namespace), listen, move |listener| {
            serve(listener, upstream, delay, stop)
        })
        .map_err(|e| LabError::new(format!("delay relay: {e}")))?
    };
    let redirect = crate::fault::redirect(server, peer, 6379, RELAY_PORT)?;
    Ok(Delayed {
        _redirect: redirect,
        stop,
        thread: Some(thread),
    })
}

async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    delay: Duration,
    stop: CancellationToken,
) {
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let Ok((client, _)) = accepted else { continue };
        let stop = stop.clone();
        tasks.spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::select! {
                () = pump(client_read, server_write, delay) => {}
                () = pump(server_read, client_write, delay) => {}
                () = stop.cancelled() => {}
            }
        });
    }
    tasks.close();
    tasks.wait().await;
}

/// Copies `from` to `to`, each chunk `delay` after it was read, in order.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Arc<[u8]>)>(QUEUE);
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0
                || tx
                    .send((Instant::now() + delay, buf[..n].into()))
                    .await
                    .is_err()
            {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
