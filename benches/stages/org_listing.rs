//! The `org-listing` stage: an organization's bucket listed through a proxy that adds a
//! round trip's latency to every S3 request, one listing at a time against
//! `list_concurrency`'s default, side by side in one run.
//!
//! The bucket holds `ACCOUNTS` x `REGIONS` region prefixes with one object each (moto on
//! loopback). Each side gets its own scan and in-memory ledger: the first scan enumerates
//! accounts and regions and claims every object; the second, an idle scan, is what every
//! `scan_interval` costs afterwards (one LIST per prefix).

use std::sync::Arc;
use std::time::Instant;

use cloudtrail_s3::discover::bucket::BucketScan;
use cloudtrail_s3::discover::listing::{S3Lister, SystemClock};
use cloudtrail_s3::layout::day_path;
use cloudtrail_s3::ledger::Ledger;
use cloudtrail_s3::log::{Level, Logger, StderrSink};
use cloudtrail_s3::observe::Observe;
use cloudtrail_s3::pathexpr::PathExpression;
use cloudtrail_s3::select::Selection;
use cloudtrail_s3::timestamp::EventTime;
use futures_util::{StreamExt, stream};

use crate::latency::{LATENCY, proxied_test_server};
use crate::server;

pub const ACCOUNTS: usize = 100;
pub const REGIONS: usize = 17;

fn key(account: usize, region: usize, day: &str) -> String {
    format!(
        "AWSLogs/{:012}/CloudTrail/region-{region:02}/{day}/{:012}_CloudTrail_region-{region:02}_x.json.gz",
        100_000_000_000 + account,
        100_000_000_000 + account
    )
}

/// Seconds of the first and the idle scan with `concurrency` listings in flight, and the
/// objects the first found.
fn scans(
    rt: &tokio::runtime::Runtime,
    endpoint: &str,
    bucket: &str,
    concurrency: usize,
) -> (f64, f64, usize) {
    let now = EventTime::now();
    let ledger = Ledger::open(None, Some(bucket), now.secs()).unwrap();
    let mut scan = BucketScan::new(
        S3Lister {
            client: server::client_at(endpoint),
            bucket: bucket.into(),
            observe: Arc::new(Observe::new(3600, Default::default())),
        },
        SystemClock,
        Selection::events(
            PathExpression::new(cloudtrail_s3::config::DEFAULT_PATH_EXPRESSION).unwrap(),
        ),
        EventTime::new(i64::from(now.secs()) - 86_400, 0).unwrap(),
        48 * 3600,
        Logger::new(Arc::new(StderrSink(Level::Error))),
    )
    .with_concurrency(concurrency);
    let t = Instant::now();
    let found = rt.block_on(scan.scan(&ledger)).len();
    let first = t.elapsed().as_secs_f64();
    let t = Instant::now();
    rt.block_on(scan.scan(&ledger));
    (first, t.elapsed().as_secs_f64(), found)
}

/// The note of the stage's row: both sides' times and their ratio.
pub fn run() -> (f64, String) {
    let bucket = server::bucket("bench-org");
    let day = day_path(i64::from(EventTime::now().secs()) / 86_400);
    let keys: Vec<String> = (0..ACCOUNTS)
        .flat_map(|a| (0..REGIONS).map(move |r| (a, r)))
        .map(|(a, r)| key(a, r, &day))
        .collect();
    let client = server::client();
    server::block_on(
        stream::iter(&keys)
            .map(|k| {
                client
                    .put_object()
                    .bucket(&bucket)
                    .key(k)
                    .body(b"{\"Records\":[]}".to_vec().into())
                    .send()
            })
            .buffer_unordered(16)
            .for_each(|r| async move {
                r.expect("put");
            }),
    );
    let (rt, proxy) = proxied_test_server();
    let (first1, idle1, found1) = scans(&rt, &proxy, &bucket, 1);
    let (first16, idle16, found16) = scans(&rt, &proxy, &bucket, 16);
    assert_eq!(
        (found1, found16),
        (keys.len(), keys.len()),
        "every object found"
    );
    (
        idle16,
        format!(
            "{} prefixes, {} ms added per request: idle scan {idle16:.1} s at list_concurrency 16 vs {idle1:.1} s at 1 ({:.1}x); first scan (enumeration) {first16:.1} s vs {first1:.1} s",
            keys.len(),
            LATENCY.as_millis(),
            idle1 / idle16
        ),
    )
}
