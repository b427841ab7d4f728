//! What the engine's HTTP endpoint answers: `/metrics`, `/health`, and the operator
//! commands on the running instance: `GET /status` (what `cloudtrail-s3 status --json`
//! prints) and `POST /retry?id=ID&id=…` or `POST /retry?all_failed` (what
//! `cloudtrail-s3 retry` does), the latter from loopback alone.

use std::path::PathBuf;

use super::Core;
use crate::observe::serve::{Answer, Request};
use crate::ops::Selection;
use crate::timestamp::EventTime;

fn json(status: u16, body: String) -> Answer {
    Answer {
        status,
        content_type: "application/json",
        body,
    }
}

fn text(status: u16, body: &str) -> Answer {
    Answer {
        status,
        content_type: "text/plain",
        body: format!("{body}\n"),
    }
}

/// `GET /status`: the ledger's report as `status --json` prints it (same keys, same order),
/// then the integrity rows.
#[derive(serde::Serialize)]
struct LiveStatus<'a> {
    #[serde(flatten)]
    report: &'a crate::ops::StatusReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    integrity: Option<Vec<crate::digest::integrity::IntegrityRow>>,
}

impl Core {
    /// What the HTTP endpoint answers.
    pub(super) fn answer(&self, request: &Request) -> Answer {
        use crate::observe::metrics::gauge;
        let path = request.path.as_str();
        let read_only = matches!(path, "/metrics" | "/health" | "/status");
        if read_only && request.method != "GET" {
            return text(405, "GET only");
        }
        match path {
            "/status" => self.live_status(),
            "/retry" => self.live_retry(request),
            "/metrics" => {
                let mut out = String::with_capacity(8 << 10);
                self.observe.metrics.render(&mut out);
                self.observe.output.render(&mut out);
                gauge(
                    &mut out,
                    "objects_in_flight",
                    "objects claimed and not finished",
                    self.ledger.inflight_count(),
                );
                gauge(
                    &mut out,
                    "handoff_bytes",
                    "encoded bytes waiting for the host",
                    self.queue.bytes(),
                );
                gauge(
                    &mut out,
                    "sqs_messages_held",
                    "SQS messages received and not settled",
                    self.tracker().len(),
                );
                gauge(
                    &mut out,
                    "healthy",
                    "1 when /health answers 200",
                    u8::from(self.observe.health.reasons().is_empty()),
                );
                if let Some(counts) = &self.digest_counts {
                    for (name, help, value) in counts.named() {
                        crate::observe::metrics::counter(&mut out, name, help, value);
                    }
                }
                if let Some(shared) = self.ledger.shared() {
                    for (name, help, value) in shared.counts.named() {
                        crate::observe::metrics::counter(&mut out, name, help, value);
                    }
                }
                self.observe
                    .freshness
                    .render(EventTime::now().secs(), &mut out);
                Answer {
                    status: 200,
                    content_type: "text/plain; version=0.0.4",
                    body: out,
                }
            }
            "/health" => {
                let (status, body) = self.observe.health.answer();
                Answer {
                    status,
                    content_type: "application/json",
                    body,
                }
            }
            _ => text(404, "/metrics, /health, /status, or POST /retry"),
        }
    }

    /// The ledger's name in reports: its file, or its DynamoDB table.
    fn ledger_name(&self) -> PathBuf {
        match (&self.config.db, &self.config.shared_ledger) {
            (_, Some(shared)) => PathBuf::from(format!("dynamodb:{}", shared.table)),
            (Some(db), None) => db.clone(),
            (None, None) => PathBuf::from("(no ledger: state in memory)"),
        }
    }

    fn live_status(&self) -> Answer {
        let now = EventTime::now().secs();
        let report = match crate::ops::status(&self.ledger, &self.ledger_name(), now) {
            Ok(report) => report,
            Err(e) => return text(503, &format!("status: {e}")),
        };
        // The ledger's report, and with `digest.validate` the integrity per account and
        // region since this start (`cloudtrail-s3 status` reads a stopped ledger, which
        // holds no such tallies).
        let live = LiveStatus {
            report: &report,
            integrity: self.integrity.as_ref().map(|i| i.rows()),
        };
        match serde_json::to_string_pretty(&live) {
            Ok(body) => json(200, body),
            Err(e) => text(500, &format!("status: {e}")),
        }
    }

    /// Puts failed objects back in line on the running instance. Changes state, so only a
    /// peer on this machine may ask (`metrics.listen` may face a network).
    fn live_retry(&self, request: &Request) -> Answer {
        if request.method != "POST" {
            return text(405, "POST only");
        }
        if !request.loopback {
            return text(403, "retry is answered on loopback only");
        }
        let all = request.query.iter().any(|(k, _)| k == "all_failed");
        let ids: Vec<String> = request
            .query
            .iter()
            .filter(|(k, _)| k == "id")
            .map(|(_, v)| v.clone())
            .collect();
        let which = match (all, ids.is_empty()) {
            (true, true) => Selection::AllFailed,
            (false, false) => Selection::Ids(ids),
            _ => {
                return text(
                    400,
                    "name objects with id=ID (repeatable), or all_failed, not both",
                );
            }
        };
        let now = EventTime::now().secs();
        match crate::ops::retry(&self.ledger, &which, now) {
            Ok(outcome) => {
                if !outcome.put_back.is_empty() {
                    self.log.info(format_args!(
                        "retry (POST /retry): {} failed objects put back in line",
                        outcome.put_back.len()
                    ));
                }
                match serde_json::to_string_pretty(&outcome) {
                    Ok(body) => json(200, body),
                    Err(e) => text(500, &format!("retry: {e}")),
                }
            }
            Err(e) => text(503, &format!("retry: {e}")),
        }
    }
}
