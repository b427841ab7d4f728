//! What the engine is doing, for people and monitors: counters, freshness per account and
//! region, health, and the HTTP endpoint that serves them (`metrics.listen`).

pub mod freshness;
pub mod health;
pub mod metrics;
pub mod serve;

use freshness::Freshness;
use health::Health;
use metrics::{Metrics, OutputMetrics};

/// Everything observed, shared by the engine's parts.
#[derive(Debug)]
pub struct Observe {
    pub metrics: Metrics,
    pub freshness: Freshness,
    pub health: Health,
    /// Filled by a front end whose output waits for its receiver (the command's `http`).
    pub output: OutputMetrics,
}

impl Observe {
    pub fn new(silence_alarm: u32) -> Self {
        Self {
            metrics: Metrics::default(),
            freshness: Freshness::new(silence_alarm),
            health: Health::default(),
            output: OutputMetrics::default(),
        }
    }
}
