//! Pub/Sub for one downstream connection: its subscriptions held by a library
//! [`Subscriber`] of the connection's own client, so they are made again on every new upstream
//! link while the downstream connection stays open.
//!
//! # Behaviour
//! - `SUBSCRIBE` / `PSUBSCRIBE` / `SSUBSCRIBE` and their `UN...`: one confirmation per name,
//!   as the server writes them (`subscribe`, the name, the count of subscriptions in force),
//!   once the upstream confirmed it. An `UN...` without names ends every subscription of its
//!   kind (`unsubscribe`, nil, 0 when there was none).
//! - Messages are written as the server writes them (`message`, `pmessage`, `smessage`), a
//!   push to a RESP3 connection and an array to a RESP2 one.
//! - A RESP2 connection with a subscription may send only the commands the server allows
//!   then (`(P|S)SUBSCRIBE`, `(P|S)UNSUBSCRIBE`, `PING`, `QUIT`, `RESET`); a `PING` is
//!   answered `pong` in the subscribed form.
//! - Gaps (messages published while no upstream link was subscribed, or dropped because the
//!   connection read too slowly) are counted by the library's metric
//!   (`steadfast_subscription_gaps_total`) and told, to a connection that subscribed to
//!   [`GAP_CHANNEL`], as a message on that channel whose payload is a JSON object: the
//!   `channels`, `patterns` and `shard_channels` that may have missed messages, `from_ms` and
//!   `until_ms` (Unix milliseconds: messages published in between may be missing) and the
//!   `cause` (`link_lost` with a `reason`, or `slow_consumer` with the number `dropped`).
//!   That channel is the proxy's own: never subscribed upstream, nothing published to it
//!   upstream reaches the connection.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use redis::{PushKind, Value};
use steadfast::pubsub::{Delivery, Gap, GapCause, Kind};

use crate::backend::Subscription;

use crate::resp::{self, Protocol};

/// The channel a connection subscribes to for the gaps of its other subscriptions.
pub const GAP_CHANNEL: &str = "__steadfast__:gaps";

/// One downstream connection's subscriptions.
#[derive(Default)]
pub(crate) struct Subscriptions {
    subscriber: Option<Subscription>,
    /// Subscribed to [`GAP_CHANNEL`] (answered here, never upstream).
    is_told_gaps: bool,
}

/// A subscribe or unsubscribe command, read.
pub(crate) struct Change {
    pub(crate) kind: Kind,
    pub(crate) is_subscribe: bool,
    pub(crate) names: Vec<String>,
}

impl Change {
    /// The change `name` (upper case) asks for, if it is one.
    pub(crate) fn of(name: &str, args: &[Vec<u8>]) -> Option<Self> {
        let (kind, is_subscribe) = match name {
            "SUBSCRIBE" => (Kind::Channel, true),
            "PSUBSCRIBE" => (Kind::Pattern, true),
            "SSUBSCRIBE" => (Kind::Shard, true),
            "UNSUBSCRIBE" => (Kind::Channel, false),
            "PUNSUBSCRIBE" => (Kind::Pattern, false),
            "SUNSUBSCRIBE" => (Kind::Shard, false),
            _ => return None,
        };
        let names = args[1..]
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        Some(Self {
            kind,
            is_subscribe,
            names,
        })
    }
}

fn confirmation_kind(kind: Kind, is_subscribe: bool) -> PushKind {
    match (kind, is_subscribe) {
        (Kind::Pattern, true) => PushKind::PSubscribe,
        (Kind::Shard, true) => PushKind::SSubscribe,
        (Kind::Pattern, false) => PushKind::PUnsubscribe,
        (Kind::Shard, false) => PushKind::SUnsubscribe,
        (_, true) => PushKind::Subscribe,
        (_, false) => PushKind::Unsubscribe,
    }
}

fn bulk(text: &str) -> Value {
    Value::BulkString(text.as_bytes().to_vec())
}

fn unix_ms(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// The payload told on [`GAP_CHANNEL`] for `gap`.
pub(crate) fn gap_payload(gap: &Gap) -> String {
    let cause = match &gap.cause {
        GapCause::LinkLost(reason) => serde_json::json!({"kind": "link_lost", "reason": reason}),
        GapCause::SlowConsumer { dropped } => {
            serde_json::json!({"kind": "slow_consumer", "dropped": dropped})
        }
        other => serde_json::json!({"kind": format!("{other:?}")}),
    };
    serde_json::json!({
        "channels": gap.channels,
        "patterns": gap.patterns,
        "shard_channels": gap.shard_channels,
        "from_ms": unix_ms(gap.from),
        "until_ms": unix_ms(gap.until),
        "cause": cause,
    })
    .to_string()
}

impl Subscriptions {
    /// Whether the connection has any subscription (a RESP2 one is then in subscribed mode).
    pub(crate) fn is_active(&self) -> bool {
        self.is_told_gaps
            || self
                .subscriber
                .as_ref()
                .is_some_and(|s| !s.subscriptions().is_empty())
    }

    /// The subscriptions in force, the local one with them.
    fn in_force(&self) -> BTreeSet<(Kind, String)> {
        let mut all: BTreeSet<_> = self
            .subscriber
            .as_ref()
            .map(|s| s.subscriptions().into_iter().collect())
            .unwrap_or_default();
        if self.is_told_gaps {
            all.insert((Kind::Channel, GAP_CHANNEL.to_owned()));
        }
        all
    }

    /// Carries out `change` and writes its confirmations; `client` is the connection's
    /// upstream (asked for only when a subscriber is first needed).
    pub(crate) async fn apply(
        &mut self,
        change: Change,
        client: impl FnOnce() -> Result<crate::backend::Backend, steadfast::Error>,
        protocol: Protocol,
        out: &mut Vec<u8>,
    ) -> Result<(), steadfast::Error> {
        let Change {
            kind,
            is_subscribe,
            mut names,
        } = change;
        if names.is_empty() {
            if is_subscribe {
                resp::write_error(
                    out,
                    &format!(
                        "ERR wrong number of arguments for '{}' command",
                        confirmation_kind(kind, true).to_string().to_lowercase()
                    ),
                );
                return Ok(());
            }
            // Every subscription of the kind.
            names = self.subscriber.as_ref().map_or_else(Vec::new, |s| {
                s.subscriptions()
                    .into_iter()
                    .filter(|(k, _)| *k == kind)
                    .map(|(_, n)| n)
                    .collect()
            });
            if kind == Kind::Channel && self.is_told_gaps {
                names.push(GAP_CHANNEL.to_owned());
            }
            if names.is_empty() {
                let reply = Value::Push {
                    kind: confirmation_kind(kind, false),
                    data: vec![Value::Nil, Value::Int(0)],
                };
                resp::write_value(out, &reply, protocol);
                return Ok(());
            }
        }
        let before = self.in_force();
        let upstream: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| !(kind == Kind::Channel && *n == GAP_CHANNEL))
            .collect();
        if !upstream.is_empty() {
            if self.subscriber.is_none() {
                if !is_subscribe {
                    // Nothing subscribed upstream: nothing to end there.
                    self.confirm(before, kind, is_subscribe, &names, protocol, out);
                    return Ok(());
                }
                self.subscriber = Some(client()?.subscriber()?);
            }
            if let Some(subscriber) = self.subscriber.as_mut() {
                subscriber.change(kind, is_subscribe, &upstream).await?;
            }
        }
        self.confirm(before, kind, is_subscribe, &names, protocol, out);
        Ok(())
    }

    /// Writes one confirmation per name, each with the count in force after it (shard
    /// channels counted apart, as the server does), from the subscriptions `before` the change.
    fn confirm(
        &mut self,
        mut before: BTreeSet<(Kind, String)>,
        kind: Kind,
        is_subscribe: bool,
        names: &[String],
        protocol: Protocol,
        out: &mut Vec<u8>,
    ) {
        for name in names {
            if kind == Kind::Channel && name == GAP_CHANNEL {
                self.is_told_gaps = is_subscribe;
            }
            let key = (kind, name.clone());
            if is_subscribe {
                before.insert(key);
            } else {
                before.remove(&key);
            }
            let count = before
                .iter()
                .filter(|(k, _)| (*k == Kind::Shard) == (kind == Kind::Shard))
                .count();
            let reply = Value::Push {
                kind: confirmation_kind(kind, is_subscribe),
                data: vec![
                    bulk(name),
                    Value::Int(i64::try_from(count).unwrap_or(i64::MAX)),
                ],
            };
            resp::write_value(out, &reply, protocol);
        }
        if !self.is_active() {
            // Nothing left: the subscriber's link is closed.
            self.subscriber = None;
        }
    }

    /// Whether [`Self::next`] can deliver anything (a subscriber was made).
    pub(crate) fn has_subscriber(&self) -> bool {
        self.subscriber.is_some()
    }

    /// The next message or gap of the connection's subscriptions; pending forever while it
    /// has none upstream.
    pub(crate) async fn next(&mut self) -> Option<Delivery> {
        match self.subscriber.as_mut() {
            Some(subscriber) => subscriber.next().await,
            None => std::future::pending().await,
        }
    }

    /// Writes `delivery` as the server would (a gap only to a connection told of them).
    pub(crate) fn write(&self, delivery: &Delivery, protocol: Protocol, out: &mut Vec<u8>) {
        let reply = match delivery {
            Delivery::Message(message) => {
                let (kind, mut data) = match message.kind {
                    Kind::Pattern => (
                        PushKind::PMessage,
                        vec![bulk(message.pattern.as_deref().unwrap_or_default())],
                    ),
                    Kind::Shard => (PushKind::SMessage, Vec::new()),
                    _ => (PushKind::Message, Vec::new()),
                };
                data.push(bulk(&message.channel));
                data.push(Value::BulkString(message.payload.clone()));
                Value::Push { kind, data }
            }
            Delivery::Gap(gap) if self.is_told_gaps => Value::Push {
                kind: PushKind::Message,
                data: vec![bulk(GAP_CHANNEL), bulk(&gap_payload(gap))],
            },
            _ => return,
        };
        resp::write_value(out, &reply, protocol);
    }
}
