//! # steadfast-lab
//!
//! The failover lab: every redis-server in its own network namespace with its own address (veth
//! pairs on a bridge, a private /24 used only inside namespaces the lab creates), all on port
//! 6379; a real dnsmasq serving the endpoint's name; faults as guards that undo themselves; and
//! the drill that runs scenarios against steadfast and redis-rs side by side.
//!
//! Needs root (network namespaces, iptables) and the Debian packages redis-server, dnsmasq,
//! iptables and iproute2.
//!
//! ## Layout
//! - [`net`]: namespaces, veth, bridge, cleanup of leftovers.
//! - [`server`], [`dns`]: the real processes.
//! - [`fault`]: partition, isolate, reject, loss, pause, as guards; [`relay`]: delay.
//! - [`lab`]: one lab per scenario.
//! - [`drill`]: scenarios, workloads, clients under test, reports (table, JSON, SVG).

pub mod cluster;
pub mod dns;
pub mod drill;
pub mod fault;
pub mod lab;
pub mod net;
pub mod proxy;
pub mod relay;
pub mod server;

use std::fmt;

/// What went wrong while building or driving the lab.
#[derive(Debug, Clone)]
pub struct LabError(String);

impl LabError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LabError {}
