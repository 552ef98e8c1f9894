//! RESP3 maintenance push frames (Redis Software / Redis Cloud): a tolerant parser.
//!
//! # Behaviour
//! - Accepts every shape in `shared/reference/maintenance-notifications.md`: simple or bulk
//!   strings; integers as integers or digit strings; MOVING without an endpoint; start frames
//!   without shards and end frames without a seq; a null endpoint as RESP3 null, RESP2 null,
//!   `null`, `""`, `?` or port 0; IPv6 endpoints split on the last `:` or written `[v6]:port`;
//!   SMIGRATING slots spread over several elements; malformed SMIGRATED triples skipped.
//! - Anything that is not a maintenance type yields `None`, and the frame goes to the
//!   application untouched.
//! - Never panics; allocates at most in proportion to the frame, with caps on counts and lengths.

use std::time::Duration;

use redis::{PushKind, Value};

/// Longest host name or shard text kept.
const MAX_TEXT: usize = 1024;
/// Most slot ranges or slot moves kept from one frame.
const MAX_ITEMS: usize = 16_384;
/// Longest `time` honoured: an hour. Anything larger is a malformed frame, not a plan.
const MAX_TIME: Duration = Duration::from_secs(3600);

/// A place a connection can move to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port, never 0.
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A slot move announced by SMIGRATED.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotMove {
    /// Where the slots were.
    pub source: Endpoint,
    /// Where they are now.
    pub destination: Endpoint,
    /// The slots, as the server wrote them (`"123,456,5000-7000"`).
    pub slots: String,
}

/// One maintenance notification.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notification {
    /// This connection's node is moving; the server closes the connection about `time` later.
    Moving {
        /// Sequence number, for de-duplication.
        seq: Option<u64>,
        /// How long until the server closes old connections.
        time: Duration,
        /// Where to go; `None`: reconnect to the configured endpoint after `time / 2`.
        endpoint: Option<Endpoint>,
    },
    /// A shard migration touching this node starts within `time`: expect slow replies.
    Migrating {
        /// Sequence number.
        seq: Option<u64>,
        /// Until it starts.
        time: Duration,
        /// The shards, as the server wrote them.
        shards: String,
    },
    /// That migration ended.
    Migrated {
        /// Sequence number.
        seq: Option<u64>,
        /// The shards.
        shards: String,
    },
    /// A failover of a healthy shard starts within `time`.
    FailingOver {
        /// Sequence number.
        seq: Option<u64>,
        /// Until it starts.
        time: Duration,
        /// The shards.
        shards: String,
    },
    /// That failover ended.
    FailedOver {
        /// Sequence number.
        seq: Option<u64>,
        /// The shards.
        shards: String,
    },
    /// (OSS cluster API) slots on this node are migrating.
    SlotsMigrating {
        /// Sequence number.
        seq: Option<u64>,
        /// The slots, joined with `,`.
        slots: String,
    },
    /// (OSS cluster API) slots moved: reload the topology once per seq.
    SlotsMigrated {
        /// Sequence number.
        seq: Option<u64>,
        /// The well-formed moves; malformed ones are skipped.
        moves: Vec<SlotMove>,
    },
}

impl Notification {
    /// The frame's type, as the server names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Moving { .. } => "MOVING",
            Self::Migrating { .. } => "MIGRATING",
            Self::Migrated { .. } => "MIGRATED",
            Self::FailingOver { .. } => "FAILING_OVER",
            Self::FailedOver { .. } => "FAILED_OVER",
            Self::SlotsMigrating { .. } => "SMIGRATING",
            Self::SlotsMigrated { .. } => "SMIGRATED",
        }
    }

    /// The sequence number, if the frame carried one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Self::Moving { seq, .. }
            | Self::Migrating { seq, .. }
            | Self::Migrated { seq, .. }
            | Self::FailingOver { seq, .. }
            | Self::FailedOver { seq, .. }
            | Self::SlotsMigrating { seq, .. }
            | Self::SlotsMigrated { seq, .. } => *seq,
        }
    }

    /// Starts a spell of slow replies (relax timeouts).
    pub fn is_start(&self) -> bool {
        matches!(
            self,
            Self::Migrating { .. } | Self::FailingOver { .. } | Self::SlotsMigrating { .. }
        )
    }

    /// Ends a spell of slow replies.
    pub fn is_end(&self) -> bool {
        matches!(
            self,
            Self::Migrated { .. } | Self::FailedOver { .. } | Self::SlotsMigrated { .. }
        )
    }
}

/// Parses a push frame; `None` when it is not a maintenance notification.
pub fn parse(kind: &PushKind, data: &[Value]) -> Option<Notification> {
    let PushKind::Other(name) = kind else {
        return None;
    };
    let name = name.to_ascii_uppercase();
    let mut items = data.iter();
    Some(match name.as_str() {
        "MOVING" => {
            let seq = items.next().and_then(as_u64);
            let time = items.next().and_then(as_duration).unwrap_or_default();
            let endpoint = items.next().and_then(as_endpoint);
            Notification::Moving {
                seq,
                time,
                endpoint,
            }
        }
        "MIGRATING" | "FAILING_OVER" => {
            let (seq, time, shards) = start_frame(data);
            if name == "MIGRATING" {
                Notification::Migrating { seq, time, shards }
            } else {
                Notification::FailingOver { seq, time, shards }
            }
        }
        "MIGRATED" | "FAILED_OVER" => {
            let (seq, shards) = end_frame(data);
            if name == "MIGRATED" {
                Notification::Migrated { seq, shards }
            } else {
                Notification::FailedOver { seq, shards }
            }
        }
        "SMIGRATING" => {
            let seq = items.next().and_then(as_u64);
            let parts: Vec<String> = items.flat_map(flatten_texts).take(MAX_ITEMS).collect();
            Notification::SlotsMigrating {
                seq,
                slots: clip(parts.join(",")),
            }
        }
        "SMIGRATED" => {
            let seq = items.next().and_then(as_u64);
            let moves = items
                .flat_map(|v| match v {
                    Value::Array(triples) | Value::Set(triples) => triples.as_slice(),
                    _ => &[],
                })
                .take(MAX_ITEMS)
                .filter_map(as_slot_move)
                .collect();
            Notification::SlotsMigrated { seq, moves }
        }
        _ => return None,
    })
}

/// `seq, time, shards` with any of them missing from the end.
fn start_frame(data: &[Value]) -> (Option<u64>, Duration, String) {
    let seq = data.first().and_then(as_u64);
    let time = data.get(1).and_then(as_duration).unwrap_or_default();
    let shards = data.get(2).and_then(as_text).map(clip).unwrap_or_default();
    (seq, time, shards)
}

/// `seq, shards`, or only `shards` (a frame without seq), or nothing.
fn end_frame(data: &[Value]) -> (Option<u64>, String) {
    match data {
        [] => (None, String::new()),
        [only] => match as_u64(only) {
            Some(seq) => (Some(seq), String::new()),
            None => (None, as_text(only).map(clip).unwrap_or_default()),
        },
        [seq, shards, ..] => (as_u64(seq), as_text(shards).map(clip).unwrap_or_default()),
    }
}

fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::SimpleString(s) => Some(s.clone()),
        Value::BulkString(b) => std::str::from_utf8(b).ok().map(str::to_owned),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn flatten_texts(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) | Value::Set(items) => items
            .iter()
            .filter_map(as_text)
            .map(clip)
            .take(MAX_ITEMS)
            .collect(),
        other => as_text(other).map(clip).into_iter().collect(),
    }
}

fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => as_text(other)?.trim().parse().ok(),
    }
}

fn as_duration(value: &Value) -> Option<Duration> {
    as_u64(value).map(|secs| Duration::from_secs(secs).min(MAX_TIME))
}

/// `host:port`, `[v6]:port`, or a null in any of its spellings (`None`).
fn as_endpoint(value: &Value) -> Option<Endpoint> {
    let text = as_text(value)?;
    parse_endpoint(text.trim())
}

/// Splits on the last `:`; accepts `[v6]:port`; rejects port 0 and the null spellings.
pub(crate) fn parse_endpoint(text: &str) -> Option<Endpoint> {
    if matches!(text, "" | "null" | "NULL" | "?" | "nil") || text.len() > MAX_TEXT {
        return None;
    }
    let (host, port) = text.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    if host.is_empty() {
        return None;
    }
    Some(Endpoint {
        host: host.to_owned(),
        port,
    })
}

fn as_slot_move(value: &Value) -> Option<SlotMove> {
    let Value::Array(parts) = value else {
        return None;
    };
    let [source, destination, slots] = parts.as_slice() else {
        return None;
    };
    Some(SlotMove {
        source: as_endpoint(source)?,
        destination: as_endpoint(destination)?,
        slots: clip(as_text(slots)?),
    })
}

fn clip(mut text: String) -> String {
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Parses wire bytes the way the connection does.
    fn wire(bytes: &[u8]) -> Option<Notification> {
        match redis::parse_redis_value(bytes).ok()? {
            Value::Push { kind, data } => parse(&kind, &data),
            _ => None,
        }
    }

    fn endpoint(host: &str, port: u16) -> Option<Endpoint> {
        Some(Endpoint {
            host: host.into(),
            port,
        })
    }

    #[test]
    fn canonical_moving_with_an_endpoint() {
        let n = wire(b">4\r\n+MOVING\r\n:7\r\n:15\r\n+10.0.0.9:12000\r\n").unwrap();
        assert_eq!(
            n,
            Notification::Moving {
                seq: Some(7),
                time: Duration::from_secs(15),
                endpoint: endpoint("10.0.0.9", 12000)
            }
        );
    }

    #[test]
    fn every_null_endpoint_spelling_means_reconnect_to_the_configured_name() {
        for null in [
            &b"_\r\n"[..],
            b"$-1\r\n",
            b"+null\r\n",
            b"$0\r\n\r\n",
            b"+?\r\n",
            b"+host:0\r\n",
        ] {
            let mut frame = b">4\r\n$6\r\nMOVING\r\n:1\r\n:10\r\n".to_vec();
            frame.extend_from_slice(null);
            let Some(Notification::Moving { endpoint, .. }) = wire(&frame) else {
                panic!("{:?}", String::from_utf8_lossy(&frame))
            };
            assert_eq!(endpoint, None, "{:?}", String::from_utf8_lossy(null));
        }
    }

    #[test]
    fn moving_without_an_endpoint_element() {
        let n = wire(b">3\r\n+MOVING\r\n:2\r\n:8\r\n").unwrap();
        assert!(matches!(
            n,
            Notification::Moving {
                endpoint: None,
                seq: Some(2),
                ..
            }
        ));
    }

    #[test]
    fn ipv6_endpoints_split_on_the_last_colon_with_or_without_brackets() {
        assert_eq!(
            parse_endpoint("[2001:db8::1]:6379"),
            endpoint("2001:db8::1", 6379)
        );
        assert_eq!(
            parse_endpoint("2001:db8::1:6379"),
            endpoint("2001:db8::1", 6379)
        );
        assert_eq!(
            parse_endpoint("2001:db8::1:6379").unwrap().to_string(),
            "[2001:db8::1]:6379"
        );
    }

    #[test]
    fn start_and_end_frames_in_full_and_shortened() {
        let start = wire(b">4\r\n+FAILING_OVER\r\n:3\r\n:5\r\n+1,2\r\n").unwrap();
        assert_eq!(
            start,
            Notification::FailingOver {
                seq: Some(3),
                time: Duration::from_secs(5),
                shards: "1,2".into()
            }
        );
        assert!(start.is_start());
        let bare_start = wire(b">3\r\n+MIGRATING\r\n:4\r\n:2\r\n").unwrap();
        assert!(matches!(
            bare_start,
            Notification::Migrating { seq: Some(4), .. }
        ));
        let end = wire(b">3\r\n+FAILED_OVER\r\n:3\r\n+1,2\r\n").unwrap();
        assert!(end.is_end());
        let end_without_seq = wire(b">2\r\n+MIGRATED\r\n+1,2\r\n").unwrap();
        assert_eq!(
            end_without_seq,
            Notification::Migrated {
                seq: None,
                shards: "1,2".into()
            }
        );
        let bare_end = wire(b">1\r\n+MIGRATED\r\n").unwrap();
        assert!(matches!(bare_end, Notification::Migrated { seq: None, .. }));
    }

    #[test]
    fn smigrating_slots_in_one_or_several_elements() {
        let one = wire(b">3\r\n+SMIGRATING\r\n:9\r\n+123,456,5000-7000\r\n").unwrap();
        let several = wire(b">5\r\n+SMIGRATING\r\n:9\r\n+123\r\n+456\r\n+5000-7000\r\n").unwrap();
        assert_eq!(one, several);
    }

    #[test]
    fn smigrated_keeps_good_triples_and_skips_malformed_ones() {
        let frame =
            b">3\r\n+SMIGRATED\r\n:11\r\n*2\r\n*3\r\n+a:1\r\n+b:2\r\n+0-99\r\n*2\r\n+bad\r\n+x\r\n";
        let Some(Notification::SlotsMigrated { seq, moves }) = wire(frame) else {
            panic!()
        };
        assert_eq!(seq, Some(11));
        assert_eq!(moves.len(), 1);
        assert_eq!(
            moves[0].destination,
            Endpoint {
                host: "b".into(),
                port: 2
            }
        );
    }

    #[test]
    fn digits_as_strings_are_numbers_too() {
        let n = wire(b">4\r\n$6\r\nMOVING\r\n$2\r\n12\r\n$2\r\n30\r\n$6\r\nh:6379\r\n").unwrap();
        assert!(matches!(n, Notification::Moving { seq: Some(12), .. }));
    }

    #[test]
    fn ordinary_pushes_pass_through() {
        assert_eq!(wire(b">3\r\n+message\r\n+ch\r\n+hi\r\n"), None);
        assert_eq!(wire(b">2\r\n+invalidate\r\n*1\r\n+k\r\n"), None);
        assert_eq!(wire(b">2\r\n+SOMETHING_NEW\r\n:1\r\n"), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = wire(&bytes);
        }

        #[test]
        fn arbitrary_values_after_a_known_type_never_panic(
            kind in prop::sample::select(vec!["MOVING", "MIGRATING", "MIGRATED", "FAILING_OVER",
                "FAILED_OVER", "SMIGRATING", "SMIGRATED", "moving"]),
            items in proptest::collection::vec(arb_value(), 0..6),
        ) {
            let _ = parse(&PushKind::Other(kind.into()), &items);
        }

        #[test]
        fn any_host_and_port_round_trip(host in "[a-z0-9.-]{1,30}", port in 1u16..) {
            let text = format!("{host}:{port}");
            prop_assert_eq!(parse_endpoint(&text), Some(Endpoint { host, port }));
        }
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<i64>().prop_map(Value::Int),
            "\\PC{0,20}".prop_map(Value::SimpleString),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::BulkString),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            proptest::collection::vec(inner, 0..4).prop_map(Value::Array)
        })
    }
}
