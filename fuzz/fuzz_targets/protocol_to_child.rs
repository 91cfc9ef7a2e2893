//! Decodes arbitrary bytes as a supervisor-to-child message (what
//! `hotsup-child` does with every message on `HOTSUP_FD`).
//!
//! Properties:
//! - `ToChild::decode` never panics;
//! - whatever it accepts, `encode` can write back (the decoder accepts nothing
//!   the encoder would refuse);
//! - decoding that encoding gives the same message, and encoding is
//!   canonical (a second round trip gives the same bytes).
//!
//! Found by this target on 2026-11-21 and fixed (reproducers in
//! `fuzz/regressions/protocol_to_child/`, regression test in
//! `crates/hotsup-protocol/tests/fuzz_regressions.rs`): `decode` accepted a
//! `\r` inside a listener address that `encode` refuses.
#![no_main]

use hotsup_protocol::ToChild;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = ToChild::decode(data) else {
        return;
    };
    let bytes = match msg.encode() {
        Ok(b) => b,
        Err(e) => panic!("decode accepted {msg:?} but encode refuses it: {e}"),
    };
    let again = ToChild::decode(&bytes).unwrap_or_else(|e| {
        panic!(
            "re-decoding {:?} failed: {e}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(msg, again, "round trip changed the message");
    assert_eq!(again.encode().unwrap(), bytes, "encoding is not canonical");
});
