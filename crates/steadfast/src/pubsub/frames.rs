//! Reading Pub/Sub push frames (outside input: parsed defensively, never panicking).

use redis::{PushInfo, PushKind, Value};

use super::{Kind, Message};

/// What one push frame on a subscriber link says.
#[derive(Debug, PartialEq)]
pub(crate) enum Frame {
    /// A published message.
    Message(Message),
    /// The server ended a subscription we did not ask to end (`SUNSUBSCRIBE` when a shard
    /// channel's slot moved away), or confirmed one we did.
    Unsubscribed { kind: Kind, channel: String },
    /// Anything else: subscribe confirmations, frames of other kinds.
    Other,
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(text) => Some(text.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn bytes(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes.clone()),
        Value::SimpleString(text) => Some(text.clone().into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.clone().into_bytes()),
        _ => None,
    }
}

/// Reads a push frame; malformed frames are [`Frame::Other`].
pub(crate) fn read(frame: &PushInfo) -> Frame {
    let data = &frame.data;
    let message = |kind, pattern: Option<&Value>, channel: Option<&Value>, payload| {
        let channel = text(channel?)?;
        let pattern = match pattern {
            Some(value) => Some(text(value)?),
            None => None,
        };
        Some(Frame::Message(Message {
            kind,
            channel,
            pattern,
            payload: bytes(payload?)?,
        }))
    };
    let read = match frame.kind {
        PushKind::Message => message(Kind::Channel, None, data.first(), data.get(1)),
        PushKind::SMessage => message(Kind::Shard, None, data.first(), data.get(1)),
        PushKind::PMessage => message(Kind::Pattern, data.first(), data.get(1), data.get(2)),
        PushKind::Unsubscribe | PushKind::PUnsubscribe | PushKind::SUnsubscribe => {
            let kind = match frame.kind {
                PushKind::Unsubscribe => Kind::Channel,
                PushKind::PUnsubscribe => Kind::Pattern,
                _ => Kind::Shard,
            };
            data.first()
                .and_then(text)
                .map(|channel| Frame::Unsubscribed { kind, channel })
        }
        _ => None,
    };
    read.unwrap_or(Frame::Other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn messages_of_each_kind_are_read_with_their_channel_pattern_and_payload() {
        let frame = |kind, data| PushInfo { kind, data };
        assert_eq!(
            read(&frame(PushKind::Message, vec![bulk("news"), bulk("hello")])),
            Frame::Message(Message {
                kind: Kind::Channel,
                channel: "news".into(),
                pattern: None,
                payload: b"hello".to_vec(),
            })
        );
        assert_eq!(
            read(&frame(
                PushKind::PMessage,
                vec![bulk("n*"), bulk("news"), bulk("hi")]
            )),
            Frame::Message(Message {
                kind: Kind::Pattern,
                channel: "news".into(),
                pattern: Some("n*".into()),
                payload: b"hi".to_vec(),
            })
        );
        assert_eq!(
            read(&frame(
                PushKind::SUnsubscribe,
                vec![bulk("orders"), Value::Int(0)]
            )),
            Frame::Unsubscribed {
                kind: Kind::Shard,
                channel: "orders".into()
            }
        );
        assert_eq!(
            read(&frame(PushKind::Message, vec![bulk("news")])),
            Frame::Other,
            "a message without a payload is malformed"
        );
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Nil),
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::BulkString),
            "[a-z]{0,8}".prop_map(Value::SimpleString),
        ]
    }

    proptest! {
        #[test]
        fn any_push_frame_is_read_without_panicking(
            kind in 0usize..6,
            data in proptest::collection::vec(value(), 0..5),
        ) {
            let kind = [
                PushKind::Message,
                PushKind::PMessage,
                PushKind::SMessage,
                PushKind::Unsubscribe,
                PushKind::SUnsubscribe,
                PushKind::Other("x".into()),
            ][kind]
                .clone();
            let _ = read(&PushInfo { kind, data });
        }
    }
}
