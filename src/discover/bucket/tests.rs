//! The claim limit of a bucket scan, against an in-memory listing and a ledger in memory.

use std::sync::Arc;

use super::*;
use crate::ledger::Backoff;
use crate::ledger::mark::{End, Mark};
use crate::log::tests_support::Lines;

const NOW: i64 = 1_689_100_000; // 2023-07-11
const REGION: &str = "AWSLogs/111122223333/CloudTrail/us-east-1/";
const OBJECTS: usize = 10;

/// One region prefix holding [`OBJECTS`] keys, one an hour on 2023-07-10.
struct OnePrefix {
    bucket: Arc<str>,
    /// Every object listing fails while set.
    failing: Arc<std::sync::atomic::AtomicBool>,
}

fn key(i: usize) -> String {
    format!("{REGION}2023/07/10/111122223333_CloudTrail_us-east-1_20230710T{i:02}00Z_a.json.gz")
}

impl Lister for OnePrefix {
    fn bucket(&self) -> &Arc<str> {
        &self.bucket
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, DiscoverError> {
        Ok(match prefix {
            "AWSLogs/" => vec!["AWSLogs/111122223333/".into()],
            "AWSLogs/111122223333/CloudTrail/" => vec![REGION.into()],
            _ => Vec::new(),
        })
    }

    async fn list_objects(
        &self,
        _: &str,
        start_after: Option<&str>,
    ) -> Result<Vec<Listed>, DiscoverError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(DiscoverError {
                location: REGION.into(),
                reason: "SlowDown".into(),
            });
        }
        Ok((0..OBJECTS)
            .map(key)
            .filter(|k| start_after.is_none_or(|s| k.as_str() > s))
            .map(|key| Listed {
                key,
                size: 10,
                last_modified: EventTime::new(NOW - 86_400, 0).unwrap(),
            })
            .collect())
    }
}

struct Fixed;

impl Clock for Fixed {
    fn now(&self) -> EventTime {
        EventTime::new(NOW, 0).unwrap()
    }
}

fn ids(found: &[ObjectRef]) -> Vec<String> {
    found.iter().map(|o| o.id.to_string()).collect()
}

fn ids_of(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| s3_id("b", &key(i))).collect()
}

fn done(ledger: &Ledger, found: &[ObjectRef]) {
    let marks: Vec<Mark> = found
        .iter()
        .map(|o| Mark {
            id: o.id.clone(),
            end: Some(End::Done),
            ..Mark::default()
        })
        .collect();
    ledger
        .commit(&marks, NOW as u32, Backoff::TRANSIENT)
        .unwrap();
}

/// With a limit of three a prefix, each scan claims the next three unfinished keys in
/// key order (the ones in flight count), leaves the rest, and the watermark stops at
/// the first unfinished key; the ledger holds three open entries at most.
#[test]
fn a_scan_claims_up_to_its_limit_and_the_watermark_waits_for_the_rest() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut scan = BucketScan::new(
        OnePrefix {
            bucket: "b".into(),
            failing: failing.clone(),
        },
        Fixed,
        Selection::events(PathExpression::new("AWSLogs/*/CloudTrail/*").unwrap()),
        EventTime::new(NOW - 30 * 86_400, 0).unwrap(),
        86_400,
        Logger::new(Arc::new(Lines::default())),
    )
    .with_claim_limit(ClaimLimit::PerPrefix(NonZeroUsize::new(3).unwrap()));
    let ledger = Ledger::open(None, None, 0).unwrap();
    let prefix = s3_id("b", REGION);
    let mut scan_once = |ledger: &Ledger| {
        let mut sink = Sink::Collect(Vec::new());
        let outcome = rt.block_on(scan.scan_into(ledger, &mut sink));
        let Sink::Collect(found) = sink else {
            unreachable!()
        };
        (found, outcome.left)
    };

    let (first, left) = scan_once(&ledger);
    assert_eq!(ids(&first), ids_of(0..3));
    assert_eq!(left, OBJECTS - 3);
    assert_eq!(ledger.watermark(&prefix).unwrap(), None);

    // A listing that fails leaves what the last one left: the backfill is not over.
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    let (none, left) = scan_once(&ledger);
    assert!(none.is_empty());
    assert_eq!(left, OBJECTS - 3);
    failing.store(false, std::sync::atomic::Ordering::SeqCst);

    // Nothing finished: the three in flight fill the limit, nothing more is claimed.
    let (again, left) = scan_once(&ledger);
    assert!(again.is_empty(), "claimed past the limit: {again:?}");
    assert_eq!(left, OBJECTS - 3);

    // Two of three finish: the watermark moves over them, two more are claimed.
    done(&ledger, &first[..2]);
    let (next, left) = scan_once(&ledger);
    assert_eq!(ids(&next), ids_of(3..5));
    assert_eq!(left, OBJECTS - 5);
    assert_eq!(
        ledger.watermark(&prefix).unwrap(),
        Some(s3_id("b", &key(1)))
    );
    assert_eq!(ledger.counts().unwrap().0, 3, "open entries");

    // Finishing whatever each scan claims ships every key once and takes the
    // watermark to the last; never more than three open.
    let mut shipped = ids(&first);
    shipped.extend(ids(&next));
    done(&ledger, &first[2..]);
    done(&ledger, &next);
    for _ in 0..OBJECTS {
        let (found, _) = scan_once(&ledger);
        assert!(ledger.counts().unwrap().0 <= 3);
        shipped.extend(ids(&found));
        done(&ledger, &found);
    }
    let (_, left) = scan_once(&ledger);
    assert_eq!(left, 0);
    assert_eq!(shipped, ids_of(0..OBJECTS));
    assert_eq!(
        ledger.watermark(&prefix).unwrap(),
        Some(s3_id("b", &key(OBJECTS - 1)))
    );
}

#[test]
fn the_scan_limit_is_shared_among_prefixes_with_a_floor() {
    let per_scan = ClaimLimit::default();
    assert_eq!(per_scan.per_prefix(1), CLAIMS_PER_SCAN);
    assert_eq!(per_scan.per_prefix(0), CLAIMS_PER_SCAN);
    assert_eq!(per_scan.per_prefix(510), CLAIMS_PER_SCAN / 510);
    assert_eq!(per_scan.per_prefix(8_500), CLAIMS_PER_PREFIX_MIN);
    // A limit below the floor holds whole, in each prefix.
    let small = ClaimLimit::PerScan(NonZeroUsize::new(5).unwrap());
    assert_eq!(small.per_prefix(1), 5);
    assert_eq!(small.per_prefix(100), 5);
}
