//! The bounded queue between the engine's workers and the front end.
//!
//! Workers push encoded chunks and block while the queue holds more than its byte budget;
//! that is the backpressure that stops downloads when the host stops collecting. The front
//! end takes chunks without blocking (Fluent Bit's collect must return quickly) and reports
//! each chunk's [`Mark`] back once the bytes are the host's, which is what moves the state.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

// The commit record a chunk carries is the ledger's vocabulary; the engine hands it on.
pub use crate::ledger::mark::{End, FindingMark, Mark};

/// Encoded records of one object, in order.
#[derive(Debug)]
pub struct Chunk {
    pub bytes: Vec<u8>,
    pub events: u64,
    pub mark: Mark,
}

/// A set of chunks taken together: one collect's worth.
#[derive(Debug, Default)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub events: u64,
    pub marks: Vec<Mark>,
    /// Where each mark's chunk ends in `bytes` (one per mark): an output that splits a
    /// batch by object (per account and region) cuts there.
    pub ends: Vec<usize>,
}

/// The queue is closed: the engine is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

#[derive(Default)]
struct Inner {
    chunks: VecDeque<Chunk>,
    bytes: usize,
    closed: bool,
    /// The budget; a front end that hands bigger batches raises it (see `set_capacity`).
    capacity: usize,
    /// A producer waited for room since [`Handoff::producers_waited`] was last asked:
    /// work is waiting behind the queue (a backlog).
    waited: bool,
}

/// A byte-bounded FIFO of chunks.
pub struct Handoff {
    inner: Mutex<Inner>,
    not_full: Condvar,
    not_empty: Condvar,
}

impl Handoff {
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                capacity: capacity_bytes,
                ..Inner::default()
            }),
            not_full: Condvar::new(),
            not_empty: Condvar::new(),
        }
    }

    /// Changes the budget; raising it wakes the producers waiting for room. Chunks already
    /// queued over a lowered budget stay (they are taken in order).
    pub fn set_capacity(&self, bytes: usize) {
        let mut g = self.lock();
        let raised = bytes > g.capacity;
        g.capacity = bytes;
        drop(g);
        if raised {
            self.not_full.notify_all();
        }
    }

    /// Whether a producer had to wait for room since the last call (which clears it).
    pub fn producers_waited(&self) -> bool {
        std::mem::take(&mut self.lock().waited)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated (every update is
        // a single push/pop plus a counter), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a chunk, waiting while the queue is over its budget. A chunk larger than the
    /// whole budget is accepted once the queue is empty, so one huge event cannot wedge it.
    pub fn push(&self, chunk: Chunk) -> Result<(), Closed> {
        let mut g = self.lock();
        while !g.closed && g.bytes > 0 && g.bytes + chunk.bytes.len() > g.capacity {
            g.waited = true;
            g = self
                .not_full
                .wait(g)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if g.closed {
            return Err(Closed);
        }
        g.bytes += chunk.bytes.len();
        g.chunks.push_back(chunk);
        drop(g);
        self.not_empty.notify_one();
        Ok(())
    }

    /// Takes chunks up to `max_bytes` in all (at least one chunk when any is ready), waiting
    /// at most `wait` for the first.
    pub fn take(&self, max_bytes: usize, wait: Duration) -> Option<Batch> {
        let mut g = self.lock();
        if g.chunks.is_empty() && !wait.is_zero() && !g.closed {
            g = self
                .not_empty
                .wait_timeout(g, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let first = g.chunks.pop_front()?;
        let mut batch = Batch {
            ends: vec![first.bytes.len()],
            bytes: first.bytes,
            events: first.events,
            marks: vec![first.mark],
        };
        while let Some(next) = g.chunks.front() {
            if batch.bytes.len() + next.bytes.len() > max_bytes {
                break;
            }
            let Some(next) = g.chunks.pop_front() else {
                break;
            };
            batch.bytes.extend_from_slice(&next.bytes);
            batch.events += next.events;
            batch.marks.push(next.mark);
            batch.ends.push(batch.bytes.len());
        }
        g.bytes -= batch.bytes.len();
        drop(g);
        self.not_full.notify_all();
        Some(batch)
    }

    /// Bytes waiting to be taken.
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Encoded bytes waiting for the host.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn is_empty(&self) -> bool {
        self.lock().chunks.is_empty()
    }

    /// Wakes every waiting producer with `Closed` and refuses new chunks; chunks already
    /// queued can still be taken.
    pub fn close(&self) {
        self.lock().closed = true;
        self.not_full.notify_all();
        self.not_empty.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    fn chunk(id: &str, n: usize) -> Chunk {
        Chunk {
            bytes: vec![b'x'; n],
            events: 1,
            mark: Mark {
                id: id.into(),
                events: 1,
                position: 1,
                end: None,
                ..Mark::default()
            },
        }
    }

    #[test]
    fn takes_up_to_max_bytes_in_order() {
        let q = Handoff::new(1000);
        for i in 0..4 {
            q.push(chunk(&i.to_string(), 100)).unwrap();
        }
        let b = q.take(250, Duration::ZERO).unwrap();
        assert_eq!(b.bytes.len(), 200);
        assert_eq!(b.ends, [100, 200]);
        assert_eq!(
            b.marks.iter().map(|m| &*m.id).collect::<Vec<_>>(),
            ["0", "1"]
        );
        assert_eq!(q.queued_bytes(), 200);
        assert_eq!(q.take(250, Duration::ZERO).unwrap().bytes.len(), 200);
        // A chunk bigger than the budget and than max_bytes still goes in and out, alone.
        q.push(chunk("big", 1500)).unwrap();
        assert_eq!(q.take(250, Duration::ZERO).unwrap().bytes.len(), 1500);
        assert!(q.take(250, Duration::ZERO).is_none());
    }

    #[test]
    fn producer_waits_for_room_and_close_releases_it() {
        let q = Arc::new(Handoff::new(150));
        q.push(chunk("a", 100)).unwrap();
        let q2 = q.clone();
        let t = thread::spawn(move || q2.push(chunk("b", 100)));
        thread::sleep(Duration::from_millis(50));
        assert!(!t.is_finished(), "second push must wait for room");
        assert!(q.take(1000, Duration::ZERO).is_some());
        assert_eq!(t.join().unwrap(), Ok(()));
        let q3 = q.clone();
        q.push(chunk("c", 10)).unwrap();
        let blocked = thread::spawn(move || q3.push(chunk("d", 200)));
        thread::sleep(Duration::from_millis(50));
        q.close();
        assert_eq!(blocked.join().unwrap(), Err(Closed));
    }

    #[test]
    fn a_waiting_producer_is_seen_and_a_raised_budget_lets_it_in() {
        let q = Arc::new(Handoff::new(150));
        q.push(chunk("a", 100)).unwrap();
        assert!(!q.producers_waited(), "nobody waited yet");
        let q2 = q.clone();
        let t = thread::spawn(move || q2.push(chunk("b", 100)));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !q.lock().waited {
            assert!(
                std::time::Instant::now() < deadline,
                "producer never waited"
            );
            thread::sleep(Duration::from_millis(5));
        }
        q.set_capacity(300);
        assert_eq!(t.join().unwrap(), Ok(()));
        assert!(q.producers_waited());
        assert!(!q.producers_waited(), "asking clears it");
        assert_eq!(q.queued_bytes(), 200);
    }
}
