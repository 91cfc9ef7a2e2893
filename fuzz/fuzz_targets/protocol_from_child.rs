//! Decodes arbitrary bytes as a child-to-supervisor message (what the
//! supervisor does with every message a child sends on its channel).
//!
//! Properties: `FromChild::decode` never panics; when the decoded message can
//! be encoded, decoding the encoding gives it back and encoding is canonical.
//! (`decode` keeps only the first line but may keep a `\r` in it, which
//! `encode` refuses, so encode failures are allowed here.)
#![no_main]

use hotsup_protocol::FromChild;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = FromChild::decode(data) else {
        return;
    };
    let Ok(bytes) = msg.encode() else {
        return;
    };
    let again = FromChild::decode(&bytes).unwrap_or_else(|e| {
        panic!(
            "re-decoding {:?} failed: {e}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(msg, again, "round trip changed the message");
    assert_eq!(again.encode().unwrap(), bytes, "encoding is not canonical");
});
