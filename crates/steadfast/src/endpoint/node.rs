//! A cluster node's address as the cluster names it: a leaf, so events can carry it.

/// A cluster node's address, as the cluster names it (`MOVED`, `ASK`, `CLUSTER NODES`): the
/// node a redirection points at, a shard's primary in an event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeAddress {
    /// Host name or IP address; `None` when the server left it out (use the answering node's).
    pub host: Option<std::sync::Arc<str>>,
    /// TCP port.
    pub port: u16,
}

impl std::fmt::Display for NodeAddress {
    /// `host:port`, an IPv6 host in brackets, `?:port` without a host.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host.as_deref() {
            Some(host) if host.contains(':') => write!(f, "[{host}]:{}", self.port),
            Some(host) => write!(f, "{host}:{}", self.port),
            None => write!(f, "?:{}", self.port),
        }
    }
}
