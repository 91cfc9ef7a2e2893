//! Giving back the memory start-up used and the supervisor never touches
//! again, so that hotsup's resident set is what its loop needs.
//!
//! Most of hotsup's RSS is pages of code: its own and the C library's,
//! mapped from files. Start-up (argument parsing, `--help` tables,
//! validation, binding) runs code the loop never runs again, and the kernel
//! maps every file page around one that is touched (`fault_around_bytes`,
//! 64 KiB). [`release_startup_pages`] unmaps the resident pages of the
//! executable mappings, which only costs a minor fault (the page is still
//! in the page cache, nothing is read from disk) for each page the loop
//! runs again, and returns the heap that start-up freed to the kernel.

/// Unmaps the resident pages of every executable file mapping (hotsup's
/// code and the shared libraries') and trims the malloc heap. Call once,
/// after start-up and before the event loop; best effort, errors ignored.
///
/// Only mappings that are executable, not writable, and have no page that
/// was ever written (smaps' `Anonymous: 0 kB`; a library with text
/// relocations has some): dropping their pages loses nothing, and the next
/// access maps the same page again from the file. Data, RELRO and anything
/// else written keeps its pages: `MADV_DONTNEED` would throw them away.
pub fn release_startup_pages() {
    // /proc is not a disk: reading it does not block on I/O.
    if let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") {
        for (start, end) in unwritten_code_mappings(&smaps) {
            // SAFETY: the range is a whole mapping of this process, read
            // from /proc/self/smaps: executable, not writable, backed by a
            // file and never written, so MADV_DONTNEED only drops its
            // page-table entries and every later access maps the unchanged
            // file page again. Nothing unmaps these mappings meanwhile
            // (hotsup never unloads a shared library).
            let _ = unsafe {
                rustix::mm::madvise(
                    start as *mut std::ffi::c_void,
                    end - start,
                    rustix::mm::Advice::LinuxDontNeed,
                )
            };
        }
    }
    crate::sys::trim_heap();
}

/// The `(start, end)` of each mapping in `smaps` (the format of
/// `/proc/PID/smaps`) that is backed by a file, executable, not writable
/// and without anonymous (copied-on-write) pages. Kernel mappings
/// (`[vdso]`, `[vsyscall]`) are left out.
fn unwritten_code_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    // The mapping being read, if it is code; dropped when it turns out to
    // have anonymous pages.
    let mut current: Option<(usize, usize)> = None;
    let mut clean = false;
    for line in smaps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(first) = fields.next() else {
            continue;
        };
        if let Some(kb) = first.strip_prefix("Anonymous:").map(|_| fields.next()) {
            clean = kb == Some("0");
            continue;
        }
        if first.ends_with(':') {
            continue;
        }
        // A mapping's header: `start-end perms offset dev inode [path]`.
        if let Some(range) = current.take().filter(|_| clean) {
            out.push(range);
        }
        clean = false;
        let perms = fields.next().unwrap_or("").as_bytes();
        let path = fields.nth(3).unwrap_or("");
        let code = perms.get(2) == Some(&b'x') && perms.get(1) == Some(&b'-');
        if !code || !path.starts_with('/') {
            continue;
        }
        let Some((start, end)) = first.split_once('-') else {
            continue;
        };
        if let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) && start < end
        {
            current = Some((start, end));
        }
    }
    if let Some(range) = current.filter(|_| clean) {
        out.push(range);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unwritten_read_only_code_backed_by_a_file() {
        let mapping = |header: &str, anonymous: u32| {
            format!("{header}\nSize: 4 kB\nRss: 4 kB\nAnonymous: {anonymous} kB\nVmFlags: rd ex\n")
        };
        let smaps = [
            mapping(
                "55d0c0000000-55d0c0100000 r--p 00000000 08:01 1234 /usr/bin/hotsup",
                0,
            ),
            mapping(
                "55d0c0100000-55d0c0300000 r-xp 00100000 08:01 1234 /usr/bin/hotsup",
                0,
            ),
            mapping(
                "55d0c0300000-55d0c0310000 rw-p 00300000 08:01 1234 /usr/bin/hotsup",
                8,
            ),
            mapping("55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0 [heap]", 64),
            mapping("7f0000000000-7f0000001000 rwxp 00000000 00:00 0", 4),
            // Text relocations: written once, so not dropped.
            mapping(
                "7f0000050000-7f0000060000 r-xp 00000000 08:01 98 /usr/lib/libold.so",
                4,
            ),
            mapping(
                "7f0000100000-7f0000200000 r-xp 00028000 08:01 99 /usr/lib/libc.so.6",
                0,
            ),
            mapping("7f0000300000-7f0000302000 r-xp 00000000 00:00 0 [vdso]", 0),
            mapping(
                "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]",
                0,
            ),
            mapping(
                "7f0000400000-7f0000401000 r-xp 00000000 08:01 7 /tmp/with space (deleted)",
                0,
            ),
        ]
        .concat();
        assert_eq!(
            unwritten_code_mappings(&smaps),
            [
                (0x55d0c0100000, 0x55d0c0300000),
                (0x7f0000100000, 0x7f0000200000),
                (0x7f0000400000, 0x7f0000401000),
            ]
        );
    }

    #[test]
    fn finds_this_process_code() {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let ours = unwritten_code_mappings(&smaps);
        let here = finds_this_process_code as *const () as usize;
        assert!(
            ours.iter()
                .any(|&(start, end)| (start..end).contains(&here)),
            "{ours:x?}"
        );
    }

    #[test]
    fn code_runs_after_its_pages_were_dropped() {
        let before = std::hint::black_box(vec![1u8, 2, 3]);
        release_startup_pages();
        let after: u32 = before.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(after, 6);
    }
}
