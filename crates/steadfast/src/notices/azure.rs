//! Azure Cache for Redis maintenance events, published on the `AzureRedisEvents` channel:
//! a tolerant parser.
//!
//! # Behaviour
//! - The payload is `key|value|key|value...`. Keys may come in any order, be unknown or missing;
//!   values may be empty or malformed. A bad field becomes `None`; the message is still reported.
//! - A message without `NotificationType` is not a notification (`None`).
//! - `StartTimeInUTC` (`yyyy-MM-ddTHH:mm:ss`, optional fraction and `Z`) becomes a `SystemTime`.
//! - Never panics; copies at most [`MAX_FIELD`] bytes of any value.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// The pub/sub channel Azure publishes on.
pub const CHANNEL: &str = "AzureRedisEvents";

/// Longest value kept from one field.
pub const MAX_FIELD: usize = 256;

/// What Azure announced.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AzureEventKind {
    /// 10-15 minutes ahead (the node may go down up to 3 minutes earlier).
    Scheduled,
    /// About 20-30 s ahead: drain about one second before the start time.
    Starting,
    /// Imminent (under 5 s).
    Start,
    /// A replica was promoted (also the legacy `NodeMaintenanceFailover`).
    FailoverComplete,
    /// Scaling finished.
    ScaleComplete,
    /// Over; the replica is available again.
    Ended,
    /// A type this client does not know: reported, nothing done.
    Unknown(String),
}

/// One `AzureRedisEvents` message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureEvent {
    /// The notification type.
    pub kind: AzureEventKind,
    /// `StartTimeInUTC`, when present and well formed.
    pub start_time: Option<SystemTime>,
    /// `IsReplica`: whether the affected node is a replica.
    pub is_replica: Option<bool>,
    /// `IPAddress` of the affected node.
    pub ip_address: Option<IpAddr>,
    /// `SSLPort` of the affected node.
    pub ssl_port: Option<u16>,
    /// `NonSSLPort` of the affected node.
    pub non_ssl_port: Option<u16>,
}

/// Parses one message; `None` when it carries no `NotificationType`.
pub fn parse(payload: &str) -> Option<AzureEvent> {
    let mut fields = payload.split('|');
    let mut event = AzureEvent {
        kind: AzureEventKind::Unknown(String::new()),
        start_time: None,
        is_replica: None,
        ip_address: None,
        ssl_port: None,
        non_ssl_port: None,
    };
    let mut has_type = false;
    while let Some(key) = fields.next() {
        let value = fields.next().unwrap_or("").trim();
        match key.trim() {
            "NotificationType" => {
                has_type = true;
                event.kind = kind(value);
            }
            "StartTimeInUTC" => event.start_time = parse_utc(value),
            "IsReplica" => {
                event.is_replica = match value.to_ascii_lowercase().as_str() {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => None,
                }
            }
            "IPAddress" => event.ip_address = value.parse().ok(),
            "SSLPort" => event.ssl_port = value.parse().ok(),
            "NonSSLPort" => event.non_ssl_port = value.parse().ok(),
            _ => {}
        }
    }
    has_type.then_some(event)
}

fn kind(value: &str) -> AzureEventKind {
    match value {
        "NodeMaintenanceScheduled" => AzureEventKind::Scheduled,
        "NodeMaintenanceStarting" => AzureEventKind::Starting,
        "NodeMaintenanceStart" => AzureEventKind::Start,
        "NodeMaintenanceFailoverComplete" | "NodeMaintenanceFailover" => {
            AzureEventKind::FailoverComplete
        }
        "NodeMaintenanceScaleComplete" => AzureEventKind::ScaleComplete,
        "NodeMaintenanceEnded" => AzureEventKind::Ended,
        other => AzureEventKind::Unknown(other.chars().take(MAX_FIELD).collect()),
    }
}

/// `yyyy-MM-ddTHH:mm:ss[.fff][Z]` in UTC.
pub(crate) fn parse_utc(text: &str) -> Option<SystemTime> {
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = text.split_once(['T', ' '])?;
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: u32 = date_parts.next()?.parse().ok()?;
    let day: u32 = date_parts.next()?.parse().ok()?;
    let time = time.split_once('.').map_or(time, |(whole, _)| whole);
    let mut time_parts = time.splitn(3, ':');
    let hour: u64 = time_parts.next()?.parse().ok()?;
    let minute: u64 = time_parts.next()?.parse().ok()?;
    let second: u64 = time_parts.next()?.parse().ok()?;
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn starting_message_in_the_documented_order() {
        let event = parse(
            "NotificationType|NodeMaintenanceStarting|StartTimeInUTC|2026-11-23T20:15:30|IsReplica|False|IPAddress|10.0.0.7|SSLPort|15001|NonSSLPort|13001",
        )
        .unwrap();
        assert_eq!(event.kind, AzureEventKind::Starting);
        assert_eq!(event.is_replica, Some(false));
        assert_eq!(event.ip_address, Some("10.0.0.7".parse().unwrap()));
        assert_eq!(
            (event.ssl_port, event.non_ssl_port),
            (Some(15001), Some(13001))
        );
        let secs = event
            .start_time
            .unwrap()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(secs, 1_795_464_930);
    }

    #[test]
    fn empty_and_malformed_values_become_none_without_losing_the_message() {
        let event = parse("NotificationType|NodeMaintenanceEnded|IPAddress||SSLPort|abc|IsReplica|maybe|StartTimeInUTC|2026-13-45T99:00:00").unwrap();
        assert_eq!(event.kind, AzureEventKind::Ended);
        assert_eq!(event.ip_address, None);
        assert_eq!(event.ssl_port, None);
        assert_eq!(event.is_replica, None);
        assert_eq!(event.start_time, None);
    }

    #[test]
    fn legacy_failover_name_and_unknown_types() {
        assert_eq!(
            parse("NotificationType|NodeMaintenanceFailover")
                .unwrap()
                .kind,
            AzureEventKind::FailoverComplete
        );
        assert_eq!(
            parse("NotificationType|SomethingNew|Extra|1").unwrap().kind,
            AzureEventKind::Unknown("SomethingNew".into())
        );
        assert_eq!(parse("hello world"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn keys_in_any_order_and_unknown_keys_are_fine() {
        let event =
            parse("IsReplica|True|Colour|blue|NotificationType|NodeMaintenanceStart").unwrap();
        assert_eq!(event.kind, AzureEventKind::Start);
        assert_eq!(event.is_replica, Some(true));
    }

    #[test]
    fn utc_times_with_fraction_zone_and_leap_day() {
        let at =
            |s| parse_utc(s).map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs());
        assert_eq!(at("1970-01-01T00:00:00"), Some(0));
        assert_eq!(at("2024-02-29T12:00:00.123Z"), Some(1_709_208_000));
        assert_eq!(at("2023-02-29T12:00:00"), None);
    }

    proptest! {
        #[test]
        fn any_payload_parses_without_panicking(payload in "\\PC{0,300}") {
            let _ = parse(&payload);
        }

        #[test]
        fn pipe_heavy_payloads_parse_without_panicking(parts in proptest::collection::vec("[A-Za-z0-9:.T -]{0,12}", 0..20)) {
            let _ = parse(&format!("NotificationType|{}", parts.join("|")));
        }
    }
}
