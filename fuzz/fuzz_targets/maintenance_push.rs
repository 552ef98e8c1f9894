//! Any bytes a server could send, through redis-rs's RESP parser, into the push-frame parser.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(redis::Value::Push { kind, data }) = redis::parse_redis_value(data) {
        if let Some(notification) = steadfast::maintenance::push::parse(&kind, &data) {
            let _ = (notification.kind(), notification.seq(), notification.is_start());
        }
    }
});
