//! The environment every generation's process starts in: `--chdir`,
//! `--env`, `--env-file`, `--umask` and `--rlimit`, after systemd's
//! `WorkingDirectory=`, `Environment=`, `EnvironmentFile=`, `UMask=` and
//! `Limit*=`.
//!
//! Everything is parsed and checked once, before anything is bound, so that
//! a value that could never work is a usage error (exit 2) and not a
//! generation that fails to start. The child applies the result between fork
//! and exec ([`crate::child`]) from values prepared before fork.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::process::{Resource, Rlimit, getrlimit};

use crate::identity::Identity;

/// What every generation's process gets, beyond what hotsup sets itself.
#[derive(Debug, Default, Clone)]
pub struct ExecEnv {
    /// `--chdir`: entered after the switch to `--user`, as systemd does, so
    /// that the children get no directory their user could not enter.
    pub chdir: Option<PathBuf>,
    /// The `--env-file`s in order, then the `--env`s: a later value wins.
    /// Never one of hotsup's own variables (see [`crate::child::is_reserved_env`]).
    pub env: BTreeMap<String, String>,
    /// `--umask`.
    pub umask: Option<u32>,
    /// `--rlimit`, at most one per resource (the last one given).
    pub rlimits: Vec<Limit>,
}

impl ExecEnv {
    /// Whether an explicit `--rlimit` sets this resource.
    pub fn sets(&self, resource: Resource) -> bool {
        self.rlimits.iter().any(|l| l.resource == resource)
    }

    pub fn is_empty(&self) -> bool {
        self.chdir.is_none()
            && self.env.is_empty()
            && self.umask.is_none()
            && self.rlimits.is_empty()
    }
}

/// One `--rlimit NAME=SOFT[:HARD]`. `None` is `infinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub resource: Resource,
    /// The lower-case name, as prlimit(1) spells it.
    pub name: &'static str,
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

impl Limit {
    pub fn rlimit(&self) -> Rlimit {
        Rlimit {
            current: self.soft,
            maximum: self.hard,
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = |x: Option<u64>| x.map_or_else(|| "infinity".to_string(), |n| n.to_string());
        write!(f, "{}={}:{}", self.name, v(self.soft), v(self.hard))
    }
}

/// prlimit(1)'s names; systemd's `LimitNOFILE=` and `RLIMIT_NOFILE` are
/// accepted too (see [`parse_rlimit`]).
const RESOURCES: &[(&str, Resource)] = &[
    ("as", Resource::As),
    ("core", Resource::Core),
    ("cpu", Resource::Cpu),
    ("data", Resource::Data),
    ("fsize", Resource::Fsize),
    ("locks", Resource::Locks),
    ("memlock", Resource::Memlock),
    ("msgqueue", Resource::Msgqueue),
    ("nice", Resource::Nice),
    ("nofile", Resource::Nofile),
    ("nproc", Resource::Nproc),
    ("rss", Resource::Rss),
    ("rtprio", Resource::Rtprio),
    ("rttime", Resource::Rttime),
    ("sigpending", Resource::Sigpending),
    ("stack", Resource::Stack),
];

/// Parses `--rlimit NAME=SOFT[:HARD]`.
///
/// NAME is prlimit's (`nofile`), systemd's (`LimitNOFILE`) or the C name
/// (`RLIMIT_NOFILE`), in any case. A value is a number or `infinity`
/// (`unlimited`, as prlimit writes it, too). One value sets both limits,
/// as systemd does. `nice` also takes systemd's `+N`/`-N`: a nice level
/// (-20..19), not the raw limit (0..40).
pub fn parse_rlimit(s: &str) -> Result<Limit, String> {
    let (name, value) = s
        .split_once('=')
        .ok_or("expected NAME=SOFT[:HARD], e.g. nofile=65536 or core=0:infinity")?;
    let lower = name.trim().to_ascii_lowercase();
    let bare = lower
        .strip_prefix("limit")
        .or_else(|| lower.strip_prefix("rlimit_"))
        .unwrap_or(&lower);
    let Some(&(name, resource)) = RESOURCES.iter().find(|(n, _)| *n == bare) else {
        let names: Vec<&str> = RESOURCES.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "unknown limit {name:?} (one of {})",
            names.join(", ")
        ));
    };
    let one = |v: &str| parse_limit_value(resource, v.trim());
    let (soft, hard) = match value.split_once(':') {
        Some((soft, hard)) => (one(soft)?, one(hard)?),
        None => {
            let v = one(value)?;
            (v, v)
        }
    };
    // None is infinity, above every number.
    if let (soft, Some(hard)) = (soft, hard)
        && soft.is_none_or(|s| s > hard)
    {
        return Err(format!(
            "the soft limit ({}) is above the hard limit ({hard})",
            soft.map_or_else(|| "infinity".to_string(), |s| s.to_string())
        ));
    }
    Ok(Limit {
        resource,
        name,
        soft,
        hard,
    })
}

fn parse_limit_value(resource: Resource, v: &str) -> Result<Option<u64>, String> {
    if v.eq_ignore_ascii_case("infinity") || v.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    if resource == Resource::Nice && (v.starts_with('+') || v.starts_with('-')) {
        // As systemd's LimitNICE=: a nice level, stored as 20 - level.
        return match v.parse::<i64>() {
            Ok(level @ -20..=19) => Ok(Some((20 - level) as u64)),
            _ => Err(format!("{v:?} is not a nice level from -20 to 19")),
        };
    }
    // RLIM_INFINITY itself is spelled `infinity`.
    match v.parse::<u64>() {
        Ok(n) if n != u64::MAX => Ok(Some(n)),
        _ => Err(format!("{v:?} is not a number or infinity")),
    }
}

/// Parses `--umask MODE`, in octal: `027`, `0027`, `0o027`.
pub fn parse_umask(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 && !digits.is_empty() && !digits.starts_with('+') => Ok(m),
        _ => Err("not an octal mask from 000 to 777, such as 027".into()),
    }
}

/// Parses `--env KEY=VALUE`.
pub fn parse_assignment(s: &str) -> Result<(String, String), String> {
    let (key, value) = s.split_once('=').ok_or(
        "expected KEY=VALUE (KEY alone is not passed through: hotsup's environment already is)",
    )?;
    check_name(key)?;
    Ok((key.to_string(), value.to_string()))
}

/// A valid name, and not one of hotsup's own.
fn check_name(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "{key:?} is not a variable name (letters, digits and _, not starting with a digit)"
        ));
    }
    if crate::child::is_reserved_env(key) {
        return Err(format!(
            "{key} is hotsup's own (it sets NOTIFY_SOCKET, LISTEN_*, WATCHDOG_* and HOTSUP_* for each child's protocols) and cannot be overridden"
        ));
    }
    Ok(())
}

/// Why an environment file was refused: the line where the assignment or
/// quote at fault began, and the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileError {
    pub line: usize,
    pub cause: String,
}

impl fmt::Display for EnvFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.cause)
    }
}

/// Parses an environment file as systemd's `EnvironmentFile=` does
/// (systemd.exec(5)), into its assignments in order:
///
/// - `#` or `;` as the first non-blank character starts a comment line; a
///   comment never continues on the next line. Blank lines, and lines
///   without `=`, are ignored.
/// - `KEY=VALUE`; blanks around KEY and at both ends of VALUE are dropped.
/// - Unquoted, a backslash keeps the next character as it is (`\\` is one
///   backslash), and a backslash at the end of a line joins the next line.
///   Quotes after the value's first character are kept as they are.
/// - `'...'` keeps everything, newlines included, up to the next `'`.
/// - `"..."` may span lines: `\"`, `\\`, `` \` `` and `\$` stand for the
///   character, a backslash before a newline joins the lines, and any other
///   backslash stays.
/// - Quoted and unquoted parts written next to each other are joined.
///
/// Where systemd logs and skips, this refuses, so that a mistake cannot go
/// unnoticed: a name that is not a variable name (`export KEY=...`), a
/// quote left open at the end of the file (which would swallow the rest of
/// it), a NUL byte, invalid UTF-8, and hotsup's own variables.
pub fn parse_env_file(bytes: &[u8]) -> Result<Vec<(String, String)>, EnvFileError> {
    let text = std::str::from_utf8(bytes).map_err(|e| EnvFileError {
        line: line_of(bytes, e.valid_up_to()),
        cause: "invalid UTF-8".into(),
    })?;
    if let Some(at) = bytes.iter().position(|b| *b == 0) {
        return Err(EnvFileError {
            line: line_of(bytes, at),
            cause: "a NUL byte".into(),
        });
    }
    Parser::default().run(text)
}

/// 1-based line number of byte `at`.
fn line_of(bytes: &[u8], at: usize) -> usize {
    1 + bytes[..at].iter().filter(|b| **b == b'\n').count()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    PreKey,
    Key,
    PreValue,
    Value,
    ValueEscape,
    Single,
    Double,
    DoubleEscape,
    Comment,
    CommentEscape,
}

struct Parser {
    state: State,
    /// The line being read.
    line: usize,
    /// The line where the current assignment's key began.
    key_line: usize,
    /// The line where the open quote began.
    quote_line: usize,
    key: String,
    value: String,
    /// Where a run of unescaped trailing blanks began in `value`.
    trailing: Option<usize>,
    out: Vec<(String, String)>,
}

impl Default for Parser {
    fn default() -> Parser {
        Parser {
            state: State::PreKey,
            line: 1,
            key_line: 1,
            quote_line: 1,
            key: String::new(),
            value: String::new(),
            trailing: None,
            out: Vec::new(),
        }
    }
}

const BLANK: &[char] = &[' ', '\t'];
/// `\r` ends a line as `\n` does, as in systemd (so CRLF files work).
const NEWLINE: &[char] = &['\n', '\r'];
/// What a backslash escapes inside double quotes, as in a POSIX shell.
const DOUBLE_ESCAPABLE: &[char] = &['"', '\\', '`', '$'];

impl Parser {
    fn run(mut self, text: &str) -> Result<Vec<(String, String)>, EnvFileError> {
        use State::*;
        for c in text.chars() {
            let newline = NEWLINE.contains(&c);
            match self.state {
                PreKey => {
                    if c == '#' || c == ';' {
                        self.state = Comment;
                    } else if !newline && !BLANK.contains(&c) {
                        self.state = Key;
                        self.key_line = self.line;
                        self.key.push(c);
                    }
                }
                Key => {
                    if newline {
                        // A line without `=`: ignored, as systemd does.
                        self.key.clear();
                        self.state = PreKey;
                    } else if c == '=' {
                        self.state = PreValue;
                    } else {
                        self.key.push(c);
                    }
                }
                PreValue => {
                    if newline {
                        self.push()?;
                    } else if c == '\'' {
                        self.quote(Single);
                    } else if c == '"' {
                        self.quote(Double);
                    } else if c == '\\' {
                        self.state = ValueEscape;
                    } else if !BLANK.contains(&c) {
                        self.state = Value;
                        self.value.push(c);
                    }
                }
                Value => {
                    if newline {
                        self.push()?;
                    } else if c == '\\' {
                        self.state = ValueEscape;
                        self.trailing = None;
                    } else {
                        if !BLANK.contains(&c) {
                            self.trailing = None;
                        } else if self.trailing.is_none() {
                            self.trailing = Some(self.value.len());
                        }
                        self.value.push(c);
                    }
                }
                ValueEscape => {
                    self.state = Value;
                    // A backslash before a newline joins the lines.
                    if !newline {
                        self.value.push(c);
                    }
                }
                Single => {
                    if c == '\'' {
                        self.state = PreValue;
                    } else {
                        self.value.push(c);
                    }
                }
                Double => {
                    if c == '"' {
                        self.state = PreValue;
                    } else if c == '\\' {
                        self.state = DoubleEscape;
                    } else {
                        self.value.push(c);
                    }
                }
                DoubleEscape => {
                    self.state = Double;
                    if DOUBLE_ESCAPABLE.contains(&c) {
                        self.value.push(c);
                    } else if c != '\n' {
                        self.value.push('\\');
                        self.value.push(c);
                    }
                }
                Comment => {
                    if c == '\\' {
                        self.state = CommentEscape;
                    } else if newline {
                        self.state = PreKey;
                    }
                }
                // Since systemd 254, a backslash does not continue a comment.
                CommentEscape => self.state = if newline { PreKey } else { Comment },
            }
            if c == '\n' {
                self.line += 1;
            }
        }
        match self.state {
            PreValue | Value | ValueEscape => self.push()?,
            Single | Double | DoubleEscape => {
                return Err(EnvFileError {
                    line: self.quote_line,
                    cause: format!(
                        "the {} quote opened here is never closed",
                        if self.state == Single { "'" } else { "\"" }
                    ),
                });
            }
            PreKey | Key | Comment | CommentEscape => {}
        }
        Ok(self.out)
    }

    fn quote(&mut self, state: State) {
        self.state = state;
        self.quote_line = self.line;
    }

    /// Ends an assignment.
    fn push(&mut self) -> Result<(), EnvFileError> {
        if self.state == State::Value
            && let Some(t) = self.trailing
        {
            self.value.truncate(t);
        }
        let key = self.key.trim_end_matches(BLANK).to_string();
        check_name(&key).map_err(|cause| EnvFileError {
            line: self.key_line,
            cause,
        })?;
        self.out.push((key, std::mem::take(&mut self.value)));
        self.key.clear();
        self.trailing = None;
        self.state = State::PreKey;
        Ok(())
    }
}

/// The options as given on the command line.
pub struct Given<'a> {
    pub chdir: Option<&'a std::path::Path>,
    pub env: &'a [(String, String)],
    pub env_files: &'a [OsString],
    pub umask: Option<u32>,
    pub rlimits: &'a [Limit],
}

/// Reads the environment files and checks everything that can be checked
/// before a child exists. `listeners` is how many sockets each child
/// inherits.
pub fn build(
    given: &Given<'_>,
    identity: Option<&Identity>,
    listeners: usize,
) -> Result<ExecEnv, String> {
    let mut env = BTreeMap::new();
    for arg in given.env_files {
        for (k, v) in read_env_file(arg)? {
            env.insert(k, v);
        }
    }
    for (k, v) in given.env {
        env.insert(k.clone(), v.clone());
    }
    if let Some(dir) = given.chdir {
        check_dir(dir, identity)?;
    }
    let mut rlimits: Vec<Limit> = Vec::new();
    for l in given.rlimits {
        rlimits.retain(|x| x.resource != l.resource);
        rlimits.push(*l);
    }
    let privileged = rustix::thread::capabilities(None).is_ok_and(|c| {
        c.effective
            .contains(rustix::thread::CapabilitySet::SYS_RESOURCE)
    });
    for l in &rlimits {
        check_limit(l, privileged, listeners, &read_nr_open)?;
    }
    Ok(ExecEnv {
        chdir: given.chdir.map(std::path::Path::to_path_buf),
        env,
        umask: given.umask,
        rlimits,
    })
}

/// `--env-file [-]FILE`: its assignments, or nothing for a missing file
/// given with `-`.
fn read_env_file(arg: &OsStr) -> Result<Vec<(String, String)>, String> {
    let (optional, path) = match arg.as_bytes().strip_prefix(b"-") {
        Some(rest) => (true, std::path::Path::new(OsStr::from_bytes(rest))),
        None => (false, std::path::Path::new(arg)),
    };
    if path.as_os_str().is_empty() {
        return Err(format!("--env-file {:?}: no file named", arg));
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(path = %path.display(), "env_file_missing");
            return Ok(Vec::new());
        }
        Err(e) => return Err(format!("--env-file {}: {e}", path.display())),
    };
    parse_env_file(&bytes).map_err(|e| format!("--env-file {}: {e}", path.display()))
}

fn check_dir(dir: &std::path::Path, identity: Option<&Identity>) -> Result<(), String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("--chdir {}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("--chdir {}: not a directory", dir.display()));
    }
    if let Some(id) = identity {
        // Searching a directory is its x bit, judged as for a file.
        let has_acl = rustix::fs::getxattr_query(dir, "system.posix_acl_access").is_ok();
        if !id.may_execute(&meta, has_acl) {
            return Err(format!(
                "--chdir {}: the children ({}, {}) may not enter it (mode {:o})",
                dir.display(),
                id.given,
                id.describe(),
                std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777
            ));
        }
    }
    Ok(())
}

/// The most open files the kernel lets any process have (fs.nr_open).
fn read_nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What the kernel would refuse, found before any child is started.
fn check_limit(
    l: &Limit,
    privileged: bool,
    listeners: usize,
    nr_open: &dyn Fn() -> Option<u64>,
) -> Result<(), String> {
    let show = |x: Option<u64>| x.map_or_else(|| "infinity".to_string(), |n| n.to_string());
    if l.resource == Resource::Nofile {
        if let Some(max) = nr_open()
            && l.hard.is_none_or(|h| h > max)
        {
            return Err(format!(
                "--rlimit {l}: the kernel allows at most {max} open files (fs.nr_open)"
            ));
        }
        // Each child holds stdio, its channel and every listener; fds
        // passed beyond the limit would be dropped by the kernel.
        let needed = listeners as u64 + 4;
        if l.soft.is_some_and(|s| s < needed) {
            return Err(format!(
                "--rlimit {l}: too low for the children to hold their {listeners} listener(s), stdio and hotsup's channel (at least {needed})"
            ));
        }
    }
    let own = getrlimit(l.resource).maximum;
    // None is infinity.
    let raises = match (l.hard, own) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(h), Some(o)) => h > o,
    };
    if raises && !privileged {
        return Err(format!(
            "--rlimit {l}: the hard limit is above hotsup's own ({}), which needs CAP_SYS_RESOURCE",
            show(own)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<(String, String)>, EnvFileError> {
        parse_env_file(s.as_bytes())
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn err(s: &str) -> EnvFileError {
        parse(s).expect_err(s)
    }

    #[test]
    fn plain_assignments_comments_and_blanks() {
        let text = "# a comment\n; another\n\nA=1\n  B = two words  \nC=\nD\n\tE=e\n";
        assert_eq!(
            parse(text).unwrap(),
            pairs(&[("A", "1"), ("B", "two words"), ("C", ""), ("E", "e")])
        );
        // No newline at the end.
        assert_eq!(parse("A=1").unwrap(), pairs(&[("A", "1")]));
        assert_eq!(parse("A=").unwrap(), pairs(&[("A", "")]));
        // Later assignments come later: the caller lets them win.
        assert_eq!(
            parse("A=1\nA=2\n").unwrap(),
            pairs(&[("A", "1"), ("A", "2")])
        );
    }

    #[test]
    fn a_comment_is_a_whole_line() {
        // `#` after the value's start is part of it.
        assert_eq!(parse("A=x # y\n").unwrap(), pairs(&[("A", "x # y")]));
        // A comment ending in a backslash does not swallow the next line.
        assert_eq!(parse("# x \\\nA=1\n").unwrap(), pairs(&[("A", "1")]));
    }

    #[test]
    fn quotes() {
        assert_eq!(
            parse("A='x  \" $HOME \\n'\n").unwrap(),
            pairs(&[("A", "x  \" $HOME \\n")])
        );
        assert_eq!(
            parse(r#"A="a \"b\" \\ \$x \` \n""#).unwrap(),
            pairs(&[("A", r#"a "b" \ $x ` \n"#)])
        );
        // Blanks outside the quotes are dropped, inside kept.
        assert_eq!(parse("A=  '  x  '  \n").unwrap(), pairs(&[("A", "  x  ")]));
        // Quoted and unquoted parts next to each other are joined.
        assert_eq!(parse("A='a'\"b\"c\n").unwrap(), pairs(&[("A", "abc")]));
        // Quotes later in an unquoted value are kept.
        assert_eq!(parse("A=x'y'\n").unwrap(), pairs(&[("A", "x'y'")]));
        // Quoted values span lines.
        assert_eq!(
            parse("A='one\ntwo'\nB=\"three\nfour\"\n").unwrap(),
            pairs(&[("A", "one\ntwo"), ("B", "three\nfour")])
        );
    }

    #[test]
    fn backslashes_and_continuation() {
        assert_eq!(
            parse("A=one \\\n  two\nB=x\n").unwrap(),
            pairs(&[("A", "one   two"), ("B", "x")])
        );
        assert_eq!(
            parse("A=\"one \\\ntwo\"\n").unwrap(),
            pairs(&[("A", "one two")])
        );
        assert_eq!(parse("A=a\\\\b\\c\n").unwrap(), pairs(&[("A", "a\\bc")]));
        // An escaped blank at the end is kept, unescaped ones are not.
        assert_eq!(parse("A=x\\  \n").unwrap(), pairs(&[("A", "x ")]));
        // CRLF line ends.
        assert_eq!(
            parse("A=1\r\nB=2\r\n").unwrap(),
            pairs(&[("A", "1"), ("B", "2")])
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = err("A=1\n\nexport B=2\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.cause.contains("\"export B\""), "{e}");
        let e = err("A=1\nB='open\nC=2\n\n");
        assert_eq!(e.line, 2, "{e}");
        assert!(e.cause.contains("never closed"), "{e}");
        let e = err("A=\"x\\\"\n");
        assert_eq!(e.line, 1, "{e}");
        let e = err("A=1\n2B=x\n");
        assert_eq!(e.line, 2, "{e}");
        let e = parse_env_file(b"A=1\nB=\xff\n").unwrap_err();
        assert_eq!((e.line, e.cause.as_str()), (2, "invalid UTF-8"));
        let e = parse_env_file(b"A=1\n\nB=\0\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        // The error's line is where the assignment began.
        let e = err("A='x\ny'\nNOTIFY_SOCKET=/tmp/x\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.cause.contains("hotsup's own"), "{e}");
        assert_eq!(e.to_string().split(':').next(), Some("line 3"));
    }

    #[test]
    fn reserved_names_are_refused() {
        for k in [
            "NOTIFY_SOCKET",
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
            "LISTEN_FDS_FIRST_FD",
            "WATCHDOG_USEC",
            "HOTSUP_FD",
            "HOTSUP_GENERATION",
            "HOTSUP_ANYTHING",
        ] {
            assert!(parse_assignment(&format!("{k}=1")).is_err(), "{k}");
        }
        // An app's own LISTEN_ADDR or PORT is not hotsup's.
        assert_eq!(
            parse_assignment("LISTEN_ADDR=:80"),
            Ok(("LISTEN_ADDR".into(), ":80".into()))
        );
        assert_eq!(parse_assignment("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_assignment("A").is_err());
        assert!(parse_assignment("=x").is_err());
        assert!(parse_assignment("A-B=x").is_err());
    }

    #[test]
    fn umasks() {
        assert_eq!(parse_umask("027"), Ok(0o027));
        assert_eq!(parse_umask("0027"), Ok(0o027));
        assert_eq!(parse_umask("0o77"), Ok(0o077));
        assert_eq!(parse_umask("0"), Ok(0));
        for bad in ["", "8", "1000", "0o", "-1", "+7", "u=rwx", "0x1f"] {
            assert!(parse_umask(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rlimits() {
        let l = parse_rlimit("nofile=1024:4096").unwrap();
        assert_eq!(
            (l.resource, l.soft, l.hard),
            (Resource::Nofile, Some(1024), Some(4096))
        );
        let l = parse_rlimit("LimitCORE=infinity").unwrap();
        assert_eq!((l.resource, l.soft, l.hard), (Resource::Core, None, None));
        let l = parse_rlimit("RLIMIT_AS=0:unlimited").unwrap();
        assert_eq!((l.resource, l.soft, l.hard), (Resource::As, Some(0), None));
        // One value sets both.
        let l = parse_rlimit("nproc=50").unwrap();
        assert_eq!((l.soft, l.hard), (Some(50), Some(50)));
        let l = parse_rlimit("nice=-5").unwrap();
        assert_eq!((l.soft, l.hard), (Some(25), Some(25)));
        let l = parse_rlimit("nice=10").unwrap();
        assert_eq!(l.soft, Some(10));
        assert_eq!(l.to_string(), "nice=10:10");
        for bad in [
            "nofile",
            "files=10",
            "nofile=",
            "nofile=ten",
            "nofile=-1",
            "nofile=10:5",
            "nofile=infinity:5",
            "nofile=1:2:3",
            "nice=+20",
            "cpu=18446744073709551615",
        ] {
            assert!(parse_rlimit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_the_kernel_would_refuse() {
        let nr_open = || Some(1 << 20);
        let nofile = |s| parse_rlimit(s).unwrap();
        assert!(check_limit(&nofile("nofile=1024"), true, 1, &nr_open).is_ok());
        let e = check_limit(&nofile("nofile=infinity"), true, 1, &nr_open).unwrap_err();
        assert!(e.contains("fs.nr_open"), "{e}");
        let e = check_limit(&nofile("nofile=5:1024"), true, 2, &nr_open).unwrap_err();
        assert!(e.contains("at least 6"), "{e}");
        // Raising a hard limit above hotsup's own needs the capability.
        let own = getrlimit(Resource::Core).maximum;
        if let Some(own) = own {
            let above = parse_rlimit(&format!("core=0:{}", own + 1)).unwrap();
            assert!(check_limit(&above, false, 1, &nr_open).is_err());
            assert!(check_limit(&above, true, 1, &nr_open).is_ok());
        }
        let below = parse_rlimit("core=0").unwrap();
        assert!(check_limit(&below, false, 1, &nr_open).is_ok());
    }
}
