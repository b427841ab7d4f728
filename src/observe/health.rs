//! Health: whether the shipper is doing its job, with the reasons when not.
//!
//! Degraded when the last listing or receive failed with no success since, when reads are
//! denied (credentials or permissions), when every one of the last objects failed, or when
//! the last commit could not be written. Each reason says what failed and when.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// How many recent object outcomes are kept.
const RECENT: usize = 20;
/// Failures in a row, with no success among the recent objects, that count as "every
/// recent object failing".
const FAILING: usize = 5;
/// Seconds a taken batch may wait for its commit before commits count as stalled (Fluent
/// Bit commits a second or two after a batch; the command at once).
const STALLED: u32 = 120;
/// Seconds an output's receiver may refuse or fail every request before it counts: a
/// restart of the receiver or a short throttle is not worth a page.
const OUTPUT_FAILING: u32 = 60;

#[derive(Debug, Default)]
struct Last {
    ok_at: u32,
    failed: Option<(u32, String)>,
}

impl Last {
    fn ok(&mut self, now: u32) {
        self.ok_at = now;
        self.failed = None;
    }
    fn fail(&mut self, now: u32, reason: String) {
        self.failed = Some((now, reason));
    }
}

#[derive(Debug, Default)]
struct State {
    listing: Last,
    receive: Last,
    /// Recent objects: shipped (true) or failed (false), newest last.
    objects: VecDeque<bool>,
    /// The last object read denied, until one is read again.
    denied: Option<(u32, String)>,
    commit: Last,
    /// When the oldest batch taken and not yet committed was taken.
    uncommitted_since: Option<u32>,
    /// The output's receiver has failed or refused every request since then; the last
    /// answer.
    output_failing: Option<(u32, String)>,
}

/// What `/health` reports.
#[derive(Debug, Default)]
pub struct Health(Mutex<State>);

impl Health {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn listing(&self, now: u32, result: Result<(), &str>) {
        let mut s = self.state();
        match result {
            Ok(()) => s.listing.ok(now),
            Err(reason) => s.listing.fail(now, reason.to_string()),
        }
    }

    pub fn receive(&self, now: u32, result: Result<(), &str>) {
        let mut s = self.state();
        match result {
            Ok(()) => s.receive.ok(now),
            Err(reason) => s.receive.fail(now, reason.to_string()),
        }
    }

    /// An object read (true) or one that failed, transiently or for good (false); a read
    /// denied is noted as such.
    pub fn object(&self, now: u32, ok: bool, denied: Option<&str>) {
        let mut s = self.state();
        s.objects.push_back(ok);
        if s.objects.len() > RECENT {
            s.objects.pop_front();
        }
        if ok {
            s.denied = None;
        } else if let Some(reason) = denied {
            s.denied = Some((now, reason.to_string()));
        }
    }

    pub fn commit(&self, now: u32, result: Result<(), String>) {
        let mut s = self.state();
        s.uncommitted_since = None;
        match result {
            Ok(()) => s.commit.ok(now),
            Err(reason) => s.commit.fail(now, reason),
        }
    }

    /// An output's request answered (`Ok`) or failed with its reason.
    pub fn output(&self, now: u32, result: Result<(), String>) {
        let mut s = self.state();
        match result {
            Ok(()) => s.output_failing = None,
            Err(reason) => {
                let since = s.output_failing.as_ref().map_or(now, |(at, _)| *at);
                s.output_failing = Some((since, reason));
            }
        }
    }

    /// A batch with marks was handed to the front end; its commit is expected soon.
    pub fn taken(&self, now: u32) {
        self.state().uncommitted_since.get_or_insert(now);
    }

    /// The reasons the shipper is degraded; empty when healthy.
    pub fn reasons(&self) -> Vec<String> {
        self.reasons_at(crate::timestamp::EventTime::now().secs())
    }

    fn reasons_at(&self, now: u32) -> Vec<String> {
        let s = self.state();
        let mut out = Vec::new();
        if let Some((at, reason)) = &s.listing.failed {
            out.push(format!("listing failing since {at}: {reason}"));
        }
        if let Some((at, reason)) = &s.receive.failed {
            out.push(format!("sqs receive failing since {at}: {reason}"));
        }
        if let Some((at, reason)) = &s.denied {
            out.push(format!("object reads denied since {at}: {reason}"));
        }
        let failing = s.objects.iter().rev().take_while(|ok| !**ok).count();
        if failing >= FAILING && !s.objects.iter().any(|ok| *ok) {
            out.push(format!(
                "the last {failing} objects all failed (see the log for their reasons)"
            ));
        }
        if let Some((at, reason)) = &s.commit.failed {
            out.push(format!("commits failing since {at}: {reason}"));
        }
        if let Some((since, reason)) = &s.output_failing
            && now.saturating_sub(*since) > OUTPUT_FAILING
        {
            out.push(format!(
                "output failing since {since} ({} s): {reason}",
                now - since
            ));
        }
        if let Some(since) = s.uncommitted_since
            && now.saturating_sub(since) > STALLED
        {
            out.push(format!(
                "commits stalled: a batch taken at {since} is not committed after {} s (the host is not confirming delivery)",
                now - since
            ));
        }
        out
    }

    /// `/health`'s answer: status code and JSON body.
    pub fn answer(&self) -> (u16, String) {
        let reasons = self.reasons();
        let body = serde_json::json!({
            "status": if reasons.is_empty() { "ok" } else { "degraded" },
            "reasons": reasons,
        });
        (if reasons.is_empty() { 200 } else { 503 }, body.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degrades_with_reasons_and_recovers() {
        let h = Health::default();
        assert_eq!(h.answer().0, 200);
        h.listing(10, Err("403 AccessDenied: needs s3:ListBucket"));
        h.object(11, false, Some("403 AccessDenied: needs s3:GetObject"));
        let (code, body) = h.answer();
        assert_eq!(code, 503);
        assert!(body.contains("listing failing since 10") && body.contains("reads denied"));
        h.listing(20, Ok(()));
        for _ in 0..FAILING {
            h.object(21, false, None);
        }
        let reasons = h.reasons();
        assert!(
            reasons.iter().any(|r| r.contains("objects all failed")),
            "{reasons:?}"
        );
        h.object(22, true, None);
        assert!(h.reasons().is_empty(), "{:?}", h.reasons());
        h.commit(23, Err("disk full".into()));
        assert!(h.reasons()[0].contains("disk full"));
        h.commit(24, Ok(()));
        h.taken(100);
        h.taken(150);
        assert!(h.reasons_at(100 + STALLED).is_empty());
        let stalled = h.reasons_at(101 + STALLED);
        assert!(stalled[0].contains("commits stalled"), "{stalled:?}");
        h.commit(300, Ok(()));
        assert!(h.reasons_at(1000).is_empty());
        h.output(1000, Err("503 Service Unavailable".into()));
        h.output(1030, Err("429 Too Many Requests".into()));
        assert!(h.reasons_at(1000 + OUTPUT_FAILING).is_empty());
        let failing = h.reasons_at(1001 + OUTPUT_FAILING);
        assert!(
            failing[0].contains("output failing since 1000") && failing[0].contains("429"),
            "{failing:?}"
        );
        h.output(1100, Ok(()));
        assert!(h.reasons_at(2000).is_empty());
    }
}
