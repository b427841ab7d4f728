//! Counters, a histogram and the Prometheus text format they are served in.
//!
//! Every number is an atomic bumped where the thing happens (a listing, a GET, a commit, an
//! SQS call) and read only when scraped; labels are operations, outcomes, accounts and
//! regions, never objects, so the series count stays bounded.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::aws::error::ErrorClass;

/// The requests counted, by operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    ListObjects,
    GetObject,
    ReceiveMessage,
    DeleteMessage,
    ChangeMessageVisibility,
}

impl Op {
    const ALL: [Op; 5] = [
        Op::ListObjects,
        Op::GetObject,
        Op::ReceiveMessage,
        Op::DeleteMessage,
        Op::ChangeMessageVisibility,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::ListObjects => "ListObjectsV2",
            Op::GetObject => "GetObject",
            Op::ReceiveMessage => "ReceiveMessage",
            Op::DeleteMessage => "DeleteMessage",
            Op::ChangeMessageVisibility => "ChangeMessageVisibility",
        }
    }

    fn service(self) -> &'static str {
        match self {
            Op::ListObjects | Op::GetObject => "s3",
            _ => "sqs",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed(ErrorClass),
}

impl Outcome {
    fn index(self) -> usize {
        match self {
            Outcome::Ok => 0,
            Outcome::Failed(ErrorClass::Transient) => 1,
            Outcome::Failed(ErrorClass::Denied) => 2,
            Outcome::Failed(ErrorClass::Permanent) => 3,
        }
    }

    const NAMES: [&'static str; 4] = ["ok", "transient", "denied", "permanent"];
}

/// Upper bounds of the commit-latency buckets, in seconds.
const COMMIT_BOUNDS: &[f64] = &[
    0.000_25, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0,
];

/// Upper bounds of the delivery-latency buckets (taken to acknowledged), in seconds: a
/// receiver answers in milliseconds when well, minutes when it is down.
const DELIVERY_BOUNDS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// A Prometheus histogram of durations.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last one is `+Inf`.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    /// Buckets for ledger commits (sub-millisecond to a second).
    fn default() -> Self {
        Self::with_bounds(COMMIT_BOUNDS)
    }
}

impl Histogram {
    fn with_bounds(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut total = 0;
        for (i, c) in self.counts.iter().enumerate() {
            total += c.load(Ordering::Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {total}");
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {total}");
    }
}

/// How one request to an output's receiver ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// 2xx: the receiver has the batch.
    Ok,
    /// 408, 429, 5xx: tried again.
    Transient,
    /// Any other status (a setting to fix): tried again, slowly.
    Refused,
    /// No answer: refused connection, reset, timeout.
    NoAnswer,
}

impl Answered {
    const ALL: [Answered; 4] = [
        Answered::Ok,
        Answered::Transient,
        Answered::Refused,
        Answered::NoAnswer,
    ];

    fn name(self) -> &'static str {
        match self {
            Answered::Ok => "ok",
            Answered::Transient => "transient",
            Answered::Refused => "refused",
            Answered::NoAnswer => "no_answer",
        }
    }
}

/// An output that waits for its receiver's answer before the ledger moves (the command's
/// `http` output): what it sent and what was acknowledged. Served only once an output
/// says it is there, so the plugin's page carries no empty series.
#[derive(Debug)]
pub struct OutputMetrics {
    pub enabled: std::sync::atomic::AtomicBool,
    requests: [AtomicU64; 4],
    /// Events and bytes (before compression) the receiver acknowledged.
    pub events_acked: AtomicU64,
    pub bytes_acked: AtomicU64,
    /// Bytes sent on the wire, every attempt counted (after compression).
    pub bytes_sent: AtomicU64,
    /// Bytes (before compression) taken from the engine and not yet acknowledged.
    pub bytes_waiting: AtomicU64,
    /// From taking a batch to its acknowledgement.
    pub delivery_seconds: Histogram,
}

impl Default for OutputMetrics {
    fn default() -> Self {
        Self {
            enabled: Default::default(),
            requests: Default::default(),
            events_acked: Default::default(),
            bytes_acked: Default::default(),
            bytes_sent: Default::default(),
            bytes_waiting: Default::default(),
            delivery_seconds: Histogram::with_bounds(DELIVERY_BOUNDS),
        }
    }
}

impl OutputMetrics {
    pub fn request(&self, answered: Answered) {
        let i = Answered::ALL
            .iter()
            .position(|a| *a == answered)
            .unwrap_or(0);
        self.requests[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests that ended this way.
    pub fn requests(&self, answered: Answered) -> u64 {
        let i = Answered::ALL
            .iter()
            .position(|a| *a == answered)
            .unwrap_or(0);
        self.requests[i].load(Ordering::Relaxed)
    }

    pub fn render(&self, out: &mut String) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let _ = writeln!(
            out,
            "# HELP cloudtrail_s3_output_requests_total requests to the output's receiver by outcome\n# TYPE cloudtrail_s3_output_requests_total counter"
        );
        for a in Answered::ALL {
            let _ = writeln!(
                out,
                "cloudtrail_s3_output_requests_total{{outcome=\"{}\"}} {}",
                a.name(),
                self.requests(a)
            );
        }
        for (name, value, help) in [
            (
                "output_events_acknowledged_total",
                &self.events_acked,
                "events the receiver acknowledged (then committed)",
            ),
            (
                "output_bytes_acknowledged_total",
                &self.bytes_acked,
                "bytes the receiver acknowledged, before compression",
            ),
            (
                "output_bytes_sent_total",
                &self.bytes_sent,
                "request bodies sent, every attempt, after compression",
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP cloudtrail_s3_{name} {help}\n# TYPE cloudtrail_s3_{name} counter\ncloudtrail_s3_{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        gauge(
            out,
            "output_bytes_unacknowledged",
            "bytes taken for the receiver and not acknowledged yet, before compression",
            self.bytes_waiting.load(Ordering::Relaxed),
        );
        self.delivery_seconds.render(
            "cloudtrail_s3_output_delivery_seconds",
            "from taking a batch to the receiver's acknowledgement",
            out,
        );
    }
}

/// The engine's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub scans: AtomicU64,
    pub keys_listed: AtomicU64,
    pub objects_shipped: AtomicU64,
    pub objects_failed: AtomicU64,
    pub objects_quarantined: AtomicU64,
    pub events_shipped: AtomicU64,
    pub events_fallback_time: AtomicU64,
    pub events_unencodable: AtomicU64,
    pub bytes_downloaded: AtomicU64,
    pub bytes_decompressed: AtomicU64,
    pub sqs_received: AtomicU64,
    pub sqs_deleted: AtomicU64,
    pub sqs_returned: AtomicU64,
    /// Messages deleted while some of their objects wait in the ledger for a retry.
    pub sqs_entrusted: AtomicU64,
    pub sqs_extended: AtomicU64,
    pub notices_matched: AtomicU64,
    pub notices_unmatched: AtomicU64,
    /// Hybrid: notifications behind the listing's horizon, taken as shipped.
    pub notices_behind: AtomicU64,
    requests: [[AtomicU64; 4]; 5],
    pub commit_seconds: Histogram,
}

impl Metrics {
    pub fn request(&self, op: Op, outcome: Outcome) {
        let i = Op::ALL.iter().position(|o| *o == op).unwrap_or(0);
        self.requests[i][outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests made of one operation, whatever their outcome.
    pub fn requests_of(&self, op: Op) -> u64 {
        let i = Op::ALL.iter().position(|o| *o == op).unwrap_or(0);
        self.requests[i]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters and the histogram in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let counters: [(&str, &AtomicU64, &str); 18] = [
            ("scans_total", &self.scans, "listing scans completed"),
            (
                "objects_listed_total",
                &self.keys_listed,
                "keys returned by S3 listings",
            ),
            (
                "objects_shipped_total",
                &self.objects_shipped,
                "objects whose every event the host has",
            ),
            (
                "objects_failed_total",
                &self.objects_failed,
                "objects given up on for good (bad data, 404), with their reason in the ledger",
            ),
            (
                "objects_quarantined_total",
                &self.objects_quarantined,
                "SQS messages quarantined after max_receive_count receives",
            ),
            (
                "events_shipped_total",
                &self.events_shipped,
                "events the host has (committed)",
            ),
            (
                "events_fallback_time_total",
                &self.events_fallback_time,
                "events stamped with their object's LastModified (no usable eventTime)",
            ),
            (
                "events_unencodable_total",
                &self.events_unencodable,
                "events left out because they could not be encoded",
            ),
            (
                "bytes_downloaded_total",
                &self.bytes_downloaded,
                "object bytes read from S3 or the folder (compressed)",
            ),
            (
                "bytes_decompressed_total",
                &self.bytes_decompressed,
                "JSON bytes after decompression",
            ),
            (
                "sqs_messages_received_total",
                &self.sqs_received,
                "SQS messages received",
            ),
            (
                "sqs_messages_deleted_total",
                &self.sqs_deleted,
                "SQS messages deleted once their objects were shipped",
            ),
            (
                "sqs_messages_returned_total",
                &self.sqs_returned,
                "SQS messages handed back to the queue (a transient failure, shutdown)",
            ),
            (
                "sqs_messages_entrusted_total",
                &self.sqs_entrusted,
                "SQS messages deleted while some of their objects wait in the ledger for a retry (denied, transient)",
            ),
            (
                "sqs_visibility_extensions_total",
                &self.sqs_extended,
                "visibility timeouts extended while a message's objects were in flight",
            ),
            (
                "sqs_keys_matched_total",
                &self.notices_matched,
                "notification keys matched by path_expression",
            ),
            (
                "sqs_keys_unmatched_total",
                &self.notices_unmatched,
                "notification keys path_expression does not match (deleted, not shipped)",
            ),
            (
                "sqs_keys_behind_horizon_total",
                &self.notices_behind,
                "hybrid: old notifications for keys behind the listing's horizon, taken as shipped",
            ),
        ];
        for (name, value, help) in counters {
            let _ = writeln!(
                out,
                "# HELP cloudtrail_s3_{name} {help}\n# TYPE cloudtrail_s3_{name} counter\ncloudtrail_s3_{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP cloudtrail_s3_requests_total S3 and SQS requests by operation and outcome\n# TYPE cloudtrail_s3_requests_total counter"
        );
        for (i, op) in Op::ALL.iter().enumerate() {
            for (j, outcome) in Outcome::NAMES.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "cloudtrail_s3_requests_total{{service=\"{}\",operation=\"{}\",outcome=\"{outcome}\"}} {}",
                    op.service(),
                    op.name(),
                    self.requests[i][j].load(Ordering::Relaxed)
                );
            }
        }
        self.commit_seconds.render(
            "cloudtrail_s3_commit_seconds",
            "time to record one batch in the ledger (a durable transaction)",
            out,
        );
    }
}

/// Writes one gauge with its help line.
pub fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP cloudtrail_s3_{name} {help}\n# TYPE cloudtrail_s3_{name} gauge\ncloudtrail_s3_{name} {value}"
    );
}

/// Writes one counter with its help line.
pub fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP cloudtrail_s3_{name} {help}\n# TYPE cloudtrail_s3_{name} counter\ncloudtrail_s3_{name} {value}"
    );
}

/// Escapes a label value.
pub fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn renders_counters_requests_and_a_cumulative_histogram() {
        let m = Metrics::default();
        Metrics::add(&m.events_shipped, 7);
        m.request(Op::GetObject, Outcome::Ok);
        m.request(Op::GetObject, Outcome::Failed(ErrorClass::Denied));
        m.commit_seconds.observe(Duration::from_micros(300));
        m.commit_seconds.observe(Duration::from_secs(2));
        let mut out = String::new();
        m.render(&mut out);
        let output = OutputMetrics::default();
        output.request(Answered::Refused);
        output.delivery_seconds.observe(Duration::from_secs(3));
        let mut none = String::new();
        output.render(&mut none);
        assert!(none.is_empty(), "served before an output is there: {none}");
        output.enabled.store(true, Ordering::Relaxed);
        let mut page = String::new();
        output.render(&mut page);
        assert!(page.contains("cloudtrail_s3_output_requests_total{outcome=\"refused\"} 1\n"));
        assert!(page.contains("cloudtrail_s3_output_delivery_seconds_bucket{le=\"2.5\"} 0\n"));
        assert!(page.contains("cloudtrail_s3_output_delivery_seconds_bucket{le=\"5\"} 1\n"));
        assert!(
            out.contains("cloudtrail_s3_events_shipped_total 7\n"),
            "{out}"
        );
        assert!(out.contains(
            "cloudtrail_s3_requests_total{service=\"s3\",operation=\"GetObject\",outcome=\"denied\"} 1\n"
        ));
        assert!(out.contains("cloudtrail_s3_commit_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(out.contains("cloudtrail_s3_commit_seconds_bucket{le=\"1\"} 1\n"));
        assert!(out.contains("cloudtrail_s3_commit_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(out.contains("cloudtrail_s3_commit_seconds_count 2\n"));
        assert_eq!(m.requests_of(Op::GetObject), 2);
        assert_eq!(label("a\"b\\"), "a\\\"b\\\\");
    }
}
