//! A malformed `HOTSUP_FD`. The only test in this binary, because the
//! handoff happens once per process.

use std::time::Duration;

use hotsup_child::{Error, StartupError};

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
        Error::Startup(inner) => assert!(
            matches!(&**inner, StartupError::BadEnv { var: "HOTSUP_FD", value } if value == "three"),
            "{inner:?}"
        ),
        other => panic!("expected Startup(BadEnv), got {other:?}"),
    }
    assert!(hotsup_child::is_supervised());
    assert_eq!(hotsup_child::generation(), Some(5));
    assert!(hotsup_child::listeners().is_empty());
    // Every later call reports the same start-up error; nothing binds the
    // fallback.
    assert!(matches!(
        hotsup_child::first_tcp()
            .or_bind("127.0.0.1:0")
            .nonblocking(),
        Err(Error::Startup(_))
    ));
    assert!(matches!(hotsup_child::ready(), Err(Error::Startup(_))));
    // How `fn main() -> Result<(), hotsup_child::Error>` shows it.
    assert_eq!(
        format!("{err:?}"),
        "the handoff from the hotsup supervisor failed at start-up\n\nCaused by:\n    \
         environment variable HOTSUP_FD has an invalid value \"three\""
    );
    // The lifecycle still works.
    assert!(!hotsup_child::lifecycle().wait_drain_timeout(Duration::from_millis(10)));
}
