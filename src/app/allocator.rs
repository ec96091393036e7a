//! Memory and descriptors under load: the two process-wide resources a burst
//! of connections consumes.
//!
//! Allocator decision: the system allocator (glibc malloc), with its free
//! memory handed back after a burst by `malloc_trim` (see [`trim`]). mimalloc
//! was measured before: +2–3 % throughput but a steady resident set of
//! 28–29 MiB against 19 MiB. glibc keeps freed memory in its arenas by
//! default, which left a sidecar at several times its idle size after a
//! connection flood; trimming when a burst has passed returns it.

/// Give freed heap memory back to the system (glibc only; a no-op elsewhere).
pub fn trim() {
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
