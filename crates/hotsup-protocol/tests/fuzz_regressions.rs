//! Regressions found by the fuzz targets in `fuzz/` (see `fuzz/README.md`).
//!
//! Each test replays one input a target flagged and checks the property that
//! target asserts, so the fix stays fixed without running the fuzzer.

use hotsup_protocol::{FromChild, ToChild};

/// The `protocol_to_child` property: whatever `decode` accepts, `encode`
/// writes back, and decoding that gives the same message. Returns whether
/// `decode` accepted the bytes, so that callers can say which inputs must
/// decode.
fn to_child_round_trips(bytes: &[u8]) -> bool {
    let Ok(msg) = ToChild::decode(bytes) else {
        return false;
    };
    let encoded = msg
        .encode()
        .unwrap_or_else(|e| panic!("decode accepted {msg:?} but encode refuses it: {e}"));
    assert_eq!(ToChild::decode(&encoded), Ok(msg));
    true
}

/// The `protocol_from_child` property, where the message can be encoded;
/// returns whether `decode` accepted the bytes.
fn from_child_round_trips(bytes: &[u8]) -> bool {
    let Ok(msg) = FromChild::decode(bytes) else {
        return false;
    };
    if let Ok(encoded) = msg.encode() {
        assert_eq!(FromChild::decode(&encoded), Ok(msg));
    }
    true
}

#[test]
fn seed_messages_round_trip() {
    // (bytes, whether they must decode): a regression that made a valid
    // message undecodable fails here instead of skipping the check.
    for (bytes, valid) in [
        (&b"HELLO version=1 generation=2 listeners=3"[..], true),
        (b"HELLO  version=+1 generation=02 listeners=3 future=x", true),
        (
            b"HELLO version=1 generation=2 listeners=1 max_version=2",
            true,
        ),
        (
            b"LISTENERS start=0 count=3\ntcp http 127.0.0.1:8080\nudp dns [::1]:53\nunix admin /run/a b",
            true,
        ),
        (b"LISTENERS start=252 count=0", true),
        (b"LISTENERS start=0 count=0\n", true),
        (b"DRAIN timeout_ms=18446744073709551615", true),
        (b"PAUSE", true),
        (b"RESUME", true),
        (b"FUTURE x=1", false),
        (b"", false),
        (b"\xff", false),
    ] {
        assert_eq!(
            to_child_round_trips(bytes),
            valid,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    for (bytes, valid) in [
        (&b"READY"[..], true),
        (b"READY trailing", true),
        (b"STATUS warming up\nsecond line", true),
        (b"HELLO version=2", true),
        (b"UNHEALTHY database unreachable", true),
        (b"STATUS a\rb", false),
        (b"HELLO", false),
        (b"", false),
    ] {
        assert_eq!(
            from_child_round_trips(bytes),
            valid,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

/// Found by `protocol_to_child` on 2026-11-21 (inputs in
/// `fuzz/regressions/protocol_to_child/`): `ToChild::decode` keeps a `\r` in
/// a listener address (as a peer ending its lines with CRLF would send), but
/// `ToChild::encode` refuses that address with `EncodeError::LineBreak`. The
/// decoder now rejects the line (`DecodeError::BadListener`) as the encoder
/// does.
#[test]
fn listener_address_with_cr() {
    assert!(ToChild::decode(b"LISTENERS start=0 count=1\ntcp http 127.0.0.1:8080\r").is_err());
    assert!(FromChild::decode(b"STATUS a\rb").is_err());
    assert!(!to_child_round_trips(
        b"LISTENERS start=0 count=1\ntcp http 127.0.0.1:8080\r"
    ));
    assert!(!to_child_round_trips(
        b"LISTENERS start=0 count=2\ntcp a x\r\nunix b /run/b.sock\r"
    ));
    // The input as the fuzzer first found it.
    assert!(!to_child_round_trips(
        b"LISTENERS start=1 count=3\ntcp http 12nt=3\ntcp htS start=1 count=3\n\
          tcp http 12nt=3LIS\r\0\0\0vek",
    ));
}
