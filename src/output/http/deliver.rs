//! One request until its receiver takes it: the retry loop, and the once-a-minute word
//! while the receiver is failing.
//!
//! A request is tried until it is delivered. It gives up only when the command stops: a
//! try already on the wire is finished first (its answer may still commit its batch), and a
//! request waiting out a backoff ends at once. What gave up is sent again by the next run,
//! from the ledger.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::client::{Client, Request};
use super::retry::{Backoff, Verdict};
use crate::log::Logger;
use crate::observe::Observe;
use crate::timestamp::EventTime;

/// Failing requests are logged at most this often (with what is waiting).
const WORD_EVERY: Duration = Duration::from_secs(60);

/// The receiver's state as the log tells it: when it started failing, when that was last
/// said. Shared by every request.
pub struct Alarm {
    log: Logger,
    url: String,
    state: Mutex<AlarmState>,
    /// Requests waiting for an answer or a retry, for the log line.
    pub waiting: AtomicU64,
}

#[derive(Default)]
struct AlarmState {
    failing_since: Option<Instant>,
    said_at: Option<Instant>,
}

impl Alarm {
    pub fn new(log: Logger, url: String) -> Self {
        Self {
            log,
            url,
            state: Mutex::default(),
            waiting: AtomicU64::new(0),
        }
    }

    fn failed(&self, verdict: &Verdict, observe: &Observe) {
        self.log.debug(format_args!(
            "http output {}: a try failed: {}",
            self.url,
            verdict.reason()
        ));
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let since = *s.failing_since.get_or_insert(now);
        if s.said_at.is_some_and(|at| now - at < WORD_EVERY) {
            return;
        }
        s.said_at = Some(now);
        drop(s);
        let waiting_bytes = observe.output.bytes_waiting.load(Ordering::Relaxed);
        let line = format_args!(
            "http output {}: {} (failing for {} s); {} requests ({:.1} MB) waiting and retried, downloads wait: nothing is lost",
            self.url,
            verdict.reason(),
            (now - since).as_secs(),
            self.waiting.load(Ordering::Relaxed),
            waiting_bytes as f64 / 1e6,
        );
        match verdict {
            // A status that will not change by itself: the URL, a token, a size limit.
            Verdict::Refused { .. } => self.log.error(format_args!(
                "{line}; check 'http.url', the credentials and 'http.max_body_bytes'"
            )),
            _ => self.log.warn(line),
        }
    }

    fn delivered(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(since) = s.failing_since.take() {
            s.said_at = None;
            drop(s);
            self.log.info(format_args!(
                "http output {}: delivering again after {} s",
                self.url,
                since.elapsed().as_secs()
            ));
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Delivered,
    /// The command is stopping: not delivered, sent again by the next run.
    GaveUp,
}

/// Sends `request` until it is delivered or `stopping` is set.
pub async fn deliver(
    client: &Client,
    request: &Request,
    alarm: &Alarm,
    observe: &Observe,
    mut stopping: watch::Receiver<bool>,
) -> Ended {
    let mut backoff = Backoff::default();
    loop {
        let verdict = client.post(request).await;
        observe.output.request(verdict.answered());
        observe
            .output
            .bytes_sent
            .fetch_add(request.body.len() as u64, Ordering::Relaxed);
        let now = EventTime::now().secs();
        if verdict == Verdict::Delivered {
            observe.health.output(now, Ok(()));
            alarm.delivered();
            return Ended::Delivered;
        }
        observe
            .health
            .output(now, Err(verdict.reason().to_string()));
        alarm.failed(&verdict, observe);
        if *stopping.borrow() {
            return Ended::GaveUp;
        }
        let wait = backoff.next(&verdict);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stopping.wait_for(|s| *s) => return Ended::GaveUp,
        }
    }
}

/// Shared by every request task.
pub struct Shared {
    pub client: Client,
    pub alarm: Alarm,
    pub observe: Arc<Observe>,
}
