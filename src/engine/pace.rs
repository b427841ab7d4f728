//! How many bytes the host gets per collect. Fluent Bit calls a proxy input once a second,
//! so the bytes per collect are the pace: the steady `batch_bytes` keeps memory and request
//! sizes small, and would take days over a month's backlog. While downloads wait for room
//! in the queue (work is waiting behind it), each collect doubles the size up to
//! `batch_bytes_max`; once a collect finds the queue no longer full, the size follows what
//! was taken (twice it, so it can still grow) and falls back to `batch_bytes` when the
//! queue runs dry. The queue's budget follows the size, so a larger batch is ready by the
//! next collect.

/// The collect size, between a floor and a ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSize {
    base: usize,
    max: usize,
    current: usize,
}

impl BatchSize {
    /// Starts at `base`; `max` below `base` is taken as `base` (no growth).
    pub fn new(base: usize, max: usize) -> Self {
        Self {
            base,
            max: max.max(base),
            current: base,
        }
    }

    /// Bytes to take at the next collect.
    pub fn current(&self) -> usize {
        self.current
    }

    /// After a collect took `taken` bytes; `backlog`: producers waited for room since the
    /// collect before. Returns the new size.
    pub fn after_take(&mut self, taken: usize, backlog: bool) -> usize {
        self.current = if backlog {
            self.current.saturating_mul(2).min(self.max)
        } else {
            taken.saturating_mul(2).clamp(self.base, self.current)
        };
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: usize = 1 << 20;

    #[test]
    fn grows_while_a_backlog_waits_and_falls_back_when_caught_up() {
        let mut s = BatchSize::new(4 * M, 32 * M);
        assert_eq!(s.current(), 4 * M);
        // A backlog: the queue was full at every collect.
        let grown: Vec<usize> = (0..5)
            .map(|_| s.after_take(s.current(), true) / M)
            .collect();
        assert_eq!(grown, [8, 16, 32, 32, 32]);
        // The downloads keep up, but no more: the size holds.
        assert_eq!(s.after_take(32 * M, false), 32 * M);
        // Catching up: the size follows twice what was taken, never under the floor.
        assert_eq!(s.after_take(5 * M, false), 10 * M);
        assert_eq!(s.after_take(M, false), 4 * M);
        assert_eq!(s.after_take(0, false), 4 * M);
        // What was taken never raises the size by itself (only a waiting producer does).
        assert_eq!(s.after_take(4 * M, false), 4 * M);
    }

    #[test]
    fn a_ceiling_at_the_floor_keeps_the_size_fixed() {
        let mut s = BatchSize::new(4 * M, 4 * M);
        assert_eq!(s.after_take(4 * M, true), 4 * M);
        let mut s = BatchSize::new(64 * M, 32 * M);
        assert_eq!(
            s.after_take(64 * M, true),
            64 * M,
            "a max under the floor is the floor"
        );
    }
}
