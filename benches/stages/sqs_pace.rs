//! The `sqs-pace` stage (issue 20, item 3): how many objects a second one shipper moves
//! out of an SQS backlog. `OBJECTS` small objects (one event each, across 100 accounts) are
//! announced on the queue by S3's own notifications before the shipper starts; the stand-in
//! host loads the release plugin and collects once a second, as Fluent Bit does; every
//! request to S3 and SQS goes through a proxy that adds `LATENCY`. The time runs from the
//! start to the last record handed over, and to the queue's last delete.

use std::time::{Duration, Instant};

use cloudtrail_s3::layout::day_path;
use cloudtrail_s3::timestamp::EventTime;
use futures_util::{StreamExt, stream};

use crate::latency::{LATENCY, latency_proxy};
use crate::{count_records, host, queue, server};

pub const OBJECTS: usize = 1_700;

/// The row: the old defaults (100 messages held, one long poll at a time) and today's,
/// side by side, each on a queue of its own.
pub fn run() -> (f64, u64, String) {
    let (old_all, old_empty) = pace(&[
        ("sqs.max_messages_in_flight", "100"),
        ("sqs.receivers", "1"),
    ]);
    let (all, empty) = pace(&[]);
    (
        all,
        OBJECTS as u64,
        format!(
            "{OBJECTS} objects announced before start, {} ms added per request, 1 collect/s: every record in {all:.0} s ({:.0} objects/s, queue empty at {empty:.0} s) vs {old_all:.0} s ({:.0} objects/s, empty at {old_empty:.0} s) with 100 held and 1 receiver ({:.1}x)",
            LATENCY.as_millis(),
            OBJECTS as f64 / all,
            OBJECTS as f64 / old_all,
            old_all / all
        ),
    )
}

/// Seconds until every record was handed over, and until the queue was empty, with
/// `settings` added to the defaults.
fn pace(settings: &[(&'static str, &str)]) -> (f64, f64) {
    let bucket = server::bucket("bench-sqs");
    let q = queue::create("pace");
    queue::notify_bucket(&bucket, &q);
    let day = day_path(i64::from(EventTime::now().secs()) / 86_400);
    let client = server::client();
    server::block_on(
        stream::iter(0..OBJECTS)
            .map(|i| {
                let account = 100_000_000_000 + i % 100;
                let key = format!(
                    "AWSLogs/{account:012}/CloudTrail/us-east-1/{day}/{account:012}_CloudTrail_us-east-1_{i:05}.json.gz"
                );
                let body = crate::gzip_bytes(
                    format!(
                        r#"{{"Records":[{{"eventID":"pace-{i}","eventTime":"2023-07-10T00:00:00Z"}}]}}"#
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
    // One notification each, and S3's test event.
    assert_eq!(queue::messages_in(&q), OBJECTS + 1, "one notification each");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let upstream = server::endpoint().trim_start_matches("http://").to_string();
    let proxy = rt.block_on(latency_proxy(upstream));
    let props: Vec<(&str, String)> = server::s3_props("x")
        .into_iter()
        .filter(|(k, _)| !matches!(*k, "bucket" | "endpoint"))
        .chain([
            ("endpoint", proxy.clone()),
            ("sqs.queue_url", q.clone()),
            ("sqs.endpoint", proxy),
        ])
        .chain(settings.iter().map(|(k, v)| (*k, v.to_string())))
        .collect();
    let list: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let inst = host::Plugin::load().start(&list).expect("init");
    let t = Instant::now();
    let mut events = 0u64;
    let mut all_at = None;
    loop {
        let tick = Instant::now();
        events += count_records(&inst.collect().1);
        if events >= OBJECTS as u64 && all_at.is_none() {
            all_at = Some(t.elapsed().as_secs_f64());
        }
        if all_at.is_some() && queue::messages_in(&q) == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(900),
            "{events} of {OBJECTS} records after 900 s"
        );
        std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
    }
    let emptied = t.elapsed().as_secs_f64();
    drop(inst);
    drop(rt);
    (all_at.unwrap(), emptied)
}
