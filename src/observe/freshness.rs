//! Freshness per account and region: the newest object and event shipped, and whether a
//! prefix that delivered before has gone silent.
//!
//! CloudTrail writes a log file per account and region about every five minutes while there
//! is activity; a prefix that has shipped before and then ships nothing for `silence_alarm`
//! is shown by a gauge, with one warn line when it goes silent and one when it comes back.
//! After a restart the newest object is seeded from each prefix's watermark (the time in its
//! file name), so a prefix silent across the restart is still seen.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::layout::{Kind, account_region, file_time, kind_level};
use crate::log::Logger;
use crate::observe::metrics::label;

/// A gauge per account and region: name, help, value of a row at a time.
type Series = (&'static str, &'static str, fn(&Fresh, u32) -> String);

/// What is known of one account and region.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fresh {
    /// Newest `eventTime` shipped (Unix seconds), 0 if none yet.
    pub newest_event: u32,
    /// Newest object shipped: its LastModified (Unix seconds).
    pub newest_object: u32,
    pub silent: bool,
}

pub use crate::config::PerRegion;

/// Freshness of every account and region seen.
#[derive(Debug)]
pub struct Freshness {
    map: Mutex<BTreeMap<(String, String), Fresh>>,
    /// Seconds without a new object after which a prefix counts as silent; 0: never.
    alarm: u32,
    per_region: PerRegion,
}

impl Freshness {
    pub fn new(alarm: u32) -> Self {
        Self {
            map: Mutex::default(),
            alarm,
            per_region: PerRegion::default(),
        }
    }

    pub fn with_per_region(mut self, per_region: PerRegion) -> Self {
        self.per_region = per_region;
        self
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<(String, String), Fresh>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An object of the layout was shipped (or its events reached the host). Only
    /// management and data event files count: CloudTrail writes them about every five
    /// minutes while an account is active, while Insights and network activity files come
    /// when there is something to say, so they would hide a silent trail or raise false
    /// alarms.
    pub fn record(&self, id: &str, newest_event: u32, modified: u32) {
        if kind_level(id).is_some_and(|(kind, _)| kind != Kind::Events) {
            return;
        }
        let Some((account, region)) = account_region(id) else {
            return;
        };
        let mut map = self.map();
        let f = map
            .entry((account.to_string(), region.to_string()))
            .or_default();
        f.newest_event = f.newest_event.max(newest_event);
        f.newest_object = f.newest_object.max(modified);
    }

    /// Seeds a prefix from its watermark key (at start).
    pub fn seed(&self, key: &str) {
        if let Some(t) = file_time(key) {
            self.record(key, 0, t);
        }
    }

    /// Updates the silent flags, logging each change once.
    pub fn check(&self, now: u32, log: &Logger) {
        if self.alarm == 0 {
            return;
        }
        for ((account, region), f) in self.map().iter_mut() {
            if f.newest_object == 0 {
                continue;
            }
            let quiet = now.saturating_sub(f.newest_object);
            let silent = quiet > self.alarm;
            if silent && !f.silent {
                log.warn(format_args!(
                    "account {account} region {region}: nothing new for {quiet} s (silence_alarm {} s); the newest object shipped landed at {}",
                    self.alarm, f.newest_object
                ));
            } else if !silent && f.silent {
                log.info(format_args!(
                    "account {account} region {region}: delivering again"
                ));
            }
            f.silent = silent;
        }
    }

    pub fn snapshot(&self) -> Vec<(String, String, Fresh)> {
        self.map()
            .iter()
            .map(|((a, r), f)| (a.clone(), r.clone(), *f))
            .collect()
    }

    /// The totals over every account and region, then the per account and region gauges
    /// that `metrics.per_region` keeps.
    pub fn render(&self, now: u32, out: &mut String) {
        let all = self.snapshot();
        let silent = all.iter().filter(|(_, _, f)| f.silent).count();
        let totals: [(&str, &str, u64); 5] = [
            (
                "regions_watched",
                "accounts x regions that have shipped",
                all.len() as u64,
            ),
            (
                "regions_silent",
                "accounts x regions with nothing new for silence_alarm",
                silent as u64,
            ),
            (
                "lag_seconds_max",
                "seconds since the newest object shipped landed in S3, at the account and region furthest behind",
                all.iter()
                    .filter(|(_, _, f)| f.newest_object > 0)
                    .map(|(_, _, f)| u64::from(now.saturating_sub(f.newest_object)))
                    .max()
                    .unwrap_or(0),
            ),
            (
                "newest_event_time_seconds_max",
                "newest eventTime shipped, any account and region, Unix seconds",
                all.iter()
                    .map(|(_, _, f)| u64::from(f.newest_event))
                    .max()
                    .unwrap_or(0),
            ),
            (
                "newest_object_time_seconds_max",
                "LastModified of the newest object shipped, any account and region, Unix seconds",
                all.iter()
                    .map(|(_, _, f)| u64::from(f.newest_object))
                    .max()
                    .unwrap_or(0),
            ),
        ];
        for (name, help, value) in totals {
            crate::observe::metrics::gauge(out, name, help, value);
        }
        let rows: Vec<_> = match self.per_region {
            PerRegion::All => all,
            PerRegion::Silent => all.into_iter().filter(|(_, _, f)| f.silent).collect(),
            PerRegion::None => Vec::new(),
        };
        if rows.is_empty() {
            return;
        }
        let series: [Series; 4] = [
            (
                "newest_event_time_seconds",
                "newest eventTime shipped, Unix seconds",
                |f, _| f.newest_event.to_string(),
            ),
            (
                "newest_object_time_seconds",
                "LastModified of the newest object shipped, Unix seconds",
                |f, _| f.newest_object.to_string(),
            ),
            (
                "lag_seconds",
                "seconds since the newest object shipped landed in S3",
                |f, now| now.saturating_sub(f.newest_object).to_string(),
            ),
            (
                "silent",
                "1 when nothing new has arrived for silence_alarm",
                |f, _| u8::from(f.silent).to_string(),
            ),
        ];
        // Silent ones alone: what the silence and lag alerts read.
        let keep = |name: &str| {
            self.per_region == PerRegion::All || matches!(name, "silent" | "lag_seconds")
        };
        for (name, help, value) in series.into_iter().filter(|(n, _, _)| keep(n)) {
            let _ = writeln!(
                out,
                "# HELP cloudtrail_s3_{name} {help}\n# TYPE cloudtrail_s3_{name} gauge"
            );
            for (account, region, f) in &rows {
                let _ = writeln!(
                    out,
                    "cloudtrail_s3_{name}{{account=\"{}\",region=\"{}\"}} {}",
                    label(account),
                    label(region),
                    value(f, now)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_silent_and_comes_back() {
        let lines = std::sync::Arc::new(crate::log::tests_support::Lines::default());
        let log = Logger::new(lines.clone());
        let f = Freshness::new(600);
        let key = "AWSLogs/1/CloudTrail/us-east-1/2023/07/10/a.json.gz";
        f.record(key, 90, 100);
        f.check(650, &log);
        assert!(!f.snapshot()[0].2.silent);
        f.check(701, &log);
        assert!(f.snapshot()[0].2.silent);
        f.check(800, &log);
        f.record(key, 750, 790);
        f.check(800, &log);
        assert!(!f.snapshot()[0].2.silent);
        let text = lines.text();
        assert_eq!(text.matches("nothing new").count(), 1, "{text}");
        assert_eq!(text.matches("delivering again").count(), 1, "{text}");
        let mut out = String::new();
        f.render(800, &mut out);
        assert!(
            !out.contains("region=\"us-east-1\""),
            "delivering again: no series of its own by default\n{out}"
        );
        assert!(out.contains("cloudtrail_s3_lag_seconds_max 10\n"), "{out}");
        let f = f.with_per_region(PerRegion::All);
        let mut out = String::new();
        f.render(800, &mut out);
        assert!(out.contains("cloudtrail_s3_lag_seconds{account=\"1\",region=\"us-east-1\"} 10\n"));
    }

    #[test]
    fn the_series_count_follows_the_setting_not_the_organization() {
        let log = Logger::new(std::sync::Arc::new(
            crate::log::tests_support::Lines::default(),
        ));
        let series = |per_region: PerRegion| {
            let f = Freshness::new(600).with_per_region(per_region);
            // 500 accounts x 17 regions; three regions silent.
            for a in 0..500 {
                for r in 0..17 {
                    let key = format!("AWSLogs/{a:012}/CloudTrail/r{r}/2023/07/10/x.json.gz");
                    let landed = if a == 7 && r < 3 { 100 } else { 1_000 };
                    f.record(&key, landed, landed);
                }
            }
            f.check(1_000, &log);
            let mut out = String::new();
            f.render(1_000, &mut out);
            let lines = out.lines().filter(|l| !l.starts_with('#')).count();
            (lines, out.len())
        };
        let (silent, _) = series(PerRegion::Silent);
        assert_eq!(
            silent,
            5 + 2 * 3,
            "five totals, silent and lag for each silent region"
        );
        assert_eq!(series(PerRegion::None).0, 5);
        let (all, bytes) = series(PerRegion::All);
        assert_eq!(all, 5 + 4 * 500 * 17);
        assert!(
            bytes > 1 << 20,
            "the whole organization is over a megabyte: {bytes}"
        );
    }

    #[test]
    fn only_management_and_data_event_files_keep_a_trail_fresh() {
        let f = Freshness::new(600);
        // Network activity keeps coming while the trail's own files have stopped: silent.
        f.record(
            "AWSLogs/1/CloudTrail/us-east-1/2023/07/10/a.json.gz",
            90,
            100,
        );
        f.record(
            "AWSLogs/1/CloudTrail-NetworkActivity/us-east-1/2023/07/10/n.json.gz",
            990,
            1000,
        );
        let log = Logger::new(std::sync::Arc::new(
            crate::log::tests_support::Lines::default(),
        ));
        f.check(1000, &log);
        assert!(f.snapshot()[0].2.silent);
        // Insight files alone make no account and region to watch.
        let g = Freshness::new(600);
        g.record(
            "AWSLogs/2/CloudTrail-Insight/us-east-1/2023/07/10/i.json.gz",
            90,
            100,
        );
        assert!(g.snapshot().is_empty());
    }
}
