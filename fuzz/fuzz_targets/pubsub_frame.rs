//! Any bytes a server could send, through redis-rs's RESP parser, into the subscriber link's
//! frame reader: read or passed over, never a panic; what it reads is what the frame holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use steadfast::fuzz_api::{PubSubFrame, pubsub_frame};

fuzz_target!(|data: &[u8]| {
    if let Ok(redis::Value::Push { kind, data }) = redis::parse_redis_value(data) {
        let frame = redis::PushInfo { kind, data };
        match pubsub_frame(&frame) {
            Some(PubSubFrame::Message { payload, pattern, .. }) => {
                // The payload is the element after the channel, byte for byte.
                let at = if pattern.is_some() { 2 } else { 1 };
                let element = frame.data.get(at).expect("a message has a payload");
                let expected: Vec<u8> = match element {
                    redis::Value::BulkString(bytes) => bytes.clone(),
                    redis::Value::SimpleString(text) => text.clone().into_bytes(),
                    redis::Value::VerbatimString { text, .. } => text.clone().into_bytes(),
                    other => panic!("a payload read from {other:?}"),
                };
                assert_eq!(payload, expected);
            }
            Some(PubSubFrame::Unsubscribed { channel }) => {
                assert!(!frame.data.is_empty(), "{channel} from an empty frame");
            }
            None => {}
        }
    }
});
