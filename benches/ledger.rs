//! The delivery ledger's cost as it grows: commit latency (p50, p99, max) and file size at
//! 10,000, 100,000 and 1,000,000 tracked objects, on the disk the benchmark runs on (each
//! commit is a durable redb transaction: written and fsynced).
//!
//! A commit is what Fluent Bit's collect runs once the host has a batch: here 8 marks, 6
//! of them progress within objects and 2 objects done, the shape of a 4 MB batch of mostly
//! small CloudTrail objects. Claims (a scan's 100 new objects, lazily durable) are timed
//! beside it. `scripts/bench ledger` runs it; `LEDGER_SIZES=10000,100000` picks sizes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudtrail_s3::engine::handoff::{End, Mark};
use cloudtrail_s3::ledger::{Backoff, Claimable, Honour, Ledger};

const COMMITS: usize = 2000;

fn id(n: u64) -> String {
    let day = 1 + (n / 2000) % 28;
    format!(
        "s3://bench-bucket/AWSLogs/123456789012/CloudTrail/us-east-1/2026/11/{day:02}/123456789012_CloudTrail_us-east-1_20261124T0000Z_{n:016x}.json.gz"
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Claims objects as a scan would.
fn claim(ledger: &Ledger, ids: &[String], now: u32) {
    let claim: Vec<Claimable<'_>> = ids
        .iter()
        .map(|id| Claimable {
            id,
            size: 30_000,
            modified: (now, 0),
            forget_by: None,
        })
        .collect();
    ledger.claim(&claim, now, Honour::Backoff).unwrap();
}

fn fill(ledger: &Ledger, from: u64, to: u64, now: u32) {
    let mut n = from;
    while n < to {
        let end = (n + 10_000).min(to);
        let ids: Vec<String> = (n..end).map(id).collect();
        claim(ledger, &ids, now);
        let marks: Vec<Mark> = ids
            .iter()
            .map(|id| Mark {
                id: Arc::from(id.as_str()),
                events: 50,
                position: 50,
                end: Some(End::Done),
                ..Mark::default()
            })
            .collect();
        ledger.commit(&marks, now, Backoff::TRANSIENT).unwrap();
        n = end;
    }
}

/// This process's resident memory now (`VmRSS`), in kB: the ledger's cache is most of it.
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("ledger: benchmark");
        return;
    }
    let sizes: Vec<u64> = std::env::var("LEDGER_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000, 1_000_000]);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("bench.db");
    let now = 1_790_000_000;
    // `LEDGER_CACHE=1024M` runs it with another page cache than the shipper's.
    let cache = std::env::var("LEDGER_CACHE")
        .ok()
        .and_then(|c| c.trim_end_matches('M').parse::<usize>().ok())
        .map_or(cloudtrail_s3::ledger::CACHE_BYTES, |mb| mb << 20);
    let mut ledger = Ledger::open_with_cache(Some(&path), None, now, cache).unwrap();
    println!(
        "ledger benchmark: {} (durable commits: write + fsync), page cache {} MB",
        path.display(),
        cache >> 20
    );
    println!(
        "| tracked objects | commit p50 ms | commit p99 ms | commit max ms | claim 100 p50 ms | claim 100 p99 ms | file MB | compacted MB | compaction s | RSS MB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut filled = 0;
    let mut next = 10_000_000u64;
    for size in sizes {
        fill(&ledger, filled, size, now);
        filled = size;
        let mut commits = Vec::with_capacity(COMMITS);
        let mut claims = Vec::with_capacity(COMMITS / 10);
        for round in 0..COMMITS {
            if round % 10 == 0 {
                let ids: Vec<String> = (next..next + 100).map(id).collect();
                let t = Instant::now();
                claim(&ledger, &ids, now);
                claims.push(t.elapsed());
            }
            let base = next + (round as u64 % 100);
            let marks: Vec<Mark> = (0..8)
                .map(|k| Mark {
                    id: Arc::from(id(base + k).as_str()),
                    events: 40,
                    position: 40 * (round as u64 + 1),
                    end: (k >= 6).then_some(End::Done),
                    ..Mark::default()
                })
                .collect();
            let t = Instant::now();
            ledger.commit(&marks, now, Backoff::TRANSIENT).unwrap();
            commits.push(t.elapsed());
            if round % 10 == 9 {
                next += 100;
            }
        }
        commits.sort();
        claims.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let bytes = std::fs::metadata(&path).unwrap().len();
        let t = Instant::now();
        ledger.compact().unwrap();
        let compaction = t.elapsed();
        let compacted = std::fs::metadata(&path).unwrap().len();
        println!(
            "| {size} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} | {:.0} |",
            ms(percentile(&commits, 0.5)),
            ms(percentile(&commits, 0.99)),
            ms(*commits.last().unwrap()),
            ms(percentile(&claims, 0.5)),
            ms(percentile(&claims, 0.99)),
            bytes as f64 / 1e6,
            compacted as f64 / 1e6,
            compaction.as_secs_f64(),
            rss_kb() as f64 / 1024.0
        );
    }
}
