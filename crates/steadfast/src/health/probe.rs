//! The probe: a second opinion on a stalled link from a fresh connection.

use std::net::SocketAddr;
use std::time::Duration;

use redis::Value;
use tokio::time::{Instant, timeout};

use super::Verdict;
use crate::config::Config;
use crate::connect::{Connector, Link};

/// What the endpoint's name says about a stalled link.
#[derive(Debug)]
pub(super) enum Name {
    /// The name no longer lists the link's address: the reason to replace it.
    Moved(String),
    /// The name lists these addresses, the link's among them.
    Lists(Vec<SocketAddr>),
    /// Nothing known: the lookup failed or timed out, or the link is not TCP.
    Silent,
}

/// Resolves the endpoint's name again and compares it with `old`'s address.
pub(super) async fn look_at_name(config: &Config, old: &Link) -> Name {
    let endpoint = &config.endpoint;
    let Some(old_address) = old.address.tcp() else {
        return Name::Silent;
    };
    match endpoint.addresses_within(config.health.probe_timeout).await {
        Some(addresses) if !addresses.contains(&old_address) => Name::Moved(format!(
            "{} now resolves to {addresses:?}, not {}",
            endpoint.host, old.address
        )),
        Some(addresses) => Name::Lists(addresses),
        None => Name::Silent,
    }
}

/// Judges `old`, which has had commands in flight and read nothing for a while. The fresh
/// connection dials the name's other addresses before `old`'s own, so a name that still lists
/// a dead address beside a live one is judged by the live one.
pub(super) async fn judge(connector: &Connector, config: &Config, old: &Link) -> Verdict {
    let bound = config.health.probe_timeout;
    if let Name::Moved(reason) = look_at_name(config, old).await {
        return Verdict::Moved(reason);
    }
    let old_address = old.address.tcp();
    let fresh = match timeout(bound, connector.connect_avoiding(old_address)).await {
        Ok(Ok(fresh)) => fresh,
        Ok(Err(failure)) => {
            return Verdict::Unknown(format!("fresh connection: {}", failure.error));
        }
        Err(_) => {
            return Verdict::Unknown(format!(
                "a fresh connection got no answer within {bound:?} either"
            ));
        }
    };
    let verdict = ask_server(&fresh, old, config).await;
    fresh.close();
    if let (Verdict::Dead(_), Some(address)) = (&verdict, old_address)
        && fresh.address != old.address
    {
        // The supervisor's dial starts with the address the probe reached.
        connector.remember_failed(address);
    }
    verdict
}

async fn ask_server(fresh: &Link, old: &Link, config: &Config) -> Verdict {
    let stalled_for = old.activity.stalled_for(Instant::now());
    let is_elsewhere = fresh.address != old.address;
    let fallback = || {
        if stalled_for > config.health.read_stall {
            let place = if is_elsewhere {
                format!(" at {}", fresh.address)
            } else {
                String::new()
            };
            Verdict::Dead(format!(
                "a fresh connection{place} answers while the old one read nothing for {stalled_for:?}"
            ))
        } else {
            Verdict::Alive("the old link read again while the probe ran".into())
        }
    };
    let Some(id) = old.client_id else {
        return fallback();
    };
    let mut connection = fresh.connection.clone();
    let list = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("ID")
        .arg(id)
        .to_owned();
    let listing = match timeout(
        config.health.probe_timeout,
        connection.send_packed_command(&list),
    )
    .await
    {
        Ok(Ok(Value::BulkString(bytes))) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(Ok(Value::VerbatimString { text, .. })) => text,
        Ok(Ok(_) | Err(_)) => return fallback(),
        Err(_) => return Verdict::Unknown("CLIENT LIST got no answer".into()),
    };
    if is_elsewhere && !is_listed_from(&listing, old.local) {
        return Verdict::Dead(format!(
            "a different server answers at {}: it does not know our connection to {}, which read nothing for {stalled_for:?}",
            fresh.address, old.address
        ));
    }
    judge_listing(&listing, stalled_for)
}

/// Whether `listing` (`CLIENT LIST ID <id>`) shows a connection from `local`: the same server
/// reached by another address. Client ids are counted per server, so the id alone proves nothing.
pub(crate) fn is_listed_from(listing: &str, local: Option<std::net::SocketAddr>) -> bool {
    let Some(local) = local else {
        return false;
    };
    let local = local.to_string();
    listing.lines().any(|line| {
        line.split_whitespace()
            .any(|kv| kv.strip_prefix("addr=") == Some(local.as_str()))
    })
}

/// Reads the server's line about our old connection.
pub(crate) fn judge_listing(listing: &str, stalled_for: Duration) -> Verdict {
    let Some(line) = listing.lines().find(|l| !l.trim().is_empty()) else {
        return Verdict::Dead("the server no longer knows our connection".into());
    };
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    let idle = field("idle")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let command = field("cmd").unwrap_or("?");
    let is_blocked = field("flags").is_some_and(|f| f.contains('b'));
    if is_blocked {
        return Verdict::Alive(format!("blocked in {command}"));
    }
    if idle > stalled_for.as_secs() + 1 {
        return Verdict::Dead(format!(
            "the server saw nothing from our connection for {idle}s: our commands never arrived"
        ));
    }
    Verdict::Alive(format!("busy with {command} (idle {idle}s)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_listing_gets_a_verdict_without_panicking(listing in "\\PC{0,300}", secs in 0u64..100) {
            let _ = judge_listing(&listing, Duration::from_secs(secs));
        }

        #[test]
        fn any_idle_value_is_read_as_a_number_or_ignored(idle in "[0-9a-z=-]{0,24}") {
            let line = format!("id=1 idle={idle} flags=N cmd=get");
            let _ = judge_listing(&line, Duration::from_secs(2));
        }
    }

    #[test]
    fn another_server_knows_our_connection_only_by_our_own_address() {
        let local: std::net::SocketAddr = "10.0.0.9:51234".parse().unwrap();
        let ours = "id=7 addr=10.0.0.9:51234 laddr=10.0.0.1:6379 fd=8 idle=3 flags=N cmd=get\n";
        let someone_else = "id=7 addr=10.0.0.4:40000 laddr=10.0.0.2:6379 idle=0 cmd=get\n";
        assert!(is_listed_from(ours, Some(local)));
        assert!(!is_listed_from(someone_else, Some(local)));
        assert!(!is_listed_from("", Some(local)));
        assert!(!is_listed_from(ours, None));
        let v6: std::net::SocketAddr = "[fd00::9]:51234".parse().unwrap();
        assert!(is_listed_from(
            "id=7 addr=[fd00::9]:51234 idle=0\n",
            Some(v6)
        ));
    }

    #[test]
    fn empty_listing_means_the_server_forgot_us() {
        assert!(matches!(
            judge_listing("", Duration::from_secs(2)),
            Verdict::Dead(_)
        ));
    }

    #[test]
    fn blocked_connection_is_alive() {
        let line = "id=7 addr=127.0.0.1:5000 name=steadfast age=9 idle=8 flags=b cmd=blpop\n";
        assert!(matches!(
            judge_listing(line, Duration::from_secs(2)),
            Verdict::Alive(_)
        ));
    }

    #[test]
    fn connection_busy_with_our_command_is_alive() {
        let line = "id=7 addr=127.0.0.1:5000 age=9 idle=2 flags=N cmd=debug|sleep\n";
        assert!(matches!(
            judge_listing(line, Duration::from_secs(2)),
            Verdict::Alive(_)
        ));
    }

    #[test]
    fn idle_since_before_our_commands_means_they_never_arrived() {
        let line = "id=7 addr=127.0.0.1:5000 age=90 idle=60 flags=N cmd=get\n";
        assert!(matches!(
            judge_listing(line, Duration::from_secs(3)),
            Verdict::Dead(_)
        ));
    }
}
