//! What an operator sees of the proxy: the upstream's health, a log line per upstream event,
//! and an HTTP endpoint with `/health` and `/metrics`.
//!
//! # Behaviour
//! - The proxy keeps one steadfast client of its own on the upstream (beside those of the
//!   downstream connections), whose events say whether a primary is reachable now; each event
//!   is logged once (`target: steadfast_proxy::upstream`), not once per downstream connection.
//! - `GET /health`: `200` with `{"status":"ok",...}` while the upstream link is connected to a
//!   primary, `503` with `"status":"unavailable"` and why otherwise (the address, role and
//!   link generation when known).
//! - `GET /metrics`: the library's metrics and the proxy's own (`steadfast_proxy_*`) in
//!   Prometheus' text format, when this process has the proxy's recorder installed (the first
//!   proxy of a process with an operations address installs it).
//! - Requests are read within 2 s and 8 KiB; anything else gets `400` / `404` and the
//!   connection is closed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use steadfast::{Event, LinkState, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Whether the upstream has a reachable primary, as the proxy's own client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// A link is connected to a server whose role is primary.
    pub is_primary_reachable: bool,
    /// The server the link reaches (or last reached).
    pub address: Option<String>,
    /// Its role as last seen.
    pub role: Option<Role>,
    /// The link's generation (1 for the first link).
    pub generation: u64,
    /// Since when this has been so.
    pub since: SystemTime,
}

impl Health {
    fn starting() -> Self {
        Self {
            is_primary_reachable: false,
            address: None,
            role: None,
            generation: 0,
            since: SystemTime::now(),
        }
    }

    /// The body of `/health`.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "status": if self.is_primary_reachable { "ok" } else { "unavailable" },
            "upstream": self.address,
            "role": self.role.as_ref().map(|role| match role {
                Role::Primary => "primary".to_owned(),
                Role::Replica => "replica".to_owned(),
                other => other.to_string(),
            }),
            "generation": self.generation,
            "since_ms": self
                .since
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
        })
        .to_string()
    }
}

/// The proxy's own view of the upstream.
#[derive(Clone)]
pub(crate) struct Upstream {
    /// The proxy's own client on a single endpoint (`None` for a cluster).
    client: Option<steadfast::Client>,
    health: Arc<Mutex<Health>>,
}

/// How often the proxy asks a cluster for `CLUSTER INFO`.
const CLUSTER_CHECK: Duration = Duration::from_secs(1);

impl Upstream {
    /// Starts the proxy's own client on `config` and follows its events until `stop`.
    pub(crate) fn start(
        config: steadfast::Config,
        stop: &CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Self, steadfast::Error> {
        let (client, mut events) = steadfast::Client::with_events(config)?;
        let health = Arc::new(Mutex::new(Health::starting()));
        let (watched, stop) = (Arc::clone(&health), stop.clone());
        let following = client.clone();
        tasks.spawn(async move {
            loop {
                let event = tokio::select! {
                    () = stop.cancelled() => break,
                    event = events.recv() => event,
                };
                match event {
                    Ok(event) => {
                        tracing::info!(target: "steadfast_proxy::upstream", event = ?event, "upstream");
                        let mut health = watched.lock().unwrap_or_else(|e| e.into_inner());
                        follow(&mut health, &event, following.state());
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(target: "steadfast_proxy::upstream", missed, "upstream events missed");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
            following.shutdown().await;
        });
        Ok(Self {
            client: Some(client),
            health,
        })
    }

    /// For a cluster: the shared (RESP3) cluster client, made now in the background, logs its
    /// events; the health is `CLUSTER INFO`'s `cluster_state:ok` as a reachable primary says
    /// it, asked every second.
    pub(crate) fn start_cluster(
        shared: Arc<crate::server::Shared>,
        stop: &CancellationToken,
        tasks: &TaskTracker,
    ) -> Self {
        let health = Arc::new(Mutex::new(Health::starting()));
        let (watched, stop) = (Arc::clone(&health), stop.clone());
        tasks.spawn(async move {
            let endpoint = &shared.config.upstream.endpoint;
            let label = format!("{}:{}", endpoint.host, endpoint.port);
            let client = loop {
                let connecting = shared
                    .clusters
                    .get(crate::resp::Protocol::Resp3, &shared.config.upstream);
                let connected = tokio::select! {
                    () = stop.cancelled() => return,
                    connected = connecting => connected,
                };
                match connected {
                    Ok(client) => break client,
                    Err(e) => {
                        tracing::warn!(target: "steadfast_proxy::upstream", error = %e, "cluster not reachable yet");
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(CLUSTER_CHECK) => {}
                        }
                    }
                }
            };
            let mut events = client.events();
            let mut check = tokio::time::interval(CLUSTER_CHECK);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    event = events.recv() => match event {
                        Ok(event) => {
                            tracing::info!(target: "steadfast_proxy::upstream", event = ?event, "upstream");
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::warn!(target: "steadfast_proxy::upstream", missed, "upstream events missed");
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    _ = check.tick() => {
                        let info = client
                            .query::<String>(redis::cmd("CLUSTER").arg("INFO"))
                            .await;
                        let is_ok = info.as_deref().is_ok_and(|i| i.contains("cluster_state:ok"));
                        let mut health = watched.lock().unwrap_or_else(|e| e.into_inner());
                        if health.is_primary_reachable != is_ok || health.generation == 0 {
                            health.since = SystemTime::now();
                        }
                        health.is_primary_reachable = is_ok;
                        health.address = Some(label.clone());
                        health.role = is_ok.then_some(Role::Primary);
                        health.generation = 1;
                        metrics::gauge!("steadfast_proxy_upstream_primary_reachable")
                            .set(f64::from(u8::from(is_ok)));
                    }
                }
            }
        });
        Self {
            client: None,
            health,
        }
    }

    /// A handle for the operations endpoint.
    pub(crate) fn health_source(&self) -> Self {
        self.clone()
    }

    /// The upstream's health now.
    pub(crate) fn health(&self) -> Health {
        let mut health = self
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(client) = &self.client
            && !matches!(client.state(), LinkState::Connected { .. })
        {
            health.is_primary_reachable = false;
        }
        health
    }
}

/// `health` after `event`.
fn follow(health: &mut Health, event: &Event, state: LinkState) {
    let before = health.is_primary_reachable;
    match event {
        Event::Connected {
            address,
            generation,
            role,
            ..
        } => {
            health.address = Some(address.to_string());
            health.generation = *generation;
            health.role = Some(role.clone());
            health.is_primary_reachable = *role == Role::Primary;
        }
        Event::RoleChanged { role, .. } => {
            health.role = Some(role.clone());
            health.is_primary_reachable =
                *role == Role::Primary && matches!(state, LinkState::Connected { .. });
        }
        Event::Disconnected { .. } => health.is_primary_reachable = false,
        _ => {}
    }
    metrics::gauge!("steadfast_proxy_upstream_primary_reachable")
        .set(f64::from(u8::from(health.is_primary_reachable)));
    if before != health.is_primary_reachable {
        health.since = SystemTime::now();
    }
}

/// What `head` (a request's bytes up to the blank line) asks for: the path of a `GET`.
pub fn request_path(head: &[u8]) -> Option<&str> {
    let line = head.split(|&b| b == b'\r' || b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split(' ');
    let (method, path, version) = (words.next()?, words.next()?, words.next()?);
    (method == "GET" && version.starts_with("HTTP/1.") && words.next().is_none())
        .then(|| path.split('?').next().unwrap_or(path))
}

/// Binds `address` and serves `/health` and `/metrics` until `stop`.
pub(crate) async fn serve(
    address: SocketAddr,
    health: impl Fn() -> Health + Send + Sync + 'static,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    stop: CancellationToken,
    tasks: &TaskTracker,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let health = Arc::new(health);
    let metrics = Arc::new(metrics);
    let spawner = tasks.clone();
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let (health, metrics) = (Arc::clone(&health), Arc::clone(&metrics));
            spawner.spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    answer(stream, &*health, metrics.as_ref().as_ref()),
                )
                .await;
            });
        }
    });
    Ok(bound)
}

async fn answer(
    mut stream: tokio::net::TcpStream,
    health: &(dyn Fn() -> Health + Send + Sync),
    metrics: Option<&metrics_exporter_prometheus::PrometheusHandle>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || head.len() + n > 8 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let (status, kind, body) = match request_path(&head) {
        Some("/health") => {
            let health = health();
            let status = if health.is_primary_reachable {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            (status, "application/json", health.to_json())
        }
        Some("/metrics") => match metrics {
            Some(handle) => ("200 OK", "text/plain; version=0.0.4", handle.render()),
            None => (
                "503 Service Unavailable",
                "text/plain",
                "another metrics recorder is installed in this process\n".to_owned(),
            ),
        },
        Some(_) => (
            "404 Not Found",
            "text/plain",
            "try /health or /metrics\n".to_owned(),
        ),
        None => (
            "400 Bad Request",
            "text/plain",
            "GET /health or /metrics\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Installs the proxy's Prometheus recorder for this process, if none is installed yet.
pub(crate) fn install_recorder() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).ok()?;
    Some(handle)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_a_get_with_an_http1_version_names_a_path() {
        assert_eq!(
            request_path(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some("/health")
        );
        assert_eq!(
            request_path(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Some("/metrics")
        );
        assert_eq!(request_path(b"POST /health HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_path(b"GET /health\r\n\r\n"), None);
        assert_eq!(request_path(b"\xff\xfe\r\n\r\n"), None);
    }

    #[test]
    fn health_follows_the_links_role_and_connection() {
        let mut health = Health::starting();
        let connected = LinkState::Connected { generation: 1 };
        follow(
            &mut health,
            &Event::RoleChanged {
                generation: 1,
                role: Role::Replica,
            },
            connected,
        );
        assert!(!health.is_primary_reachable);
        follow(
            &mut health,
            &Event::RoleChanged {
                generation: 1,
                role: Role::Primary,
            },
            connected,
        );
        assert!(health.is_primary_reachable);
        assert!(health.to_json().contains("\"status\":\"ok\""));
    }

    proptest! {
        #[test]
        fn any_request_head_gives_a_path_or_none_never_a_panic(head in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = request_path(&head);
        }
    }
}
