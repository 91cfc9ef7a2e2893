//! Regressions found by the fuzz targets in `fuzz/` (see `fuzz/README.md`).
//!
//! Each test replays one input a target flagged and checks the property that
//! target asserts, so the fix stays fixed without running the fuzzer.

use hotsup_protocol::{FromChild, ToChild};

/// The `protocol_to_child` property: whatever `decode` accepts, `encode`
/// writes back, and decoding that gives the same message.
fn to_child_round_trips(bytes: &[u8]) {
    let Ok(msg) = ToChild::decode(bytes) else {
        return;
    };
    let encoded = msg
        .encode()
        .unwrap_or_else(|e| panic!("decode accepted {msg:?} but encode refuses it: {e}"));
    assert_eq!(ToChild::decode(&encoded), Ok(msg));
}

/// The `protocol_from_child` property, where the message can be encoded.
fn from_child_round_trips(bytes: &[u8]) {
    let Ok(msg) = FromChild::decode(bytes) else {
        return;
    };
    if let Ok(encoded) = msg.encode() {
        assert_eq!(FromChild::decode(&encoded), Ok(msg));
    }
}

#[test]
fn seed_messages_round_trip() {
    for bytes in [
        &b"HELLO version=1 generation=2 listeners=3"[..],
        b"HELLO  version=+1 generation=02 listeners=3 future=x",
        b"LISTENERS start=0 count=3\ntcp http 127.0.0.1:8080\nudp dns [::1]:53\nunix admin /run/a b",
        b"LISTENERS start=252 count=0",
        b"LISTENERS start=0 count=0\n",
        b"DRAIN timeout_ms=18446744073709551615",
        b"FUTURE x=1",
        b"",
        b"\xff",
    ] {
        to_child_round_trips(bytes);
    }
    for bytes in [
        &b"READY"[..],
        b"READY trailing",
        b"STATUS warming up\nsecond line",
        b"STATUS a\rb",
        b"",
    ] {
        from_child_round_trips(bytes);
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
    to_child_round_trips(b"LISTENERS start=0 count=1\ntcp http 127.0.0.1:8080\r");
    to_child_round_trips(b"LISTENERS start=0 count=2\ntcp a x\r\nunix b /run/b.sock\r");
    // The input as the fuzzer first found it.
    to_child_round_trips(
        b"LISTENERS start=1 count=3\ntcp http 12nt=3\ntcp htS start=1 count=3\n\
          tcp http 12nt=3LIS\r\0\0\0vek",
    );
}
