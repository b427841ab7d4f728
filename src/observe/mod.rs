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
    pub fn new(silence_alarm: u32, per_region: freshness::PerRegion) -> Self {
        Self {
            metrics: Metrics::default(),
            freshness: Freshness::new(silence_alarm).with_per_region(per_region),
            health: Health::default(),
            output: OutputMetrics::default(),
        }
    }
}

#[cfg(test)]
mod page_size_tests {
    #[test]
    fn the_default_page_is_under_a_hundred_series() {
        let o = super::Observe::new(3600, Default::default());
        for a in 0..50 {
            o.freshness.record(
                &format!("AWSLogs/{a:012}/CloudTrail/us-east-1/2023/07/10/x.json.gz"),
                1,
                1,
            );
        }
        let mut out = String::new();
        o.metrics.render(&mut out);
        o.output.render(&mut out);
        o.freshness.render(2, &mut out);
        let series = out.lines().filter(|l| !l.starts_with('#')).count();
        eprintln!("default page: {series} series");
        assert!(series < 100, "{series} series\n{out}");
    }
}
