//! Network namespaces, veth pairs and a bridge: the lab's private network.
//!
//! # Behaviour
//! - One private /24 ([`SUBNET`]) exists only inside namespaces the lab creates; the machine's
//!   root namespace gets no address and no route in it, and no lab namespace has a default route,
//!   so a wrong address fails at once instead of leaving the machine.
//! - Every namespace is named with the run's prefix (`sf<pid>-...`), so two labs never collide and
//!   [`cleanup_leftovers`] removes exactly what a killed run left.
//! - [`Namespace`] deletes itself on drop, killing whatever still runs inside it.

use std::net::Ipv4Addr;
use std::process::{Command, Output};

use crate::LabError;

/// The lab's /24. Used only inside namespaces the lab creates.
pub const SUBNET: [u8; 3] = [10, 213, 0];

/// Address of the client under test.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], 2);

/// Address of the lab's DNS server.
pub const DNS_IP: Ipv4Addr = Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], 3);

/// Address of the lab's RESP proxy.
pub const PROXY_IP: Ipv4Addr = Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], 20);

/// Address of server number `index` (0-based).
pub fn server_ip(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], 10 + index)
}

/// The prefix of every namespace this process creates.
pub fn run_prefix() -> String {
    format!("sf{}", std::process::id())
}

/// Runs a command to completion; an error names the command and what it printed.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<Output, LabError> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| LabError::new(format!("{program} {}: {e}", args.join(" "))))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(LabError::new(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// A network namespace, deleted (with everything running in it) on drop.
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates `name` with its loopback up.
    ///
    /// # Errors
    /// When `ip netns add` fails (no root, name taken).
    pub fn create(name: &str) -> Result<Self, LabError> {
        run("ip", &["netns", "add", name])?;
        let namespace = Self {
            name: name.to_owned(),
        };
        namespace.ip(&["link", "set", "lo", "up"])?;
        Ok(namespace)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <name> ARGS`.
    pub(crate) fn ip(&self, args: &[&str]) -> Result<Output, LabError> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// A command that runs `program` inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs `program ARGS` inside this namespace to completion, for async callers.
    pub(crate) async fn exec_async(
        &self,
        program: &str,
        args: &[&str],
    ) -> Result<Output, LabError> {
        let output = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .await
            .map_err(|e| LabError::new(format!("{program} in {}: {e}", self.name)))?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(LabError::new(format!(
                "{program} {} in {} failed: {}",
                args.join(" "),
                self.name,
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        kill_all_in(&self.name);
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

fn kill_all_in(namespace: &str) {
    if let Ok(output) = run("ip", &["netns", "pids", namespace]) {
        for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
            let _ = run("kill", &["-CONT", pid]);
            let _ = run("kill", &["-KILL", pid]);
        }
    }
}

/// Connects `member` (a namespace) to the bridge in `lab` with a veth pair: `eth0` with
/// `address`/24 inside `member`, `port` on the bridge.
pub(crate) fn attach(
    lab: &Namespace,
    member: &str,
    port: &str,
    address: Ipv4Addr,
) -> Result<(), LabError> {
    run(
        "ip",
        &[
            "link",
            "add",
            "eth0",
            "netns",
            member,
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            lab.name(),
        ],
    )?;
    let cidr = format!("{address}/24");
    run("ip", &["-n", member, "addr", "add", &cidr, "dev", "eth0"])?;
    run("ip", &["-n", member, "link", "set", "eth0", "up"])?;
    lab.ip(&["link", "set", port, "master", "br0", "up"])?;
    Ok(())
}

/// Creates the bridge `br0` inside `lab`.
pub(crate) fn bridge(lab: &Namespace) -> Result<(), LabError> {
    lab.ip(&["link", "add", "br0", "type", "bridge"])?;
    lab.ip(&["link", "set", "br0", "up"])?;
    Ok(())
}

/// Runs `work` on a new thread that has entered namespace `name` (network only), with its own
/// current-thread tokio runtime; threads that runtime starts inherit the namespace.
///
/// # Errors
/// When the namespace cannot be opened or entered.
pub fn run_in<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> Result<T, LabError> {
    let path = format!("/var/run/netns/{name}");
    let handle = std::thread::spawn(move || {
        enter(&path).map_err(LabError::new)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LabError::new(format!("runtime: {e}")))?;
        Ok(runtime.block_on(work()))
    });
    handle
        .join()
        .map_err(|_| LabError::new("the namespaced thread panicked"))?
}

/// Moves the calling thread into the network namespace at `path` (`/var/run/netns/<name>`).
fn enter(path: &str) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns {path}: {e}"))
}

/// Runs a TCP service on its own thread and current-thread runtime, inside `namespace` (or the
/// caller's when `None`): binds `listen`, then runs `serve` with the listener. Returns once the
/// listener is bound; the thread ends when `serve` returns.
///
/// # Errors
/// When the namespace cannot be entered or the address cannot be bound within 5 s.
pub(crate) fn serve_in<F>(
    namespace: Option<&str>,
    listen: std::net::SocketAddr,
    serve: impl FnOnce(tokio::net::TcpListener) -> F + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, LabError>
where
    F: std::future::Future<Output = ()> + 'static,
{
    let path = namespace.map(|name| format!("/var/run/netns/{name}"));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = (|| {
            if let Some(path) = &path {
                enter(path)?;
            }
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })();
        let runtime = match runtime {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        runtime.block_on(async move {
            match tokio::net::TcpListener::bind(listen).await {
                Ok(listener) => {
                    let _ = ready_tx.send(Ok(()));
                    serve(listener).await;
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("bind {listen}: {e}")));
                }
            }
        });
    });
    match ready_rx.recv_timeout(std::time::Duration::from_secs(5)) {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(e)) => Err(LabError::new(e)),
        Err(_) => Err(LabError::new(format!(
            "service on {listen} did not start within 5 s"
        ))),
    }
}

/// Whether this process may create network namespaces (root, or the capability).
pub fn can_create_namespaces() -> bool {
    let probe = format!("{}-probe", run_prefix());
    match Namespace::create(&probe) {
        Ok(namespace) => {
            drop(namespace);
            true
        }
        Err(_) => false,
    }
}

/// Removes every namespace, `/etc/netns` entry and temporary directory left by lab runs whose
/// process is gone.
/// Returns the names removed.
///
/// # Errors
/// When `ip netns list` cannot run.
pub fn cleanup_leftovers() -> Result<Vec<String>, LabError> {
    let mut removed = Vec::new();
    // A run killed while building its lab may have had an `ip netns add` in flight: its
    // namespace appears after a listing, once that `ip` ended or was killed with the rest. So
    // list again after each pass, at most three passes, until none is left.
    for _ in 0..3 {
        let mut orphans: Vec<String> = namespaces()?
            .into_iter()
            .filter(|name| is_orphan(name))
            .collect();
        if orphans.is_empty() {
            break;
        }
        // The run's own process lives in its client namespace and may still be starting
        // servers: stop it first, then everything else twice (catching what it started
        // meanwhile), then delete, so no process is left in a namespace without a name.
        orphans.sort_by_key(|name| !name.ends_with("-client"));
        for name in orphans.iter().chain(orphans.iter()) {
            kill_all_in(name);
        }
        // Namespaces made by a run's inner process live in its own mount namespace, where this
        // one cannot see them (`ip netns pids` finds nothing): find the run's servers by what
        // points at the run instead, their working directory or arguments (`/tmp/sf<pid>-...`).
        let prefixes: Vec<String> = orphans
            .iter()
            .filter_map(|name| name.split_once('-').map(|(prefix, _)| format!("{prefix}-")))
            .collect();
        kill_processes_of(&prefixes);
        for name in orphans {
            let _ = run("ip", &["netns", "del", &name]);
            removed.push(name);
        }
    }
    for dir in [std::path::PathBuf::from("/etc/netns"), std::env::temp_dir()] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_orphan(&name) && std::fs::remove_dir_all(entry.path()).is_ok() {
                removed.push(entry.path().display().to_string());
            }
        }
    }
    Ok(removed)
}

/// Removes every namespace whose name starts with `prefix-`, with what runs inside.
pub fn remove_prefixed(prefix: &str) {
    let Ok(names) = namespaces_with(prefix) else {
        return;
    };
    for name in names {
        kill_all_in(&name);
        let _ = run("ip", &["netns", "del", &name]);
    }
}

/// Every network namespace's name (`ip netns list`).
///
/// # Errors
/// When `ip netns list` cannot run.
pub fn namespaces() -> Result<Vec<String>, LabError> {
    let listing = run("ip", &["netns", "list"])?;
    Ok(String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// The namespaces whose name starts with `prefix-` (a run's, or one lab's).
///
/// # Errors
/// When `ip netns list` cannot run.
pub fn namespaces_with(prefix: &str) -> Result<Vec<String>, LabError> {
    let wanted = format!("{prefix}-");
    Ok(namespaces()?
        .into_iter()
        .filter(|name| name.starts_with(&wanted))
        .collect())
}

/// Kills every process whose working directory or command line names one of `prefixes`.
fn kill_processes_of(prefixes: &[String]) {
    if prefixes.is_empty() {
        return;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == std::process::id().to_string() {
            continue;
        }
        let cwd = std::fs::read_link(entry.path().join("cwd"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        // `sf<pid>-` after a `/` or a `-` (`/tmp/sf<inner>-sf<outer>-0-s0`), never inside a
        // longer pid.
        let names_run = |prefix: &String| {
            [&cwd, &cmdline].iter().any(|text| {
                text.match_indices(prefix.as_str())
                    .any(|(at, _)| matches!(text[..at].chars().last(), Some('/' | '-')))
            })
        };
        if prefixes.iter().any(names_run) {
            let _ = run("kill", &["-CONT", &pid]);
            let _ = run("kill", &["-KILL", &pid]);
        }
    }
}

/// `sf<pid>-...` where no process `<pid>` runs any more.
fn is_orphan(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("sf") else {
        return false;
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() || !rest[digits.len()..].starts_with('-') {
        return false;
    }
    !std::path::Path::new(&format!("/proc/{digits}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lab_names_of_dead_runs_are_orphans() {
        assert!(is_orphan("sf999999999-3-lab"));
        assert!(!is_orphan(&format!("sf{}-client", std::process::id())));
        assert!(!is_orphan("sfx-lab"));
        assert!(!is_orphan("docker0"));
        assert!(!is_orphan("sf12"));
    }

    #[test]
    fn addresses_stay_inside_the_lab_subnet() {
        for ip in [CLIENT_IP, DNS_IP, server_ip(0), server_ip(5)] {
            assert_eq!(ip.octets()[..3], SUBNET);
        }
    }
}
