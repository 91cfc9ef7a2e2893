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
/// Only mappings that are executable and not writable: their pages are
/// never written (no text relocations in a PIE), so dropping them loses
/// nothing and the next access maps the same page again from the file.
/// Writable or once-written mappings (data, RELRO) are never touched:
/// `MADV_DONTNEED` would throw their contents away.
pub fn release_startup_pages() {
    // /proc is not a disk: reading it does not block on I/O.
    if let Ok(maps) = std::fs::read_to_string("/proc/self/maps") {
        for (start, end) in executable_file_mappings(&maps) {
            // SAFETY: the range is a whole mapping of this process, read
            // from /proc/self/maps, executable, not writable and backed by
            // a file: MADV_DONTNEED only drops its page-table entries, and
            // every later access maps the unchanged file page again. Nothing
            // unmaps these mappings meanwhile (shared libraries are never
            // unloaded in hotsup).
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

/// The `(start, end)` of each mapping in `maps` (the format of
/// `/proc/PID/maps`) that is backed by a file, executable and not
/// writable. Kernel mappings (`[vdso]`, `[vsyscall]`) are left out.
fn executable_file_mappings(maps: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            let path = fields.nth(3)?;
            let perms = perms.as_bytes();
            let code = perms.get(2) == Some(&b'x') && perms.get(1) == Some(&b'-');
            if !code || !path.starts_with('/') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (start < end).then_some((start, end))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_read_only_code_backed_by_a_file() {
        let maps = "\
55d0c0000000-55d0c0100000 r--p 00000000 08:01 1234 /usr/bin/hotsup
55d0c0100000-55d0c0300000 r-xp 00100000 08:01 1234 /usr/bin/hotsup
55d0c0300000-55d0c0310000 rw-p 00300000 08:01 1234 /usr/bin/hotsup
55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000001000 rwxp 00000000 00:00 0
7f0000100000-7f0000200000 r-xp 00028000 08:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000300000-7f0000302000 r-xp 00000000 00:00 0 [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]
7f0000400000-7f0000401000 r-xp 00000000 08:01 7 /tmp/with space (deleted)
";
        assert_eq!(
            executable_file_mappings(maps),
            [
                (0x55d0c0100000, 0x55d0c0300000),
                (0x7f0000100000, 0x7f0000200000),
                (0x7f0000400000, 0x7f0000401000),
            ]
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
