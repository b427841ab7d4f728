//! One object's line in the ledger, and its compact byte form.
//!
//! Entries are written one at a time by incremental transactions, so the form is small and
//! fixed: a version byte, the numbers little-endian, then the reason text.

/// A half-open range of `Records` elements, `(from, to)`.
pub type Span = (u64, u64);

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
    /// Ranges past `position` whose events the destination acknowledged while an earlier
    /// batch was left unanswered at a graceful stop (batches commit in order, so these could
    /// not move `position`): the next read passes them rather than sending them again. Sorted,
    /// apart from each other and from `position`; only an open entry has any.
    pub ahead: Vec<Span>,
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
/// Between the reason and the ranges delivered ahead, which follow as text
/// (`FROM-TO FROM-TO`): an entry with ranges keeps the first form, so a release from
/// before them reads it (the ranges as part of the reason) and ships those events again
/// rather than failing to read the entry and never shipping the rest. Reasons never hold
/// this character (it is replaced when written).
const AHEAD_MARK: char = '\u{1f}';
/// More ranges than a stop leaves (one per chunk in flight) are dropped from the top: the
/// events are sent again, never lost.
const MAX_AHEAD: usize = 1024;

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
            ahead: Vec::new(),
        }
    }

    /// Records that the events of `span` reached the destination. A span that starts at or
    /// before `position` moves it (and with it any range ahead it now meets); one past it is
    /// kept ahead. A finished entry is left as it is.
    pub fn deliver(&mut self, span: Span) {
        let (from, to) = span;
        if self.is_finished() || to <= from || to <= self.position {
            return;
        }
        self.ahead.push((from, to));
        self.ahead.sort_unstable();
        let mut merged: Vec<Span> = Vec::with_capacity(self.ahead.len());
        for (f, t) in self.ahead.drain(..) {
            match merged.last_mut() {
                Some(last) if f <= last.1 => last.1 = last.1.max(t),
                _ => merged.push((f, t)),
            }
        }
        // Dropping the highest ranges only sends their events again.
        merged.truncate(MAX_AHEAD);
        self.ahead = merged;
        self.absorb();
    }

    /// Moves `position` over the ranges ahead it reaches, and drops those below it.
    fn absorb(&mut self) {
        let mut position = self.position;
        self.ahead.retain(|&(from, to)| {
            if from <= position {
                position = position.max(to);
                false
            } else {
                true
            }
        });
        self.position = position;
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
        mark: &crate::ledger::mark::Mark,
        now: u32,
        abandoned: super::Backoff,
    ) -> Option<Status> {
        use crate::ledger::mark::End;
        self.position = self.position.max(mark.position);
        self.absorb();
        match mark.end.as_ref()? {
            End::Done => {
                self.status = Status::Done;
                self.reason.clear();
                self.sha256 = mark.sha256;
                self.ahead.clear();
            }
            End::Failed(reason) => {
                self.status = Status::Failed;
                self.reason = reason.clone();
                self.ahead.clear();
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
        let mut out = Vec::with_capacity(FIXED + 32 + self.reason.len() + 24 * self.ahead.len());
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
        let mut text = self.reason.replace(AHEAD_MARK, " ");
        if !self.ahead.is_empty() && !self.is_finished() {
            text.push(AHEAD_MARK);
            let ranges: Vec<String> = self.ahead.iter().map(|(f, t)| format!("{f}-{t}")).collect();
            text.push_str(&ranges.join(" "));
        }
        out.extend_from_slice(text.as_bytes());
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
        let text = String::from_utf8(b[text_at..].to_vec()).ok()?;
        let (reason, ahead) = match text.split_once(AHEAD_MARK) {
            Some((reason, ranges)) => (reason.to_string(), parse_ranges(ranges)),
            None => (text, Vec::new()),
        };
        let mut e = Self {
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
            reason,
            sha256: hashed.then(|| b[FIXED..FIXED + 32].try_into().unwrap_or_default()),
            ahead: Vec::new(),
        };
        // Through `deliver`: sorted, merged, absorbed, empty and backward ranges dropped,
        // as if delivered again (damaged text only costs repeats).
        for span in ahead {
            e.deliver(span);
        }
        Some(e)
    }
}

/// `FROM-TO FROM-TO`; what does not read so is left out (those events are sent again).
fn parse_ranges(text: &str) -> Vec<Span> {
    text.split(' ')
        .filter_map(|r| {
            let (f, t) = r.split_once('-')?;
            Some((f.parse().ok()?, t.parse().ok()?))
        })
        .take(MAX_AHEAD)
        .collect()
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
            ahead: Vec::new(),
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
        let ahead = Entry {
            status: Status::Open,
            ahead: vec![(9, 12), (20, 31)],
            ..e.clone()
        };
        let bytes = ahead.encode();
        assert_eq!(bytes[0], FORM, "the first form, which every release reads");
        assert_eq!(Entry::decode(&bytes), Some(ahead.clone()));
        let text = String::from_utf8(bytes[FIXED..].to_vec()).unwrap();
        assert!(
            text.starts_with("gzip: invalid header ü") && text.ends_with("\u{1f}9-12 20-31"),
            "an older release reads the ranges as part of the reason: {text:?}"
        );
        let done = Entry {
            status: Status::Done,
            ..ahead.clone()
        };
        assert!(
            !String::from_utf8_lossy(&done.encode()).contains('\u{1f}'),
            "a finished entry keeps no ranges ahead"
        );
        let marked = Entry {
            reason: "odd \u{1f}reason".into(),
            ahead: Vec::new(),
            ..ahead.clone()
        };
        assert_eq!(
            Entry::decode(&marked.encode()).unwrap().reason,
            "odd  reason",
            "the separator never comes from a reason"
        );
    }

    #[test]
    fn damaged_ranges_are_dropped_or_mended_never_widened() {
        let mut bytes = open_at(10).encode();
        bytes.extend_from_slice("\u{1f}30-20 12-15 x-9 14-18 5-8 ".as_bytes());
        let e = Entry::decode(&bytes).unwrap();
        assert_eq!((e.position, e.ahead), (10, vec![(12, 18)]));
    }

    fn open_at(position: u64) -> Entry {
        Entry {
            position,
            ..Entry::open(0, (0, 0), 0)
        }
    }

    #[test]
    fn ranges_delivered_ahead_merge_and_move_the_position_when_it_meets_them() {
        let mut e = open_at(10);
        e.deliver((20, 30));
        e.deliver((40, 45));
        e.deliver((30, 35));
        assert_eq!(
            (e.position, e.ahead.clone()),
            (10, vec![(20, 35), (40, 45)])
        );
        e.deliver((5, 8));
        assert_eq!(
            e.position, 10,
            "a range already below the position changes nothing"
        );
        e.deliver((10, 20));
        assert_eq!((e.position, e.ahead.clone()), (35, vec![(40, 45)]));
        e.deliver((44, 50));
        assert_eq!(e.ahead, vec![(40, 50)]);
        e.deliver((9, 9));
        assert_eq!(e.ahead, vec![(40, 50)], "an empty range is no range");
    }

    #[test]
    fn a_commit_in_order_takes_the_ranges_it_reaches_and_an_end_drops_the_rest() {
        use crate::ledger::mark::{End, Mark};
        let backoff = crate::ledger::Backoff::TRANSIENT;
        let mut e = open_at(0);
        e.deliver((10, 20));
        e.deliver((30, 40));
        let mark = |position, end| Mark {
            id: "s3://b/k".into(),
            position,
            end,
            ..Mark::default()
        };
        e.apply(&mark(10, None), 1, backoff);
        assert_eq!((e.position, e.ahead.clone()), (20, vec![(30, 40)]));
        e.apply(&mark(25, Some(End::Failed("bad json".into()))), 1, backoff);
        assert_eq!((e.status, e.ahead.clone()), (Status::Failed, vec![]));
        e.deliver((50, 60));
        assert!(e.ahead.is_empty(), "a finished entry takes no ranges");
    }
}
