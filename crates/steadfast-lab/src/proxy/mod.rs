//! A RESP-aware proxy in front of a real redis-server, for what no real server here does:
//! RESP3 maintenance push notifications.
//!
//! # Behaviour
//! - Forwards every command to the real server and every reply back, in order.
//! - Answers `CLIENT MAINT_NOTIFICATIONS ...` itself with `+OK` (the real server would refuse
//!   it), in its place among pipelined replies, and remembers that the connection opted in.
//! - [`Proxy::announce`] injects a push frame into every opted-in connection at a frame boundary
//!   and keeps it as *pending*: a connection that opts in later gets it right after its `+OK`, as
//!   Redis Software replays notifications during a maintenance window. [`Proxy::clear_pending`]
//!   ends the window.
//! - [`Proxy::inject_newest`] injects into one connection only.
//! - [`Proxy::close_existing`] closes every connection made before the call (the server closing
//!   old connections after a MOVING).
//! - Runs in its own namespace on its own thread and runtime; dropping it stops everything.

pub(crate) mod resp;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::LabError;
use crate::net::Namespace;

/// Messages a connection's writer may hold back.
const OUT_QUEUE: usize = 4096;

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect.
    pub address: SocketAddr,
    registry: Arc<Mutex<Registry>>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Registry {
    connections: HashMap<u64, Connection>,
    pending: Option<Vec<u8>>,
}

#[derive(Debug)]
struct Connection {
    is_opted_in: bool,
    out: mpsc::Sender<Out>,
    close: CancellationToken,
}

#[derive(Debug)]
enum Out {
    /// A command went to the server: its reply comes next in order.
    Forwarded,
    /// A reply the proxy gives itself, in command order.
    Local(Vec<u8>),
    /// A reply frame from the server.
    Reply(Vec<u8>),
    /// A push frame from the server, or one injected: written at once, between frames.
    Push(Vec<u8>),
}

impl Proxy {
    /// Starts a proxy listening on `listen` (inside `namespace`, if given) for `upstream`.
    ///
    /// # Errors
    /// When the namespace cannot be entered or the address cannot be bound.
    pub fn start(
        namespace: Option<&Namespace>,
        listen: SocketAddr,
        upstream: SocketAddr,
    ) -> Result<Self, LabError> {
        let registry = Arc::new(Mutex::new(Registry::default()));
        let stop = CancellationToken::new();
        let thread = {
            let (registry, stop) = (Arc::clone(&registry), stop.clone());
            crate::net::serve_in(namespace.map(Namespace::name), listen, move |listener| {
                serve(listener, upstream, registry, stop)
            })
            .map_err(|e| LabError::new(format!("proxy: {e}")))?
        };
        Ok(Self {
            address: listen,
            registry,
            stop,
            thread: Some(thread),
        })
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Injects `frame` into every connection that opted in, and replays it to those that opt in
    /// later until [`Proxy::clear_pending`]. Returns how many connections got it now.
    pub fn announce(&self, frame: &[u8]) -> usize {
        let mut registry = self.registry();
        registry.pending = Some(frame.to_vec());
        registry
            .connections
            .values()
            .filter(|c| c.is_opted_in)
            .filter(|c| c.out.try_send(Out::Push(frame.to_vec())).is_ok())
            .count()
    }

    /// Injects `frame` into the connection made most recently, opted in or not (a test can send
    /// any shape it likes); returns whether there was one.
    pub fn inject_newest(&self, frame: &[u8]) -> bool {
        let registry = self.registry();
        registry
            .connections
            .iter()
            .max_by_key(|(id, _)| **id)
            .is_some_and(|(_, c)| c.out.try_send(Out::Push(frame.to_vec())).is_ok())
    }

    /// Ends the replay of the last announced frame.
    pub fn clear_pending(&self) {
        self.registry().pending = None;
    }

    /// Closes every connection open now; returns how many.
    pub fn close_existing(&self) -> usize {
        let registry = self.registry();
        for connection in registry.connections.values() {
            connection.close.cancel();
        }
        registry.connections.len()
    }

    /// Connections open now that opted in to maintenance notifications.
    pub fn opted_in(&self) -> usize {
        self.registry()
            .connections
            .values()
            .filter(|c| c.is_opted_in)
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    registry: Arc<Mutex<Registry>>,
    stop: CancellationToken,
) {
    let tasks = tokio_util::task::TaskTracker::new();
    let ids = AtomicU64::new(0);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let Ok((client, _)) = accepted else { continue };
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
        let close = stop.child_token();
        registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .connections
            .insert(
                id,
                Connection {
                    is_opted_in: false,
                    out: out_tx.clone(),
                    close: close.clone(),
                },
            );
        let registry = Arc::clone(&registry);
        tasks.spawn(async move {
            if let Ok(server) = TcpStream::connect(upstream).await {
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                relay(client, server, id, &registry, out_tx, out_rx, &close).await;
            }
            registry
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .connections
                .remove(&id);
        });
    }
    tasks.close();
    tasks.wait().await;
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    id: u64,
    registry: &Mutex<Registry>,
    out_tx: mpsc::Sender<Out>,
    out_rx: mpsc::Receiver<Out>,
    close: &CancellationToken,
) {
    let (mut client_read, client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let commands = {
        let out_tx = out_tx.clone();
        async move {
            let _: Option<()> = async {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 16 * 1024];
                loop {
                    let n = client_read.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(len) = resp::frame_len(&buf).ok()? {
                        let frame: Vec<u8> = buf.drain(..len).collect();
                        let (command, sub) = resp::command_head(&frame);
                        if command == "CLIENT" && sub == "MAINT_NOTIFICATIONS" {
                            out_tx.send(Out::Local(b"+OK\r\n".to_vec())).await.ok()?;
                            let pending = {
                                let mut registry =
                                    registry.lock().unwrap_or_else(|e| e.into_inner());
                                if let Some(connection) = registry.connections.get_mut(&id) {
                                    connection.is_opted_in = true;
                                }
                                registry.pending.clone()
                            };
                            if let Some(frame) = pending {
                                out_tx.send(Out::Push(frame)).await.ok()?;
                            }
                        } else {
                            out_tx.send(Out::Forwarded).await.ok()?;
                            server_write.write_all(&frame).await.ok()?;
                        }
                    }
                }
            }
            .await;
        }
    };
    let replies = {
        let out_tx = out_tx.clone();
        async move {
            let _: Option<()> = async {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 16 * 1024];
                loop {
                    let n = server_read.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(len) = resp::frame_len(&buf).ok()? {
                        let frame: Vec<u8> = buf.drain(..len).collect();
                        let out = if frame.first() == Some(&b'>') {
                            Out::Push(frame)
                        } else {
                            Out::Reply(frame)
                        };
                        out_tx.send(out).await.ok()?;
                    }
                }
            }
            .await;
        }
    };
    drop(out_tx);
    tokio::select! {
        () = commands => {}
        () = replies => {}
        () = write_in_order(client_write, out_rx) => {}
        () = close.cancelled() => {}
    }
}

/// The one writer to the client: replies in command order, pushes between frames.
async fn write_in_order(mut client: tokio::net::tcp::OwnedWriteHalf, mut out: mpsc::Receiver<Out>) {
    enum Slot {
        Forward,
        Local(Vec<u8>),
    }
    let mut order: VecDeque<Slot> = VecDeque::new();
    while let Some(message) = out.recv().await {
        let mut writes: Vec<Vec<u8>> = Vec::new();
        match message {
            Out::Forwarded => order.push_back(Slot::Forward),
            Out::Local(bytes) => order.push_back(Slot::Local(bytes)),
            Out::Push(frame) => writes.push(frame),
            Out::Reply(frame) => {
                while let Some(Slot::Local(_)) = order.front() {
                    if let Some(Slot::Local(bytes)) = order.pop_front() {
                        writes.push(bytes);
                    }
                }
                if let Some(Slot::Forward) = order.front() {
                    order.pop_front();
                }
                writes.push(frame);
            }
        }
        while let Some(Slot::Local(_)) = order.front() {
            if let Some(Slot::Local(bytes)) = order.pop_front() {
                writes.push(bytes);
            }
        }
        for bytes in writes {
            if client.write_all(&bytes).await.is_err() {
                return;
            }
        }
    }
}
