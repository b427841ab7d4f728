//! Which messages this consumer holds, by the objects they wait for, and what to do with
//! each once they are all finished ([`Verdict`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A message being worked on.
#[derive(Debug)]
pub struct Held {
    pub message_id: String,
    pub(super) receipt: String,
    /// Objects not finished yet.
    pending: HashSet<Arc<str>>,
    /// Objects that failed for good, with the reason.
    pub(super) failed: Vec<(Arc<str>, String)>,
    /// Objects the ledger retries on its own (a transient failure or a denied read), with
    /// the seconds until their next try.
    pub(super) entrusted: Vec<(Arc<str>, u32)>,
    pub(super) receive_count: u32,
    extended_at: Instant,
}

impl Held {
    /// Objects the ledger retries on its own, which the message no longer waits for.
    pub fn entrusted(&self) -> usize {
        self.entrusted.len()
    }

    /// The receipt of the receive that holds the message (what deletes it, or hands it back).
    pub fn receipt(&self) -> &str {
        &self.receipt
    }
}

/// What to do with a message whose objects are all finished (or one was abandoned).
#[derive(Debug)]
pub enum Verdict {
    Delete(Held),
    /// Let it come back after this long (retry).
    Retry(Held, Duration),
    /// Received too often with failures: quarantine.
    Quarantine(Held),
    /// Some objects wait in the ledger for a retry, the rest are shipped: make the ledger's
    /// record of them durable, then delete the message.
    Entrust(Held),
}

impl Verdict {
    pub fn held(&self) -> &Held {
        match self {
            Verdict::Delete(h)
            | Verdict::Retry(h, _)
            | Verdict::Quarantine(h)
            | Verdict::Entrust(h) => h,
        }
    }
}

/// The messages held by this consumer, by the objects they wait for.
#[derive(Debug, Default)]
pub struct Tracker {
    held: HashMap<String, Held>,
    max_receive_count: u32,
    /// Whether the ledger survives a restart (a file): only then may a message whose
    /// objects wait for a retry be deleted.
    durable_ledger: bool,
}

impl Tracker {
    pub fn new(max_receive_count: u32, durable_ledger: bool) -> Self {
        Self {
            held: HashMap::new(),
            max_receive_count,
            durable_ledger,
        }
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Starts holding a message; returns its verdict at once when nothing is pending.
    pub fn hold(
        &mut self,
        message_id: String,
        receipt: String,
        receive_count: u32,
        pending: HashSet<Arc<str>>,
        failed: Vec<(Arc<str>, String)>,
    ) -> Option<Verdict> {
        self.hold_entrusting(
            message_id,
            receipt,
            receive_count,
            pending,
            failed,
            Vec::new(),
        )
    }

    /// [`Tracker::hold`], with objects the ledger already answers for (another shipper
    /// ships them under a shared ledger's lease): the message does not wait for them.
    pub fn hold_entrusting(
        &mut self,
        message_id: String,
        receipt: String,
        receive_count: u32,
        pending: HashSet<Arc<str>>,
        failed: Vec<(Arc<str>, String)>,
        entrusted: Vec<(Arc<str>, u32)>,
    ) -> Option<Verdict> {
        let held = Held {
            message_id: message_id.clone(),
            receipt,
            pending,
            failed,
            entrusted,
            receive_count,
            extended_at: Instant::now(),
        };
        if held.pending.is_empty() {
            return Some(self.verdict(held));
        }
        self.held.insert(message_id, held);
        None
    }

    /// A message that cannot be held (its objects could not be claimed): straight back to
    /// the queue, to be tried again.
    pub fn hand_back(message_id: String, receipt: String, receive_count: u32) -> Verdict {
        let held = Held {
            message_id,
            receipt,
            pending: HashSet::new(),
            failed: Vec::new(),
            entrusted: Vec::new(),
            receive_count,
            extended_at: Instant::now(),
        };
        Verdict::Retry(held, Duration::from_secs(10))
    }

    fn verdict(&self, held: Held) -> Verdict {
        let waiting = held.entrusted.iter().map(|(_, wait)| *wait).max();
        match (held.failed.is_empty(), waiting) {
            (true, None) => Verdict::Delete(held),
            (false, _) if held.receive_count < self.max_receive_count => {
                let backoff = Duration::from_secs(10 * u64::from(held.receive_count).min(30));
                Verdict::Retry(held, backoff)
            }
            (false, _) => Verdict::Quarantine(held),
            (true, Some(_)) if self.durable_ledger => Verdict::Entrust(held),
            (true, Some(wait)) => {
                Verdict::Retry(held, Duration::from_secs(u64::from(wait.max(10))))
            }
        }
    }

    /// An object was handed over (`failed: None`) or given up on: the messages it
    /// completes.
    pub fn finished(&mut self, object: &str, failed: Option<&str>) -> Vec<Verdict> {
        self.resolve(object, |held, key| {
            if let Some(reason) = failed {
                held.failed.push((key, reason.to_string()));
            }
        })
    }

    /// An object waits in the ledger for a retry after `wait` seconds (a transient failure,
    /// a denied read): its messages stop waiting for it. Returns the messages it completes.
    pub fn entrusted(&mut self, object: &str, wait: u32) -> Vec<Verdict> {
        self.resolve(object, |held, key| held.entrusted.push((key, wait)))
    }

    /// Takes `object` off the pending set of every message waiting for it (`note` records
    /// how it ended) and returns the verdicts of the messages left with nothing pending.
    fn resolve(&mut self, object: &str, note: impl Fn(&mut Held, Arc<str>)) -> Vec<Verdict> {
        let done: Vec<String> = self
            .held
            .iter_mut()
            .filter_map(|(id, h)| {
                let key = h.pending.iter().find(|p| &***p == object)?.clone();
                h.pending.remove(&key);
                note(h, key);
                h.pending.is_empty().then(|| id.clone())
            })
            .collect();
        let resolved: Vec<Held> = done.iter().filter_map(|id| self.held.remove(id)).collect();
        resolved.into_iter().map(|h| self.verdict(h)).collect()
    }

    /// An object will not finish now (transient failure): its messages are let go, to
    /// come back and be retried.
    pub fn abandoned(&mut self, object: &str) -> Vec<Verdict> {
        let ids: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.pending.iter().any(|p| &**p == object))
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| self.held.remove(&id))
            .map(|h| Verdict::Retry(h, Duration::from_secs(10)))
            .collect()
    }

    /// Receipts whose visibility was last extended more than `every` ago (marked now).
    pub fn due(&mut self, every: Duration) -> Vec<String> {
        let now = Instant::now();
        self.held
            .values_mut()
            .filter(|h| now.duration_since(h.extended_at) >= every)
            .map(|h| {
                h.extended_at = now;
                h.receipt.clone()
            })
            .collect()
    }

    /// Every held message, for a fast hand-back at shutdown.
    pub fn drain(&mut self) -> Vec<Held> {
        self.held.drain().map(|(_, h)| h).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> HashSet<Arc<str>> {
        ids.iter().map(|i| Arc::from(*i)).collect()
    }

    #[test]
    fn deleted_once_every_object_is_shipped() {
        let mut t = Tracker::new(3, true);
        assert!(
            t.hold("m1".into(), "r1".into(), 1, set(&["a", "b"]), vec![])
                .is_none()
        );
        assert!(t.finished("a", None).is_empty());
        let v = t.finished("b", None);
        assert!(matches!(v.as_slice(), [Verdict::Delete(h)] if h.message_id == "m1"));
        assert!(t.is_empty());
    }

    #[test]
    fn failures_retry_then_quarantine() {
        let mut t = Tracker::new(3, true);
        t.hold("m1".into(), "r1".into(), 1, set(&["a"]), vec![]);
        assert!(matches!(
            t.finished("a", Some("gzip")).as_slice(),
            [Verdict::Retry(..)]
        ));
        t.hold("m1".into(), "r2".into(), 3, set(&["a"]), vec![]);
        assert!(matches!(
            t.finished("a", Some("gzip")).as_slice(),
            [Verdict::Quarantine(_)]
        ));
        let v = t.hold(
            "m2".into(),
            "r".into(),
            4,
            set(&[]),
            vec![("x".into(), "denied".into())],
        );
        assert!(matches!(v, Some(Verdict::Quarantine(_))));
    }

    #[test]
    fn abandoned_objects_let_their_messages_go_and_heartbeat_marks() {
        let mut t = Tracker::new(3, true);
        t.hold("m1".into(), "r1".into(), 1, set(&["a"]), vec![]);
        t.hold("m2".into(), "r2".into(), 1, set(&["a", "b"]), vec![]);
        t.hold("m3".into(), "r3".into(), 1, set(&["c"]), vec![]);
        assert_eq!(t.due(Duration::ZERO).len(), 3);
        assert!(t.due(Duration::from_secs(60)).is_empty());
        assert_eq!(t.abandoned("a").len(), 2);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn objects_left_to_the_ledger_free_their_message() {
        let mut t = Tracker::new(3, true);
        t.hold("m1".into(), "r1".into(), 1, set(&["denied"]), vec![]);
        t.hold(
            "m2".into(),
            "r2".into(),
            1,
            set(&["denied", "good"]),
            vec![],
        );
        let v = t.entrusted("denied", 300);
        assert!(
            matches!(v.as_slice(), [Verdict::Entrust(h)] if h.message_id == "m1" && h.entrusted() == 1),
            "{v:?}"
        );
        assert_eq!(t.len(), 1, "m2 still waits for its other object");
        let v = t.finished("good", None);
        assert!(matches!(v.as_slice(), [Verdict::Entrust(h)] if h.message_id == "m2"));
        assert!(t.is_empty());
    }

    #[test]
    fn with_the_ledger_in_memory_a_message_comes_back_when_its_retry_is_due() {
        let mut t = Tracker::new(3, false);
        t.hold("m1".into(), "r1".into(), 1, set(&["a", "b"]), vec![]);
        assert!(t.entrusted("a", 300).is_empty());
        let v = t.entrusted("b", 40);
        assert!(
            matches!(v.as_slice(), [Verdict::Retry(_, after)] if *after == Duration::from_secs(300)),
            "{v:?}"
        );
    }

    #[test]
    fn a_failure_outranks_an_entrusted_object() {
        let mut t = Tracker::new(3, true);
        t.hold("m1".into(), "r1".into(), 1, set(&["a", "b"]), vec![]);
        t.entrusted("a", 300);
        assert!(matches!(
            t.finished("b", Some("gzip")).as_slice(),
            [Verdict::Retry(..)]
        ));
    }
}
