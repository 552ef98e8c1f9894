//! Config from a TOML file and from environment variables.
//!
//! # Behaviour
//! - The file names the endpoint with `url` or `connection_string`, and may set any group:
//!   `[connect]`, `[command]`, `[health]`, `[reconnect]`, `[tls]`, `[maintenance]`, `[cluster]`.
//!   Durations are
//!   strings with a unit (`"250ms"`, `"5s"`, `"2m"`). Unknown keys are errors that name the key.
//! - [`Config::from_env`] reads `STEADFAST_CONFIG_FILE` (a TOML file), else `STEADFAST_URL`, else
//!   `STEADFAST_CONNECTION_STRING`; then `STEADFAST_PASSWORD` (kept out of URLs and files),
//!   `STEADFAST_COMMAND_TIMEOUT` and `STEADFAST_CONNECT_TIMEOUT` override.
//!
//! ```toml
//! url = "rediss://cache.example:6380"
//! password = "from-a-secret-store"
//!
//! [command]
//! deadline = "2s"
//!
//! [tls]
//! ca_file = "/etc/ssl/private-ca.pem"
//! ```

use serde::Deserialize;

use super::{ClientIdentity, Config, Password, TlsRoots, TlsVerification};
use crate::error::Error;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    url: Option<String>,
    connection_string: Option<String>,
    password: Option<String>,
    #[serde(default)]
    connect: ConnectSection,
    #[serde(default)]
    command: CommandSection,
    #[serde(default)]
    health: HealthSection,
    #[serde(default)]
    reconnect: ReconnectSection,
    #[serde(default)]
    tls: TlsSection,
    #[serde(default)]
    maintenance: MaintenanceSection,
    #[serde(default)]
    cluster: ClusterSection,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConnectSection {
    timeout: Option<String>,
    tcp_nodelay: Option<bool>,
    tcp_user_timeout: Option<String>,
    syn_interval: Option<String>,
    address_stagger: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CommandSection {
    deadline: Option<String>,
    queue_capacity: Option<usize>,
    blocking_links: Option<usize>,
    session_links: Option<usize>,
    subscriber_buffer: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ClusterSection {
    read_from: Option<String>,
    refresh_interval: Option<String>,
    refresh_min_interval: Option<String>,
    breaker_threshold: Option<u32>,
    breaker_open_min: Option<String>,
    breaker_open_max: Option<String>,
    takeover_poll: Option<String>,
    redirect_limit: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HealthSection {
    ping_interval: Option<String>,
    read_stall: Option<String>,
    probe_timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReconnectSection {
    backoff_initial: Option<String>,
    backoff_max: Option<String>,
    refused_retry: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    enabled: Option<bool>,
    server_name: Option<String>,
    ca_file: Option<String>,
    platform_roots: Option<bool>,
    client_certificate: Option<String>,
    client_key: Option<String>,
    insecure_accept_any_certificate: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MaintenanceSection {
    mode: Option<String>,
    resp2_listener: Option<bool>,
    azure_events: Option<String>,
    relaxed_timeout: Option<String>,
}

fn set_duration(
    target: &mut std::time::Duration,
    field: &str,
    value: Option<&String>,
) -> Result<(), Error> {
    if let Some(value) = value {
        *target = super::url::duration(field, value)?;
    }
    Ok(())
}

impl Config {
    /// Reads a TOML config.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) naming the key or value;
    /// passwords are never repeated.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        let file: File = toml::from_str(text).map_err(|e| {
            // toml's message quotes the offending line, which may hold a password.
            let line = e
                .span()
                .map_or(0, |span| text[..span.start].lines().count());
            Error::invalid_config("toml", &format!("line {line}"), e.message())
        })?;
        let mut config = match (&file.url, &file.connection_string) {
            (Some(url), None) => Self::from_url(url)?,
            (None, Some(text)) => super::parse_connection_string(text)?.config,
            (None, None) => Self::default(),
            (Some(_), Some(_)) => {
                return Err(Error::invalid_config(
                    "toml",
                    "url and connection_string",
                    "give one of them, not both",
                ));
            }
        };
        if let Some(password) = file.password {
            config.endpoint.password = Some(Password::new(password));
        }
        if let Some(is_on) = file.connect.tcp_nodelay {
            config.connect.tcp_nodelay = is_on;
        }
        set_duration(
            &mut config.connect.connect_timeout,
            "connect.timeout",
            file.connect.timeout.as_ref(),
        )?;
        set_duration(
            &mut config.connect.tcp_user_timeout,
            "connect.tcp_user_timeout",
            file.connect.tcp_user_timeout.as_ref(),
        )?;
        set_duration(
            &mut config.connect.syn_interval,
            "connect.syn_interval",
            file.connect.syn_interval.as_ref(),
        )?;
        set_duration(
            &mut config.connect.address_stagger,
            "connect.address_stagger",
            file.connect.address_stagger.as_ref(),
        )?;
        set_duration(
            &mut config.command.deadline,
            "command.deadline",
            file.command.deadline.as_ref(),
        )?;
        if let Some(capacity) = file.command.queue_capacity {
            config.command.queue_capacity = capacity;
        }
        if let Some(links) = file.command.blocking_links {
            config.command.blocking_links = links;
        }
        if let Some(links) = file.command.session_links {
            config.command.session_links = links;
        }
        if let Some(buffer) = file.command.subscriber_buffer {
            config.command.subscriber_buffer = buffer;
        }
        set_duration(
            &mut config.health.ping_interval,
            "health.ping_interval",
            file.health.ping_interval.as_ref(),
        )?;
        set_duration(
            &mut config.health.read_stall,
            "health.read_stall",
            file.health.read_stall.as_ref(),
        )?;
        set_duration(
            &mut config.health.probe_timeout,
            "health.probe_timeout",
            file.health.probe_timeout.as_ref(),
        )?;
        set_duration(
            &mut config.reconnect.backoff_initial,
            "reconnect.backoff_initial",
            file.reconnect.backoff_initial.as_ref(),
        )?;
        set_duration(
            &mut config.reconnect.backoff_max,
            "reconnect.backoff_max",
            file.reconnect.backoff_max.as_ref(),
        )?;
        set_duration(
            &mut config.reconnect.refused_retry,
            "reconnect.refused_retry",
            file.reconnect.refused_retry.as_ref(),
        )?;
        apply_tls(&mut config, file.tls)?;
        apply_maintenance(&mut config, file.maintenance)?;
        apply_cluster(&mut config, file.cluster)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the config from the environment (see the module doc for the variables).
    ///
    /// # Errors
    /// When no endpoint variable is set, or a value is invalid (named in the error).
    pub fn from_env() -> Result<Self, Error> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut config = if let Some(path) = var("STEADFAST_CONFIG_FILE") {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Error::invalid_config("STEADFAST_CONFIG_FILE", &path, &e.to_string())
            })?;
            Self::from_toml(&text)?
        } else if let Some(url) = var("STEADFAST_URL") {
            Self::from_url(&url)?
        } else if let Some(text) = var("STEADFAST_CONNECTION_STRING") {
            super::parse_connection_string(&text)?.config
        } else {
            return Err(Error::invalid_config(
                "environment",
                "-",
                "set STEADFAST_CONFIG_FILE, STEADFAST_URL or STEADFAST_CONNECTION_STRING",
            ));
        };
        if let Some(password) = var("STEADFAST_PASSWORD") {
            config.endpoint.password = Some(Password::new(password));
        }
        if let Some(value) = var("STEADFAST_COMMAND_TIMEOUT") {
            config.command.deadline = super::url::duration("STEADFAST_COMMAND_TIMEOUT", &value)?;
        }
        if let Some(value) = var("STEADFAST_CONNECT_TIMEOUT") {
            config.connect.connect_timeout =
                super::url::duration("STEADFAST_CONNECT_TIMEOUT", &value)?;
        }
        config.validate()?;
        Ok(config)
    }
}

fn apply_tls(config: &mut Config, tls: TlsSection) -> Result<(), Error> {
    if let Some(enabled) = tls.enabled {
        config.tls.is_enabled = enabled;
    }
    if let Some(name) = tls.server_name {
        config.tls.server_name = Some(name);
    }
    match (tls.ca_file, tls.platform_roots) {
        (Some(_), Some(true)) => {
            return Err(Error::invalid_config(
                "tls",
                "ca_file and platform_roots",
                "choose one set of roots",
            ));
        }
        (Some(path), _) => config.tls.roots = TlsRoots::CaFile(path.into()),
        (None, Some(true)) => config.tls.roots = TlsRoots::Platform,
        _ => {}
    }
    match (tls.client_certificate, tls.client_key) {
        (Some(certificate), Some(key)) => {
            config.tls.client_identity = Some(ClientIdentity {
                certificate_file: certificate.into(),
                key_file: key.into(),
            });
        }
        (None, None) => {}
        (Some(certificate), None) => {
            return Err(Error::invalid_config(
                "tls.client_key",
                "-",
                &format!("missing for client_certificate {certificate}"),
            ));
        }
        (None, Some(key)) => {
            return Err(Error::invalid_config(
                "tls.client_certificate",
                "-",
                &format!("missing for client_key {key}"),
            ));
        }
    }
    if tls.insecure_accept_any_certificate == Some(true) {
        config.tls.verification = TlsVerification::InsecureAcceptAnyCertificate;
    }
    Ok(())
}

fn apply_cluster(config: &mut Config, section: ClusterSection) -> Result<(), Error> {
    let cluster = &mut config.cluster;
    if let Some(choice) = &section.read_from {
        cluster.read_from = super::parse_choice("cluster.read_from", choice)?;
    }
    for (target, field, value) in [
        (
            &mut cluster.refresh_interval,
            "cluster.refresh_interval",
            &section.refresh_interval,
        ),
        (
            &mut cluster.refresh_min_interval,
            "cluster.refresh_min_interval",
            &section.refresh_min_interval,
        ),
        (
            &mut cluster.breaker_open_min,
            "cluster.breaker_open_min",
            &section.breaker_open_min,
        ),
        (
            &mut cluster.breaker_open_max,
            "cluster.breaker_open_max",
            &section.breaker_open_max,
        ),
        (
            &mut cluster.takeover_poll,
            "cluster.takeover_poll",
            &section.takeover_poll,
        ),
    ] {
        set_duration(target, field, value.as_ref())?;
    }
    if let Some(threshold) = section.breaker_threshold {
        cluster.breaker_threshold = threshold;
    }
    if let Some(limit) = section.redirect_limit {
        cluster.redirect_limit = limit;
    }
    Ok(())
}

fn apply_maintenance(config: &mut Config, maintenance: MaintenanceSection) -> Result<(), Error> {
    if let Some(is_on) = maintenance.resp2_listener {
        config.maintenance.resp2_listener = is_on;
    }
    if let Some(mode) = maintenance.mode {
        config.maintenance.mode = super::parse_choice("maintenance.mode", &mode)?;
    }
    if let Some(choice) = maintenance.azure_events {
        config.maintenance.azure_events = super::parse_choice("maintenance.azure_events", &choice)?;
    }
    set_duration(
        &mut config.maintenance.relaxed_timeout,
        "maintenance.relaxed_timeout",
        maintenance.relaxed_timeout.as_ref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AzureEvents, MaintenanceMode};
    use std::time::Duration;

    #[test]
    fn a_full_file_sets_every_group() {
        let config = Config::from_toml(
            r#"
            url = "rediss://cache.example:6380/2"
            password = "from-a-vault"
            [connect]
            timeout = "3s"
            [command]
            deadline = "2s"
            queue_capacity = 50
            [health]
            read_stall = "1500ms"
            [reconnect]
            backoff_max = "2s"
            [tls]
            server_name = "cache.internal"
            ca_file = "/etc/ca.pem"
            [maintenance]
            mode = "disabled"
            resp2_listener = false
            azure_events = "on"
            relaxed_timeout = "20s"
            [cluster]
            read_from = "replica"
            refresh_interval = "5s"
            refresh_min_interval = "100ms"
            breaker_threshold = 5
            breaker_open_min = "500ms"
            breaker_open_max = "4s"
            takeover_poll = "50ms"
            redirect_limit = 8
            "#,
        )
        .unwrap();
        assert!(config.tls.is_enabled);
        assert_eq!(config.endpoint.database, 2);
        assert_eq!(
            config.endpoint.password.as_ref().map(Password::expose),
            Some("from-a-vault")
        );
        assert_eq!(config.connect.connect_timeout, Duration::from_secs(3));
        assert_eq!(config.command.deadline, Duration::from_secs(2));
        assert_eq!(config.command.queue_capacity, 50);
        assert_eq!(config.health.read_stall, Duration::from_millis(1500));
        assert_eq!(config.reconnect.backoff_max, Duration::from_secs(2));
        assert_eq!(config.tls.server_name.as_deref(), Some("cache.internal"));
        assert_eq!(config.tls.roots, TlsRoots::CaFile("/etc/ca.pem".into()));
        assert_eq!(config.maintenance.mode, MaintenanceMode::Disabled);
        assert!(!config.maintenance.resp2_listener);
        assert_eq!(config.maintenance.azure_events, AzureEvents::On);
        assert_eq!(config.maintenance.relaxed_timeout, Duration::from_secs(20));
        let cluster = &config.cluster;
        assert_eq!(cluster.read_from, crate::config::ReadFrom::Replica);
        assert_eq!(cluster.refresh_interval, Duration::from_secs(5));
        assert_eq!(cluster.refresh_min_interval, Duration::from_millis(100));
        assert_eq!(cluster.breaker_threshold, 5);
        assert_eq!(cluster.breaker_open_min, Duration::from_millis(500));
        assert_eq!(cluster.breaker_open_max, Duration::from_secs(4));
        assert_eq!(cluster.takeover_poll, Duration::from_millis(50));
        assert_eq!(cluster.redirect_limit, 8);
    }

    #[test]
    fn a_cluster_setting_out_of_range_is_named() {
        let err =
            Config::from_toml("url = \"redis://a:6379\"\n[cluster]\nbreaker_open_min = \"9s\"\n")
                .unwrap_err();
        assert!(
            err.to_string().contains("cluster.breaker_open_max"),
            "{err}"
        );
        let err =
            Config::from_toml("url = \"redis://a:6379\"\n[cluster]\nspeed = 3\n").unwrap_err();
        assert!(err.to_string().contains("speed"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_named_without_repeating_the_password() {
        let err = Config::from_toml("password = \"TOMLSECRET\"\ncolour = \"blue\"\n").unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        assert!(!err.to_string().contains("TOMLSECRET"), "{err}");
        let err = Config::from_toml("[command]\ndeadline = \"soon\"\n").unwrap_err();
        assert!(err.to_string().contains("command.deadline"), "{err}");
        let err =
            Config::from_toml("url = \"redis://h\"\nconnection_string = \"h\"\n").unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let err = Config::from_toml("[tls]\nclient_certificate = \"c.pem\"\n").unwrap_err();
        assert!(err.to_string().contains("tls.client_key"), "{err}");
    }
}
