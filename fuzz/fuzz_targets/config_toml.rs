//! Any TOML config file; errors must never repeat the password.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let file = format!("password = \"FUZZSECRET\"\n{text}");
    if let Err(error) = steadfast::Config::from_toml(&file) {
        assert!(!error.to_string().contains("FUZZSECRET"), "{error}");
    }
});
