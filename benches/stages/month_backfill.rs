//! The `month-backfill` stage (issue 20, item 5): a month's backfill over many prefixes,
//! counts the S3 test server cannot hold, in an in-memory bucket that makes its keys as
//! they are listed (nothing is stored). The real scan (`BucketScan`, 16 listings at once,
//! each prefix's objects fed to the workers as it is claimed) runs against the real ledger
//! file; a stand-in for the workers takes each object from the bounded queue and commits it
//! done, 256 marks a durable commit, as the host's collects would. Each scan claims up to
//! its limit in each prefix; the next follows once half of what is in flight has finished,
//! as in the engine, until no scan leaves keys. Then one more scan, after which the
//! watermarks have moved and the ledger forgets what is behind the lookback.
//!
//! Reported: objects, scans, LIST calls, the backfill's seconds, the process's peak RSS
//! (`VmHWM`, this stage runs in its own process), and the ledger file's largest size during
//! the backfill and after the last scan (compacted).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use cloudtrail_s3::discover::DiscoverError;
use cloudtrail_s3::discover::bucket::{BucketScan, CLAIMS_PER_PREFIX_MIN, CLAIMS_PER_SCAN};
use cloudtrail_s3::discover::listing::{Clock, Listed, Lister};
use cloudtrail_s3::discover::sink::Sink;
use cloudtrail_s3::engine::handoff::{End, Mark};
use cloudtrail_s3::layout::day_path;
use cloudtrail_s3::ledger::{Backoff, Ledger};
use cloudtrail_s3::log::{Level, Logger, StderrSink};
use cloudtrail_s3::pathexpr::PathExpression;
use cloudtrail_s3::select::Selection;
use cloudtrail_s3::timestamp::EventTime;
use tokio::sync::mpsc;

/// 30 accounts x 17 regions.
const ACCOUNTS: u64 = 30;
const REGIONS: u64 = 17;
const DAYS: i64 = 30;
/// One file every 15 minutes per prefix (CloudTrail writes about one every 5 in a busy
/// account and region; fewer keeps the run short).
/// `MONTH_PER_DAY=288` runs the busy shape.
fn per_day() -> u32 {
    std::env::var("MONTH_PER_DAY")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=1440).contains(n))
        .unwrap_or(96)
}
/// Marks per durable commit.
const COMMIT_EVERY: usize = 256;

/// An organization's bucket whose keys are made as they are listed: `DAYS` days of
/// [`per_day`] files in each account and region, up to `today`.
struct MonthBucket {
    bucket: Arc<str>,
    today: i64,
    now: u32,
    lists: Arc<AtomicU64>,
}

fn account(a: u64) -> String {
    format!("{:012}", 100_000_000_000 + a)
}

fn region(r: u64) -> String {
    format!("region-{r:02}")
}

impl Lister for MonthBucket {
    fn bucket(&self) -> &Arc<str> {
        &self.bucket
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, DiscoverError> {
        self.lists.fetch_add(1, Ordering::Relaxed);
        Ok(if prefix.is_empty() {
            vec!["AWSLogs/".into()]
        } else if prefix == "AWSLogs/" {
            (0..ACCOUNTS)
                .map(|a| format!("AWSLogs/{}/", account(a)))
                .collect()
        } else if let Some(acct) = prefix
            .strip_prefix("AWSLogs/")
            .and_then(|p| p.strip_suffix("/CloudTrail/"))
        {
            (0..REGIONS)
                .map(|r| format!("AWSLogs/{acct}/CloudTrail/{}/", region(r)))
                .collect()
        } else {
            Vec::new()
        })
    }

    async fn list_objects(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<Vec<Listed>, DiscoverError> {
        // S3 answers 1,000 keys a call.
        let mut out = Vec::new();
        let parts: Vec<&str> = prefix.split('/').collect();
        let (acct, reg) = (parts[1], parts[3]);
        let per_day = per_day();
        for day in self.today - DAYS + 1..=self.today {
            let path = day_path(day);
            let stamp = path.replace('/', "");
            for n in 0..per_day {
                let minute = n * (1440 / per_day);
                let key = format!(
                    "{prefix}{path}/{acct}_CloudTrail_{reg}_{stamp}T{:02}{:02}Z_x.json.gz",
                    minute / 60,
                    minute % 60
                );
                if start_after.is_some_and(|s| key.as_str() <= s) {
                    continue;
                }
                let secs = day * 86_400 + i64::from(minute) * 60 + 300;
                // Nothing from the future: today's keys up to now.
                if secs > i64::from(self.now) {
                    break;
                }
                out.push(Listed {
                    key,
                    size: 2_000,
                    last_modified: EventTime::new(secs, 0).unwrap(),
                });
            }
        }
        let pages = out.len().div_ceil(1_000).max(1) as u64;
        self.lists.fetch_add(pages, Ordering::Relaxed);
        Ok(out)
    }
}

struct Now;

impl Clock for Now {
    fn now(&self) -> EventTime {
        EventTime::now()
    }
}

/// Takes objects off the queue and commits them done, `COMMIT_EVERY` at a time.
async fn workers(
    ledger: Arc<Ledger>,
    mut rx: mpsc::Receiver<cloudtrail_s3::object::ObjectRef>,
) -> u64 {
    let mut marks = Vec::with_capacity(COMMIT_EVERY);
    let mut done = 0;
    let now = EventTime::now().secs();
    while let Some(o) = rx.recv().await {
        marks.push(Mark {
            id: o.id.clone(),
            events: 1,
            position: 1,
            end: Some(End::Done),
            ..Mark::default()
        });
        // A commit every `COMMIT_EVERY` marks, or when the queue runs dry (as the host's
        // collect hands over what it has each second).
        if marks.len() == COMMIT_EVERY || rx.is_empty() {
            done += marks.len() as u64;
            ledger.commit(&marks, now, Backoff::TRANSIENT).unwrap();
            marks.clear();
        }
    }
    done += marks.len() as u64;
    ledger.commit(&marks, now, Backoff::TRANSIENT).unwrap();
    done
}

/// The row's seconds and note.
pub fn run() -> (f64, u64, String) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("month.db");
    let now = EventTime::now().secs();
    let today = i64::from(now) / 86_400;
    let lists = Arc::new(AtomicU64::new(0));
    let lister = MonthBucket {
        bucket: "bench-month".into(),
        today,
        now,
        lists: lists.clone(),
    };
    let start = EventTime::new((today - DAYS + 1) * 86_400, 0).unwrap();
    let mut scan = BucketScan::new(
        lister,
        Now,
        Selection::events(
            PathExpression::new(cloudtrail_s3::config::DEFAULT_PATH_EXPRESSION).unwrap(),
        ),
        start,
        48 * 3600,
        Logger::new(Arc::new(StderrSink(Level::Error))),
    )
    .with_concurrency(16);
    let ledger =
        Arc::new(Ledger::open(Some(&path), Some("bench-month"), EventTime::now().secs()).unwrap());
    let t = Instant::now();
    let (tx, rx) = mpsc::channel(1_024);
    let consumer = rt.spawn(workers(ledger.clone(), rx));
    let file_mb = || std::fs::metadata(&path).unwrap().len() as f64 / 1e6;
    let mut peak_mb: f64 = 0.0;
    let mut scans = 0;
    // As the engine's scan loop: a scan that left keys past its claim limits is followed
    // by the next once half of what is in flight has finished.
    rt.block_on(async {
        loop {
            let mut sink = Sink::feed(&tx);
            let outcome = scan.scan_into(&ledger, &mut sink).await;
            scans += 1;
            peak_mb = peak_mb.max(file_mb());
            if outcome.left == 0 {
                break;
            }
            let inflight = ledger.inflight_count();
            let deadline = Instant::now() + std::time::Duration::from_secs(120);
            while ledger.inflight_count() > inflight / 2 {
                assert!(Instant::now() < deadline, "the stand-in workers stopped");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                peak_mb = peak_mb.max(file_mb());
            }
        }
    });
    drop(tx);
    let done = rt.block_on(consumer).unwrap();
    let first = t.elapsed().as_secs_f64();
    let first_mb = file_mb().max(peak_mb);
    let lists_first = lists.load(Ordering::Relaxed);
    // The next scan moves every watermark over the finished month; the ledger forgets
    // what is a lookback behind.
    let t = Instant::now();
    let again = rt.block_on(scan.scan(&ledger)).len();
    let second = t.elapsed().as_secs_f64();
    drop(scan);
    let mut ledger = Arc::into_inner(ledger).expect("the workers are done");
    ledger.compact().unwrap();
    let after_mb = std::fs::metadata(&path).unwrap().len() as f64 / 1e6;
    let hwm_kb = crate::vm_hwm_kb(std::process::id());
    // Every key up to now: the days before today whole, today's up to now.
    let per_day = per_day();
    let today_files = (0..per_day)
        .filter(|n| today * 86_400 + i64::from(n * (1440 / per_day)) * 60 + 300 <= i64::from(now))
        .count() as u64;
    let objects = ACCOUNTS * REGIONS * ((DAYS as u64 - 1) * u64::from(per_day) + today_files);
    assert_eq!(
        done, objects,
        "every object of the month claimed and committed"
    );
    assert_eq!(again, 0, "nothing found twice");
    (
        first,
        objects,
        format!(
            "{} prefixes x {DAYS} days x {} files: {objects} objects claimed, fed and committed by {scans} scans (at most {} objects a scan in each prefix) in {first:.0} s ({:.0} objects/s), {lists_first} LIST calls; peak RSS {:.0} MB; ledger file at most {first_mb:.0} MB during them, {after_mb:.0} MB compacted after the next scan ({second:.1} s), which forgets what is a lookback behind",
            ACCOUNTS * REGIONS,
            per_day,
            (CLAIMS_PER_SCAN / (ACCOUNTS * REGIONS) as usize).max(CLAIMS_PER_PREFIX_MIN),
            objects as f64 / first,
            hwm_kb as f64 / 1024.0
        ),
    )
}
