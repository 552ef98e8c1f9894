//! `redis://[[user]:password@]host[:port][/database][?key=value&...]`, and `rediss://` for TLS.
//!
//! Query keys: `protocol` (`resp2` / `resp3`), `client_name`, `connect_timeout`,
//! `command_timeout` (durations with a unit: `250ms`, `5s`, `2m`), `tls_server_name`,
//! `tls_ca_file`, `tls_insecure` (`true` accepts any certificate), `maintenance`
//! (`auto` / `enabled` / `disabled`), `azure_events` (`auto` / `on` / `off`).
//!
//! # Behaviour
//! - User and password are percent-decoded; the password is never echoed in an error.
//! - Unknown query keys and unknown schemes are errors, not silently dropped.

use percent_encoding::percent_decode_str;

use super::{EndpointConfig, Password, Protocol};
use crate::error::Error;

/// A query setting for a config group other than the endpoint.
#[derive(Debug, PartialEq)]
pub(super) enum Setting {
    ConnectTimeout(std::time::Duration),
    CommandTimeout(std::time::Duration),
    TlsServerName(String),
    TlsCaFile(std::path::PathBuf),
    TlsInsecure(bool),
    Maintenance(super::MaintenanceMode),
    AzureEvents(super::AzureEvents),
    ReadFrom(super::ReadFrom),
}

pub(super) fn parse_with_settings(
    input: &str,
) -> Result<(EndpointConfig, bool, Vec<Setting>), Error> {
    let mut settings = Vec::new();
    let url = url::Url::parse(input)
        .map_err(|e| Error::invalid_config("url", &redact(input), &e.to_string()))?;
    let is_tls = match url.scheme() {
        "unix" | "redis+unix" => return parse_unix(&url),
        "redis" | "valkey" => false,
        "rediss" | "valkeys" => true,
        other => {
            return Err(Error::invalid_config(
                "url.scheme",
                other,
                "expected redis://, rediss://, unix://, valkey:// or valkeys://",
            ));
        }
    };
    let host = match url.host() {
        Some(url::Host::Ipv6(addr)) => addr.to_string(),
        Some(host) => host.to_string(),
        None => {
            return Err(Error::invalid_config(
                "url.host",
                "\"\"",
                "must not be empty",
            ));
        }
    };
    let mut endpoint = EndpointConfig {
        host,
        ..EndpointConfig::default()
    };
    if endpoint.host.is_empty() {
        return Err(Error::invalid_config(
            "url.host",
            "\"\"",
            "must not be empty",
        ));
    }
    endpoint.port = url.port().unwrap_or(6379);
    if !url.username().is_empty() {
        endpoint.username = Some(decode("url.username", url.username())?);
    }
    if let Some(password) = url.password() {
        let secret = decode("url.password", password)?;
        endpoint.password = Some(Password::new(secret));
    }
    let path = url.path().trim_start_matches('/');
    if !path.is_empty() {
        endpoint.database = path
            .parse()
            .map_err(|_| Error::invalid_config("url.database", path, "expected a number"))?;
    }
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "protocol" | "client_name" | "connect_timeout" | "command_timeout" => {
                shared_query(&key, &value, &mut endpoint, &mut settings)?;
            }
            "tls_server_name" => settings.push(Setting::TlsServerName(value.into_owned())),
            "tls_ca_file" => settings.push(Setting::TlsCaFile(value.into_owned().into())),
            "tls_insecure" => settings.push(Setting::TlsInsecure(match value.as_ref() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                other => {
                    return Err(Error::invalid_config(
                        "url.tls_insecure",
                        other,
                        "expected true or false",
                    ));
                }
            })),
            "maintenance" => settings.push(Setting::Maintenance(super::parse_choice(
                "url.maintenance",
                &value,
            )?)),
            "azure_events" => settings.push(Setting::AzureEvents(super::parse_choice(
                "url.azure_events",
                &value,
            )?)),
            "read_from" => settings.push(Setting::ReadFrom(super::parse_choice(
                "url.read_from",
                &value,
            )?)),
            other => {
                return Err(Error::invalid_config(
                    "url.query",
                    other,
                    "unknown parameter (known: protocol, client_name, connect_timeout, command_timeout, tls_server_name, tls_ca_file, tls_insecure, maintenance, azure_events, read_from)",
                ));
            }
        }
    }
    Ok((endpoint, is_tls, settings))
}

/// `unix:///path/to/redis.sock[?db=N&client_name=NAME&protocol=...&command_timeout=...]`.
fn parse_unix(url: &url::Url) -> Result<(EndpointConfig, bool, Vec<Setting>), Error> {
    if url.path().is_empty() || url.path() == "/" {
        return Err(Error::invalid_config(
            "url.path",
            "\"\"",
            "a unix:// URL needs the socket's path",
        ));
    }
    let mut endpoint = EndpointConfig {
        unix_socket: Some(url.path().into()),
        ..EndpointConfig::default()
    };
    let mut settings = Vec::new();
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "db" => {
                endpoint.database = value
                    .parse()
                    .map_err(|_| Error::invalid_config("url.db", &value, "expected a number"))?;
            }
            "protocol" | "client_name" | "connect_timeout" | "command_timeout" => {
                shared_query(&key, &value, &mut endpoint, &mut settings)?;
            }
            other => {
                return Err(Error::invalid_config(
                    "url.query",
                    other,
                    "unknown parameter for unix:// (known: db, client_name, protocol, command_timeout, connect_timeout)",
                ));
            }
        }
    }
    Ok((endpoint, false, settings))
}

/// The query keys `redis://` and `unix://` share.
fn shared_query(
    key: &str,
    value: &str,
    endpoint: &mut EndpointConfig,
    settings: &mut Vec<Setting>,
) -> Result<(), Error> {
    match key {
        "protocol" => {
            endpoint.protocol = match value {
                "resp2" | "2" => Protocol::Resp2,
                "resp3" | "3" => Protocol::Resp3,
                other => {
                    return Err(Error::invalid_config(
                        "url.protocol",
                        other,
                        "expected resp2 or resp3",
                    ));
                }
            }
        }
        "client_name" => endpoint.client_name = Some(value.to_owned()),
        "connect_timeout" => {
            settings.push(Setting::ConnectTimeout(duration(
                "url.connect_timeout",
                value,
            )?));
        }
        "command_timeout" => {
            settings.push(Setting::CommandTimeout(duration(
                "url.command_timeout",
                value,
            )?));
        }
        other => {
            return Err(Error::invalid_config(
                "url.query",
                other,
                "unknown parameter",
            ));
        }
    }
    Ok(())
}

/// `250ms`, `5s`, `2m`: a number and a unit; zero is refused.
pub(super) fn duration(field: &str, value: &str) -> Result<std::time::Duration, Error> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let amount: u64 = number.parse().map_err(|_| {
        Error::invalid_config(field, value, "expected a duration like 250ms, 5s or 2m")
    })?;
    let duration = match unit {
        "ms" => std::time::Duration::from_millis(amount),
        "s" => std::time::Duration::from_secs(amount),
        "m" => std::time::Duration::from_secs(amount.saturating_mul(60)),
        _ => {
            return Err(Error::invalid_config(
                field,
                value,
                "expected a unit: ms, s or m",
            ));
        }
    };
    if duration.is_zero() {
        return Err(Error::invalid_config(
            field,
            value,
            "must be greater than zero",
        ));
    }
    Ok(duration)
}

fn decode(field: &'static str, raw: &str) -> Result<String, Error> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::invalid_config(field, "<not shown>", "is not valid UTF-8"))
}

/// The input with anything between `://` and `@` replaced, for error messages.
fn redact(input: &str) -> String {
    match (input.find("://"), input.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            format!("{}://***{}", &input[..start], &input[at..])
        }
        _ => input.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use proptest::prelude::*;

    fn parse(input: &str) -> Result<(EndpointConfig, bool), Error> {
        parse_with_settings(input).map(|(endpoint, is_tls, _)| (endpoint, is_tls))
    }

    #[test]
    fn full_url_sets_every_field() {
        let (e, is_tls) =
            parse("redis://alice:s%40cret@cache.example:6390/3?protocol=resp2&client_name=web")
                .unwrap();
        assert!(!is_tls);
        assert_eq!(e.host, "cache.example");
        assert_eq!(e.port, 6390);
        assert_eq!(e.username.as_deref(), Some("alice"));
        assert_eq!(e.password.as_ref().map(Password::expose), Some("s@cret"));
        assert_eq!(e.database, 3);
        assert_eq!(e.protocol, Protocol::Resp2);
        assert_eq!(e.client_name.as_deref(), Some("web"));
    }

    #[test]
    fn password_only_url_leaves_user_empty() {
        let (e, _) = parse("redis://:pw@10.0.0.1").unwrap();
        assert_eq!(e.username, None);
        assert_eq!(e.password.as_ref().map(Password::expose), Some("pw"));
        assert_eq!(e.port, 6379);
    }

    #[test]
    fn ipv6_host_loses_its_brackets() {
        assert_eq!(parse("redis://[::1]:7000").unwrap().0.host, "::1");
    }

    #[test]
    fn query_settings_for_other_groups_are_read() {
        let (_, is_tls, settings) = parse_with_settings(
            "rediss://h?connect_timeout=250ms&command_timeout=2s&tls_server_name=cache.example&tls_ca_file=/etc/ca.pem&tls_insecure=false&maintenance=disabled&azure_events=on&read_from=replica",
        )
        .unwrap();
        assert!(is_tls);
        assert_eq!(
            settings,
            vec![
                Setting::ConnectTimeout(std::time::Duration::from_millis(250)),
                Setting::CommandTimeout(std::time::Duration::from_secs(2)),
                Setting::TlsServerName("cache.example".into()),
                Setting::TlsCaFile("/etc/ca.pem".into()),
                Setting::TlsInsecure(false),
                Setting::Maintenance(super::super::MaintenanceMode::Disabled),
                Setting::AzureEvents(super::super::AzureEvents::On),
                Setting::ReadFrom(super::super::ReadFrom::Replica),
            ]
        );
    }

    #[test]
    fn durations_need_a_unit_and_errors_name_the_key() {
        for bad in ["5", "soon", "0s", "5h", "-1s"] {
            let err = parse_with_settings(&format!("redis://h?connect_timeout={bad}")).unwrap_err();
            assert!(err.to_string().contains("url.connect_timeout"), "{err}");
        }
    }

    #[test]
    fn unix_urls_name_the_socket_and_the_database() {
        let (e, is_tls) = parse("unix:///run/redis/redis.sock?db=3&client_name=w").unwrap();
        assert!(!is_tls);
        assert_eq!(e.unix_socket, Some("/run/redis/redis.sock".into()));
        assert_eq!(e.database, 3);
        let err = parse("unix:///run/redis.sock?colour=blue").unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        assert!(parse("unix://").is_err());
    }

    #[test]
    fn rediss_asks_for_tls() {
        assert!(parse("rediss://cache.example:6380").unwrap().1);
    }

    #[test]
    fn unknown_scheme_is_named_in_the_error() {
        let err = parse("http://localhost").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.to_string().contains("url.scheme") && err.to_string().contains("http"));
    }

    #[test]
    fn bad_port_error_hides_the_password() {
        let err = parse("redis://u:topsecret@host:99999").unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("topsecret"), "{text}");
        assert!(text.contains("url"), "{text}");
    }

    #[test]
    fn non_numeric_database_is_named() {
        let err = parse("redis://host/abc").unwrap_err();
        assert!(err.to_string().contains("url.database"), "{err}");
    }

    #[test]
    fn unknown_query_key_is_reported() {
        let err = parse("redis://host?colour=blue").unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    proptest! {
        #[test]
        fn parser_never_panics_and_never_echoes_a_password(s in "\\PC{0,80}") {
            let input = format!("redis://user:SECRETPW@{s}");
            if let Err(err) = parse(&input) {
                prop_assert!(!err.to_string().contains("SECRETPW"));
            }
        }
    }
}
