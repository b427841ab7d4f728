//! What the engine's HTTP endpoint answers: `/metrics` and `/health`.

use super::Core;
use crate::timestamp::EventTime;

impl Core {
    /// What the HTTP endpoint answers.
    pub(super) fn answer(&self, path: &str) -> crate::observe::serve::Answer {
        use crate::observe::metrics::gauge;
        use crate::observe::serve::Answer;
        match path {
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
            _ => Answer {
                status: 404,
                content_type: "text/plain",
                body: "/metrics or /health\n".into(),
            },
        }
    }
}
