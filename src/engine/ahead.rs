//! At a graceful stop, the batches a destination acknowledged behind one it left
//! unanswered. Outputs commit batches in order (an object's later events never before its
//! earlier ones), so these could not move any position; recorded as ranges delivered ahead,
//! the next run passes them instead of sending them again. Vector closes its `http_server`
//! source when it stops and leaves some posts unanswered while later ones were delivered:
//! without this, every SIGTERM of Vector repeated those.

use std::collections::HashMap;
use std::sync::Arc;

use super::Engine;
use super::handoff::Mark;
use crate::ledger::Span;
use crate::observe::metrics::Metrics;

/// One uncommitted chunk's mark, in take order, and whether the destination has all of its
/// events.
pub struct Unsettled<'a> {
    pub delivered: bool,
    pub mark: &'a Mark,
}

impl Engine {
    /// Records the delivered chunks of `window` (every chunk taken and not committed, in
    /// take order) as ranges ahead of their objects' positions. Returns the events recorded.
    pub fn commit_ahead(&self, window: &[Unsettled<'_>]) -> u64 {
        let core = &self.core;
        // Findings sent as records that the destination has: reported, as at a commit.
        let now = crate::timestamp::EventTime::now().secs();
        for f in window
            .iter()
            .filter(|c| c.delivered)
            .filter_map(|c| c.mark.finding.as_deref())
        {
            if let Err(e) = core.ledger.first_report(&f.text, now, f.keep) {
                core.log.warn(format_args!(
                    "digest: {e}; a finding sent as a record may be sent again: {}",
                    f.text
                ));
            }
            core.findings_in_flight().remove(&f.text);
        }
        let spans = spans(window, |id| match core.ledger.entry(id) {
            Ok(e) => Some(e.map_or(0, |e| e.position)),
            Err(_) => None,
        });
        if spans.is_empty() {
            return 0;
        }
        let events: u64 = window
            .iter()
            .filter(|c| c.delivered && c.mark.finding.is_none())
            .map(|c| c.mark.events)
            .sum();
        match core.ledger.deliver_ahead(&spans) {
            Ok(()) => {
                Metrics::add(&core.observe.metrics.events_shipped, events);
                events
            }
            Err(e) => {
                core.log.warn(format_args!(
                    "{e}; the events delivered behind an unanswered batch ({} ranges) are sent again by the next run",
                    spans.len()
                ));
                0
            }
        }
    }
}

/// The ranges of `Records` elements the delivered chunks of `window` hold, per object.
///
/// A chunk starts where the object's previous chunk in the window ended; the first one in
/// the window starts at the object's committed position (`committed`, `None` when unknown:
/// that object gets no range). Each start is at or after the chunk's true start (a read
/// that began before the last commit, or again after a transient failure, only started
/// lower), so a range never claims an event that was not delivered.
fn spans(
    window: &[Unsettled<'_>],
    committed: impl Fn(&str) -> Option<u64>,
) -> Vec<(Arc<str>, Span)> {
    let mut start: HashMap<Arc<str>, Option<u64>> = HashMap::new();
    let mut out = Vec::new();
    for chunk in window {
        let m = chunk.mark;
        // A finding sent as a record has no object to be ahead in: one left unanswered is
        // sent again by the next run.
        if m.finding.is_some() {
            continue;
        }
        let from = *start
            .entry(m.id.clone())
            .or_insert_with(|| committed(&m.id));
        if chunk.delivered
            && let Some(from) = from
            && from < m.position
        {
            out.push((m.id.clone(), (from, m.position)));
        }
        start.insert(m.id.clone(), from.map(|f| f.max(m.position)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(id: &str, position: u64) -> Mark {
        Mark {
            id: id.into(),
            position,
            events: 1,
            ..Mark::default()
        }
    }

    fn window<'a>(chunks: &'a [(Mark, bool)]) -> Vec<Unsettled<'a>> {
        chunks
            .iter()
            .map(|(mark, delivered)| Unsettled {
                delivered: *delivered,
                mark,
            })
            .collect()
    }

    fn named(spans: Vec<(Arc<str>, Span)>) -> Vec<(String, Span)> {
        spans
            .into_iter()
            .map(|(id, s)| (id.to_string(), s))
            .collect()
    }

    #[test]
    fn delivered_chunks_behind_an_unanswered_one_become_ranges() {
        let chunks = [
            (mark("a", 10), false),
            (mark("b", 4), false),
            (mark("a", 20), true),
            (mark("a", 25), true),
            (mark("b", 9), true),
            (mark("c", 3), true),
        ];
        let committed = |id: &str| match id {
            "a" => Some(0),
            "b" => Some(2),
            _ => None,
        };
        let got = named(spans(&window(&chunks), committed));
        let want = [("a", (10, 20)), ("a", (20, 25)), ("b", (4, 9))];
        let want: Vec<(String, Span)> = want.iter().map(|(i, s)| (i.to_string(), *s)).collect();
        assert_eq!(got, want, "c's committed position is unknown: no range");
    }

    #[test]
    fn a_read_that_started_over_claims_nothing_it_did_not_deliver_twice() {
        // a's chunk to 10 went unanswered, its read failed at 10 and started over from 0:
        // the second chunk to 10 reaches no further than what is known, so no range.
        let chunks = [(mark("a", 10), false), (mark("a", 10), true)];
        assert!(spans(&window(&chunks), |_| Some(0)).is_empty());
    }
}
