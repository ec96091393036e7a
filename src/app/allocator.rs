//! Memory and descriptors under load: the two process-wide resources a burst
//! of connections consumes.
//!
//! Allocator decision: jemalloc for the binary on Linux (`src/main.rs`), with
//! freed memory handed back after a burst (see [`trim`]). Measured, under a
//! process that has cached 100,000 users, against glibc's malloc (this module's
//! allocator until then) and mimalloc:
//! - glibc: the cache's entries and the blocks its misses freed leave the heap
//!   fragmented, and every request then pays for it: the allocator's share of
//!   the proxy's CPU went from 7 % to 11.5 % (perf, cpu-clock, one user's
//!   load in a fresh process and in one that had cached 100,000 users), and
//!   the same load ran 15–20 % slower (the many-users row's 0.73–0.89× of
//!   the few-users one). hyper's 8 KiB read buffer, allocated anew for every
//!   message, is above glibc's per-thread cache and takes malloc's bin search.
//! - jemalloc: the share stays at 6.2 % in both, the two processes serve the
//!   same load at the same rate, and 100,000 cached users peak at ~46 MiB
//!   (glibc ~47.5 MiB); at rest it holds ~2 MiB more than glibc.
//! - mimalloc: also flat, but 34 MiB at rest and 66 MiB with 100,000 users.
//!
//! The price: jemalloc holds ~3 KiB more per open connection (`bench/flood`:
//! a 59 MiB peak at 1,500 half-open connections against glibc's 47 MiB).
//!
//! C libraries (SQLite) still allocate with glibc's malloc, so [`trim`] hands
//! back both heaps.

/// The binary's global allocator (`src/main.rs` installs [`GLOBAL`]): the
/// one place that says which targets get jemalloc, beside [`trim`], which
/// must purge the same allocator. The library's own test binaries keep the
/// system allocator.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
pub type Global = tikv_jemallocator::Jemalloc;
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
pub const GLOBAL: Global = tikv_jemallocator::Jemalloc;
#[cfg(not(all(target_os = "linux", not(target_env = "musl"))))]
pub type Global = std::alloc::System;
#[cfg(not(all(target_os = "linux", not(target_env = "musl"))))]
pub const GLOBAL: Global = std::alloc::System;

/// Give freed heap memory back to the system: jemalloc's dirty pages (the
/// binary's allocations) and glibc's free lists (C libraries'). A no-op where
/// neither is in use.
pub fn trim() {
    #[cfg(all(target_os = "linux", not(target_env = "musl")))]
    {
        // "arena.<MALLCTL_ARENAS_ALL>.purge": every arena's unused dirty pages.
        const PURGE_ALL: &[u8] = b"arena.4096.purge\0";
        // SAFETY: a void mallctl (no old or new value); the name is a
        // NUL-terminated static string.
        unsafe {
            tikv_jemalloc_sys::mallctl(
                PURGE_ALL.as_ptr().cast(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            );
        }
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists; it
        // takes the arena locks itself and has no preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// File descriptors kept free for everything that is not a client connection
/// (the ops listener and its probes, the store's pool, log files, the policy
/// watcher) so that probes keep answering while the data listener is full.
const RESERVED_FDS: u64 = 128;

/// Raise the soft limit on open files to the hard limit (the default soft
/// limit of 1024 is a legacy of `select`, which rolegate does not use), and
/// return the number of client connections that fit: each may hold one
/// upstream connection too, so half of what is left after the reserve.
pub fn connection_budget() -> Option<usize> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit write/read the struct we own.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        let usable = lim.rlim_cur.saturating_sub(RESERVED_FDS) / 2;
        Some(usize::try_from(usable).unwrap_or(usize::MAX).max(1))
    }
    #[cfg(not(unix))]
    {
        None
    }
}
