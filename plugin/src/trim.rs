//! When the plugin gives the process's free memory back to the kernel: once a backlog is
//! over, twice (when the collects stop finding records, and again once the host's outputs
//! have surely sent the last chunks), never during one, and at most once per
//! [`TRIM_AFTER_BYTES`] handed over, so a trickle of small objects does not trim every few
//! seconds. The host's chunk and output buffers of a backlog stay resident in glibc's
//! arenas otherwise: 63 MB resident when idle after the bench backlog at 4M batches, 39–43
//! MB with them given back (BENCHMARKS.md).

/// Collects in a row that found nothing, for the first and the second trim.
const FIRST: u32 = 5;
const SECOND: u32 = 30;

/// A trim follows at least this many bytes handed over since the last one.
pub const TRIM_AFTER_BYTES: usize = 16 << 20;

#[derive(Debug, Default)]
pub struct AfterBacklog {
    handed: usize,
    quiet: u32,
    /// The first trim of this quiet spell was made: the second may follow.
    first_made: bool,
}

impl AfterBacklog {
    /// A collect handed `bytes` over.
    pub fn handed(&mut self, bytes: usize) {
        self.handed = self.handed.saturating_add(bytes);
        self.quiet = 0;
        self.first_made = false;
    }

    /// A collect found nothing ready. `true`: give free memory back now.
    pub fn quiet(&mut self) -> bool {
        self.quiet = self.quiet.saturating_add(1);
        if self.quiet == FIRST && self.handed >= TRIM_AFTER_BYTES {
            self.handed = 0;
            self.first_made = true;
            return true;
        }
        if self.quiet == SECOND && self.first_made {
            self.first_made = false;
            return true;
        }
        false
    }
}

/// Hands the free memory of every glibc arena back to the kernel (`malloc_trim`). It frees
/// nothing in use. On other C libraries it does nothing.
pub fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointers; it only returns free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The collects (of `n` quiet ones) at which a trim is made.
    fn trims_in(t: &mut AfterBacklog, n: u32) -> Vec<u32> {
        (1..=n).filter(|_| t.quiet()).collect()
    }

    #[test]
    fn twice_after_a_backlog_then_not_again_until_more_is_handed() {
        let mut t = AfterBacklog::default();
        for _ in 0..10 {
            t.handed(4 << 20);
        }
        assert_eq!(trims_in(&mut t, 100), [5, 30]);
        // A small batch and a quiet spell: too little handed since.
        t.handed(1 << 20);
        assert_eq!(trims_in(&mut t, 100), Vec::<u32>::new());
    }

    #[test]
    fn a_trickle_trims_once_per_sixteen_megabytes() {
        let mut t = AfterBacklog::default();
        let mut trims = 0;
        // 100 objects of 1 MB, ten quiet collects between them.
        for _ in 0..100 {
            t.handed(1 << 20);
            trims += trims_in(&mut t, 10).len();
        }
        assert_eq!(trims, 100 / 16);
    }

    #[test]
    fn records_between_the_two_trims_cancel_the_second() {
        let mut t = AfterBacklog::default();
        t.handed(32 << 20);
        assert_eq!(trims_in(&mut t, 10), [5]);
        t.handed(1 << 10);
        assert_eq!(trims_in(&mut t, 100), Vec::<u32>::new());
    }
}
