//! Parses arbitrary strings as the user-supplied command-line values hotsup
//! parses itself: `--listen` specs, durations, `--ready` modes and signal
//! names.
//!
//! Properties: none of the parsers panics; an accepted `ListenSpec` keeps the
//! raw text, displays as it, has a valid name if any, and parses again to
//! itself; an accepted duration is not zero.
#![no_main]

use hotsup::cli::{ReadyMode, parse_duration, parse_ready, parse_signal};
use hotsup::listeners::ListenSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = s.parse::<ListenSpec>() {
        assert_eq!(spec.raw, s);
        assert_eq!(spec.to_string(), s);
        if let Some(name) = &spec.name {
            assert!(
                hotsup_protocol::valid_name(name),
                "bad name {name:?} accepted"
            );
        }
        let again: ListenSpec = s.parse().expect("re-parsing an accepted spec");
        assert_eq!(spec, again);
    }
    if let Ok(d) = parse_duration(s) {
        assert!(!d.is_zero());
    }
    if let Ok(ReadyMode::Delay(d)) = parse_ready(s) {
        assert!(!d.is_zero());
    }
    let _ = parse_signal(s);
});
