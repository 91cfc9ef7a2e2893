//! `--user` and `--group`: the credentials the children run with.
//!
//! Names are looked up once, before anything is bound, with the C library's
//! `getpwnam_r`, `getgrnam_r` and `getgrouplist`, so every NSS source the
//! system is configured with (files, LDAP, systemd's dynamic users) counts.
//! The child switches with raw syscalls between fork and exec
//! (`child::prepare_child`), from the values resolved here.

use std::ffi::{CStr, CString, OsString};
use std::fs::Metadata;
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use rustix::process::{Gid, Uid};
use rustix::thread::CapabilitySet;

/// Largest buffer offered to `getpwnam_r` and friends. A group entry lists
/// its members, so it can be large; past this, the lookup is an error
/// rather than an allocation without bound.
const MAX_BUFFER: usize = 4 << 20;
/// Linux's `NGROUPS_MAX`: `setgroups` takes no more.
const MAX_GROUPS: usize = 65536;

/// The user database entry of `--user`.
#[derive(Debug, Clone)]
pub struct User {
    pub name: OsString,
    pub home: Option<PathBuf>,
}

/// Who the children run as.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `None` with `--group` alone: the children keep hotsup's uid.
    pub uid: Option<Uid>,
    pub gid: Gid,
    /// Supplementary groups: the user's (`getgrouplist`), or just `gid`
    /// with `--group` alone or a uid that has no entry.
    pub groups: Vec<Gid>,
    /// The user's entry, when it has one: `USER`, `LOGNAME` and `HOME` of
    /// the children come from it.
    pub user: Option<User>,
    /// The options as given, for messages: `--user www-data`.
    pub given: String,
}

/// Why `--user` or `--group` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--user {0:?}: no such user")]
    NoSuchUser(String),
    #[error("--group {0:?}: no such group")]
    NoSuchGroup(String),
    #[error(
        "--user {0:?}: uid {0} has no entry in the user database, so no primary group: give --group too"
    )]
    NoPrimaryGroup(String),
    #[error("{flag} {input:?}: {id} is not a usable id")]
    BadId {
        flag: &'static str,
        input: String,
        id: u32,
    },
    #[error("{flag} {input:?}: cannot look it up: {source}")]
    Lookup {
        flag: &'static str,
        input: String,
        source: io::Error,
    },
}

/// Resolves `--user` and `--group`; `None` when neither is given.
///
/// A name is looked up first; a number that is not a name is taken as an
/// id, as chown(1) does. `--user` without `--group` takes the user's
/// primary group.
pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<Identity>, Error> {
    let given = match (user, group) {
        (None, None) => return Ok(None),
        (Some(u), None) => format!("--user {u}"),
        (None, Some(g)) => format!("--group {g}"),
        (Some(u), Some(g)) => format!("--user {u} --group {g}"),
    };
    let group_gid = group.map(find_group).transpose()?;
    let Some(user) = user else {
        return Ok(group_gid.map(|gid| Identity {
            uid: None,
            gid,
            groups: vec![gid],
            user: None,
            given,
        }));
    };
    let (uid, entry) = find_user(user)?;
    let gid = match (group_gid, &entry) {
        (Some(gid), _) => gid,
        (None, Some(pw)) => Gid::from_raw(pw.gid),
        (None, None) => return Err(Error::NoPrimaryGroup(user.to_owned())),
    };
    let groups = match &entry {
        Some(pw) => {
            let lookup_err = |source| Error::Lookup {
                flag: "--user",
                input: user.to_owned(),
                source,
            };
            let name = CString::new(pw.name.clone().into_vec())
                .map_err(|e| lookup_err(io::Error::other(e)))?;
            group_list(&name, gid).map_err(lookup_err)?
        }
        None => vec![gid],
    };
    Ok(Some(Identity {
        uid: Some(uid),
        gid,
        groups,
        user: entry.map(|pw| User {
            name: pw.name,
            home: pw.home,
        }),
        given,
    }))
}

impl Identity {
    /// Checks that hotsup can switch a child to these credentials:
    /// `setgroups` and `setgid` need CAP_SETGID, `setuid` CAP_SETUID, and
    /// handing the notify socket to the children CAP_CHOWN; root has them
    /// all. Checked before anything is bound, so a hotsup that could never
    /// start a child fails at once.
    pub fn check_privileges(&self) -> Result<(), String> {
        let caps = rustix::thread::capabilities(None)
            .map_err(|e| format!("{}: cannot read hotsup's capabilities: {e}", self.given))?
            .effective;
        let mut missing = Vec::new();
        if self.uid.is_some() && !caps.contains(CapabilitySet::SETUID) {
            missing.push("CAP_SETUID");
        }
        if !caps.contains(CapabilitySet::SETGID) {
            missing.push("CAP_SETGID");
        }
        if !caps.contains(CapabilitySet::CHOWN) {
            missing.push("CAP_CHOWN");
        }
        if missing.is_empty() {
            return Ok(());
        }
        let whom = if self.uid.is_some() { "user" } else { "group" };
        Err(format!(
            "{}: hotsup cannot run its children as another {whom}: it lacks {} (run hotsup as root)",
            self.given,
            missing.join(", ")
        ))
    }

    /// Whether these credentials may execute the file `meta` describes,
    /// by its mode bits, as the kernel decides for a file without an ACL.
    /// A file with an access ACL is not judged (`true`): the kernel will.
    pub fn may_execute(&self, meta: &Metadata, has_acl: bool) -> bool {
        if has_acl {
            return true;
        }
        let uid = self.uid.unwrap_or_else(rustix::process::geteuid);
        let mode = meta.mode();
        if uid.is_root() {
            return mode & 0o111 != 0;
        }
        if meta.uid() == uid.as_raw() {
            mode & 0o100 != 0
        } else if meta.gid() == self.gid.as_raw()
            || self.groups.iter().any(|g| g.as_raw() == meta.gid())
        {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    }

    /// For logs: `uid=65534 gid=65534 groups=65534`.
    pub fn describe(&self) -> String {
        let uid = self
            .uid
            .map_or_else(|| "unchanged".to_string(), |u| u.as_raw().to_string());
        let groups: Vec<String> = self.groups.iter().map(|g| g.as_raw().to_string()).collect();
        format!(
            "uid={uid} gid={} groups={}",
            self.gid.as_raw(),
            groups.join(",")
        )
    }
}

/// A user's entry, with what hotsup uses of it.
struct Passwd {
    name: OsString,
    gid: u32,
    home: Option<PathBuf>,
}

enum Key<'a> {
    Name(&'a CStr),
    Id(u32),
}

/// `--user`: a name, else a numeric uid (with its entry, if it has one).
fn find_user(input: &str) -> Result<(Uid, Option<Passwd>), Error> {
    let lookup_err = |source| Error::Lookup {
        flag: "--user",
        input: input.to_owned(),
        source,
    };
    if let Ok(name) = CString::new(input)
        && let Some((uid, pw)) = passwd(&Key::Name(&name)).map_err(lookup_err)?
    {
        return Ok((Uid::from_raw(uid), Some(pw)));
    }
    let id = input
        .parse::<u32>()
        .map_err(|_| Error::NoSuchUser(input.to_owned()))?;
    // (uid_t)-1 means "unchanged" to setresuid.
    if id == u32::MAX {
        return Err(Error::BadId {
            flag: "--user",
            input: input.to_owned(),
            id,
        });
    }
    let entry = passwd(&Key::Id(id)).map_err(lookup_err)?;
    Ok((Uid::from_raw(id), entry.map(|(_, pw)| pw)))
}

/// `--group`: a name, else a numeric gid.
fn find_group(input: &str) -> Result<Gid, Error> {
    if let Ok(name) = CString::new(input) {
        let found = group_id(&name).map_err(|source| Error::Lookup {
            flag: "--group",
            input: input.to_owned(),
            source,
        })?;
        if let Some(gid) = found {
            return Ok(Gid::from_raw(gid));
        }
    }
    let id = input
        .parse::<u32>()
        .map_err(|_| Error::NoSuchGroup(input.to_owned()))?;
    if id == u32::MAX {
        return Err(Error::BadId {
            flag: "--group",
            input: input.to_owned(),
            id,
        });
    }
    Ok(Gid::from_raw(id))
}

/// Calls a `get*_r` function through `call`, growing the buffer while it
/// reports ERANGE. `call` returns the function's code and, on success, what
/// it copied out of the buffer.
fn with_buffer<T>(
    mut call: impl FnMut(&mut [u8]) -> (libc::c_int, Option<T>),
) -> io::Result<Option<T>> {
    let mut len = 1024;
    loop {
        let mut buf = vec![0u8; len];
        match call(&mut buf) {
            (0, found) => return Ok(found),
            (libc::ERANGE, _) if len < MAX_BUFFER => len *= 2,
            // getpwnam_r(3): "0 or ENOENT or ESRCH or EBADF or EPERM or
            // ...: the given name or uid was not found".
            (libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM, _) => return Ok(None),
            (rc, _) => return Err(io::Error::from_raw_os_error(rc)),
        }
    }
}

/// A copy of a C string owned by a `get*_r` buffer.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string that is alive during
/// the call.
unsafe fn copy_str(p: *const libc::c_char) -> Option<OsString> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null, and NUL-terminated and alive by this function's
    // contract.
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    Some(OsString::from_vec(bytes.to_vec()))
}

/// A user's uid and entry.
fn passwd(key: &Key<'_>) -> io::Result<Option<(u32, Passwd)>> {
    with_buffer(|buf| {
        let mut pwd = MaybeUninit::<libc::passwd>::uninit();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: the name is NUL-terminated; `pwd` and `result` are
        // writable locals; `buf` is writable for `buf.len()` bytes. The
        // function writes only through these pointers.
        let rc = unsafe {
            match key {
                Key::Name(name) => libc::getpwnam_r(
                    name.as_ptr(),
                    pwd.as_mut_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut result,
                ),
                Key::Id(uid) => libc::getpwuid_r(
                    *uid,
                    pwd.as_mut_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut result,
                ),
            }
        };
        if rc != 0 || result.is_null() {
            return (rc, None);
        }
        // SAFETY: on success with a non-null result, `result` points to
        // `pwd`, filled in, whose strings point into `buf`, alive until this
        // closure returns; they are copied before it does.
        let found = unsafe {
            let pw = &*result;
            copy_str(pw.pw_name).map(|name| {
                let home = copy_str(pw.pw_dir)
                    .filter(|h| !h.is_empty())
                    .map(PathBuf::from);
                (
                    pw.pw_uid,
                    Passwd {
                        name,
                        gid: pw.pw_gid,
                        home,
                    },
                )
            })
        };
        (0, found)
    })
}

/// A group's gid, by name.
fn group_id(name: &CStr) -> io::Result<Option<u32>> {
    with_buffer(|buf| {
        let mut grp = MaybeUninit::<libc::group>::uninit();
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: as for getpwnam_r in `passwd`: valid, writable pointers
        // and a buffer of `buf.len()` bytes.
        let rc = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                grp.as_mut_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 || result.is_null() {
            return (rc, None);
        }
        // SAFETY: on success with a non-null result, `result` points to the
        // filled-in `grp`.
        (0, Some(unsafe { (*result).gr_gid }))
    })
}

/// The groups `user` belongs to, `gid` included.
fn group_list(user: &CStr, gid: Gid) -> io::Result<Vec<Gid>> {
    let mut room: libc::c_int = 64;
    loop {
        let mut groups: Vec<libc::gid_t> = vec![0; room as usize];
        let mut count = room;
        // SAFETY: `user` is NUL-terminated; `groups` has room for `count`
        // entries, and getgrouplist writes at most that many.
        let rc = unsafe {
            libc::getgrouplist(user.as_ptr(), gid.as_raw(), groups.as_mut_ptr(), &mut count)
        };
        if rc >= 0 {
            groups.truncate(usize::try_from(count).unwrap_or(0));
            return Ok(groups.into_iter().map(Gid::from_raw).collect());
        }
        // Too many for the buffer: glibc stores the number needed in
        // `count`; other C libraries may not, so at least double.
        let next = count.max(room.saturating_mul(2));
        if next as usize > MAX_GROUPS {
            return Err(io::Error::other(format!(
                "it belongs to more than {MAX_GROUPS} groups"
            )));
        }
        room = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_by_name_and_number() {
        let by_name = resolve(Some("root"), None).unwrap().unwrap();
        assert_eq!(by_name.uid, Some(Uid::ROOT));
        assert_eq!(by_name.gid, Gid::ROOT);
        assert!(by_name.groups.contains(&Gid::ROOT));
        assert_eq!(by_name.user.unwrap().name, "root");
        let by_number = resolve(Some("0"), Some("0")).unwrap().unwrap();
        assert_eq!(by_number.uid, Some(Uid::ROOT));
        assert_eq!(by_number.given, "--user 0 --group 0");
    }

    #[test]
    fn unknown_names_are_refused() {
        let e = resolve(Some("no-such-user-hotsup"), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--user \"no-such-user-hotsup\": no such user"
        );
        let e = resolve(None, Some("no-such-group-hotsup")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--group \"no-such-group-hotsup\": no such group"
        );
        assert!(matches!(
            resolve(Some("4294967295"), None),
            Err(Error::BadId { .. })
        ));
    }

    #[test]
    fn a_uid_without_entry_needs_a_group() {
        // Far above any uid a test machine hands out.
        let e = resolve(Some("3999999999"), None).unwrap_err();
        assert!(matches!(e, Error::NoPrimaryGroup(_)), "{e}");
        let id = resolve(Some("3999999999"), Some("3999999998"))
            .unwrap()
            .unwrap();
        assert_eq!(id.uid, Some(Uid::from_raw(3999999999)));
        assert_eq!(id.groups, vec![Gid::from_raw(3999999998)]);
        assert!(id.user.is_none());
    }

    #[test]
    fn group_alone_keeps_the_uid() {
        let id = resolve(None, Some("0")).unwrap().unwrap();
        assert_eq!(id.uid, None);
        assert_eq!(id.groups, vec![Gid::ROOT]);
    }
}
