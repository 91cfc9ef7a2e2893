//! `--config FILE`: the options of `hotsup run` from a TOML file, read at
//! start and again at every upgrade.
//!
//! The schema is the command line's: each key is a long option of `hotsup
//! run` without its dashes (`drain-timeout = "30s"`), a repeatable option
//! takes an array (`listen = ["http=127.0.0.1:8080"]`), a flag takes a
//! boolean, and `command = ["./app", "--port", "8080"]` is COMMAND with its
//! arguments. A key given on the command line wins over the file's, now
//! and at every re-read.
//!
//! The file is turned into command-line words and parsed by the very clap
//! definitions of `hotsup run`, so every option is available, with the same
//! checks, and nothing is written twice. Each key is checked on its own
//! first, so that an error names the file, the line and the key.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches};
use toml_edit::{ImDocument, Item, Value};

use crate::cli::{Cli, Command, RunArgs};

/// The key for COMMAND and its arguments.
const COMMAND_KEY: &str = "command";

/// Options that cannot come from the file.
const NOT_IN_FILE: &[(&str, &str)] = &[("config", "a file cannot name another")];

/// A config file that cannot be used, named with its line where there is
/// one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}:{line}: `{key}`: {message}")]
    Key {
        path: String,
        line: usize,
        key: String,
        message: String,
    },
    /// The file's options together, as clap saw them (a conflict between
    /// two keys, for instance).
    #[error("{path}: {message}")]
    Options { path: String, message: String },
}

/// The file, as command-line words per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// `--key=value` words, by key.
    pub options: BTreeMap<String, Vec<OsString>>,
    pub command: Option<Vec<OsString>>,
}

impl Loaded {
    /// The keys whose value differs from `before`'s (`command` included),
    /// among those the command line does not override.
    pub fn changed(&self, before: &Loaded, file: &ConfigFile) -> Vec<String> {
        let mut keys: BTreeSet<&String> = self.options.keys().collect();
        keys.extend(before.options.keys());
        let mut changed: Vec<String> = keys
            .into_iter()
            .filter(|k| !file.on_command_line.contains(*k))
            .filter(|k| self.options.get(*k) != before.options.get(*k))
            .cloned()
            .collect();
        if self.command != before.command && !file.command_on_command_line {
            changed.push(COMMAND_KEY.to_string());
        }
        changed
    }
}

/// Where the options come from: the command line hotsup was started with,
/// and the file it names.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    argv: Vec<OsString>,
    /// The keys the command line gives, which the file cannot change.
    on_command_line: BTreeSet<String>,
    command_on_command_line: bool,
}

impl ConfigFile {
    /// `argv` is hotsup's whole command line, which named `path` with
    /// `--config`.
    pub fn new(argv: &[OsString], path: &Path) -> ConfigFile {
        let mut on_command_line = BTreeSet::new();
        let mut command_on_command_line = false;
        let cli = Cli::command();
        if let Ok(m) = cli.clone().try_get_matches_from(argv)
            && let (Some(run), Some(run_cmd)) =
                (m.subcommand_matches("run"), cli.find_subcommand("run"))
        {
            for arg in run_cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if run.value_source(id) != Some(ValueSource::CommandLine) {
                    continue;
                }
                match arg.get_long() {
                    Some(long) => {
                        on_command_line.insert(long.to_string());
                    }
                    None if id == COMMAND_KEY => command_on_command_line = true,
                    None => {}
                }
            }
        }
        ConfigFile {
            path: path.to_path_buf(),
            argv: argv.to_vec(),
            on_command_line,
            command_on_command_line,
        }
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }

    /// Reads and checks the file. Blocking: off the event loop's thread.
    pub fn load(&self) -> Result<Loaded, Error> {
        let text = std::fs::read_to_string(&self.path).map_err(|source| Error::Read {
            path: self.shown(),
            source,
        })?;
        parse(&text, &self.shown())
    }

    /// `hotsup run`'s options: the command line's, and the file's for the
    /// rest.
    pub fn run_args(&self, loaded: &Loaded) -> Result<RunArgs, Error> {
        let argv = self.merged_argv(loaded);
        let options_error = |e: clap::Error| Error::Options {
            path: self.shown(),
            message: clap_cause(&e.render().to_string()),
        };
        let cli = Cli::try_parse_from_argv(&argv).map_err(options_error)?;
        match cli.command {
            Command::Run(args) => Ok(*args),
            // `new` was given a `run` command line.
            _ => Err(Error::Options {
                path: self.shown(),
                message: "not a `hotsup run` command line".into(),
            }),
        }
    }

    /// The command line with the file's words spliced in right after `run`
    /// (before the command line's own), and COMMAND from the file at the
    /// end if the command line has none.
    fn merged_argv(&self, loaded: &Loaded) -> Vec<OsString> {
        let Some(at) = run_position(&self.argv) else {
            return self.argv.clone();
        };
        let mut argv: Vec<OsString> = self.argv[..=at].to_vec();
        for (key, words) in &loaded.options {
            if !self.on_command_line.contains(key) {
                argv.extend(words.iter().cloned());
            }
        }
        argv.extend(self.argv[at + 1..].iter().cloned());
        if let Some(command) = loaded
            .command
            .as_ref()
            .filter(|_| !self.command_on_command_line)
        {
            if argv.last().is_none_or(|a| a != "--") {
                argv.push("--".into());
            }
            argv.extend(command.iter().cloned());
        }
        argv
    }
}

impl Cli {
    fn try_parse_from_argv(argv: &[OsString]) -> Result<Cli, clap::Error> {
        let mut m = Cli::command().try_get_matches_from(argv)?;
        Cli::from_arg_matches_mut(&mut m)
    }
}

/// Where the `run` subcommand is in `argv`: after hotsup's global options,
/// some of which take a value.
fn run_position(argv: &[OsString]) -> Option<usize> {
    let cli = Cli::command();
    let takes_value = |a: &clap::Arg| matches!(a.get_action(), ArgAction::Set | ArgAction::Append);
    let mut i = 1;
    while let Some(word) = argv.get(i).and_then(|w| w.to_str()) {
        if word == "run" {
            return Some(i);
        }
        let arg = if let Some(long) = word.strip_prefix("--") {
            if long.contains('=') {
                None
            } else {
                cli.get_arguments().find(|a| a.get_long() == Some(long))
            }
        } else if let Some(short) = word.strip_prefix('-').filter(|s| s.len() == 1) {
            cli.get_arguments()
                .find(|a| a.get_short().is_some_and(|c| short.starts_with(c)))
        } else {
            // Another subcommand.
            return None;
        };
        i += if arg.is_some_and(takes_value) { 2 } else { 1 };
    }
    None
}

/// The file's text, as words per key, each checked against `hotsup run`'s
/// option of that name.
pub fn parse(text: &str, path: &str) -> Result<Loaded, Error> {
    let doc = ImDocument::parse(text).map_err(|e| Error::Syntax {
        path: path.to_string(),
        line: e.span().map_or(1, |s| line_of(text, s.start)),
        message: e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
    })?;
    let cli = Cli::command();
    let Some(run) = cli.find_subcommand("run") else {
        return Err(Error::Options {
            path: path.to_string(),
            message: "hotsup has no `run` command".into(),
        });
    };
    let mut loaded = Loaded {
        options: BTreeMap::new(),
        command: None,
    };
    for (key, item) in doc.as_table().iter() {
        let line = doc
            .as_table()
            .get_key_value(key)
            .and_then(|(k, _)| k.span())
            .map_or(1, |s| line_of(text, s.start));
        let err = |message: String| Error::Key {
            path: path.to_string(),
            line,
            key: key.to_string(),
            message,
        };
        let Some(value) = item.as_value() else {
            let what = match item {
                Item::Table(_) | Item::ArrayOfTables(_) => {
                    "is a table; every option is a top-level key"
                }
                _ => "has no value",
            };
            return Err(err(what.into()));
        };
        if key == COMMAND_KEY {
            let words = strings(value)
                .filter(|w| !w.is_empty())
                .ok_or_else(|| err("expects an array of strings: the program, then its arguments (e.g. [\"./app\", \"--port\", \"8080\"])".into()))?;
            loaded.command = Some(words.into_iter().map(OsString::from).collect());
            continue;
        }
        if let Some((_, why)) = NOT_IN_FILE.iter().find(|(k, _)| *k == key) {
            return Err(err(format!("not allowed in the file: {why}")));
        }
        let Some(arg) = run.get_arguments().find(|a| a.get_long() == Some(key)) else {
            return Err(err(unknown_key(run, key)));
        };
        let values: Vec<String> = match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => match value.as_bool() {
                Some(true) => vec![],
                Some(false) => continue,
                None => return Err(err("expects true or false".into())),
            },
            ArgAction::Append => match value {
                Value::Array(a) => a
                    .iter()
                    .map(scalar)
                    .collect::<Option<_>>()
                    .ok_or_else(|| err("expects an array of strings or numbers".into()))?,
                other => vec![scalar(other).ok_or_else(|| {
                    err("expects a string, a number, or an array of them".into())
                })?],
            },
            _ => vec![scalar(value).ok_or_else(|| err("expects a string or a number".into()))?],
        };
        let mut words = Vec::new();
        if values.is_empty() {
            words.push(OsString::from(format!("--{key}")));
        }
        for v in values {
            // One word: a value that starts with `-` stays a value.
            words.push(OsString::from(format!("--{key}={v}")));
        }
        // The option alone, through its own value parser, for an error that
        // names this key and line. (Errors between options, such as one
        // that requires another, come from the whole command line later.)
        let alone = std::iter::once(OsString::from("run")).chain(words.iter().cloned());
        if let Err(e) = run.clone().try_get_matches_from(alone) {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::InvalidValue | ErrorKind::ValueValidation
            ) {
                return Err(err(clap_cause(&e.render().to_string())));
            }
        }
        loaded.options.insert(key.to_string(), words);
    }
    Ok(loaded)
}

/// A string, integer or float, as its command-line word.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.value().clone()),
        Value::Integer(i) => Some(i.value().to_string()),
        Value::Float(f) => Some(f.value().to_string()),
        _ => None,
    }
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|w| w.as_str().map(str::to_string))
        .collect()
}

fn unknown_key(run: &clap::Command, key: &str) -> String {
    let dashed = key.replace('_', "-");
    let hint = if dashed != key && run.get_arguments().any(|a| a.get_long() == Some(&dashed)) {
        format!("; did you mean `{dashed}`?")
    } else {
        String::new()
    };
    format!("unknown key: not an option of `hotsup run`{hint} (see hotsup run --help)")
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The cause in a rendered clap error: its first paragraph in one line
/// (a missing-argument error lists the arguments on indented lines),
/// without the `error: ` prefix, the usage and the tips.
pub fn clap_cause(rendered: &str) -> String {
    let cause: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .collect();
    let cause = cause.join(" ");
    cause.strip_prefix("error: ").unwrap_or(&cause).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(l: &Loaded, key: &str) -> Vec<String> {
        l.options[key]
            .iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn keys_become_the_options_words() {
        let l = parse(
            r#"
listen = ["http=127.0.0.1:8080", "unix:/run/app.sock"]
drain-timeout = "30s"
workers = 4
reuseport = true
ipv6-only = false
env = ["A=-1"]
command = ["./app", "--port", "8080"]
"#,
            "f.toml",
        )
        .unwrap();
        assert_eq!(
            words(&l, "listen"),
            [
                "--listen=http=127.0.0.1:8080",
                "--listen=unix:/run/app.sock"
            ]
        );
        assert_eq!(words(&l, "drain-timeout"), ["--drain-timeout=30s"]);
        assert_eq!(words(&l, "workers"), ["--workers=4"]);
        assert_eq!(words(&l, "reuseport"), ["--reuseport"]);
        assert!(!l.options.contains_key("ipv6-only"));
        assert_eq!(words(&l, "env"), ["--env=A=-1"]);
        assert_eq!(
            l.command.unwrap(),
            ["./app", "--port", "8080"].map(OsString::from)
        );
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        let cases = [
            (
                "listen = [\"127.0.0.1:0\"]\ndrain-timeout = \"5 parsecs\"\n",
                "f.toml:2: `drain-timeout`: invalid value '5 parsecs'",
            ),
            (
                "\n\nfrobnicate = 1\n",
                "f.toml:3: `frobnicate`: unknown key",
            ),
            ("drain_timeout = \"1s\"\n", "did you mean `drain-timeout`?"),
            (
                "reuseport = \"yes\"\n",
                "f.toml:1: `reuseport`: expects true or false",
            ),
            (
                "workers = [1, 2]\n",
                "f.toml:1: `workers`: expects a string or a number",
            ),
            (
                "listen = [\"8080\"]\n",
                "f.toml:1: `listen`: invalid value '8080'",
            ),
            (
                "command = \"./app --port 1\"\n",
                "f.toml:1: `command`: expects an array of strings",
            ),
            (
                "config = \"other.toml\"\n",
                "f.toml:1: `config`: not allowed",
            ),
            ("[run]\nworkers = 2\n", "f.toml:1: `run`: is a table"),
            ("workers = \n", "f.toml:1: "),
            ("a = 1\na = 2\n", "f.toml:2: "),
        ];
        for (text, want) in cases {
            let got = parse(text, "f.toml").unwrap_err().to_string();
            assert!(
                got.starts_with(want) || got.contains(want),
                "{text:?}: {got}"
            );
            assert_eq!(got.lines().count(), 1, "{got}");
        }
    }

    fn argv(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_command_line_wins_and_the_file_fills_in() {
        let file = parse(
            "listen = [\"127.0.0.1:1\"]\ndrain-timeout = \"9s\"\nworkers = 3\ncommand = [\"./from-file\"]\n",
            "f.toml",
        )
        .unwrap();
        let cli = argv(&[
            "hotsup",
            "--log-format",
            "json",
            "run",
            "--config",
            "f.toml",
            "--workers",
            "5",
            "--",
            "./from-cli",
            "x",
        ]);
        let src = ConfigFile::new(&cli, Path::new("f.toml"));
        let args = src.run_args(&file).unwrap();
        assert_eq!(args.workers, 5);
        assert_eq!(args.drain_timeout, std::time::Duration::from_secs(9));
        assert_eq!(args.listen.len(), 1);
        assert_eq!(args.command, argv(&["./from-cli", "x"]));

        let bare = argv(&["hotsup", "run", "--config", "f.toml"]);
        let src = ConfigFile::new(&bare, Path::new("f.toml"));
        let args = src.run_args(&file).unwrap();
        assert_eq!(args.workers, 3);
        assert_eq!(args.command, argv(&["./from-file"]));

        // A change to a key the command line gives is not a change.
        let edited = parse(
            "listen = [\"127.0.0.1:1\"]\ndrain-timeout = \"9s\"\nworkers = 4\ncommand = [\"./other\"]\n",
            "f.toml",
        )
        .unwrap();
        let src = ConfigFile::new(&cli, Path::new("f.toml"));
        assert!(edited.changed(&file, &src).is_empty());
        let src = ConfigFile::new(&bare, Path::new("f.toml"));
        assert_eq!(edited.changed(&file, &src), ["workers", "command"]);
    }

    #[test]
    fn options_that_conflict_are_reported_with_the_file() {
        let file = parse("build = \"make\"\n", "f.toml").unwrap();
        let src = ConfigFile::new(
            &argv(&["hotsup", "run", "--config", "f.toml", "--", "./app"]),
            Path::new("f.toml"),
        );
        let got = src.run_args(&file).unwrap_err().to_string();
        assert!(got.starts_with("f.toml: "), "{got}");
        assert!(got.contains("--watch"), "{got}");
    }

    /// The README's full example is a file hotsup takes as it is.
    #[test]
    fn the_readmes_example_parses() {
        let readme = include_str!("../README.md");
        let start = readme
            .find("```toml\n# /etc/hotsup/app.toml\n")
            .expect("the example in the README")
            + "```toml\n".len();
        let text = &readme[start..];
        let text = &text[..text.find("```").expect("end of the example")];
        let file = parse(text, "app.toml").unwrap();
        let src = ConfigFile::new(
            &argv(&["hotsup", "run", "--config", "app.toml"]),
            Path::new("app.toml"),
        );
        let args = src.run_args(&file).unwrap();
        assert_eq!(args.listen.len(), 3);
        assert_eq!(args.workers, 4);
        assert_eq!(args.command, argv(&["/usr/local/bin/app", "--log-json"]));
    }
}
