//! Any `CLUSTER NODES` answer: parsed or refused, never a panic; a parsed view answers every
//! slot question and agrees with itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(view) = steadfast::cluster::View::parse(&text) {
        let layout = view.layout();
        assert_eq!(layout.len(), usize::from(steadfast::cluster::SLOTS));
        for slot in [0, 1, 5460, 8191, 16383] {
            let owner = view.owner(slot).map(|n| &n.address);
            assert_eq!(owner, layout[usize::from(slot)]);
        }
        let chosen = steadfast::cluster::choose(std::slice::from_ref(&view));
        assert_eq!(chosen, Some(&view));
    }
});
