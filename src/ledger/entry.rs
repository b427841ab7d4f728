//! One object's line in the ledger, and its compact byte form.
//!
//! Entries are written one at a time by incremental transactions, so the form is small and
//! fixed: a version byte, the numbers little-endian, then the reason text.

/// Where an object stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Claimed, partly shipped, or waiting to be tried again.
    Open,
    /// Every event committed.
    Done,
    /// Given up on, with a reason; stays until put back in line.
    Failed,
}

/// What the ledger knows of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub status: Status,
    /// Elements of `Records` whose events are committed: a retry resumes after them.
    pub position: u64,
    /// Failed tries in a row (transient errors), for the backoff.
    pub attempts: u32,
    /// Unix seconds before which the object is not tried again.
    pub not_before: u32,
    pub size: u64,
    /// The object's LastModified (seconds, nanoseconds): the fallback time of its events.
    pub modified: (u32, u32),
    /// Unix seconds when the entry last changed status.
    pub changed_at: u32,
    /// Why it failed (failed), or the last transient error (open).
    pub reason: String,
    /// SHA-256 of the object's decompressed bytes, kept when it is done (checked against
    /// CloudTrail's digests).
    pub sha256: Option<[u8; 32]>,
}

/// Whether a listed object keeps its watermark (a prefix's key, or a time window's time)
/// from passing it: anything not finished, except an object that has failed a try and
/// waits in the ledger for the next one. That one is retried from the ledger (every scan re-queues the due open entries), not
/// from listings; holding the watermark for it would make every scan list every day since,
/// for as long as it keeps failing (a KMS key denied for a year: 106 LIST pages a scan per
/// region). The watermark's move is a durable write, so the entry is on disk by then.
pub fn holds_watermark(entry: Option<&Entry>) -> bool {
    entry.is_none_or(|e| match e.status {
        Status::Done | Status::Failed => false,
        Status::Open => e.attempts == 0,
    })
}

const FORM: u8 = 1;
/// The same, with the 32 bytes of the SHA-256 between the numbers and the reason. An entry
/// without a hash keeps the first form, which releases before this one read.
const FORM_HASHED: u8 = 2;
const FIXED: usize = 1 + 1 + 8 + 4 + 4 + 8 + 4 + 4 + 4;

impl Entry {
    /// A new open entry for an object just claimed.
    pub fn open(size: u64, modified: (u32, u32), now: u32) -> Self {
        Self {
            status: Status::Open,
            position: 0,
            attempts: 0,
            not_before: 0,
            size,
            modified,
            changed_at: now,
            reason: String::new(),
            sha256: None,
        }
    }

    /// Another failed try: the attempts grow and the next waits out `backoff` for them.
    /// Returns the wait.
    pub fn back_off(&mut self, reason: &str, backoff: super::Backoff, now: u32) -> u32 {
        self.attempts = self.attempts.saturating_add(1);
        let wait = backoff.secs(self.attempts);
        self.not_before = now.saturating_add(wait);
        self.reason = reason.to_string();
        wait
    }

    /// What a commit says of an open entry: its position rises to `position`, and `end`
    /// finishes it or backs it off (`abandoned`). Returns the status it finished with.
    pub fn apply(
        &mut self,
        mark: &crate::engine::handoff::Mark,
        now: u32,
        abandoned: super::Backoff,
    ) -> Option<Status> {
        use crate::engine::handoff::End;
        self.position = self.position.max(mark.position);
        match mark.end.as_ref()? {
            End::Done => {
                self.status = Status::Done;
                self.reason.clear();
                self.sha256 = mark.sha256;
            }
            End::Failed(reason) => {
                self.status = Status::Failed;
                self.reason = reason.clone();
            }
            End::Abandoned(reason) => {
                self.back_off(reason, abandoned, now);
                return None;
            }
        }
        self.changed_at = now;
        Some(self.status)
    }

    /// Puts a failed entry back in line (open, no backoff, position kept). `false` when it
    /// was not failed.
    pub fn put_back(&mut self, now: u32) -> bool {
        if self.status != Status::Failed {
            return false;
        }
        self.status = Status::Open;
        self.attempts = 0;
        self.not_before = 0;
        self.changed_at = now;
        self.reason = format!("put back in line (was: {})", self.reason);
        true
    }

    pub fn is_finished(&self) -> bool {
        self.status != Status::Open
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED + 33 + self.reason.len());
        out.push(if self.sha256.is_some() {
            FORM_HASHED
        } else {
            FORM
        });
        out.push(match self.status {
            Status::Open => 0,
            Status::Done => 1,
            Status::Failed => 2,
        });
        out.extend_from_slice(&self.position.to_le_bytes());
        out.extend_from_slice(&self.attempts.to_le_bytes());
        out.extend_from_slice(&self.not_before.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.modified.0.to_le_bytes());
        out.extend_from_slice(&self.modified.1.to_le_bytes());
        out.extend_from_slice(&self.changed_at.to_le_bytes());
        if let Some(h) = &self.sha256 {
            out.extend_from_slice(h);
        }
        out.extend_from_slice(self.reason.as_bytes());
        out
    }

    /// `None` for bytes that are not an entry of this form.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let hashed = match *b.first()? {
            FORM => false,
            FORM_HASHED => true,
            _ => return None,
        };
        let text_at = if hashed { FIXED + 32 } else { FIXED };
        if b.len() < text_at {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        Some(Self {
            status: match b[1] {
                0 => Status::Open,
                1 => Status::Done,
                2 => Status::Failed,
                _ => return None,
            },
            position: u64_at(2),
            attempts: u32_at(10),
            not_before: u32_at(14),
            size: u64_at(18),
            modified: (u32_at(26), u32_at(30)),
            changed_at: u32_at(34),
            reason: String::from_utf8(b[text_at..].to_vec()).ok()?,
            sha256: hashed.then(|| b[FIXED..FIXED + 32].try_into().unwrap_or_default()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_bytes() {
        let e = Entry {
            status: Status::Failed,
            position: 7,
            attempts: 3,
            not_before: 1_700_000_000,
            size: 1 << 40,
            modified: (1_690_000_000, 123),
            changed_at: 1_700_000_001,
            reason: "gzip: invalid header ü".into(),
            sha256: None,
        };
        assert_eq!(Entry::decode(&e.encode()), Some(e.clone()));
        assert_eq!(
            e.encode()[0],
            1,
            "without a hash: the first form, as before"
        );
        let hashed = Entry {
            status: Status::Done,
            sha256: Some([0xab; 32]),
            ..e.clone()
        };
        assert_eq!(Entry::decode(&hashed.encode()), Some(hashed.clone()));
        assert_eq!(
            Entry::decode(&hashed.encode()[..FIXED + 31]),
            None,
            "a hash cut short"
        );
        let open = Entry::open(5, (1, 2), 3);
        assert_eq!(Entry::decode(&open.encode()), Some(open));
        assert_eq!(Entry::decode(b""), None);
        let mut bad = e.encode();
        bad[0] = 9;
        assert_eq!(Entry::decode(&bad), None);
        let mut bad = e.encode();
        bad[1] = 7;
        assert_eq!(Entry::decode(&bad), None);
    }
}
