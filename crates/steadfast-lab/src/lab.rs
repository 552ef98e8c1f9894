//! One lab: a bridge, a DNS server, and redis-servers, each in its own namespace, wired to the
//! client's namespace.
//!
//! ```text
//!   client ns (10.213.0.2)        dns ns (10.213.0.3)       server ns A (.10)   server ns B (.11)
//!        eth0                          eth0                      eth0               eth0
//!          \______________________ br0 in the lab ns ___________/__________________/
//! ```
//!
//! # Behaviour
//! - Built fresh for every scenario; dropping it kills every process and deletes every
//!   namespace it made, and the client's veth.
//! - Server A starts as the primary; with `is_replicated`, B is a replica of A, in sync before
//!   any scenario starts (full syncs start at once: `repl-diskless-sync-delay 0`).

use std::time::Duration;

use crate::LabError;
use crate::cluster::ClusterSpec;
use crate::dns::Dns;
use crate::net::{self, CLIENT_IP, DNS_IP, Namespace};
use crate::server::Server;

/// The name every client connects to.
pub const ENDPOINT_NAME: &str = "primary.steadfast.test";

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Namespace prefix of this run (`sf<pid>`).
    pub prefix: String,
    /// Distinguishes the labs of one run.
    pub index: usize,
    /// The namespace the client runs in (it must exist).
    pub client_namespace: String,
    /// How many servers (A, B, ...).
    pub servers: usize,
    /// B (and later ones) replicate A.
    pub is_replicated: bool,
    /// Start the servers now (false: "server down at start").
    pub is_started: bool,
    /// Make the servers a Redis Cluster instead of primary and replicas; the endpoint's name
    /// then answers with every node's address (a configuration endpoint).
    pub cluster: Option<ClusterSpec>,
}

/// A running lab. Fields drop in order: proxy, servers, DNS, then the bridge.
#[derive(Debug)]
pub struct Lab {
    /// The RESP proxy in front of A, once [`Lab::start_proxy`] ran.
    proxy: Option<crate::proxy::Proxy>,
    /// A, B, ...
    pub servers: Vec<Server>,
    /// The DNS server for [`ENDPOINT_NAME`]; none on loopback.
    dns: Option<Dns>,
    /// Extra namespaces attached to the bridge (a proxy's, ...), removed with the lab.
    extras: Vec<Namespace>,
    client_namespace: Option<String>,
    name_prefix: String,
    bridge: Option<Namespace>,
}

impl Lab {
    /// Builds the network, starts DNS pointing at A and (if asked) the servers.
    ///
    /// # Errors
    /// When a namespace, link, or process cannot be made; what was made is removed.
    pub async fn build(spec: &LabSpec) -> Result<Self, LabError> {
        let name = |part: &str| format!("{}-{}-{part}", spec.prefix, spec.index);
        let bridge = Namespace::create(&name("lab"))?;
        net::bridge(&bridge)?;
        net::attach(&bridge, &spec.client_namespace, "p-client", CLIENT_IP)?;
        let guard = ClientLink(spec.client_namespace.clone());
        let dns_namespace = Namespace::create(&name("dns"))?;
        net::attach(&bridge, dns_namespace.name(), "p-dns", DNS_IP)?;
        let mut servers = Vec::new();
        for index in 0..spec.servers {
            let label = ((b'A' + u8::try_from(index).unwrap_or(0)) as char).to_string();
            let namespace = Namespace::create(&name(&format!("s{index}")))?;
            let ip = net::server_ip(u8::try_from(index).unwrap_or(0));
            net::attach(&bridge, namespace.name(), &format!("p-s{index}"), ip)?;
            servers.push(Server::new(&label, Some(namespace), ip)?);
        }
        let dns = Dns::start(dns_namespace, ENDPOINT_NAME, servers[0].ip)?;
        std::mem::forget(guard);
        let mut lab = Self {
            proxy: None,
            servers,
            dns: Some(dns),
            extras: Vec::new(),
            client_namespace: Some(spec.client_namespace.clone()),
            name_prefix: format!("{}-{}", spec.prefix, spec.index),
            bridge: Some(bridge),
        };
        lab.start_servers(spec).await?;
        if spec.cluster.is_some() {
            let every_node: Vec<_> = lab.servers.iter().map(|s| s.ip).collect();
            lab.dns()?.point_at_all(&every_node)?;
        }
        lab.wait_for_dns().await?;
        Ok(lab)
    }

    /// A lab without root: servers on private loopback addresses (`127.213.<index>.<10+n>`), no
    /// namespaces, no DNS, no packet faults. Clients connect to the address itself.
    ///
    /// # Errors
    /// When a server cannot start.
    pub async fn loopback(spec: &LabSpec) -> Result<Self, LabError> {
        let mut servers = Vec::new();
        for index in 0..spec.servers {
            let label = ((b'A' + u8::try_from(index).unwrap_or(0)) as char).to_string();
            let ip = std::net::Ipv4Addr::new(
                127,
                213,
                u8::try_from(spec.index % 250).unwrap_or(0),
                10 + u8::try_from(index).unwrap_or(0),
            );
            servers.push(Server::new(&label, None, ip)?);
        }
        let mut lab = Self {
            proxy: None,
            servers,
            dns: None,
            extras: Vec::new(),
            client_namespace: None,
            name_prefix: format!("{}-{}", spec.prefix, spec.index),
            bridge: None,
        };
        lab.start_servers(spec).await?;
        Ok(lab)
    }

    async fn start_servers(&mut self, spec: &LabSpec) -> Result<(), LabError> {
        let lab = self;
        if let Some(cluster) = &spec.cluster {
            let timeout = cluster.node_timeout.as_millis().to_string();
            for server in &mut lab.servers {
                let ip = server.ip.to_string();
                server.add_args(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-announce-ip",
                    &ip,
                    "--cluster-node-timeout",
                    &timeout,
                    "--cluster-require-full-coverage",
                    if cluster.requires_full_coverage {
                        "yes"
                    } else {
                        "no"
                    },
                ]);
            }
        }
        if spec.is_started {
            for server in &mut lab.servers {
                server.start()?;
            }
            for server in &lab.servers {
                server.wait_reachable(Duration::from_secs(10)).await?;
            }
            if let Some(cluster) = &spec.cluster {
                crate::cluster::form(&lab.servers, cluster).await?;
            } else if spec.is_replicated {
                for replica in &lab.servers[1..] {
                    replica.replicate(&lab.servers[0]).await?;
                }
                // A replica that has not finished its first sync holds none of the primary's
                // data: promoting it would lose every write made before, which no client
                // could have prevented.
                for replica in &lab.servers[1..] {
                    replica.wait_in_sync(Duration::from_secs(10)).await?;
                }
            }
        }
        Ok(())
    }

    /// The URL clients use: the endpoint's name in the lab, the primary's address on loopback.
    pub fn url(&self) -> String {
        match &self.dns {
            Some(_) => format!("redis://{ENDPOINT_NAME}:6379"),
            None => format!("redis://{}", self.servers[0].address()),
        }
    }

    /// The lab's DNS server.
    ///
    /// # Errors
    /// On loopback, where there is none.
    pub fn dns(&self) -> Result<&Dns, LabError> {
        self.dns
            .as_ref()
            .ok_or_else(|| LabError::new("no DNS server on loopback: this scenario needs root"))
    }

    async fn wait_for_dns(&self) -> Result<(), LabError> {
        for _ in 0..300 {
            if dns_answers().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(LabError::new("the lab's dnsmasq never answered"))
    }

    /// Server A, the first primary.
    pub fn primary(&self) -> &Server {
        &self.servers[0]
    }

    /// Makes a namespace `part` with `ip` on the lab's bridge; it lives as long as the lab.
    ///
    /// # Errors
    /// On loopback, or when the namespace or link cannot be made.
    pub fn attach(&mut self, part: &str, ip: std::net::Ipv4Addr) -> Result<&Namespace, LabError> {
        let bridge = self
            .bridge
            .as_ref()
            .ok_or_else(|| LabError::new("no bridge on loopback: this needs root"))?;
        let namespace = Namespace::create(&format!("{}-{part}", self.name_prefix))?;
        net::attach(bridge, namespace.name(), &format!("p-{part}"), ip)?;
        self.extras.push(namespace);
        Ok(self.extras.last().expect("just pushed"))
    }

    /// Starts the RESP proxy in front of server A in its own namespace, and points the
    /// endpoint's name at it.
    ///
    /// # Errors
    /// On loopback, or when the proxy cannot start.
    pub fn start_proxy(&mut self) -> Result<&crate::proxy::Proxy, LabError> {
        let upstream = self.servers[0].address();
        let namespace = self.attach("px", net::PROXY_IP)?;
        let proxy =
            crate::proxy::Proxy::start(Some(namespace), (net::PROXY_IP, 6379).into(), upstream)?;
        self.point_name_at(net::PROXY_IP)?;
        Ok(self.proxy.insert(proxy))
    }

    /// The proxy started by [`Lab::start_proxy`].
    ///
    /// # Errors
    /// When none was started.
    pub fn proxy(&self) -> Result<&crate::proxy::Proxy, LabError> {
        self.proxy
            .as_ref()
            .ok_or_else(|| LabError::new("this lab has no proxy"))
    }

    /// Points the endpoint's name at `ip` (a server, a proxy).
    ///
    /// # Errors
    /// On loopback, where there is no DNS.
    pub fn point_name_at(&self, ip: std::net::Ipv4Addr) -> Result<(), LabError> {
        self.dns()?.point_at(ip)
    }

    /// The bridge namespace; none on loopback.
    pub fn bridge(&self) -> Option<&Namespace> {
        self.bridge.as_ref()
    }
}

/// Asks the lab's DNS directly (whatever the caller's resolv.conf says).
async fn dns_answers() -> bool {
    let Ok(resolver) = steadfast::connect::resolve::DnsResolver::new((DNS_IP, 53).into()) else {
        return false;
    };
    use steadfast::connect::resolve::Resolver;
    matches!(
        tokio::time::timeout(Duration::from_millis(300), resolver.resolve(ENDPOINT_NAME, 6379)).await,
        Ok(Ok(addresses)) if !addresses.is_empty()
    )
}

/// Removes the client's end of the veth, so the next lab can attach a fresh one.
struct ClientLink(String);

impl Drop for ClientLink {
    fn drop(&mut self) {
        let _ = net::run("ip", &["-n", &self.0, "link", "del", "eth0"]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(client) = self.client_namespace.take() {
            drop(ClientLink(client));
        }
    }
}
