//! The scenarios: each a timeline of real faults against a fresh lab, bounded in time.
//!
//! Every timeline warms up for one second, injects the fault, restores service, and watches a
//! tail. `fault` is when the fault began; `restored` is when the cause was gone (the server was
//! reachable again, the name pointed at the new primary, the path healed).

use std::time::Duration;

use serde::Serialize;
use tokio::time::{Instant, sleep, sleep_until};

use super::azure_notice::announce_azure_maintenance;
use crate::LabError;
use crate::cluster::ClusterSpec;
use crate::fault;
use crate::lab::Lab;
use crate::net::CLIENT_IP;

/// A drill scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// kill -9 the primary, start it again after 2 s.
    Restart,
    /// The primary holds a dataset that takes seconds to load; kill -9 it and start it at once:
    /// it answers `LOADING` until the dataset is in memory.
    RestartLoading,
    /// Blackhole primary A for everyone, promote replica B after 1 s and point the name at B:
    /// what ElastiCache and Azure do.
    FailoverDnsFlip,
    /// Blackhole primary A, 1 s later promote B and make the name list A first and B second
    /// (round-robin DNS, a configuration endpoint mid-failover).
    FailoverDeadFirst,
    /// Promote B, point the name at B, make A a replica of B (A stays reachable).
    Demotion,
    /// Redis' own coordinated handover: `FAILOVER TO B` on primary A (A pauses writes until B
    /// has caught up, B becomes the primary, A its replica), then the name points at B.
    CoordinatedFailover,
    /// The primary hangs (SIGSTOP: its kernel still accepts and acknowledges); 1 s later B is
    /// promoted and the name points at B; at 7 s A wakes up and is made a replica of B.
    HungPrimary,
    /// Silently drop everything between the client and the primary, then heal.
    Blackhole,
    /// `CLIENT KILL TYPE normal` on the primary.
    ClientKill,
    /// The primary runs a 3 s command (`DEBUG SLEEP 3`): slow, not dead.
    SlowServer,
    /// `CLIENT PAUSE 3000 ALL` on the primary: every client's commands wait 3 s.
    ClientPause,
    /// 30 % packet loss both ways for 10 s.
    LossyLink,
    /// The server is down when the clients start, and comes up 2 s later.
    DownAtStart,
    /// Redis Software moves the node: MOVING to server B (behind the lab's RESP proxy); 5 s
    /// later the name points at B and old connections close.
    Moving,
    /// FAILING_OVER, then the server stalls for 6 s (past the 5 s deadline), then FAILED_OVER.
    FailingOver,
    /// Azure: NodeMaintenanceStarting published on the real server 3 s ahead; at the announced
    /// time A is blackholed, B promoted and the name moved to B.
    AzureMaintenance,
    /// Cluster: kill -9 shard 0's primary; its replica takes over after the node timeout.
    ClusterKill,
    /// Cluster: shard 0's primary silently drops everything (half-open links) until its
    /// replica has taken over.
    ClusterBlackhole,
    /// Cluster: SIGSTOP shard 0's primary until its replica has taken over.
    ClusterPause,
    /// Cluster: planned `CLUSTER FAILOVER` on shard 0's replica.
    ClusterFailover,
    /// Cluster: `CLUSTER FAILOVER TAKEOVER` on shard 0's replica (no agreement from the
    /// other primaries, no handshake with the old one).
    ClusterTakeover,
    /// Cluster: the first half of shard 0's slots moves to shard 1 under load (`ASK`, `MOVED`).
    ClusterReshard,
    /// Cluster: both nodes of shard 0 are killed; only its slots are unavailable.
    ClusterShardDown,
    /// Cluster: Azure NodeMaintenanceStarting for shard 0's primary 3 s ahead; at the announced
    /// time its replica takes over with `CLUSTER FAILOVER`.
    ClusterAzureMaintenance,
}

impl Scenario {
    /// Every scenario, in drill order.
    pub const ALL: [Self; 24] = [
        Self::Restart,
        Self::RestartLoading,
        Self::ClientKill,
        Self::Demotion,
        Self::CoordinatedFailover,
        Self::FailoverDnsFlip,
        Self::FailoverDeadFirst,
        Self::HungPrimary,
        Self::Blackhole,
        Self::SlowServer,
        Self::ClientPause,
        Self::LossyLink,
        Self::DownAtStart,
        Self::Moving,
        Self::FailingOver,
        Self::AzureMaintenance,
        Self::ClusterKill,
        Self::ClusterBlackhole,
        Self::ClusterPause,
        Self::ClusterFailover,
        Self::ClusterTakeover,
        Self::ClusterReshard,
        Self::ClusterShardDown,
        Self::ClusterAzureMaintenance,
    ];

    /// The scenario's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Restart => "restart",
            Self::RestartLoading => "restart-loading",
            Self::FailoverDnsFlip => "failover-dns-flip",
            Self::FailoverDeadFirst => "failover-dead-first",
            Self::Demotion => "demotion",
            Self::CoordinatedFailover => "coordinated-failover",
            Self::HungPrimary => "hung-primary",
            Self::ClientPause => "client-pause",
            Self::Blackhole => "blackhole",
            Self::ClientKill => "client-kill",
            Self::SlowServer => "slow-server",
            Self::LossyLink => "lossy-link",
            Self::DownAtStart => "down-at-start",
            Self::Moving => "moving",
            Self::FailingOver => "failing-over",
            Self::AzureMaintenance => "azure-maintenance",
            Self::ClusterKill => "cluster-kill",
            Self::ClusterBlackhole => "cluster-blackhole",
            Self::ClusterPause => "cluster-pause",
            Self::ClusterFailover => "cluster-failover",
            Self::ClusterTakeover => "cluster-takeover",
            Self::ClusterReshard => "cluster-reshard",
            Self::ClusterShardDown => "cluster-shard-down",
            Self::ClusterAzureMaintenance => "cluster-azure-maintenance",
        }
    }

    /// Parses a name from [`Scenario::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// One line on what happens.
    pub fn description(self, timing: &Timing) -> String {
        match self {
            Self::Restart => "kill -9 the primary, start it again 2 s later".into(),
            Self::RestartLoading => format!(
                "kill -9 the primary holding {LOADING_KEYS} keys (saved), start it at once: LOADING for seconds"
            ),
            Self::FailoverDnsFlip => {
                "blackhole primary A, 1 s later promote B and point the name at B".into()
            }
            Self::FailoverDeadFirst => {
                "blackhole primary A, 1 s later promote B; the name lists A first, then B".into()
            }
            Self::Demotion => "promote B, point the name at B, make A a replica of B".into(),
            Self::CoordinatedFailover => {
                "FAILOVER TO B on primary A (writes paused until B caught up), then the name points at B".into()
            }
            Self::HungPrimary => {
                "SIGSTOP primary A, 1 s later promote B and point the name at B; A wakes at 7 s and becomes B's replica".into()
            }
            Self::ClientPause => "CLIENT PAUSE 3000 ALL on the primary".into(),
            Self::Blackhole => format!(
                "silently drop all traffic between client and primary for {:?}, then heal",
                timing.blackhole
            ),
            Self::ClientKill => "CLIENT KILL TYPE normal on the primary".into(),
            Self::SlowServer => "the primary runs DEBUG SLEEP 3".into(),
            Self::LossyLink => format!("30 % packet loss both ways for {:?}", timing.loss),
            Self::DownAtStart => "no server when the clients start; it starts 2 s later".into(),
            Self::Moving => {
                "MOVING to server B (RESP proxy in front of A); 5 s later the name points at B and old connections close"
                    .into()
            }
            Self::FailingOver => {
                "FAILING_OVER, the server stalls 6 s (past the 5 s deadline), FAILED_OVER".into()
            }
            Self::AzureMaintenance => "AzureRedisEvents NodeMaintenanceStarting 3 s ahead; at the start A is blackholed, B promoted, the name moved".into(),
            Self::ClusterKill => format!(
                "kill -9 shard 0's primary; its replica takes over (node timeout {:?})",
                timing.node_timeout
            ),
            Self::ClusterBlackhole => format!(
                "shard 0's primary drops every packet until its replica took over (node timeout {:?})",
                timing.node_timeout
            ),
            Self::ClusterPause => format!(
                "SIGSTOP shard 0's primary until its replica took over (node timeout {:?})",
                timing.node_timeout
            ),
            Self::ClusterFailover => "CLUSTER FAILOVER on shard 0's replica".into(),
            Self::ClusterTakeover => "CLUSTER FAILOVER TAKEOVER on shard 0's replica".into(),
            Self::ClusterReshard => {
                "half of shard 0's slots migrate to shard 1 under load, slot by slot".into()
            }
            Self::ClusterShardDown => "kill -9 both nodes of shard 0".into(),
            Self::ClusterAzureMaintenance => "AzureRedisEvents NodeMaintenanceStarting for shard 0's primary 3 s ahead; at the start CLUSTER FAILOVER on its replica".into(),
        }
    }

    /// Whether only loopback is needed (the drill can run it without root).
    pub fn is_loopback_capable(self) -> bool {
        matches!(
            self,
            Self::Restart
                | Self::RestartLoading
                | Self::ClientKill
                | Self::SlowServer
                | Self::ClientPause
                | Self::DownAtStart
        )
    }

    /// Whether `--quick` runs it when no scenario is named: every single-endpoint scenario, and
    /// of the cluster ones an unplanned failover, a planned one, an announced Azure maintenance
    /// (about 12 s) and a shard with no node.
    pub fn is_in_quick_drill(self) -> bool {
        !self.is_cluster()
            || matches!(
                self,
                Self::ClusterKill
                    | Self::ClusterFailover
                    | Self::ClusterAzureMaintenance
                    | Self::ClusterShardDown
            )
    }

    /// Whether the stateful workloads (Pub/Sub, queue, `WATCH`) run through it: the
    /// single-endpoint faults that end or move links (announced moves and failovers included),
    /// a planned cluster failover and a resharding.
    pub fn has_stateful(self) -> bool {
        matches!(
            self,
            Self::Restart
                | Self::ClientKill
                | Self::Demotion
                | Self::CoordinatedFailover
                | Self::FailoverDnsFlip
                | Self::HungPrimary
                | Self::Blackhole
                | Self::AzureMaintenance
                | Self::Moving
                | Self::FailingOver
                | Self::ClusterFailover
                | Self::ClusterReshard
        )
    }

    /// Whether the event was planned: the servers handed over in order, and a client has no
    /// reason to leave any outcome unknown.
    pub fn is_planned(self) -> bool {
        matches!(
            self,
            Self::Demotion
                | Self::CoordinatedFailover
                | Self::AzureMaintenance
                | Self::Moving
                | Self::FailingOver
                | Self::ClusterFailover
        )
    }

    /// Whether the fault is one instant (a kill, a restart, a failover, a notice), after which
    /// a client has no reason to leave more outcomes unknown than it had commands in flight;
    /// spells that last (a blackhole, packet loss, a pause, a migration) are not, nor is Azure
    /// maintenance (a planned handoff, then a blackhole at the announced second).
    pub fn is_one_instant(self) -> bool {
        matches!(
            self,
            Self::Restart
                | Self::RestartLoading
                | Self::ClientKill
                | Self::Demotion
                | Self::CoordinatedFailover
                | Self::FailoverDnsFlip
                | Self::FailoverDeadFirst
                | Self::HungPrimary
                | Self::SlowServer
                | Self::ClientPause
                | Self::DownAtStart
                | Self::Moving
                | Self::FailingOver
                | Self::ClusterKill
                | Self::ClusterFailover
                | Self::ClusterTakeover
                | Self::ClusterShardDown
                | Self::ClusterAzureMaintenance
        )
    }

    /// Whether it runs on a Redis Cluster.
    pub fn is_cluster(self) -> bool {
        self.name().starts_with("cluster-")
    }

    /// The cluster shards the fault touches (their keys may fail or wait); the others must
    /// not notice.
    pub fn involved_shards(self) -> &'static [usize] {
        match self {
            Self::ClusterReshard => &[0, 1],
            _ => &[0],
        }
    }

    /// The cluster the lab forms, for cluster scenarios.
    pub(crate) fn cluster(self, timing: &Timing) -> Option<ClusterSpec> {
        self.is_cluster().then_some(ClusterSpec {
            shards: CLUSTER_SHARDS,
            node_timeout: timing.node_timeout,
            requires_full_coverage: false,
        })
    }

    /// Servers the lab needs, and whether they start replicated and running.
    pub(crate) fn lab_shape(self) -> (usize, bool, bool) {
        if self.is_cluster() {
            return (2 * CLUSTER_SHARDS, false, true);
        }
        match self {
            Self::FailoverDnsFlip
            | Self::FailoverDeadFirst
            | Self::Demotion
            | Self::CoordinatedFailover
            | Self::HungPrimary
            | Self::Moving
            | Self::FailingOver
            | Self::AzureMaintenance => (2, true, true),
            Self::DownAtStart => (1, false, false),
            _ => (1, false, true),
        }
    }

    /// Whether the endpoint's name points at the lab's RESP proxy instead of server A.
    pub(crate) fn needs_proxy(self) -> bool {
        matches!(self, Self::Moving | Self::FailingOver)
    }

    /// Readies `lab` before any client starts: restart-loading's dataset is written and saved
    /// here, so that the seconds `DEBUG POPULATE` and `SAVE` block the server are not counted
    /// against any client, and no client's write is in the saved dataset.
    pub(crate) async fn prepare(self, lab: &mut Lab) -> Result<(), LabError> {
        if self == Self::RestartLoading {
            let keys = LOADING_KEYS.to_string();
            lab.servers[0]
                .cli(&["DEBUG", "POPULATE", &keys, "filler", "64"])
                .await?;
            lab.servers[0].cli(&["SAVE"]).await?;
        }
        Ok(())
    }

    /// Plays the timeline on `lab`.
    pub(crate) async fn play(self, lab: &mut Lab, timing: &Timing) -> Result<Marks, LabError> {
        if self == Self::DownAtStart {
            let fault = Instant::now();
            sleep(Duration::from_secs(2)).await;
            lab.servers[0].start()?;
            let restored = lab.servers[0]
                .wait_reachable(Duration::from_secs(10))
                .await?;
            sleep(timing.tail).await;
            return Ok(Marks { fault, restored });
        }
        if self.is_cluster() {
            return self.play_cluster(lab, timing).await;
        }
        sleep(timing.warmup).await;
        let fault = Instant::now();
        let restored = match self {
            Self::Restart => {
                lab.servers[0].kill();
                sleep(Duration::from_secs(2)).await;
                lab.servers[0].start()?;
                lab.servers[0]
                    .wait_reachable(Duration::from_secs(10))
                    .await?
            }
            Self::RestartLoading => {
                lab.servers[0].kill();
                lab.servers[0].start()?;
                lab.servers[0].wait_ready(Duration::from_secs(30)).await?
            }
            Self::FailoverDeadFirst => {
                let cut = fault::isolate(&lab.servers[0])?;
                sleep(Duration::from_secs(1)).await;
                lab.servers[1].promote().await?;
                // The client's resolver ranks A first (gai.conf of the client namespace), so
                // every lookup lists the dead address first: round-robin's worst case.
                lab.dns()?
                    .point_at_all(&[lab.servers[0].ip, lab.servers[1].ip])?;
                let restored = Instant::now();
                sleep_until(fault + Duration::from_secs(7)).await;
                drop(cut);
                // A comes back as a replica of B, as a managed service reconfigures it.
                lab.servers[0].replicate(&lab.servers[1]).await?;
                restored
            }
            Self::FailoverDnsFlip => {
                let cut = fault::isolate(&lab.servers[0])?;
                sleep(Duration::from_secs(1)).await;
                lab.servers[1].promote().await?;
                lab.dns()?.point_at(lab.servers[1].ip)?;
                let restored = Instant::now();
                sleep_until(fault + Duration::from_secs(7)).await;
                drop(cut);
                restored
            }
            Self::Demotion => {
                lab.servers[1].promote().await?;
                lab.dns()?.point_at(lab.servers[1].ip)?;
                let restored = Instant::now();
                lab.servers[0].replicate(&lab.servers[1]).await?;
                restored
            }
            Self::CoordinatedFailover => {
                let b = lab.servers[1].ip.to_string();
                lab.servers[0].cli(&["FAILOVER", "TO", &b, "6379"]).await?;
                lab.servers[1]
                    .wait_role("master", Duration::from_secs(10))
                    .await?;
                lab.dns()?.point_at(lab.servers[1].ip)?;
                Instant::now()
            }
            Self::HungPrimary => {
                let restored = {
                    let _hung = fault::Paused::new(&lab.servers[0])?;
                    sleep(Duration::from_secs(1)).await;
                    lab.servers[1].promote().await?;
                    lab.dns()?.point_at(lab.servers[1].ip)?;
                    let restored = Instant::now();
                    sleep_until(fault + Duration::from_secs(7)).await;
                    restored
                };
                // A wakes up believing it is the primary, and runs what its kernel buffered,
                // until it is made a replica of B, as a managed service reconfigures it.
                lab.servers[0].replicate(&lab.servers[1]).await?;
                restored
            }
            Self::ClientPause => {
                let pause = Duration::from_secs(3);
                lab.servers[0]
                    .cli(&["CLIENT", "PAUSE", "3000", "ALL"])
                    .await?;
                sleep_until(fault + pause).await;
                Instant::now()
            }
            Self::Blackhole => {
                let cut = fault::partition(&lab.servers[0], CLIENT_IP)?;
                sleep(timing.blackhole).await;
                cut.heal();
                Instant::now()
            }
            Self::ClientKill => {
                lab.servers[0]
                    .cli(&["CLIENT", "KILL", "TYPE", "normal"])
                    .await?;
                Instant::now()
            }
            Self::SlowServer => {
                lab.servers[0].cli(&["DEBUG", "SLEEP", "3"]).await?;
                Instant::now()
            }
            Self::LossyLink => {
                let lossy = fault::loss(&lab.servers[0], CLIENT_IP, 0.3)?;
                sleep(timing.loss).await;
                lossy.heal();
                Instant::now()
            }
            Self::Moving => {
                let target = lab.servers[1].address();
                lab.servers[1].promote().await?;
                let proxy = lab.proxy()?;
                proxy.announce(format!(">4\r\n+MOVING\r\n:1\r\n:5\r\n+{target}\r\n").as_bytes());
                sleep(Duration::from_secs(5)).await;
                // The move is done: the endpoint's name leads to B from now on (as the
                // database's DNS record does after a node move), and A's connections close.
                lab.dns()?.point_at(lab.servers[1].ip)?;
                proxy.close_existing();
                proxy.clear_pending();
                Instant::now()
            }
            Self::FailingOver => {
                let proxy = lab.proxy()?;
                proxy.announce(b">4\r\n+FAILING_OVER\r\n:2\r\n:1\r\n+1\r\n");
                sleep(Duration::from_millis(200)).await;
                {
                    let _stalled = fault::Paused::new(&lab.servers[0])?;
                    sleep(Duration::from_secs(6)).await;
                }
                proxy.announce(b">3\r\n+FAILED_OVER\r\n:2\r\n+1\r\n");
                proxy.clear_pending();
                Instant::now()
            }
            Self::AzureMaintenance => {
                let start = announce_azure_maintenance(&lab.servers[0]).await?;
                sleep_until(start).await;
                let restored = Instant::now();
                let cut = fault::isolate(&lab.servers[0])?;
                lab.servers[1].promote().await?;
                lab.dns()?.point_at(lab.servers[1].ip)?;
                sleep(Duration::from_secs(4)).await;
                drop(cut);
                restored
            }
            _ => unreachable!("handled above"),
        };
        sleep(timing.tail).await;
        Ok(Marks { fault, restored })
    }

    /// The cluster timelines. Server A is shard 0's primary, B shard 1's, D shard 0's replica.
    /// `restored` is when a majority of the nodes report the new owner of shard 0's slots (the
    /// end of the migration when resharding; the fault itself when the shard stays down).
    async fn play_cluster(self, lab: &mut Lab, timing: &Timing) -> Result<Marks, LabError> {
        let mut watch = crate::cluster::Watch::new(&lab.servers);
        let _ = watch.views().await;
        sleep(timing.cluster_warmup).await;
        let slot = *crate::cluster::shard_slots(0, CLUSTER_SHARDS).start();
        let (a, d) = (0, CLUSTER_SHARDS);
        let old = lab.servers[a].ip;
        let takes_over = timing.node_timeout * 3 + Duration::from_secs(10);
        let fault = Instant::now();
        let restored = match self {
            Self::ClusterKill => {
                lab.servers[a].kill();
                watch.new_owner(slot, old, takes_over).await?
            }
            Self::ClusterBlackhole => {
                let cut = fault::isolate(&lab.servers[a])?;
                let restored = watch.new_owner(slot, old, takes_over).await?;
                sleep(Duration::from_secs(1)).await;
                cut.heal();
                restored
            }
            Self::ClusterPause => {
                let stopped = fault::Paused::new(&lab.servers[a])?;
                let restored = watch.new_owner(slot, old, takes_over).await?;
                sleep(Duration::from_secs(1)).await;
                drop(stopped);
                restored
            }
            Self::ClusterFailover => {
                lab.servers[d].cli(&["CLUSTER", "FAILOVER"]).await?;
                watch.new_owner(slot, old, takes_over).await?
            }
            Self::ClusterTakeover => {
                lab.servers[d]
                    .cli(&["CLUSTER", "FAILOVER", "TAKEOVER"])
                    .await?;
                watch.new_owner(slot, old, takes_over).await?
            }
            Self::ClusterReshard => {
                crate::cluster::migrate_slots(
                    &lab.servers[a],
                    &lab.servers[1],
                    super::workload::first_half(0, CLUSTER_SHARDS),
                )
                .await?;
                Instant::now()
            }
            Self::ClusterShardDown => {
                lab.servers[a].kill();
                lab.servers[d].kill();
                fault
            }
            Self::ClusterAzureMaintenance => {
                let start = announce_azure_maintenance(&lab.servers[a]).await?;
                sleep_until(start).await;
                lab.servers[d].cli(&["CLUSTER", "FAILOVER"]).await?;
                watch.new_owner(slot, old, takes_over).await?
            }
            _ => unreachable!("not a cluster scenario"),
        };
        sleep(timing.tail).await;
        Ok(Marks { fault, restored })
    }
}

/// Keys in the dataset of `restart-loading` (64-byte values): about 2.5 s of `LOADING` on the
/// project's 2-core VM, within the 5 s command deadline.
pub const LOADING_KEYS: u64 = 2_500_000;

/// Shards of the drill's cluster.
pub(crate) const CLUSTER_SHARDS: usize = 3;

/// When the fault began and when its cause was gone.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Marks {
    pub(crate) fault: Instant,
    pub(crate) restored: Instant,
}

/// Durations of the timelines; `--quick` shortens the long ones.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Before the fault.
    pub warmup: Duration,
    /// After the cause is gone.
    pub tail: Duration,
    /// Length of the blackhole.
    pub blackhole: Duration,
    /// Length of the lossy spell.
    pub loss: Duration,
    /// Before a cluster fault: long enough for a no-fault p99 to compare with.
    pub cluster_warmup: Duration,
    /// The cluster's `cluster-node-timeout`.
    pub node_timeout: Duration,
    /// Whether the stateful workloads also run through the cluster scenarios that have them:
    /// on the 2-core CI machine their load alone moved the other shards' p99 goal.
    pub is_stateful_on_cluster: bool,
}

impl Timing {
    /// The full drill.
    pub fn full() -> Self {
        Self {
            warmup: Duration::from_secs(1),
            tail: Duration::from_secs(3),
            blackhole: Duration::from_secs(20),
            loss: Duration::from_secs(10),
            cluster_warmup: Duration::from_secs(4),
            node_timeout: Duration::from_secs(15),
            is_stateful_on_cluster: true,
        }
    }

    /// The CI drill: the same faults, shorter spells.
    pub fn quick() -> Self {
        Self {
            warmup: Duration::from_secs(1),
            tail: Duration::from_secs(2),
            blackhole: Duration::from_secs(10),
            loss: Duration::from_secs(5),
            cluster_warmup: Duration::from_secs(4),
            node_timeout: Duration::from_secs(2),
            is_stateful_on_cluster: false,
        }
    }
}
