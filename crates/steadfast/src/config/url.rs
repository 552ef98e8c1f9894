//! `redis://[[user]:password@]host[:port][/database][?protocol=resp2|resp3&client_name=NAME]`.
//!
//! # Behaviour
//! - User and password are percent-decoded; the password is never echoed in an error.
//! - Unknown query keys and unknown schemes are errors, not silently dropped.

use percent_encoding::percent_decode_str;

use super::{EndpointConfig, Password, Protocol};
use crate::error::Error;

/// The endpoint, and whether the scheme asks for TLS.
pub(super) fn parse(input: &str) -> Result<(EndpointConfig, bool), Error> {
    let url = url::Url::parse(input)
        .map_err(|e| Error::invalid_config("url", &redact(input), &e.to_string()))?;
    let is_tls = match url.scheme() {
        "redis" | "valkey" => false,
        "rediss" | "valkeys" => true,
        other => {
            return Err(Error::invalid_config(
                "url.scheme",
                other,
                "expected redis://, rediss://, valkey:// or valkeys://",
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
            "protocol" => {
                endpoint.protocol = match value.as_ref() {
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
            "client_name" => endpoint.client_name = Some(value.into_owned()),
            other => {
                return Err(Error::invalid_config(
                    "url.query",
                    other,
                    "unknown parameter (known: protocol, client_name)",
                ));
            }
        }
    }
    Ok((endpoint, is_tls))
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
