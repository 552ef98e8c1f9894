//! Any bytes a downstream client could send, into the proxy's request reader: a command,
//! "need more", a skip or a protocol error, never a panic; a command read is within the limits
//! and its length within the buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use steadfast_proxy::resp::{Limits, Read, read_command};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_bulk: 1024,
        max_args: 64,
        max_line: 256,
    };
    let mut at = 0;
    while at < data.len() {
        match read_command(&data[at..], &limits) {
            Ok(Read::Command(args, used)) => {
                assert!(used > 0 && used <= data.len() - at);
                assert!(!args.is_empty() && args.len() <= limits.max_args);
                assert!(args.iter().all(|a| a.len() <= limits.max_bulk.max(limits.max_line)));
                at += used;
            }
            Ok(Read::Skip(used)) => {
                assert!(used > 0 && used <= data.len() - at);
                at += used;
            }
            Ok(Read::Incomplete { at_least }) => {
                assert!(at_least > data.len() - at);
                break;
            }
            Err(_) => break,
        }
    }
});
