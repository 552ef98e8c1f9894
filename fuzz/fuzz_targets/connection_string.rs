//! Any StackExchange.Redis-style connection string; errors must never repeat the password.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let input = format!("{text},password=FUZZSECRET");
    if let Err(error) = steadfast::config::parse_connection_string(&input) {
        assert!(!error.to_string().contains("FUZZSECRET"), "{error}");
    }
});
