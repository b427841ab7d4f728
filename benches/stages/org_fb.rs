//! The `org-fb` stage (issue 20, item 5): an organization's bucket through the real Fluent
//! Bit named by `FLUENT_BIT`, the release plugin at its defaults in listing mode.
//!
//! The bucket is an organization trail's (`AWSLogs/o-…/ACCOUNT/CloudTrail/REGION/…`) with
//! one small object (one event) in each account and region prefix, on moto. Every S3
//! request goes through the bench's proxy, which notes each listing (`list-type=2`) as the
//! server receives it, so the LISTs are counted outside the shipper. Two shapes, one after
//! the other:
//!
//! * `BIG_ACCOUNTS` x 17 regions, no latency added: the time until every event is out, the
//!   LISTs of an idle scan, the peak RSS (`VmHWM`), the metrics page (`GET /metrics`), the
//!   live `GET /status`, the ledger file, and `cloudtrail-s3 status` on it after a stop;
//! * `SMALL_ACCOUNTS` x 17 regions with [`LATENCY`] added to every request: how long an idle
//!   scan takes (issue 20 measured 99 s through the real host before listings ran
//!   concurrently).
//!
//! An idle scan is the one that starts after every event is out: the window between two
//! increments of `cloudtrail_s3_scans_total`, read at the idle gap (`scan_interval`, the
//! default 60 s) that follows each scan, so the count holds exactly one scan's LISTs.

use std::cell::RefCell;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cloudtrail_s3::layout::day_path;
use cloudtrail_s3::timestamp::EventTime;
use futures_util::{StreamExt, stream};

use crate::http_get::{free_addr, get};
use crate::latency::{LATENCY, Listings, counting_proxy};
use crate::{gzip_bytes, host, repo, server, watch_host};

/// Accounts of the large shape: 500 x 17 = 8,500 region prefixes.
const BIG_ACCOUNTS: usize = 500;
/// Accounts of the shape run with latency: 100 x 17 = 1,700 region prefixes.
const SMALL_ACCOUNTS: usize = 100;

/// The regions CloudTrail writes to in a typical organization trail.
const REGIONS: [&str; 17] = [
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "ap-south-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "sa-east-1",
];

/// What one shape measured.
pub struct Org {
    pub prefixes: usize,
    /// Start to the last event on the host's output.
    pub all_secs: f64,
    /// Listing requests the server received during one idle scan.
    pub idle_lists: usize,
    /// From the idle scan's first LIST sent to its last, plus one added latency.
    pub idle_scan_secs: f64,
    pub peak_kb: u64,
    pub metrics_bytes: usize,
    pub metrics_series: usize,
    pub status_live_ms: f64,
    pub status_cmd_ms: f64,
    pub ledger_bytes: u64,
}

/// The row: both shapes, one run.
pub fn run(fb: &Path) -> (f64, u64, String) {
    let big = org(fb, BIG_ACCOUNTS, Duration::ZERO);
    let small = org(fb, SMALL_ACCOUNTS, LATENCY);
    let note = format!(
        "real {} at the defaults (listing mode), {} prefixes, one event each: all out in {:.0} s, idle scan {} LISTs in {:.1} s, peak {:.0} MB, /metrics {:.0} kB ({} series), GET /status {:.0} ms, ledger {:.1} MB, `cloudtrail-s3 status` after the stop {:.0} ms; {} prefixes with {} ms added per request: idle scan {} LISTs in {:.1} s, all out in {:.0} s, peak {:.0} MB",
        fb.file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
        big.prefixes,
        big.all_secs,
        big.idle_lists,
        big.idle_scan_secs,
        big.peak_kb as f64 / 1024.0,
        big.metrics_bytes as f64 / 1024.0,
        big.metrics_series,
        big.status_live_ms,
        big.ledger_bytes as f64 / 1e6,
        big.status_cmd_ms,
        small.prefixes,
        LATENCY.as_millis(),
        small.idle_lists,
        small.idle_scan_secs,
        small.all_secs,
        small.peak_kb as f64 / 1024.0,
    );
    (big.all_secs, big.peak_kb, note)
}

/// An organization trail's bucket of `accounts` x 17 prefixes, one event each; its name.
fn bucket(accounts: usize) -> String {
    let bucket = server::bucket("bench-org-fb");
    let days = i64::from(EventTime::now().secs()) / 86_400;
    let day = day_path(days);
    let stamp = day.replace('/', "");
    let client = server::client();
    let keys = (0..accounts).flat_map(|a| REGIONS.iter().map(move |r| (a, *r)));
    server::block_on(
        stream::iter(keys)
            .map(|(a, region)| {
                let account = 100_000_000_000 + a;
                let key = format!(
                    "AWSLogs/o-bench00001/{account:012}/CloudTrail/{region}/{day}/{account:012}_CloudTrail_{region}_{stamp}T0000Z_x.json.gz"
                );
                let body = gzip_bytes(
                    format!(
                        r#"{{"Records":[{{"eventID":"org-{account}-{region}","eventTime":"{}T00:00:00Z","awsRegion":"{region}"}}]}}"#,
                        day.replace('/', "-")
                    )
                    .as_bytes(),
                );
                client
                    .put_object()
                    .bucket(&bucket)
                    .key(key)
                    .body(body.into())
                    .send()
            })
            .buffer_unordered(16)
            .for_each(|r| async move {
                r.expect("put");
            }),
    );
    bucket
}

/// `cloudtrail_s3_scans_total` on the page at `addr`, `None` while it does not answer.
fn scans(addr: &str) -> Option<u64> {
    let (_, page) = get(addr, "/metrics")?;
    page.lines()
        .find_map(|l| l.strip_prefix("cloudtrail_s3_scans_total "))
        .and_then(|v| v.trim().parse().ok())
}

/// The real host over an organization's bucket of `accounts` x 17 prefixes, `latency`
/// added to every S3 request.
fn org(fb: &Path, accounts: usize, latency: Duration) -> Org {
    let prefixes = accounts * REGIONS.len();
    let bucket = bucket(accounts);
    let (rt, proxy, listings) = counting_proxy(latency);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cloudtrail-s3.db");
    let addr = free_addr();
    let conf = dir.path().join("fluent-bit.yaml");
    std::fs::write(
        &conf,
        format!(
            "service:\n  flush: 1\n  log_level: warn\nplugins:\n  - {}\npipeline:\n  inputs:\n    - name: cloudtrail\n      tag: ct\n      bucket: {bucket}\n      endpoint: {proxy}\n      region: us-east-1\n      force_path_style: 'on'\n      access_key_id: {}\n      secret_access_key: {}\n      db: {}\n      metrics.listen: {addr}\n  outputs:\n    - name: stdout\n      match: '*'\n      format: json_lines\n",
            host::so_path().display(),
            server::ACCESS_KEY,
            server::SECRET_KEY,
            db.display(),
        ),
    )
    .unwrap();
    let mut child = Command::new(fb)
        .arg("-c")
        .arg(&conf)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start Fluent Bit");
    let records = Arc::new(AtomicU64::new(0));
    let stdout = child.stdout.take().unwrap();
    let counted = records.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if line.contains("\"org-") {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    // The phases the watch goes through: every event out, then the scan under way at that
    // moment ends (the first mark), then the idle scan after it ends (the second).
    let mut all_secs = None;
    let marks: RefCell<Vec<(u64, usize)>> = RefCell::default();
    let listed = |l: &Listings| l.lock().unwrap().len();
    let (_, peak_kb) = watch_host(
        &mut child,
        Duration::from_millis(100),
        |secs| {
            if all_secs.is_none() {
                if records.load(Ordering::Relaxed) >= prefixes as u64 {
                    all_secs = Some(secs);
                }
                return false;
            }
            let Some(n) = scans(&addr) else {
                return false;
            };
            let mut marks = marks.borrow_mut();
            if marks.last().is_none_or(|(m, _)| n > *m) {
                marks.push((n, listed(&listings)));
            }
            marks.len() == 3
        },
        || {
            format!(
                "{} of {prefixes} records, scans seen {:?}",
                records.load(Ordering::Relaxed),
                marks.borrow()
            )
        },
    );
    let marks = marks.into_inner();
    let (from, to) = (marks[1].1, marks[2].1);
    let idle: Vec<Instant> = listings.lock().unwrap()[from..to].to_vec();
    let idle_scan_secs = match (idle.first(), idle.last()) {
        (Some(a), Some(b)) => (*b - *a + latency).as_secs_f64(),
        _ => 0.0,
    };
    let (_, page) = get(&addr, "/metrics").expect("metrics page");
    let metrics_series = page
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    let t = Instant::now();
    let (code, _) = get(&addr, "/status").expect("GET /status");
    let status_live_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(code, 200, "GET /status");
    // A graceful stop, then the operator's command on the ledger it left.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    drop(rt);
    let ledger_bytes = std::fs::metadata(&db).map_or(0, |m| m.len());
    let t = Instant::now();
    let out = Command::new(repo().join("target/release/cloudtrail-s3"))
        .args(["status", "--db"])
        .arg(&db)
        .output()
        .expect("cloudtrail-s3 status");
    let status_cmd_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert!(out.status.success(), "cloudtrail-s3 status: {out:?}");
    Org {
        prefixes,
        all_secs: all_secs.unwrap(),
        idle_lists: to - from,
        idle_scan_secs,
        peak_kb,
        metrics_bytes: page.len(),
        metrics_series,
        status_live_ms,
        status_cmd_ms,
        ledger_bytes,
    }
}
