//! Parses arbitrary bytes as a control-socket request line (anyone allowed
//! to connect to the control socket controls these bytes).
//!
//! Properties: `control::parse` never panics; an accepted request,
//! serialized again in its envelope, parses back to itself.
#![no_main]

use hotsup::control::{Envelope, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = parse(data) else {
        return;
    };
    let line = serde_json::to_vec(&Envelope {
        version: 1,
        request: request.clone(),
    })
    .expect("a parsed request serializes");
    let again = parse(&line).unwrap_or_else(|e| {
        panic!(
            "re-parsing {:?} failed: {e}",
            String::from_utf8_lossy(&line)
        )
    });
    assert_eq!(request, again, "round trip changed the request");
});
