//! The runtime a proxy serves on, and a proxy served on a thread of its own.
//!
//! # Why one thread by default
//! A sidecar shares its host's cores with the application and the server. On one thread
//! (tokio's current-thread scheduler) a task woken by another is queued behind every task
//! already runnable: the upstream link's driver runs after the connections that woke together
//! have all queued their commands, and writes them with one system call; no worker thread
//! wakes another. On two worker threads a woken task runs next, alone, and the workers wake
//! each other through the kernel. Measured by `cargo bench -p steadfast-proxy --bench overhead`
//! (BENCHMARKS.md, "The proxy on one thread"): CPU per command at 16 connections fell from
//! 10.1-10.4 us to about 7.6 us, and pipelines of 10 went from 0.39x to 0.53-0.55x of direct at 16
//! connections. `steadfast proxy --threads N` (N > 1) serves on N worker threads instead, for
//! loads one core cannot carry.

use std::sync::Arc;

use crate::{Proxy, ProxyConfig};

/// A runtime for a proxy: the current-thread scheduler for `threads` of 0 or 1, else `threads`
/// worker threads. Timers and I/O are enabled.
///
/// # Errors
/// The operating system refused what the runtime needs (threads, an event queue).
///
/// ```
/// let runtime = steadfast_proxy::runtime(1)?;
/// runtime.block_on(async { /* Proxy::start(config).await ... */ });
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().build()
}

/// A proxy served on a thread of its own, on [`runtime`]`(threads)`, as `steadfast proxy`
/// serves: for a program (a test, the drill) whose own runtime should not carry the proxy's
/// work. Dereferences to the [`Proxy`]; [`OwnThread::shutdown`] shuts it down and ends the
/// thread (dropping it without shutting down ends the thread too, without draining).
pub struct OwnThread {
    proxy: Arc<Proxy>,
    stop: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl OwnThread {
    /// Starts a proxy for `config` on a new thread and waits until it listens.
    ///
    /// # Errors
    /// What [`Proxy::start`] refuses, or the thread or its runtime could not be made.
    pub async fn start(config: ProxyConfig, threads: usize) -> Result<Self, crate::StartError> {
        let (started, answer) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("steadfast-proxy".to_owned())
            .spawn(move || {
                let runtime = match runtime(threads) {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = started.send(Err(crate::StartError(format!("runtime: {e}"))));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match Proxy::start(config).await {
                        Ok(proxy) => {
                            let proxy = Arc::new(proxy);
                            if started.send(Ok(Arc::clone(&proxy))).is_ok() {
                                // Ends when the handle shuts the proxy down or is dropped.
                                let _ = stopped.await;
                            }
                        }
                        Err(e) => {
                            let _ = started.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|e| crate::StartError(format!("thread: {e}")))?;
        let proxy = answer.await.map_err(|_| {
            crate::StartError("the proxy's thread ended before it started".into())
        })??;
        Ok(Self {
            proxy,
            stop: std::sync::Mutex::new(Some(stop)),
        })
    }

    /// [`Proxy::shutdown`], then the thread ends.
    pub async fn shutdown(&self) {
        self.proxy.shutdown().await;
        let stop = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
    }
}

impl std::ops::Deref for OwnThread {
    type Target = Proxy;

    fn deref(&self) -> &Proxy {
        &self.proxy
    }
}
