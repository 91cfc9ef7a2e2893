//! The apps of `examples/recipes/`: unmodified Node.js, Go `net/http`,
//! gunicorn and uvicorn servers under `hotsup run --fds systemd`, each with
//! its framework's default drain and with the drain recipe that loses no
//! request under keep-alive load.
//!
//! The end-to-end tests (`tests/e2e/recipes.rs`) check that every recipe
//! loses nothing; the `recipes` binary measures both drains side by side.
//! Both start the apps with the command lines built here, which are the
//! ones the README gives.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// An app of `examples/recipes/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum App {
    Node,
    Go,
    Gunicorn,
    Uvicorn,
}

impl App {
    pub const ALL: [App; 4] = [App::Node, App::Go, App::Gunicorn, App::Uvicorn];

    pub fn name(self) -> &'static str {
        match self {
            App::Node => "node",
            App::Go => "go",
            App::Gunicorn => "gunicorn",
            App::Uvicorn => "uvicorn",
        }
    }

    pub fn parse(s: &str) -> Option<App> {
        App::ALL.into_iter().find(|a| a.name() == s)
    }
}

/// How the old generation drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// The framework's own graceful stop, as it comes.
    Default,
    /// The recipe of `examples/recipes/<app>/`.
    Recipe,
}

impl Drain {
    pub fn name(self) -> &'static str {
        match self {
            Drain::Default => "default",
            Drain::Recipe => "recipe",
        }
    }
}

/// `examples/recipes/` of this workspace.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/recipes")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/recipes"))
}

/// The Python interpreter that has gunicorn and uvicorn:
/// `HOTSUP_RECIPES_PYTHON` (`.ci/run` sets it to its virtualenv's), or
/// `python3`.
pub fn python() -> OsString {
    std::env::var_os("HOTSUP_RECIPES_PYTHON").unwrap_or_else(|| "python3".into())
}

/// An app whose runtime was found (and, for Go, whose server was built).
#[derive(Debug, Clone)]
pub struct Runtime {
    pub app: App,
    /// `node`, the Python interpreter, or the built Go server.
    program: OsString,
    /// What `--version` said, for reports.
    pub version: String,
}

/// Why an app cannot be run here.
#[derive(Debug, Clone)]
pub enum Unavailable {
    /// Its runtime is not installed: a test skips (unless told otherwise).
    Missing(String),
    /// The runtime is there but the app could not be built: a failure.
    Broken(String),
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::Missing(s) | Unavailable::Broken(s) => f.write_str(s),
        }
    }
}

/// What to run: `hotsup run ARGS -- COMMAND...` (besides `-l`, which the
/// caller adds).
#[derive(Debug, Clone)]
pub struct Setup {
    pub hotsup_args: Vec<String>,
    pub command: Vec<OsString>,
}

impl Runtime {
    /// Finds the app's runtime; builds the Go server into `build_dir`.
    pub fn find(app: App, build_dir: &Path) -> Result<Runtime, Unavailable> {
        let missing = Unavailable::Missing;
        match app {
            App::Node => {
                let version = version_of(Command::new("node").arg("--version"))
                    .map_err(|e| missing(format!("no Node.js (node --version: {e})")))?;
                Ok(Runtime {
                    app,
                    program: "node".into(),
                    version: format!("Node.js {version}"),
                })
            }
            App::Go => {
                let version = version_of(Command::new("go").arg("version"))
                    .map_err(|e| missing(format!("no Go toolchain (go version: {e})")))?;
                let out = build_dir.join("recipe-go-server");
                build_go(build_dir, &out).map_err(Unavailable::Broken)?;
                Ok(Runtime {
                    app,
                    program: out.into(),
                    version,
                })
            }
            App::Gunicorn | App::Uvicorn => {
                let module = app.name();
                let python = python();
                let script = format!("import {module}; print({module}.__version__)");
                let version = version_of(Command::new(&python).args(["-c", &script]))
                    .map_err(|e| {
                        missing(format!(
                            "{} cannot import {module} ({e}); pip install {module}, or set HOTSUP_RECIPES_PYTHON",
                            Path::new(&python).display()
                        ))
                    })?;
                Ok(Runtime {
                    app,
                    program: python,
                    version: format!("{module} {version}"),
                })
            }
        }
    }

    /// The command line for this app with `drain`.
    pub fn setup(&self, drain: Drain) -> Setup {
        let dir = examples_dir().join(self.app.name());
        let s = |v: &[&str]| -> Vec<String> { v.iter().map(|x| x.to_string()).collect() };
        let recipe = drain == Drain::Recipe;
        let (hotsup_args, mut command): (Vec<String>, Vec<OsString>) = match self.app {
            // Node cannot send datagrams to a Unix socket: ready once it
            // has stayed up this long (it listens within milliseconds).
            App::Node => (
                s(&["--fds", "systemd", "--ready", "delay:500ms"]),
                vec![self.program.clone(), dir.join("server.js").into_os_string()],
            ),
            App::Go => (s(&["--fds", "systemd"]), vec![self.program.clone()]),
            App::Gunicorn => {
                let mut args = s(&["--fds", "systemd", "--chdir"]);
                args.push(dir.display().to_string());
                if !recipe {
                    // gunicorn's own READY=1, sent before its workers exist.
                    args.extend(s(&["--env", "GUNICORN_READY_FROM=arbiter"]));
                }
                (
                    args,
                    ["-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"]
                        .iter()
                        .map(OsString::from)
                        .collect(),
                )
            }
            App::Uvicorn => {
                let mut args = s(&["--fds", "systemd", "--chdir"]);
                args.push(dir.display().to_string());
                let http = if recipe {
                    "app:DrainingH11Protocol"
                } else {
                    "h11"
                };
                (
                    args,
                    [
                        "-m",
                        "uvicorn",
                        "app:app",
                        "--fd",
                        "3",
                        "--no-access-log",
                        "--http",
                        http,
                    ]
                    .iter()
                    .map(OsString::from)
                    .collect(),
                )
            }
        };
        match self.app {
            App::Gunicorn | App::Uvicorn => command.insert(0, self.program.clone()),
            App::Node if !recipe => command.push("--plain-close".into()),
            App::Go if !recipe => command.push("-plain-shutdown".into()),
            _ => {}
        }
        Setup {
            hotsup_args,
            command,
        }
    }
}

/// The first line a `--version`-like command prints, if it succeeds.
fn version_of(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}

/// `go build` of `examples/recipes/go`, offline (the standard library is
/// all it uses), with its build cache in `build_dir`.
fn build_go(build_dir: &Path, out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(build_dir)
        .map_err(|e| format!("cannot create {}: {e}", build_dir.display()))?;
    let mut cmd = Command::new("go");
    cmd.args(["build", "-o"])
        .arg(out)
        .arg(".")
        .current_dir(examples_dir().join("go"))
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-buildvcs=false")
        .env("GOTOOLCHAIN", "local")
        .stdin(Stdio::null());
    if std::env::var_os("GOCACHE").is_none() {
        cmd.env("GOCACHE", build_dir.join("go-cache"));
    }
    let built = cmd
        .output()
        .map_err(|e| format!("cannot run go build: {e}"))?;
    if !built.status.success() {
        return Err(format!(
            "go build of examples/recipes/go failed ({}):\n{}",
            built.status,
            String::from_utf8_lossy(&built.stderr)
        ));
    }
    Ok(())
}
