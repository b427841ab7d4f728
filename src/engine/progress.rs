//! Backfill progress and the periodic checks (silence alarms, progress lines).

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::Core;
use crate::timestamp::EventTime;

/// A scan that finds more objects than this starts a backfill: progress is logged every
/// [`PROGRESS_EVERY`] until they are shipped.
pub(super) const BACKFILL: usize = 300;
pub(super) const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// A backfill in progress: what the scans found and where the counters stood.
pub(super) struct Backfill {
    /// Objects claimed since it started.
    claimed: u64,
    /// Keys the last scan left past its limits, for the next.
    left: u64,
    finished_before: u64,
    events_before: u64,
    started: std::time::Instant,
}

/// The counters as a scan started.
#[derive(Debug, Clone, Copy)]
pub(super) struct ProgressMark {
    finished: u64,
    events: u64,
    at: std::time::Instant,
}

/// How far a backfill has come.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackfillProgress {
    pub found: u64,
    /// Objects shipped or failed for good since the scan.
    pub finished: u64,
    pub events_per_sec: f64,
    /// Seconds left at the rate so far (`None` before the first object).
    pub eta_secs: Option<u64>,
}

impl Core {
    /// Objects shipped or failed for good, so far.
    pub(super) fn finished(&self) -> u64 {
        let m = &self.observe.metrics;
        m.objects_shipped.load(Ordering::Relaxed) + m.objects_failed.load(Ordering::Relaxed)
    }

    /// Where the counters stand as a scan starts: its objects may ship before it ends.
    pub(super) fn progress_mark(&self) -> ProgressMark {
        ProgressMark {
            finished: self.finished(),
            events: self.observe.metrics.events_shipped.load(Ordering::Relaxed),
            at: std::time::Instant::now(),
        }
    }

    /// A scan that started at `since` claimed `n` objects and left `left` keys past its
    /// limits: a backfill starts when they are many, counted from `since` (some may have
    /// shipped while the scan went on). Its total is what the scans claimed since, plus
    /// what the last one left: keys left count once, though a later scan claims them.
    pub(super) fn start_backfill(&self, n: usize, left: usize, since: ProgressMark) {
        let (n, left) = (n as u64, left as u64);
        let mut b = self.backfill.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = b.as_mut() {
            b.claimed += n;
            b.left = left;
            return;
        }
        let total = n + left;
        if total <= BACKFILL as u64 {
            return;
        }
        self.log.info(format_args!(
            "backfill: {total} objects to ship; progress every {} s",
            PROGRESS_EVERY.as_secs()
        ));
        *b = Some(Backfill {
            claimed: n,
            left,
            finished_before: since.finished,
            events_before: since.events,
            started: since.at,
        });
    }

    pub(super) fn backfill_progress(&self) -> Option<BackfillProgress> {
        let b = self.backfill.lock().unwrap_or_else(PoisonError::into_inner);
        let b = b.as_ref()?;
        let found = b.claimed + b.left;
        let finished = (self.finished() - b.finished_before).min(found);
        let secs = b.started.elapsed().as_secs_f64().max(0.001);
        let events = self.observe.metrics.events_shipped.load(Ordering::Relaxed) - b.events_before;
        let eta_secs = (finished > 0)
            .then(|| ((found - finished) as f64 * secs / finished as f64).round() as u64);
        Some(BackfillProgress {
            found,
            finished,
            events_per_sec: events as f64 / secs,
            eta_secs,
        })
    }

    /// Logs the backfill's progress, and its end.
    pub(super) fn log_backfill(&self) {
        let Some(p) = self.backfill_progress() else {
            return;
        };
        if p.finished >= p.found {
            self.log.info(format_args!(
                "backfill: done, {} objects at {:.0} events/s",
                p.found, p.events_per_sec
            ));
            *self.backfill.lock().unwrap_or_else(PoisonError::into_inner) = None;
            return;
        }
        self.log.info(format_args!(
            "backfill: {} of {} objects, {:.0} events/s, {} left",
            p.finished,
            p.found,
            p.events_per_sec,
            p.eta_secs
                .map_or("time unknown".to_string(), |s| format!("about {s} s"))
        ));
    }
}

/// Every few seconds: silence checks, backfill progress.
pub(super) async fn watch_loop(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let alarm = core.config.silence_alarm;
    let tick = if alarm.is_zero() {
        PROGRESS_EVERY
    } else {
        (alarm / 4).clamp(Duration::from_secs(1), PROGRESS_EVERY)
    };
    let mut last_progress = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => return,
        }
        core.observe
            .freshness
            .check(EventTime::now().secs(), &core.log);
        if last_progress.elapsed() >= PROGRESS_EVERY {
            core.log_backfill();
            last_progress = std::time::Instant::now();
        }
    }
}
