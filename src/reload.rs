//! `--config` at an upgrade: the file is read again off the event loop, and
//! everything it changes is worked out and checked before anything changes
//! ([`prepare`]); then, on the loop, the new listeners are bound
//! ([`Plan::bind`]) and the supervisor switches to the new settings. Any
//! error refuses the upgrade and leaves everything as it was.
//!
//! Listeners are matched by name and address: one whose name and address
//! are unchanged is kept as it is (never bound again), one whose name
//! changed keeps its socket under the new name, a new one is bound, and one
//! the file no longer has is left out of the new generations' set (the
//! supervisor closes it once no generation uses it). Sockets from socket
//! activation are not the file's to remove: every generation gets them.

use std::sync::Arc;

use crate::config::{ConfigFile, Loaded};
use crate::identity::Identity;
use crate::listeners::{self, BindOptions, ListenSpec, Listener, Origin};
use crate::settings::{self, Derived};

/// Options that take effect only when hotsup itself starts: the file may
/// change them, but they wait for the next start.
const AT_START_ONLY: &[&str] = &[
    "name",
    "control",
    "metrics",
    "user",
    "group",
    "subreaper",
    "cgroup",
    "fd-store",
    "watch",
    "build",
    "debounce",
    "watch-ignore",
    "livereload",
];

/// The config file and what it said last.
#[derive(Debug, Clone)]
pub struct Reload {
    pub file: ConfigFile,
    pub loaded: Loaded,
}

/// Everything the file asks for, checked, but not applied yet.
#[derive(Debug)]
pub struct Prepared {
    pub loaded: Loaded,
    pub derived: Derived,
    pub plan: Plan,
    /// Keys whose value changed.
    pub changed: Vec<String>,
    /// Changed keys that wait for hotsup's next start.
    pub ignored: Vec<String>,
}

/// The new generations' listeners, in order.
#[derive(Debug)]
pub struct Plan {
    steps: Vec<Step>,
    opts: BindOptions,
}

#[derive(Debug)]
enum Step {
    /// Unchanged (or from socket activation).
    Keep(Arc<Listener>),
    /// The same socket under a new name.
    Rename(Arc<Listener>, String),
    /// New: bound on the loop (the umask that gives a Unix socket file its
    /// mode is per process, and must not change while the loop spawns).
    /// Host names are already looked up.
    Bind(ListenSpec, String),
}

/// Reads the file and works out what it changes against `current` (the
/// listeners new generations get now). Blocking: off the event loop.
pub fn prepare(
    reload: &Reload,
    current: &[Arc<Listener>],
    identity: Option<&Identity>,
) -> Result<Prepared, String> {
    let loaded = reload.file.load().map_err(|e| e.to_string())?;
    let args = reload.file.run_args(&loaded).map_err(|e| e.to_string())?;
    let changed = loaded.changed(&reload.loaded, &reload.file);
    let ignored: Vec<String> = changed
        .iter()
        .filter(|k| AT_START_ONLY.contains(&k.as_str()))
        .cloned()
        .collect();
    let activated: Vec<&Arc<Listener>> = current
        .iter()
        .filter(|l| l.origin == Origin::Activated)
        .collect();
    if activated.is_empty() && args.listen.is_empty() {
        return Err("no listeners: the file has no `listen`".into());
    }
    let watching = !args.watch.is_empty();
    if let Some(program) = args.command.first()
        && !(watching && args.build.is_some())
    {
        crate::child::resolve(program).map_err(|e| e.to_string())?;
    }
    let derived = settings::derive(&args, identity, activated.len() + args.listen.len())?;
    let taken: Vec<String> = activated.iter().map(|l| l.info.name.clone()).collect();
    let names = listeners::name_all(&args.listen, &taken).map_err(|e| e.to_string())?;
    let mut steps: Vec<Step> = activated.into_iter().cloned().map(Step::Keep).collect();
    let from_file: Vec<&Arc<Listener>> = current
        .iter()
        .filter(|l| l.origin != Origin::Activated)
        .collect();
    // Unchanged listeners first, so that a rename never takes a socket
    // that an unchanged listener keeps; each socket is used once.
    let specs: Vec<(&ListenSpec, String)> = args.listen.iter().zip(names).collect();
    let mut used: Vec<*const Listener> = Vec::new();
    let mut kept: Vec<Option<Arc<Listener>>> = specs
        .iter()
        .map(|(spec, name)| {
            let l = from_file
                .iter()
                .find(|l| l.info.name == *name && l.is_bound_to(&spec.address))?;
            used.push(Arc::as_ptr(l));
            Some(Arc::clone(l))
        })
        .collect();
    for ((spec, name), kept) in specs.into_iter().zip(kept.iter_mut()) {
        if let Some(l) = kept.take() {
            steps.push(Step::Keep(l));
            continue;
        }
        // Any port (`:0`) is a new socket, not one that happens to match.
        let renamed = from_file.iter().find(|l| {
            !any_port(spec) && !used.contains(&Arc::as_ptr(l)) && l.is_bound_to(&spec.address)
        });
        let step = match renamed {
            Some(l) => {
                used.push(Arc::as_ptr(l));
                Step::Rename(Arc::clone(l), name)
            }
            None => Step::Bind(spec.resolved().map_err(|e| e.to_string())?, name),
        };
        steps.push(step);
    }
    Ok(Prepared {
        loaded,
        derived,
        plan: Plan {
            steps,
            opts: BindOptions {
                backlog: args.backlog,
                reuseport: args.reuseport,
                ipv6_only: args.ipv6_only,
                unix_mode: args.unix_mode,
            },
        },
        changed,
        ignored,
    })
}

fn any_port(spec: &ListenSpec) -> bool {
    match &spec.address {
        listeners::Address::Tcp(hp) | listeners::Address::Udp(hp) => hp.ends_with(":0"),
        listeners::Address::Unix(_) => false,
    }
}

impl Plan {
    /// Binds the new listeners; on error the ones bound so far are closed
    /// (and their socket files removed), and nothing else changed. Returns
    /// the new set and the names of those bound or renamed.
    pub fn bind(self) -> Result<(Vec<Arc<Listener>>, Vec<String>), String> {
        let mut set = Vec::with_capacity(self.steps.len());
        let mut added = Vec::new();
        for step in self.steps {
            let l = match step {
                Step::Keep(l) => l,
                Step::Rename(l, name) => {
                    let renamed = l
                        .renamed(&name)
                        .map_err(|e| format!("cannot rename listener {}: {e}", l.info.name))?;
                    added.push(name);
                    Arc::new(renamed)
                }
                Step::Bind(spec, name) => {
                    let l =
                        listeners::bind_one(&spec, name, &self.opts).map_err(|e| e.to_string())?;
                    added.push(l.info.name.clone());
                    Arc::new(l)
                }
            };
            set.push(l);
        }
        Ok((set, added))
    }
}
