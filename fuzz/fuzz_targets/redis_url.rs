//! Any connection URL a user could paste; errors must never repeat the password.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let url = format!("redis://u:FUZZSECRET@{text}");
    if let Err(error) = steadfast::Config::from_url(&url) {
        assert!(!error.to_string().contains("FUZZSECRET"), "{error}");
    }
});
