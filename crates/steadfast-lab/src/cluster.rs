//! Forming a Redis Cluster from the lab's servers: slots, introductions, replicas, and the wait
//! until every node agrees.
//!
//! # Behaviour
//! - The first `shards` servers get equal slot ranges (`CLUSTER ADDSLOTSRANGE`); every server is
//!   introduced to the first (`CLUSTER MEET`); server `shards + k` replicates primary
//!   `k % shards` (`CLUSTER REPLICATE`). Every node announces its own lab address.
//! - `form` returns when every node reports `cluster_state:ok`, knows every other node, and
//!   lists every replica with its primary; it gives up after 30 s.
//! - Administered with `redis-cli` inside each server's namespace, like the rest of the lab.

use std::time::Duration;

use steadfast::cluster::View;
use tokio::time::Instant;

use crate::LabError;
use crate::lab::ClusterSpec;
use crate::server::Server;

const FORM_LIMIT: Duration = Duration::from_secs(30);

/// Makes `servers` one cluster as `spec` says; see the module documentation.
///
/// # Errors
/// When a node refuses a step or the cluster does not settle within 30 s.
pub(crate) async fn form(servers: &[Server], spec: &ClusterSpec) -> Result<(), LabError> {
    let shards = spec.shards.max(1);
    if servers.len() < shards {
        return Err(LabError::new(format!(
            "a cluster of {shards} shards needs at least {shards} servers, the lab has {}",
            servers.len()
        )));
    }
    let slots = usize::from(steadfast::cluster::SLOTS);
    for (index, primary) in servers[..shards].iter().enumerate() {
        let start = index * slots / shards;
        let end = (index + 1) * slots / shards - 1;
        primary
            .cli(&[
                "CLUSTER",
                "ADDSLOTSRANGE",
                &start.to_string(),
                &end.to_string(),
            ])
            .await?;
    }
    let first = servers[0].ip.to_string();
    for server in &servers[1..] {
        server.cli(&["CLUSTER", "MEET", &first, "6379"]).await?;
    }
    let deadline = Instant::now() + FORM_LIMIT;
    for server in servers {
        wait_until(server, deadline, "know every node", |info, _| {
            info.contains(&format!("cluster_known_nodes:{}", servers.len()))
        })
        .await?;
    }
    let mut ids = Vec::new();
    for primary in &servers[..shards] {
        ids.push(primary.cli(&["CLUSTER", "MYID"]).await?);
    }
    for (k, replica) in servers[shards..].iter().enumerate() {
        replica
            .cli(&["CLUSTER", "REPLICATE", &ids[k % shards]])
            .await?;
    }
    let replicas = servers.len() - shards;
    for server in servers {
        wait_until(
            server,
            deadline,
            "report the cluster ok with every replica",
            |info, view| {
                info.contains("cluster_state:ok")
                    && view
                        .nodes
                        .iter()
                        .filter(|n| !n.is_primary && n.primary_id.is_some())
                        .count()
                        == replicas
                    && view.covered_slots() == slots
            },
        )
        .await?;
    }
    Ok(())
}

/// The node's `CLUSTER NODES` as a view.
///
/// # Errors
/// When the node does not answer or the answer cannot be read.
pub async fn view(server: &Server) -> Result<View, LabError> {
    let text = server.cli(&["CLUSTER", "NODES"]).await?;
    View::parse(&text).map_err(|e| LabError::new(format!("server {}: {e}", server.label)))
}

async fn wait_until(
    server: &Server,
    deadline: Instant,
    what: &str,
    is_done: impl Fn(&str, &View) -> bool,
) -> Result<(), LabError> {
    loop {
        let info = server.cli(&["CLUSTER", "INFO"]).await?;
        let nodes = view(server).await?;
        if is_done(&info, &nodes) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(LabError::new(format!(
                "server {} did not {what} within {FORM_LIMIT:?}: {}",
                server.label,
                info.lines().next().unwrap_or_default()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
