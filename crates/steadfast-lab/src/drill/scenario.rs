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
    /// Redis Software moves the node: MOVING to server B (behind the lab's RESP proxy), old
    /// connections closed 5 s later.
    Moving,
    /// FAILING_OVER, then the server stalls for 6 s (past the 5 s deadline), then FAILED_OVER.
    FailingOver,
    /// Azure: NodeMaintenanceStarting published on the real server 3 s ahead; at the announced
    /// time A is blackholed, B promoted and the name moved to B.
    AzureMaintenance,
}

impl Scenario {
    /// Every scenario, in drill order.
    pub const ALL: [Self; 11] = [
        Self::Restart,
        Self::ClientKill,
        Self::Demotion,
        Self::FailoverDnsFlip,
        Self::Blackhole,
        Self::SlowServer,
        Self::LossyLink,
        Self::DownAtStart,
        Self::Moving,
        Self::FailingOver,
        Self::AzureMaintenance,
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
            Self::Moving => "moving",
            Self::FailingOver => "failing-over",
            Self::AzureMaintenance => "azure-maintenance",
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
            Self::Moving => {
                "MOVING to server B (RESP proxy in front of A); old connections closed 5 s later"
                    .into()
            }
            Self::FailingOver => {
                "FAILING_OVER, the server stalls 6 s (past the 5 s deadline), FAILED_OVER".into()
            }
            Self::AzureMaintenance => "AzureRedisEvents NodeMaintenanceStarting 3 s ahead; at the start A is blackholed, B promoted, the name moved".into(),
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
            Self::FailoverDnsFlip
            | Self::Demotion
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
            Self::Moving => {
                let target = lab.servers[1].address();
                lab.servers[1].promote().await?;
                let proxy = lab.proxy()?;
                proxy.announce(format!(">4\r\n+MOVING\r\n:1\r\n:5\r\n+{target}\r\n").as_bytes());
                sleep(Duration::from_secs(5)).await;
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
                let ahead = Duration::from_secs(3);
                let start_wall = std::time::SystemTime::now() + ahead;
                let message = format!(
                    "NotificationType|NodeMaintenanceStarting|StartTimeInUTC|{}|IsReplica|False|IPAddress|{}|SSLPort|15001|NonSSLPort|6379",
                    utc(start_wall),
                    lab.servers[0].ip
                );
                lab.servers[0]
                    .cli(&["PUBLISH", "AzureRedisEvents", &message])
                    .await?;
                // StartTimeInUTC has whole seconds: the start is the second it names.
                let whole = start_wall
                    .duration_since(std::time::SystemTime::UNIX_EPOCH)
                    .map(|d| Duration::from_secs(d.as_secs()))
                    .unwrap_or_default();
                let now_wall = std::time::SystemTime::now()
                    .duration_since(std::time::SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                sleep(whole.saturating_sub(now_wall)).await;
                let restored = Instant::now();
                let cut = fault::isolate(&lab.servers[0])?;
                lab.servers[1].promote().await?;
                lab.dns()?.point_at(lab.servers[1].ip)?;
                sleep(Duration::from_secs(4)).await;
                drop(cut);
                restored
            }
            Self::DownAtStart => unreachable!("handled above"),
        };
        sleep(timing.tail).await;
        Ok(Marks { fault, restored })
    }
}

/// `yyyy-MM-ddTHH:mm:ss` in UTC.
fn utc(at: std::time::SystemTime) -> String {
    let secs = at
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = u32::try_from(day_of_year - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

/// When the fault began and when its cause was gone.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Marks {
    pub(crate) fault: Instant,
    pub(crate) restored: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_text_matches_known_instants() {
        let at = |secs| utc(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00");
        assert_eq!(at(1_709_208_000), "2024-02-29T12:00:00");
        assert_eq!(at(1_795_464_930), "2026-11-23T20:15:30");
    }
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
