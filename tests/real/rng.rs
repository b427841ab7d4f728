//! A seeded random number generator for the kill and stop points: the seed is printed, and
//! `REAL_SEED=<n>` replays a run.

use std::time::{Duration, SystemTime};

pub struct Rng(u64);

impl Rng {
    /// Seeded from `REAL_SEED` when set, else from the clock; prints the seed with `what`.
    pub fn new(what: &str) -> Rng {
        let seed = std::env::var("REAL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{what}: seed {seed} (replay with REAL_SEED={seed})");
        Rng(seed)
    }

    /// A generator with a given seed (the simulation's schedules, in `tests/it`).
    #[allow(dead_code)]
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed)
    }

    /// splitmix64.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration in `[lo, hi)`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_millis().max(1) as u64;
        lo + Duration::from_millis(self.next() % span)
    }
}
