//! Which changed paths count as a save.
//!
//! Skipped, always: anything under a directory named `target` or `.git`
//! below a watched path, the COMMAND's own file (what a build writes), and
//! editors' swap and backup files (`*.swp`, `*~`, `.#*`, `#*#`, vim's
//! `4913` probe). Then `--watch-ignore` patterns, and the `.ignore`,
//! `.gitignore`, `.git/info/exclude` and git's global excludes file that
//! apply to the path, with gitignore rules: a deeper file overrides a
//! shallower one, `.ignore` overrides `.gitignore`, `!pattern` re-includes.
//!
//! Ignore files are looked for below each watched path and in its parents
//! up to the repository's root (the directory holding `.git`); they are
//! read again when one of them changes.

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// Names of the ignore files in a directory, most important first.
const IGNORE_FILES: [&str; 2] = [".ignore", ".gitignore"];
/// Directories whose contents never count: build outputs and git's store.
const SKIPPED_DIRS: [&str; 2] = ["target", ".git"];

pub struct Filter {
    /// The watched paths, absolute and canonical.
    roots: Vec<PathBuf>,
    /// Files whose changes never count (the COMMAND, as built).
    outputs: Vec<PathBuf>,
    /// `--watch-ignore`, rooted at the working directory.
    extra: Gitignore,
    cwd: PathBuf,
    /// Every ignore file that applies somewhere, deepest directory first.
    ignores: Vec<Gitignore>,
}

impl Filter {
    /// `roots` are absolute and canonical; `patterns` are gitignore lines
    /// relative to the working directory `cwd`.
    pub fn new(
        roots: Vec<PathBuf>,
        outputs: Vec<PathBuf>,
        patterns: &[String],
        cwd: PathBuf,
    ) -> Result<Filter, String> {
        let mut b = GitignoreBuilder::new(&cwd);
        for p in patterns {
            b.add_line(None, p)
                .map_err(|e| format!("--watch-ignore {p:?}: {e}"))?;
        }
        let extra = b.build().map_err(|e| format!("--watch-ignore: {e}"))?;
        let mut f = Filter {
            roots,
            outputs,
            extra,
            cwd,
            ignores: Vec::new(),
        };
        f.reload();
        Ok(f)
    }

    /// Reads every applicable ignore file again. A file that cannot be
    /// parsed counts for what could be read of it.
    pub fn reload(&mut self) {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for root in &self.roots {
            // Parents up to the repository's root; none outside a
            // repository, where a stray ~/.gitignore would not apply.
            let repo = root
                .ancestors()
                .find(|a| a.join(".git").exists())
                .map(Path::to_path_buf);
            if let Some(repo) = &repo {
                for a in root.ancestors().skip(1) {
                    dirs.push(a.to_path_buf());
                    if a == repo {
                        break;
                    }
                }
            }
            // Below the root, without descending into what is ignored.
            let walk = ignore::WalkBuilder::new(root)
                .hidden(false)
                .follow_links(false)
                .filter_entry(|e| {
                    !e.file_name()
                        .to_str()
                        .is_some_and(|n| SKIPPED_DIRS.contains(&n))
                })
                .build();
            for entry in walk.flatten() {
                if entry.file_type().is_some_and(|t| t.is_dir()) {
                    dirs.push(entry.into_path());
                }
            }
        }
        dirs.sort();
        dirs.dedup();
        // Deepest first: the nearest ignore file decides.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        let mut ignores = Vec::new();
        for dir in &dirs {
            for name in IGNORE_FILES {
                let file = dir.join(name);
                if file.is_file() {
                    let (gi, _partial_error) = Gitignore::new(&file);
                    ignores.push(gi);
                }
            }
            if dir.join(".git").is_dir() {
                let mut local = vec![dir.join(".git/info/exclude")];
                local.extend(ignore::gitignore::gitconfig_excludes_path());
                for file in local.into_iter().filter(|f| f.is_file()) {
                    let mut b = GitignoreBuilder::new(dir);
                    b.add(&file);
                    if let Ok(gi) = b.build() {
                        ignores.push(gi);
                    }
                }
            }
        }
        self.ignores = ignores;
    }

    /// Whether a change of `path` (absolute) should be ignored.
    pub fn ignored(&self, path: &Path, is_dir: bool) -> bool {
        let Some(root) = self
            .roots
            .iter()
            .filter(|r| path.starts_with(r))
            .max_by_key(|r| r.components().count())
        else {
            return true;
        };
        let Ok(rel) = path.strip_prefix(root) else {
            return true;
        };
        if rel.components().any(|c| match c {
            Component::Normal(n) => n.to_str().is_some_and(|n| SKIPPED_DIRS.contains(&n)),
            _ => false,
        }) {
            return true;
        }
        if self.outputs.iter().any(|o| o == path) {
            return true;
        }
        if path.file_name().is_some_and(editor_scratch) {
            return true;
        }
        let extra_rel = path.strip_prefix(&self.cwd).unwrap_or(rel);
        if matches!(
            first_match(&self.extra, extra_rel, is_dir),
            Match::Ignore(_)
        ) {
            return true;
        }
        for gi in &self.ignores {
            let Ok(rel) = path.strip_prefix(gi.path()) else {
                continue;
            };
            match first_match(gi, rel, is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        false
    }

    /// Whether `path` is an ignore file, whose change means reading them
    /// again rather than a save.
    pub fn is_ignore_file(path: &Path) -> bool {
        path.file_name()
            .and_then(OsStr::to_str)
            .is_some_and(|n| IGNORE_FILES.contains(&n))
            || path.ends_with(".git/info/exclude")
    }
}

/// The match for `rel` (relative to the matcher's directory) or, failing
/// that, for the nearest of its parents that matches.
fn first_match<'a>(
    gi: &'a Gitignore,
    rel: &Path,
    is_dir: bool,
) -> Match<&'a ignore::gitignore::Glob> {
    if rel.as_os_str().is_empty() {
        return Match::None;
    }
    match gi.matched(rel, is_dir) {
        Match::None => {}
        m => return m,
    }
    let mut p = rel;
    while let Some(parent) = p.parent() {
        if parent.as_os_str().is_empty() {
            break;
        }
        match gi.matched(parent, true) {
            Match::None => p = parent,
            m => return m,
        }
    }
    Match::None
}

/// Files editors write beside the one being edited.
fn editor_scratch(name: &OsStr) -> bool {
    let Some(n) = name.to_str() else {
        return false;
    };
    n.ends_with('~')
        || n.ends_with(".swp")
        || n.ends_with(".swx")
        || n.ends_with(".swo")
        || n.starts_with(".#")
        || (n.len() > 1 && n.starts_with('#') && n.ends_with('#'))
        || n == "4913"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical");
        std::fs::create_dir_all(root.join(".git/info")).unwrap();
        std::fs::create_dir_all(root.join("src/gen")).unwrap();
        std::fs::create_dir_all(root.join("target/debug")).unwrap();
        std::fs::write(root.join(".gitignore"), "*.log\n/build/\n!keep.log\n").unwrap();
        std::fs::write(root.join("src/.gitignore"), "gen/\n").unwrap();
        std::fs::write(root.join(".git/info/exclude"), "local.txt\n").unwrap();
        (dir, root)
    }

    #[test]
    fn skips_build_outputs_ignored_and_scratch_files() {
        let (_dir, root) = setup();
        let app = root.join("bin/app");
        let f = Filter::new(
            vec![root.clone()],
            vec![app.clone()],
            &["*.tmp".to_string(), "docs/".to_string()],
            root.clone(),
        )
        .expect("filter");
        let ignored = |p: &str| f.ignored(&root.join(p), false);
        assert!(!ignored("src/main.rs"));
        assert!(!ignored("templates/index.html"));
        assert!(ignored("target/debug/app"));
        assert!(ignored("src/target/x"));
        assert!(ignored(".git/index"));
        assert!(ignored("bin/app"));
        assert!(!ignored("bin/other"));
        assert!(ignored("server.log"));
        assert!(!ignored("keep.log"), "re-included by !keep.log");
        assert!(ignored("build/out.o"));
        assert!(ignored("src/gen/code.rs"), "src/.gitignore");
        assert!(ignored("local.txt"), ".git/info/exclude");
        assert!(ignored("notes.tmp"), "--watch-ignore");
        assert!(ignored("docs/a.md"), "--watch-ignore dir");
        assert!(ignored("src/.main.rs.swp"));
        assert!(ignored("src/main.rs~"));
        assert!(ignored("src/4913"));
        assert!(ignored("src/.#main.rs"));
        assert!(f.ignored(Path::new("/elsewhere/x.rs"), false), "outside");
    }

    #[test]
    fn reload_picks_up_a_new_gitignore() {
        let (_dir, root) = setup();
        let mut f = Filter::new(vec![root.clone()], Vec::new(), &[], root.clone()).unwrap();
        assert!(!f.ignored(&root.join("src/a.css"), false));
        std::fs::write(root.join("src/.ignore"), "*.css\n").unwrap();
        assert!(Filter::is_ignore_file(&root.join("src/.ignore")));
        f.reload();
        assert!(f.ignored(&root.join("src/a.css"), false));
    }

    #[test]
    fn a_watched_subdirectory_honours_the_repository_gitignore() {
        let (_dir, root) = setup();
        let src = root.join("src");
        let f = Filter::new(vec![src.clone()], Vec::new(), &[], root.clone()).unwrap();
        assert!(f.ignored(&src.join("debug.log"), false));
        assert!(!f.ignored(&src.join("lib.rs"), false));
        // `target` above the watched path is not a reason.
        let t = root.join("target/debug");
        let f = Filter::new(vec![t.clone()], Vec::new(), &[], root.clone()).unwrap();
        assert!(!f.ignored(&t.join("x.rs"), false));
    }
}
