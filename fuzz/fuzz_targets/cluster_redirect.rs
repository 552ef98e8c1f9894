//! Any error reply read as a `MOVED` / `ASK` redirection; any key hashed to a slot.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let slot = steadfast::cluster::key_slot(data);
    assert!(slot < steadfast::cluster::SLOTS);
    let reply = String::from_utf8_lossy(data);
    if let Some(redirect) = steadfast::cluster::Redirect::parse(&reply) {
        assert!(redirect.slot < steadfast::cluster::SLOTS);
    }
});
