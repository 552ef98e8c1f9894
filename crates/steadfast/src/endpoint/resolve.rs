//! Turning the endpoint's name into addresses, on every connection attempt.
//!
//! # Behaviour
//! - [`SystemResolver`] asks the operating system (`getaddrinfo`) each time it is called; the
//!   client keeps no address across attempts, so a DNS name moved to a promoted replica is
//!   followed on the next attempt.
//! - [`StaticResolver`] answers with addresses the application sets, and can be changed while
//!   the client runs (service discovery, tests).
//!
//! # Why a trait
//! Containers and labs often need a specific name server or a discovery service; the connector
//! only needs "name in, addresses out".

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// A boxed future returned by [`Resolver::resolve`].
pub type ResolveFuture = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// Resolves a host name to the addresses to try, in order.
pub trait Resolver: Debug + Send + Sync + 'static {
    /// Addresses for `host:port`, in the order they should be tried.
    ///
    /// # Errors
    /// Any lookup failure; the connector reports it as a failed attempt and tries again later.
    fn resolve(&self, host: &str, port: u16) -> ResolveFuture;
}

/// The operating system's resolver (`getaddrinfo` through tokio), asked on every attempt.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> ResolveFuture {
        let target = format!("{host}:{port}");
        Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.collect()) })
    }
}

/// Answers with the addresses last given to [`StaticResolver::set`], whatever the name.
///
/// ```
/// use steadfast::connect::resolve::{Resolver, StaticResolver};
/// # tokio_test_block_on(async {
/// let resolver = StaticResolver::new(vec!["127.0.0.1:6379".parse().unwrap()]);
/// resolver.set(vec!["127.0.0.2:6379".parse().unwrap()]);
/// let addrs = resolver.resolve("primary.example", 6379).await.unwrap();
/// assert_eq!(addrs, vec!["127.0.0.2:6379".parse().unwrap()]);
/// # });
/// # fn tokio_test_block_on(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct StaticResolver {
    addresses: Arc<Mutex<Vec<SocketAddr>>>,
}

impl StaticResolver {
    /// A resolver answering `addresses`.
    pub fn new(addresses: Vec<SocketAddr>) -> Self {
        Self {
            addresses: Arc::new(Mutex::new(addresses)),
        }
    }

    /// Changes the answer for every later lookup.
    pub fn set(&self, addresses: Vec<SocketAddr>) {
        *self.addresses.lock().unwrap_or_else(|e| e.into_inner()) = addresses;
    }
}

impl Resolver for StaticResolver {
    fn resolve(&self, _host: &str, _port: u16) -> ResolveFuture {
        let addresses = self
            .addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Box::pin(async move {
            if addresses.is_empty() {
                Err(io::Error::new(io::ErrorKind::NotFound, "no addresses set"))
            } else {
                Ok(addresses)
            }
        })
    }
}

/// Asks a given DNS server (UDP, falling back to TCP), with hickory-resolver. Answers are cached
/// for their TTL and no longer, so a name moved by a failover is seen once its TTL runs out.
///
/// For containers and labs whose system resolver is not the one to ask.
///
/// ```
/// # #[cfg(feature = "hickory")] {
/// use steadfast::connect::resolve::DnsResolver;
/// let resolver = DnsResolver::new("10.213.0.3:53".parse().unwrap()).unwrap();
/// # }
/// ```
#[cfg(feature = "hickory")]
#[derive(Clone)]
pub struct DnsResolver {
    server: SocketAddr,
    inner: hickory_resolver::TokioResolver,
}

#[cfg(feature = "hickory")]
impl DnsResolver {
    /// A resolver that asks only `server`.
    ///
    /// # Errors
    /// When hickory-resolver rejects the configuration.
    pub fn new(server: SocketAddr) -> io::Result<Self> {
        use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
        let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
        for connection in &mut name_server.connections {
            connection.port = server.port();
        }
        let mut options = ResolverOpts::default();
        options.timeout = std::time::Duration::from_millis(500);
        options.attempts = 2;
        options.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        options.ndots = 0;
        let inner = hickory_resolver::Resolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![name_server]),
            hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
        )
        .with_options(options)
        .build()
        .map_err(io::Error::other)?;
        Ok(Self { server, inner })
    }
}

#[cfg(feature = "hickory")]
impl Debug for DnsResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsResolver")
            .field("server", &self.server)
            .finish()
    }
}

#[cfg(feature = "hickory")]
impl Resolver for DnsResolver {
    fn resolve(&self, host: &str, port: u16) -> ResolveFuture {
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Box::pin(async move { Ok(vec![SocketAddr::new(ip, port)]) });
        }
        let inner = self.inner.clone();
        let name = if host.ends_with('.') {
            host.to_owned()
        } else {
            format!("{host}.")
        };
        Box::pin(async move {
            let answer = inner
                .lookup_ip(name.as_str())
                .await
                .map_err(io::Error::other)?;
            Ok(answer.iter().map(|ip| SocketAddr::new(ip, port)).collect())
        })
    }
}
