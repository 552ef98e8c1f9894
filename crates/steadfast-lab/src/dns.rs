//! The lab's DNS server: a real dnsmasq (Debian package) serving the endpoint's name.
//!
//! # Behaviour
//! - Listens only on the lab's DNS address, inside its own namespace; answers only from its hosts
//!   file (no upstream, no /etc/hosts), with a short TTL ([`TTL`]).
//! - [`Dns::point_at`] rewrites the hosts file and sends SIGHUP, which makes dnsmasq clear its
//!   cache and read the file again: the name moves, as a managed service's endpoint does.
//! - [`Dns::point_at_all`] makes the name answer with several addresses, as a cluster's
//!   configuration endpoint does.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::LabError;
use crate::net::{DNS_IP, Namespace};

/// The TTL of every answer.
pub const TTL: Duration = Duration::from_secs(1);

/// A dnsmasq process serving one name.
#[derive(Debug)]
pub struct Dns {
    /// The name it serves.
    pub name: String,
    namespace: Namespace,
    dir: PathBuf,
    child: Child,
}

impl Dns {
    pub(crate) fn start(
        namespace: Namespace,
        name: &str,
        target: Ipv4Addr,
    ) -> Result<Self, LabError> {
        let dir = std::env::temp_dir().join(namespace.name());
        std::fs::create_dir_all(&dir).map_err(|e| LabError::new(format!("{dir:?}: {e}")))?;
        write_hosts(&dir, name, &[target])?;
        let hosts = dir.join("hosts");
        let child = namespace
            .command("dnsmasq")
            .arg("--keep-in-foreground")
            .args([
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
            ])
            .arg(format!("--listen-address={DNS_IP}"))
            .arg(format!("--addn-hosts={}", hosts.display()))
            .arg(format!("--local-ttl={}", TTL.as_secs()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg("--user=root")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| LabError::new(format!("dnsmasq: {e} (apt-get install -y dnsmasq)")))?;
        Ok(Self {
            name: name.to_owned(),
            namespace,
            dir,
            child,
        })
    }

    /// Moves the name to `target`.
    ///
    /// # Errors
    /// When the hosts file cannot be written or dnsmasq cannot be signalled.
    pub fn point_at(&self, target: Ipv4Addr) -> Result<(), LabError> {
        self.point_at_all(&[target])
    }

    /// Makes the name answer with every address of `targets` (a cluster's configuration
    /// endpoint).
    ///
    /// # Errors
    /// When the hosts file cannot be written or dnsmasq cannot be signalled.
    pub fn point_at_all(&self, targets: &[Ipv4Addr]) -> Result<(), LabError> {
        write_hosts(&self.dir, &self.name, targets)?;
        crate::net::run("kill", &["-HUP", &self.child.id().to_string()]).map(drop)
    }

    /// The namespace dnsmasq runs in.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }
}

fn write_hosts(dir: &std::path::Path, name: &str, targets: &[Ipv4Addr]) -> Result<(), LabError> {
    let temp = dir.join("hosts.new");
    let lines: String = targets.iter().map(|t| format!("{t} {name}\n")).collect();
    std::fs::write(&temp, lines)
        .and_then(|()| std::fs::rename(&temp, dir.join("hosts")))
        .map_err(|e| LabError::new(format!("hosts file in {dir:?}: {e}")))
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
