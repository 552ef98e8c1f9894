//! How announced maintenance is acted on: the `[maintenance]` group of [`Config`](super::Config).

use std::time::Duration;

/// Whether to ask the server for RESP3 maintenance notifications (`CLIENT MAINT_NOTIFICATIONS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MaintenanceMode {
    /// Never ask.
    Disabled,
    /// Ask on every connection; a refusal fails the attempt. Needs [`Protocol::Resp3`](super::Protocol::Resp3).
    Enabled,
    /// Ask on every connection; a server that refuses (`-ERR`, as open-source Redis and Valkey
    /// do) is used exactly as before.
    Auto,
}

impl std::str::FromStr for MaintenanceMode {
    type Err = &'static str;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "auto" => Ok(Self::Auto),
            "enabled" | "on" => Ok(Self::Enabled),
            "disabled" | "off" => Ok(Self::Disabled),
            _ => Err("expected auto, enabled or disabled"),
        }
    }
}

impl std::str::FromStr for AzureEvents {
    type Err = &'static str;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "auto" => Ok(Self::Auto),
            "on" | "true" => Ok(Self::On),
            "off" | "false" => Ok(Self::Off),
            _ => Err("expected auto, on or off"),
        }
    }
}

/// The `moving-endpoint-type` asked for: how MOVING should name the new endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MovingEndpointType {
    /// Chosen per connection: `*-fqdn` over TLS, `*-ip` over plain TCP; `internal-*` when the
    /// server's address is private (RFC 1918, RFC 4193, loopback, link-local, 100.64/10).
    Auto,
    /// `internal-ip`.
    InternalIp,
    /// `internal-fqdn`.
    InternalFqdn,
    /// `external-ip`.
    ExternalIp,
    /// `external-fqdn`.
    ExternalFqdn,
    /// `none`: MOVING always carries a null endpoint.
    None,
}

/// Whether to listen to Azure's `AzureRedisEvents` channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AzureEvents {
    /// On for Azure Cache for Redis host names (`*.redis.cache.windows.net` and the sovereign
    /// clouds' equivalents), off otherwise.
    Auto,
    /// Always listen (any host that publishes the channel).
    On,
    /// Never listen.
    Off,
}

/// How announced maintenance is acted on; see [`maintenance`](crate::maintenance).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MaintenanceConfig {
    /// Ask for maintenance notifications. Default: [`MaintenanceMode::Auto`].
    pub mode: MaintenanceMode,
    /// A RESP2 link cannot carry push frames, so beside the client's shared RESP2 link a second,
    /// idle RESP3 connection to the same server asks for the notifications and hears them for
    /// it (made and closed with the link; never used for commands). A server that refuses the
    /// opt-in (open-source Redis, Valkey) is not asked again by any client of the process for
    /// ten minutes: one short extra connection in all. Dedicated links (blocking commands, sessions, subscribers) follow the
    /// shared link and need none. Off, or with `mode` [`MaintenanceMode::Disabled`], a RESP2
    /// client hears no RESP3 notifications. Default: on.
    pub resp2_listener: bool,
    /// The `moving-endpoint-type` to ask for. Default: [`MovingEndpointType::Auto`].
    pub endpoint_type: MovingEndpointType,
    /// Command deadline and read-stall threshold while a migration or failover is announced
    /// (MIGRATING, FAILING_OVER, SMIGRATING until their end). Default: 10 s, as every mature
    /// client uses.
    pub relaxed_timeout: Duration,
    /// Relaxation ends by itself this long after the last start frame, if no end frame comes.
    /// Default: 60 s.
    pub relaxed_cap: Duration,
    /// Longest time new commands are held while a planned replacement (MOVING, Azure drain)
    /// dials the new link; after it they go to the old link, which still answers, until the new
    /// one is ready. Default: 500 ms.
    pub hold_limit: Duration,
    /// Listen to `AzureRedisEvents`. Default: [`AzureEvents::Auto`].
    pub azure_events: AzureEvents,
    /// How long before an announced `StartTimeInUTC` the link is replaced (and before a
    /// cluster node's `FAILING_OVER` time it is routed around). Default: 1 s.
    pub azure_lead: Duration,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            mode: MaintenanceMode::Auto,
            resp2_listener: true,
            endpoint_type: MovingEndpointType::Auto,
            relaxed_timeout: Duration::from_secs(10),
            relaxed_cap: Duration::from_secs(60),
            hold_limit: Duration::from_millis(500),
            azure_events: AzureEvents::Auto,
            azure_lead: Duration::from_secs(1),
        }
    }
}
