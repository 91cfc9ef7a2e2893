//! A malformed `HOTSUP_FD`. The only test in this binary, because the
//! handoff happens once per process.

use std::time::Duration;

use hotsup_child::Error;

#[test]
fn bad_hotsup_fd() {
    // SAFETY: this is the only test of this binary and no other thread of
    // the harness reads the environment while it runs.
    unsafe {
        std::env::set_var(hotsup_protocol::ENV_FD, "three");
        std::env::set_var(hotsup_protocol::ENV_GENERATION, "5");
    }
    let err = hotsup_child::init().unwrap_err();
    match &err {
        Error::Handoff(inner) => assert!(
            matches!(&**inner, Error::BadEnv { var: "HOTSUP_FD", value } if value == "three"),
            "{inner:?}"
        ),
        other => panic!("expected Handoff(BadEnv), got {other:?}"),
    }
    assert!(hotsup_child::is_supervised());
    assert_eq!(hotsup_child::generation(), Some(5));
    assert!(hotsup_child::listeners().is_empty());
    // Every later call reports the same start-up error; nothing binds the
    // fallback.
    assert!(matches!(
        hotsup_child::inherit_listener("127.0.0.1:0"),
        Err(Error::Handoff(_))
    ));
    assert!(matches!(hotsup_child::ready(), Err(Error::Handoff(_))));
    assert_eq!(std::env::var_os(hotsup_protocol::ENV_FD), None);
    // The drain handle still works.
    assert!(!hotsup_child::drain().wait_timeout(Duration::from_millis(10)));
}
