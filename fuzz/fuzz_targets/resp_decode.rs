//! Any bytes a server could send, through the reply reader of the library's own connection:
//! an answer, never a panic; and for a whole frame redis-rs's parser reads, the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use steadfast::fuzz_api::{decode_replies, resp_frame_length};

fuzz_target!(|data: &[u8]| {
    let _ = decode_replies(data);
    if let Ok(Some(end)) = resp_frame_length(data) {
        let frame = &data[..end];
        if let Ok(expected) = redis::parse_redis_value(frame) {
            let ours = decode_replies(frame).expect("a frame redis-rs reads");
            assert_eq!(ours.len(), 1);
            assert_eq!(format!("{:?}", ours[0]), format!("{expected:?}"));
        }
    }
});
