//! Any bytes a server could send, through the frame scanner of the library's own connection:
//! an answer, never a panic; a frame it finds lies within the bytes, and no shorter prefix of
//! it is a whole frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use steadfast::fuzz_api::resp_frame_length;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(end)) = resp_frame_length(data) {
        assert!(end > 0 && end <= data.len());
        // A shorter prefix is never a whole frame.
        assert_eq!(resp_frame_length(&data[..end - 1]), Ok(None));
    }
});
