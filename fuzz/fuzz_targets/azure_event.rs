//! Any payload published on `AzureRedisEvents`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let payload = String::from_utf8_lossy(data);
    let _ = steadfast::maintenance::azure::parse(&payload);
});
