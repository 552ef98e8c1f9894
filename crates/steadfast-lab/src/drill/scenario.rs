//! The scenarios: each a timeline of real faults against a fresh lab, bounded in time.
//!
//! Every timeline warms up for one second, injects the fault, restores service, and watches a
//! tail. `fault` is when the fault began; `restored` is when the cause was gone (the server was
//! reachable again, the name pointed at the new primary, the path healed).

use std::time::Duration;

use serde::Serialize;
use tokio::time::{Instant, sleep, sleep_until};

use crate::LabError;
use crate::fault;
use crate::lab::Lab;
use crate::net::CLIENT_IP;

/// A drill scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// kill -9 the primary, start it again after 2 s.
    Restart,
    /// Blackhole primary A for everyone, promote replica B after 1 s and point the name at B:
    /// what ElastiCache and Azure do.
    FailoverDnsFlip,
    /// Promote B, point the name at B, make A a replica of B (A stays reachable).
    Demotion,
    /// Silently drop everything between the client and the primary, then heal.
    Blackhole,
    /// `CLIENT KILL TYPE normal` on the primary.
    ClientKill,
    /// The primary runs a 3 s command (`DEBUG SLEEP 3`): slow, not dead.
    SlowServer,
    /// 30 % packet loss both ways for 10 s.
    LossyLink,
    /// The server is down when the clients start, and comes up 2 s later.
    DownAtStart,
}

impl Scenario {
    /// Every scenario, in drill order.
    pub const ALL: [Self; 8] = [
        Self::Restart,
        Self::ClientKill,
        Self::Demotion,
        Self::FailoverDnsFlip,
        Self::Blackhole,
        Self::SlowServer,
        Self::LossyLink,
        Self::DownAtStart,
    ];

    /// The scenario's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Restart => "restart",
            Self::FailoverDnsFlip => "failover-dns-flip",
            Self::Demotion => "demotion",
            Self::Blackhole => "blackhole",
            Self::ClientKill => "client-kill",
            Self::SlowServer => "slow-server",
            Self::LossyLink => "lossy-link",
            Self::DownAtStart => "down-at-start",
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
            Self::FailoverDnsFlip => {
                "blackhole primary A, 1 s later promote B and point the name at B".into()
            }
            Self::Demotion => "promote B, point the name at B, make A a replica of B".into(),
            Self::Blackhole => format!(
                "silently drop all traffic between client and primary for {:?}, then heal",
                timing.blackhole
            ),
            Self::ClientKill => "CLIENT KILL TYPE normal on the primary".into(),
            Self::SlowServer => "the primary runs DEBUG SLEEP 3".into(),
            Self::LossyLink => format!("30 % packet loss both ways for {:?}", timing.loss),
            Self::DownAtStart => "no server when the clients start; it starts 2 s later".into(),
        }
    }

    /// Whether only loopback is needed (the drill can run it without root).
    pub fn is_loopback_capable(self) -> bool {
        matches!(
            self,
            Self::Restart | Self::ClientKill | Self::SlowServer | Self::DownAtStart
        )
    }

    /// Servers the lab needs, and whether they start replicated and running.
    pub(crate) fn lab_shape(self) -> (usize, bool, bool) {
        match self {
            Self::FailoverDnsFlip | Self::Demotion => (2, true, true),
            Self::DownAtStart => (1, false, false),
            _ => (1, false, true),
        }
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
            Self::DownAtStart => unreachable!("handled above"),
        };
        sleep(timing.tail).await;
        Ok(Marks { fault, restored })
    }
}

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
}

impl Timing {
    /// The full drill.
    pub fn full() -> Self {
        Self {
            warmup: Duration::from_secs(1),
            tail: Duration::from_secs(3),
            blackhole: Duration::from_secs(20),
            loss: Duration::from_secs(10),
        }
    }

    /// The CI drill: the same faults, shorter spells.
    pub fn quick() -> Self {
        Self {
            warmup: Duration::from_secs(1),
            tail: Duration::from_secs(2),
            blackhole: Duration::from_secs(10),
            loss: Duration::from_secs(5),
        }
    }
}
