//! Waiting for a condition, never for a time: every wait polls what the test needs until a
//! deadline, so a slow (loaded, 2-core) machine only makes a test slower, not flaky.

use std::time::{Duration, Instant};

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(50);

/// Polls `ok` until it holds; panics naming `what` when `limit` passes first.
pub fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// Polls `ok` until it holds or `limit` passes; tells which.
pub fn poll_until(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}
