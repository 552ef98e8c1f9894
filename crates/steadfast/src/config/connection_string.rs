//! Connection strings in the StackExchange.Redis form, as Azure's portal shows them:
//! `name.redis.cache.windows.net:6380,password=...,ssl=True,abortConnect=False`.
//!
//! # Behaviour
//! - The first comma-separated part(s) without `=` are endpoints (`host[:port]`); the rest are
//!   `key=value` options, keys matched without regard to case.
//! - Options that map to steadfast: `password`, `user`, `ssl`, `sslHost`, `connectTimeout` (ms),
//!   `asyncTimeout` and `syncTimeout` (ms: the command deadline is the larger), `keepAlive` (s:
//!   the idle PING interval), `defaultDatabase`, `name`, `protocol` (`resp2` / `resp3`),
//!   `abortConnect` (steadfast never aborts: accepted either way).
//! - StackExchange-only options that mean nothing here (`allowAdmin`, `connectRetry`, ...) are
//!   accepted and listed in [`ConnectionString::ignored`], never silently.
//! - Unknown keys, bad numbers and more than one endpoint are errors that name the key and the
//!   value; a password is never repeated.

use std::time::Duration;

use super::{Config, Password, Protocol};
use crate::error::Error;

/// Options StackExchange.Redis knows that have no meaning for steadfast.
const IGNORED: &[&str] = &[
    "allowadmin",
    "channelprefix",
    "checkcertificaterevocation",
    "configchannel",
    "configcheckseconds",
    "connectretry",
    "highprioritysocketthreads",
    "proxy",
    "resolvedns",
    "responsetimeout",
    "setlib",
    "sslprotocols",
    "tiebreaker",
    "version",
    "writebuffer",
];

/// A parsed connection string.
#[derive(Debug)]
pub struct ConnectionString {
    /// The config it describes; every other field at its default.
    pub config: Config,
    /// StackExchange.Redis options that were accepted but mean nothing here.
    pub ignored: Vec<String>,
}

/// Parses a StackExchange.Redis connection string.
///
/// ```
/// let parsed = steadfast::config::parse_connection_string(
///     "contoso.redis.cache.windows.net:6380,password=secret,ssl=True,abortConnect=False",
/// )
/// .unwrap();
/// assert_eq!(parsed.config.endpoint.port, 6380);
/// assert!(parsed.config.tls.is_enabled);
/// ```
///
/// # Errors
/// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) naming the key and value.
pub fn parse(input: &str) -> Result<ConnectionString, Error> {
    // Found first, so no error below can show a piece of one (a password may hold `,` or `=`,
    // and a string may carry several `password=` parts).
    let passwords: Vec<String> = input
        .split(',')
        .filter_map(|part| part.trim().split_once('='))
        .filter(|(key, _)| key.trim().eq_ignore_ascii_case("password"))
        .map(|(_, value)| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .collect();
    let has_password = input.to_ascii_lowercase().contains("password");
    let show = |text: &str| shown(text, &passwords);
    let mut config = Config::default();
    let mut ignored = Vec::new();
    let mut endpoints = Vec::new();
    let mut port_given = false;
    let (mut sync_timeout, mut async_timeout) = (None, None);
    for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = part.split_once('=') else {
            endpoints.push(part);
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        let field = |name: &str| format!("connection_string.{name}");
        match key.to_ascii_lowercase().as_str() {
            "password" => config.endpoint.password = Some(Password::new(value)),
            "user" => config.endpoint.username = Some(value.to_owned()),
            "ssl" => config.tls.is_enabled = boolean(&field(key), value, &show(value))?,
            "sslhost" => config.tls.server_name = Some(value.to_owned()),
            "abortconnect" => {
                boolean(&field(key), value, &show(value))?;
            }
            "connecttimeout" => {
                config.connect.connect_timeout = millis(&field(key), value, &show(value))?
            }
            "synctimeout" => sync_timeout = Some(millis(&field(key), value, &show(value))?),
            "asynctimeout" => async_timeout = Some(millis(&field(key), value, &show(value))?),
            "keepalive" => {
                let seconds: u64 = number(&field(key), value, &show(value))?;
                if seconds == 0 {
                    return Err(Error::invalid_config(
                        &field(key),
                        value,
                        "must be at least 1",
                    ));
                }
                config.health.ping_interval = Duration::from_secs(seconds);
            }
            "defaultdatabase" => {
                config.endpoint.database = number(&field(key), value, &show(value))?
            }
            "name" => config.endpoint.client_name = Some(value.to_owned()),
            "protocol" => {
                config.endpoint.protocol = match value.to_ascii_lowercase().as_str() {
                    "resp2" | "2" => Protocol::Resp2,
                    "resp3" | "3" => Protocol::Resp3,
                    _ => {
                        return Err(Error::invalid_config(
                            &field(key),
                            &show(value),
                            "expected resp2 or resp3",
                        ));
                    }
                }
            }
            lower if IGNORED.contains(&lower) => ignored.push(key.to_owned()),
            _ => {
                // With a password present, an unknown key may be a piece of it (a password
                // holding `,`): never show it then.
                let (shown_key, problem) = if has_password {
                    (
                        "<not shown>".to_owned(),
                        "unknown option (not shown because the string holds a password, which may itself contain a comma)",
                    )
                } else {
                    (show(key), "unknown option")
                };
                return Err(Error::invalid_config(
                    "connection_string",
                    &shown_key,
                    problem,
                ));
            }
        }
    }
    let endpoint = match endpoints.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::invalid_config(
                "connection_string",
                "\"\"",
                "no host:port endpoint",
            ));
        }
        several => {
            // Never echo parts without a key: a forgotten `password=` would print the password.
            return Err(Error::invalid_config(
                "connection_string",
                &format!("{} parts without a key", several.len()),
                "several endpoints are not supported by a single-endpoint client (or a key= is missing)",
            ));
        }
    };
    let (host, port) = match endpoint.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') || host.starts_with('[') => {
            port_given = true;
            let port: u16 = port.parse().map_err(|_| {
                let shown = if port.bytes().all(|b| b.is_ascii_digit()) {
                    port
                } else {
                    "<not a number>"
                };
                Error::invalid_config("connection_string.port", shown, "expected 1-65535")
            })?;
            (host.trim_start_matches('[').trim_end_matches(']'), port)
        }
        _ => (endpoint, 6379),
    };
    if host.is_empty() {
        return Err(Error::invalid_config(
            "connection_string.host",
            "\"\"",
            "must not be empty",
        ));
    }
    config.endpoint.host = host.to_owned();
    config.endpoint.port = if port_given {
        port
    } else if config.tls.is_enabled {
        6380
    } else {
        6379
    };
    if let Some(deadline) = sync_timeout.into_iter().chain(async_timeout).max() {
        config.command.deadline = deadline;
    }
    config.validate()?;
    Ok(ConnectionString { config, ignored })
}

/// `text` if it is a plain token that shares nothing with any password, else a placeholder.
fn shown(text: &str, passwords: &[String]) -> String {
    let is_plain = text.len() <= 40
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    let is_apart = passwords
        .iter()
        .all(|p| !p.contains(text) && !text.contains(p.as_str()));
    if is_plain && is_apart {
        text.to_owned()
    } else {
        "<not shown>".to_owned()
    }
}

/// `value` as a boolean; errors show `shown` (the value, or a placeholder for secrets).
fn boolean(field: &str, value: &str, shown: &str) -> Result<bool, Error> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(Error::invalid_config(
            field,
            shown,
            "expected true or false",
        )),
    }
}

fn number<T: std::str::FromStr>(field: &str, value: &str, shown: &str) -> Result<T, Error> {
    value
        .parse()
        .map_err(|_| Error::invalid_config(field, shown, "expected a number"))
}

fn millis(field: &str, value: &str, shown: &str) -> Result<Duration, Error> {
    let ms: u64 = number(field, value, shown)?;
    if ms == 0 {
        return Err(Error::invalid_config(
            field,
            shown,
            "must be greater than zero",
        ));
    }
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use proptest::prelude::*;

    #[test]
    fn the_azure_portal_form_maps_to_tls_on_6380_with_a_password() {
        let parsed = parse(
            "contoso.redis.cache.windows.net:6380,password=s3cret=,ssl=True,abortConnect=False",
        )
        .unwrap();
        let c = &parsed.config;
        assert_eq!(c.endpoint.host, "contoso.redis.cache.windows.net");
        assert_eq!(c.endpoint.port, 6380);
        assert_eq!(
            c.endpoint.password.as_ref().map(Password::expose),
            Some("s3cret=")
        );
        assert!(c.tls.is_enabled);
        assert!(parsed.ignored.is_empty());
    }

    #[test]
    fn every_mapped_option_lands_in_its_field() {
        let parsed = parse(
            "cache:7000,user=app,password=pw,sslHost=cache.example,ssl=true,connectTimeout=2500,syncTimeout=3000,asyncTimeout=4000,keepAlive=30,defaultDatabase=3,name=web,protocol=resp2,allowAdmin=true",
        )
        .unwrap();
        let c = &parsed.config;
        assert_eq!(c.endpoint.username.as_deref(), Some("app"));
        assert_eq!(c.tls.server_name.as_deref(), Some("cache.example"));
        assert_eq!(c.connect.connect_timeout, Duration::from_millis(2500));
        assert_eq!(c.command.deadline, Duration::from_millis(4000));
        assert_eq!(c.health.ping_interval, Duration::from_secs(30));
        assert_eq!(c.endpoint.database, 3);
        assert_eq!(c.endpoint.client_name.as_deref(), Some("web"));
        assert_eq!(c.endpoint.protocol, Protocol::Resp2);
        assert_eq!(parsed.ignored, vec!["allowAdmin".to_owned()]);
    }

    #[test]
    fn tls_without_a_port_defaults_to_6380() {
        assert_eq!(parse("cache,ssl=true").unwrap().config.endpoint.port, 6380);
        assert_eq!(parse("cache").unwrap().config.endpoint.port, 6379);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_the_value() {
        let err = parse("cache,colour=blue").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.to_string().contains("colour"), "{err}");
        let err = parse("cache,connectTimeout=soon").unwrap_err();
        assert!(
            err.to_string().contains("connectTimeout") && err.to_string().contains("soon"),
            "{err}"
        );
        let err = parse("cache:99999").unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
        let err = parse("a:1,b:2").unwrap_err();
        assert!(err.to_string().contains("several endpoints"), "{err}");
        let err = parse("cache:99999").unwrap_err();
        assert!(
            err.to_string().contains("99999"),
            "a numeric port is shown: {err}"
        );
        let err = parse("password=x").unwrap_err();
        assert!(err.to_string().contains("no host"), "{err}");
    }

    #[test]
    fn a_password_with_commas_never_shows_in_an_error() {
        let err = parse("cache,password=ab,cd=ef").unwrap_err();
        assert!(!err.to_string().contains("cd"), "{err}");
        let err = parse("cache,colour=blue").unwrap_err();
        assert!(
            err.to_string().contains("colour"),
            "without a password keys are named: {err}"
        );
    }

    #[test]
    fn errors_never_repeat_the_password() {
        for bad in [
            "cache,password=TOPSECRET,ssl=maybe",
            "cache:x,password=TOPSECRET",
            "password=TOPSECRET,a:1,b:2",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(!format!("{err} {err:?}").contains("TOPSECRET"), "{err}");
        }
    }

    proptest! {
        #[test]
        fn any_input_parses_or_fails_without_panicking_or_leaking(s in "\\PC{0,120}") {
            let input = format!("{s},password=PROPSECRET");
            if let Err(err) = parse(&input) {
                prop_assert!(!err.to_string().contains("PROPSECRET"));
            }
        }
    }
}
