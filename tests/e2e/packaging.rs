//! What the .deb ships: systemd units that systemd 252 accepts as they
//! are, one man page per subcommand, and an asset list that names them all.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;

use crate::util::{example, hotsup_bin, output_bounded, tempdir, text};

/// The repository's root.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files in `packaging/systemd/`, sorted.
fn packaged_systemd_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("packaging/systemd"))
        .expect("packaging/systemd")
        .map(|e| e.expect("packaging/systemd").path())
        .collect();
    files.sort();
    files
}

/// The unit files among them (templates, `NAME@.service`).
pub fn packaged_units() -> Vec<PathBuf> {
    packaged_systemd_files()
        .into_iter()
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "service" || x == "socket")
        })
        .collect()
}

/// A packaged unit's text as it runs on a host where hotsup is `hotsup`
/// and the apps live in `bin` instead of /usr/bin and /usr/local/bin.
pub fn localized(unit: &Path, hotsup: &str, bin: &Path) -> String {
    let text = std::fs::read_to_string(unit).expect("read a unit");
    assert!(
        text.contains("/usr/bin/hotsup ") || unit.extension().is_some_and(|x| x == "socket"),
        "{} does not run /usr/bin/hotsup",
        unit.display()
    );
    text.replace("/usr/bin/hotsup ", &format!("{hotsup} "))
        .replace("/usr/local/bin/%i", &format!("{}/%i", bin.display()))
}

/// `NAME@.service` as instance `app`: `NAME@app.service`.
pub fn instance_name(unit: &Path, instance: &str) -> String {
    let name = unit.file_name().unwrap().to_str().unwrap();
    name.replacen("@.", &format!("@{instance}."), 1)
}

/// The version of the systemd tools here, if any.
pub fn systemd_version() -> Option<u32> {
    let out = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .ok()?;
    // "systemd 252 (252.38-1~deb12u1)"
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn verify(units: &[PathBuf]) -> std::process::Output {
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify").args(units);
    output_bounded(cmd)
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let Some(version) = systemd_version() else {
        crate::util::skip(
            "units_pass_systemd_analyze_verify",
            "systemd-analyze is not installed",
        );
        return;
    };
    // Instance `app` of every unit, as a host has them: the binaries they
    // name must exist, or verify says so.
    let dir = tempdir();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(example("testchild"), bin.join("app")).unwrap();
    let units_dir = dir.path().join("units");
    std::fs::create_dir(&units_dir).unwrap();
    let mut installed = Vec::new();
    for unit in packaged_units() {
        let path = units_dir.join(instance_name(&unit, "app"));
        std::fs::write(&path, localized(&unit, hotsup_bin(), &bin)).unwrap();
        installed.push(path);
    }
    assert!(installed.len() >= 3, "{installed:?}");
    for unit in &installed {
        let out = verify(std::slice::from_ref(unit));
        assert!(
            out.status.success() && text(&out).is_empty(),
            "systemd {version}: systemd-analyze verify {}:\n{}",
            unit.display(),
            text(&out)
        );
    }
    // The notify-reload drop-in needs systemd 253.
    let service = units_dir.join("hotsup@app.service");
    let dropins = units_dir.join("hotsup@app.service.d");
    std::fs::create_dir(&dropins).unwrap();
    std::fs::copy(
        repo().join("packaging/systemd/notify-reload.conf"),
        dropins.join("notify-reload.conf"),
    )
    .unwrap();
    let out = verify(&[service]);
    if version >= 253 {
        assert!(
            out.status.success() && text(&out).is_empty(),
            "systemd {version}: with notify-reload.conf:\n{}",
            text(&out)
        );
    } else {
        // Proof that the drop-in was read, and why it is not the default.
        assert!(text(&out).contains("notify-reload"), "{}", text(&out));
        crate::util::skip(
            "units_pass_systemd_analyze_verify (notify-reload.conf)",
            &format!("systemd {version} has no Type=notify-reload (253 and later)"),
        );
    }
}

#[test]
fn units_name_their_control_socket_after_themselves() {
    for unit in packaged_units() {
        let text = std::fs::read_to_string(&unit).unwrap();
        for line in text.lines().filter(|l| l.starts_with("Exec")) {
            assert!(
                line.contains(" --name %N"),
                "{}: {line}: every hotsup command must name the unit's own control socket",
                unit.display()
            );
        }
        if unit.extension().is_some_and(|x| x == "service") {
            assert!(text.contains("\nDelegate=yes\n"), "{}", unit.display());
            assert!(text.contains("\nKillMode=mixed\n"), "{}", unit.display());
            assert!(text.contains("\nType=notify\n"), "{}", unit.display());
            assert!(
                text.contains("\nExecReload=/usr/bin/hotsup upgrade --name %N\n"),
                "{}",
                unit.display()
            );
        }
    }
}

/// The `target/assets/...` and `packaging/...` sources of the .deb's assets.
fn deb_assets() -> Vec<String> {
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let section = manifest
        .split("[package.metadata.deb]")
        .nth(1)
        .expect("[package.metadata.deb] in Cargo.toml");
    section
        .lines()
        .filter_map(|l| l.trim().strip_prefix("[\""))
        .filter_map(|l| l.split('"').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn man_pages_are_the_subcommands_and_all_are_packaged() {
    let dir = tempdir();
    let mut cmd = Command::new(hotsup_bin());
    cmd.args(["generate", "man"]).arg(dir.path());
    let out = output_bounded(cmd);
    assert!(out.status.success(), "{}", text(&out));
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    // One per visible subcommand, and hotsup.1: no `help` pages.
    let mut expected: Vec<String> = hotsup::cli::Cli::command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| format!("hotsup-{}.1", s.get_name()))
        .chain(["hotsup.1".to_string()])
        .collect();
    expected.sort();
    assert_eq!(pages, expected);
    for page in ["run", "upgrade", "rollback", "status", "stop", "signal"] {
        assert!(pages.contains(&format!("hotsup-{page}.1")), "{pages:?}");
    }

    let assets = deb_assets();
    let mut packaged_pages: Vec<String> = assets
        .iter()
        .filter_map(|a| a.strip_prefix("target/assets/")?.strip_suffix(".gz"))
        .filter(|a| a.ends_with(".1"))
        .map(str::to_string)
        .collect();
    packaged_pages.sort();
    assert_eq!(
        packaged_pages, pages,
        "man pages in Cargo.toml's deb assets"
    );
    for file in packaged_systemd_files() {
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(
            assets.contains(&format!("packaging/systemd/{name}")),
            "{name} is not in Cargo.toml's deb assets"
        );
    }
    for asset in assets.iter().filter(|a| !a.starts_with("target/")) {
        assert!(repo().join(asset).exists(), "deb asset {asset} is missing");
    }
}
