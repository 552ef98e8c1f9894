//! The settings of a [`ClusterClient`](crate::cluster::ClusterClient): where reads go, how the
//! topology is kept up to date, when a shard's breaker opens. A single-endpoint
//! [`Client`](crate::Client) ignores them.

use std::time::Duration;

use crate::error::Error;

/// How a cluster client routes and keeps its table of slots.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// Where read-only commands go ([`ReadFrom`]). Default: the primary (every read sees every
    /// write acknowledged before it). URL: `read_from=replica`.
    pub read_from: ReadFrom,
    /// How often an idle client checks its table against one node's `CLUSTER NODES` (each node
    /// in turn, moved by up to a tenth at random). Default: 2 s (a failover the client did not
    /// see is noticed within 2 s; one small query per interval per client).
    pub refresh_interval: Duration,
    /// The least time between two full refreshes, whatever triggers them. Default: 200 ms (at
    /// most 5 per second: a storm of MOVED replies costs the cluster a handful of queries).
    pub refresh_min_interval: Duration,
    /// Transport failures in a row (no answer, a lost link) that open a shard's breaker: its
    /// commands are then refused at once ("not attempted") instead of waiting out their
    /// deadline. Default: 3 (one lost link is a reconnect, not a dead shard).
    pub breaker_threshold: u32,
    /// How long a breaker stays open before one command probes the shard. Default: 1 s.
    pub breaker_open_min: Duration,
    /// The longest a breaker stays open: each failed probe doubles the time up to this.
    /// Default: 8 s (a shard that comes back is used again within 8 s).
    pub breaker_open_max: Duration,
    /// How often a command whose primary is unreachable asks the shard's replica whether it
    /// took over. Default: 25 ms (the write resumes within 25 ms of the promotion; one cheap
    /// query per waiting command per interval).
    pub takeover_poll: Duration,
    /// `MOVED` / `ASK` redirections one command may follow. Default: 16 (a resharding moves a
    /// slot once; more means the nodes disagree and the table needs a refresh).
    pub redirect_limit: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            read_from: ReadFrom::Primary,
            refresh_interval: Duration::from_secs(2),
            refresh_min_interval: Duration::from_millis(200),
            breaker_threshold: 3,
            breaker_open_min: Duration::from_secs(1),
            breaker_open_max: Duration::from_secs(8),
            takeover_poll: Duration::from_millis(25),
            redirect_limit: 16,
        }
    }
}

impl ClusterConfig {
    /// # Errors
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) naming the first bad field
    /// and its value.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let positive = [
            ("cluster.refresh_interval", self.refresh_interval),
            ("cluster.refresh_min_interval", self.refresh_min_interval),
            ("cluster.breaker_open_min", self.breaker_open_min),
            ("cluster.breaker_open_max", self.breaker_open_max),
            ("cluster.takeover_poll", self.takeover_poll),
        ];
        for (field, value) in positive {
            if value.is_zero() {
                return Err(Error::invalid_config(
                    field,
                    "0s",
                    "must be greater than zero",
                ));
            }
        }
        if self.breaker_open_max < self.breaker_open_min {
            return Err(Error::invalid_config(
                "cluster.breaker_open_max",
                &format!("{:?}", self.breaker_open_max),
                "must not be below cluster.breaker_open_min",
            ));
        }
        for (field, value) in [
            ("cluster.breaker_threshold", self.breaker_threshold as usize),
            ("cluster.redirect_limit", self.redirect_limit),
        ] {
            if value == 0 {
                return Err(Error::invalid_config(field, "0", "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Where a cluster client sends read-only commands (`GET`, `HGETALL`, `ZRANGE` ...; a pipeline
/// only if every command in it is one; never a transaction).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadFrom {
    /// The slot's primary: every read sees every write acknowledged before it.
    #[default]
    Primary,
    /// A replica of the slot's shard, in turn, when one is usable: its link is up, the cluster
    /// does not flag it failing, and it did not answer `LOADING` in the last second; else the
    /// primary. Replication is asynchronous: a read may miss a write acknowledged just before.
    Replica,
}

impl std::str::FromStr for ReadFrom {
    type Err = &'static str;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "primary" | "master" => Ok(Self::Primary),
            "replica" | "prefer_replica" => Ok(Self::Replica),
            _ => Err("expected primary or replica"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        ClusterConfig::default().validate().unwrap();
    }

    #[test]
    fn a_zero_or_inverted_setting_is_refused_naming_the_field() {
        let zero_poll = ClusterConfig {
            takeover_poll: Duration::ZERO,
            ..ClusterConfig::default()
        };
        let err = zero_poll.validate().unwrap_err();
        assert!(err.to_string().contains("cluster.takeover_poll"), "{err}");
        let inverted = ClusterConfig {
            breaker_open_max: Duration::from_millis(500),
            ..ClusterConfig::default()
        };
        let err = inverted.validate().unwrap_err();
        assert!(
            err.to_string().contains("cluster.breaker_open_max"),
            "{err}"
        );
        let no_redirect = ClusterConfig {
            redirect_limit: 0,
            ..ClusterConfig::default()
        };
        let err = no_redirect.validate().unwrap_err();
        assert!(err.to_string().contains("cluster.redirect_limit"), "{err}");
    }
}
