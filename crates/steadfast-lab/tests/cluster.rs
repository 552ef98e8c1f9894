//! The lab's Redis Cluster, as root: six servers in their own namespaces form three shards of a
//! primary and a replica, the endpoint's name resolves to every node, every node reports the
//! same layout, a replica takes its shard over with `CLUSTER FAILOVER`, and nothing is left
//! behind.

use std::time::Duration;

use steadfast::cluster::{choose, key_slot};
use steadfast::connect::resolve::{DnsResolver, Resolver};
use steadfast_lab::LabError;
use steadfast_lab::cluster::ClusterSpec;
use steadfast_lab::cluster::view;
use steadfast_lab::lab::{ENDPOINT_NAME, Lab, LabSpec};
use steadfast_lab::net::{self, DNS_IP, Namespace};
use tokio::time::Instant;

#[test]
fn six_servers_form_three_shards_that_agree_and_a_replica_takes_over_its_shard() {
    let prefix = format!("{}-c", net::run_prefix());
    let client = Namespace::create(&format!("{prefix}-client"))
        .expect("the lab needs root: network namespaces and iptables");
    let spec = LabSpec {
        prefix: prefix.clone(),
        index: 1,
        client_namespace: client.name().to_owned(),
        servers: 6,
        is_replicated: false,
        is_started: true,
        cluster: Some(ClusterSpec {
            shards: 3,
            node_timeout: Duration::from_secs(2),
            requires_full_coverage: true,
        }),
    };
    let outcome = net::run_in(client.name(), move || {
        Box::pin(async move {
            let lab = Lab::build(&spec).await?;
            let resolver =
                DnsResolver::new((DNS_IP, 53).into()).map_err(|e| LabError::new(e.to_string()))?;
            let mut endpoint = resolver
                .resolve(ENDPOINT_NAME, 6379)
                .await
                .map_err(|e| LabError::new(e.to_string()))?;
            endpoint.sort();
            let mut every_node: Vec<_> = lab.servers.iter().map(|s| s.address()).collect();
            every_node.sort();
            assert_eq!(
                endpoint, every_node,
                "the configuration endpoint names every node"
            );
            let mut views = Vec::new();
            for server in &lab.servers {
                views.push(view(server).await?);
            }
            let agreed = choose(&views).expect("six views").clone();
            assert!(
                views.iter().all(|v| v.layout() == agreed.layout()),
                "every node agrees"
            );
            assert_eq!(agreed.nodes.iter().filter(|n| n.is_primary).count(), 3);
            assert_eq!(agreed.covered_slots(), 16_384);
            let slot = key_slot(b"lab:key");
            let owner = agreed.owner(slot).expect("an owner").clone();
            let owner_ip = owner.address.host.clone().expect("announced");
            assert!(
                lab.servers[..3]
                    .iter()
                    .any(|s| *s.ip.to_string() == *owner_ip),
                "a first-three server owns the slot"
            );
            let replica = agreed
                .replicas_of(&owner.id)
                .next()
                .expect("a replica")
                .clone();
            let replica_ip = replica.address.host.clone().expect("announced");
            let replica_server = lab
                .servers
                .iter()
                .find(|s| *s.ip.to_string() == *replica_ip)
                .expect("the replica is a lab server");
            replica_server.cli(&["CLUSTER", "FAILOVER"]).await?;
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let mut views = Vec::new();
                for server in &lab.servers {
                    views.push(view(server).await?);
                }
                let now_owner = choose(&views)
                    .and_then(|v| v.owner(slot))
                    .and_then(|n| n.address.host.clone());
                if now_owner.as_deref() == Some(&*replica_ip) {
                    let epoch = choose(&views).map_or(0, |v| v.epoch);
                    assert!(epoch > agreed.epoch, "a failover raises the epoch");
                    break;
                }
                assert!(Instant::now() < deadline, "the replica did not take over");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok::<_, LabError>(())
        })
    });
    outcome.unwrap().unwrap();
    drop(client);
    assert!(
        net::namespaces_with(&prefix).unwrap().is_empty(),
        "every namespace was removed"
    );
}
