//! Parses arbitrary bytes as an sd_notify datagram a child sent to hotsup's
//! NOTIFY_SOCKET (the reader turns the bytes into text with
//! `String::from_utf8_lossy` before parsing, as here).
//!
//! Properties: `notify::parse` never panics, and a STATUS it reports is one
//! line of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = hotsup::notify::parse(&text);
    if let Some(status) = &parsed.status {
        assert!(!status.contains('\n'), "STATUS spans lines: {status:?}");
        assert!(text.contains(status.as_str()));
    }
    if parsed.ready {
        assert!(text.contains("READY=1"));
    }
    if parsed.stopping {
        assert!(text.contains("STOPPING=1"));
    }
});
