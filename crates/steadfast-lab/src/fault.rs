//! Faults as guards: each undoes itself on drop, even on panic.
//!
//! # Behaviour
//! - Packet faults are iptables rules inside the *server's* namespace, so they touch nothing
//!   outside the lab; dropping the guard deletes exactly the rules it added.
//! - `partition`: silent DROP both ways between the client and the server (the client's
//!   connection goes half-open, no RST). `isolate`: the server drops everything on its veth
//!   (the host vanished, for every peer). `reject`: TCP RST. `loss`: random drop with iptables'
//!   `statistic` match (this kernel has no netem).
//! - `delay` is a userspace relay ([`crate::relay`]): this kernel has no netem.
//! - [`Paused`] sends SIGCONT on drop.

use std::net::Ipv4Addr;

use crate::LabError;
use crate::server::Server;

/// iptables rules installed in one namespace; removed on drop.
#[derive(Debug)]
#[must_use = "the fault ends when this guard is dropped"]
pub struct Rules {
    namespace: String,
    table: String,
    rules: Vec<Vec<String>>,
}

impl Rules {
    fn install(server: &Server, rules: Vec<Vec<String>>) -> Result<Self, LabError> {
        Self::install_in(server, "filter", rules)
    }

    fn install_in(server: &Server, table: &str, rules: Vec<Vec<String>>) -> Result<Self, LabError> {
        let namespace = server.namespace().ok_or_else(|| {
            LabError::new(format!(
                "server {} runs on loopback: packet faults need the lab's namespaces",
                server.label
            ))
        })?;
        let mut installed = Self {
            namespace: namespace.name().to_owned(),
            table: table.to_owned(),
            rules: Vec::new(),
        };
        for rule in rules {
            let mut args = vec!["netns", "exec", &installed.namespace, "iptables"];
            args.extend(["-t", &installed.table, "-I"]);
            args.extend(rule.iter().map(String::as_str));
            crate::net::run("ip", &args)?;
            installed.rules.push(rule);
        }
        Ok(installed)
    }

    /// Removes the rules now.
    pub fn heal(self) {}
}

impl Drop for Rules {
    fn drop(&mut self) {
        for rule in &self.rules {
            let mut args = vec!["netns", "exec", &self.namespace, "iptables"];
            args.extend(["-t", &self.table, "-D"]);
            args.extend(rule.iter().map(String::as_str));
            let _ = crate::net::run("ip", &args);
        }
    }
}

fn rule(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

/// Silent DROP both ways between `peer` and `server`.
///
/// # Errors
/// When iptables fails.
pub fn partition(server: &Server, peer: Ipv4Addr) -> Result<Rules, LabError> {
    let peer = peer.to_string();
    Rules::install(
        server,
        vec![
            rule(&["INPUT", "-s", &peer, "-j", "DROP"]),
            rule(&["OUTPUT", "-d", &peer, "-j", "DROP"]),
        ],
    )
}

/// The server drops everything on its lab interface: gone for every peer, replicas included.
///
/// # Errors
/// When iptables fails.
pub fn isolate(server: &Server) -> Result<Rules, LabError> {
    Rules::install(
        server,
        vec![
            rule(&["INPUT", "-i", "eth0", "-j", "DROP"]),
            rule(&["OUTPUT", "-o", "eth0", "-j", "DROP"]),
        ],
    )
}

/// TCP RST for every segment from `peer`.
///
/// # Errors
/// When iptables fails.
pub fn reject(server: &Server, peer: Ipv4Addr) -> Result<Rules, LabError> {
    let peer = peer.to_string();
    Rules::install(
        server,
        vec![rule(&[
            "INPUT",
            "-s",
            &peer,
            "-p",
            "tcp",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ])],
    )
}

/// Drops each packet between `peer` and `server` with probability `ratio`, both ways.
///
/// # Errors
/// When iptables fails or `ratio` is outside 0..=1.
pub fn loss(server: &Server, peer: Ipv4Addr, ratio: f64) -> Result<Rules, LabError> {
    if !(0.0..=1.0).contains(&ratio) {
        return Err(LabError::new(format!(
            "loss ratio {ratio} is outside 0..=1"
        )));
    }
    let (peer, p) = (peer.to_string(), format!("{ratio:.4}"));
    Rules::install(
        server,
        vec![
            rule(&[
                "INPUT",
                "-s",
                &peer,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
                "-j",
                "DROP",
            ]),
            rule(&[
                "OUTPUT",
                "-d",
                &peer,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
                "-j",
                "DROP",
            ]),
        ],
    )
}

/// New TCP connections from `peer` to `port` go to `to_port` on the server instead (NAT).
///
/// # Errors
/// When iptables fails.
pub(crate) fn redirect(
    server: &Server,
    peer: Ipv4Addr,
    port: u16,
    to_port: u16,
) -> Result<Rules, LabError> {
    let (peer, port, to_port) = (peer.to_string(), port.to_string(), to_port.to_string());
    Rules::install_in(
        server,
        "nat",
        vec![rule(&[
            "PREROUTING",
            "-s",
            &peer,
            "-p",
            "tcp",
            "--dport",
            &port,
            "-j",
            "REDIRECT",
            "--to-ports",
            &to_port,
        ])],
    )
}

/// A paused server; resumed on drop.
#[derive(Debug)]
#[must_use = "the server resumes when this guard is dropped"]
pub struct Paused<'a>(&'a Server);

impl<'a> Paused<'a> {
    /// SIGSTOPs `server` until the guard drops.
    ///
    /// # Errors
    /// When the server is not running.
    pub fn new(server: &'a Server) -> Result<Self, LabError> {
        server.pause()?;
        Ok(Self(server))
    }
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        let _ = self.0.resume();
    }
}
