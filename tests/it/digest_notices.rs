//! Digests announced by SQS notifications (`digest.validate` with `sqs.queue_url`): read as
//! they come, not at the next listing pass. Here the listing pass runs once, at start
//! (`digest.every` an hour); a digest announced later is read at once, and what it finds
//! is reported and healed within seconds: a file deleted before anything read it, a file
//! no notification announced. A digest announced before the one it names waits for it,
//! so the chain reports no gap that is not there.

use std::time::{Duration, Instant};

use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;

use crate::data;
use crate::digest_data::{Writer, key_on, key_server, upload_logs_on};
use crate::host::{Instance, Record, logs_containing};
use crate::server::{self, block_on};
use crate::verify::recent_day;

/// One counter of the instance's `/metrics` page, 0 while it is absent.
fn metric(listen: &str, name: &str) -> u64 {
    crate::live_ops::request(listen, "GET", "/metrics")
        .and_then(|(_, page)| {
            page.lines()
                .find_map(|l| l.strip_prefix(&format!("cloudtrail_s3_{name} ")))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Collects until `done` holds (records go into `records`), at most a minute.
fn collect_while(
    inst: &Instance,
    records: &mut Vec<Record>,
    what: &str,
    done: impl Fn(&[Record]) -> bool,
) {
    let end = Instant::now() + Duration::from_secs(60);
    while !done(records) {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        records.extend(inst.collect_until(Duration::from_millis(200), |_| false));
    }
}

#[test]
fn a_digest_announced_on_the_queue_is_read_at_once_and_in_order() {
    let bucket = server::bucket("digest-notice");
    let q = crate::sqs::queue("digest-notice");
    let key = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let keys = key_server(vec![key.public_key().as_ref().to_vec()]);
    let day = recent_day();
    let (eleven, twelve) = upload_logs_on(&bucket, &day);
    // One file no notification announces; one deleted before anything read it.
    let unannounced = &twelve[1].0;
    let deleted = &twelve[0].0;
    block_on(
        server::client()
            .delete_object()
            .bucket(&bucket)
            .key(deleted)
            .send(),
    )
    .unwrap();
    for (k, gz) in eleven.iter().chain(&twelve[2..]) {
        crate::sqs::send(&q, &crate::queue::s3_notice(&bucket, k, gz.len()));
    }
    let events_of = |keys: &[&String]| -> usize {
        data::objects()
            .iter()
            .filter(|o| keys.contains(&&key_on(&o.key, &day)))
            .map(|o| o.events().len())
            .sum()
    };
    let want = data::EVENTS - events_of(&[deleted]);
    let announced = want - events_of(&[unannounced]);
    // The hour before: found by the listing pass at start (a stream's first digest since
    // the start is read in order by a listing).
    let mut w = Writer {
        bucket: &bucket,
        day: &day,
        trail: "t",
        key: &key,
        previous: None,
    };
    w.write(12, &eleven, None, None);
    let state = tempfile::tempdir().unwrap();
    let db = state.path().join("state.db").display().to_string();
    let listen = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("127.0.0.1:{}", probe.local_addr().unwrap().port())
    };
    let props = crate::sqs::sqs_props(
        &q,
        &[
            ("digest.validate", "true"),
            ("digest.bucket", &bucket),
            // One listing pass, at start, within this test.
            ("digest.every", "3600"),
            ("digest.grace", "0"),
            ("digest.cloudtrail_endpoint", &keys),
            ("digest.ship_missing", "true"),
            ("lookback", "120h"),
            ("db", &db),
            ("metrics.listen", &listen),
        ],
    );
    let props: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let inst = crate::host::Plugin::load().start(&props).expect("init");
    let passes = || logs_containing(&format!("digest: pass over s3://{bucket} ")).len();
    let mut records = Vec::new();
    collect_while(&inst, &mut records, "the announced files", |r| {
        r.len() >= announced && passes() >= 1
    });
    crate::sqs::wait_until_empty(&q, &inst);
    assert_eq!(
        metric(&listen, "digests_read_total"),
        1,
        "the listing pass read 12:00"
    );

    // CloudTrail delivers the 13:00 and 14:00 digests; 14:00's notification comes first.
    let thirteen = w.write(13, &twelve, None, None);
    let fourteen = w.write(14, &[], None, None);
    crate::sqs::send(&q, &crate::queue::s3_notice(&bucket, &fourteen, 100));
    collect_while(&inst, &mut records, "14:00 to wait for 13:00", |_| {
        metric(&listen, "digests_deferred_total") >= 1
    });
    assert_eq!(metric(&listen, "digests_announced_total"), 0);
    crate::sqs::send(&q, &crate::queue::s3_notice(&bucket, &thirteen, 100));
    collect_while(
        &inst,
        &mut records,
        "every event, the healed file's too",
        |r| r.len() >= want && metric(&listen, "digests_announced_total") == 2,
    );
    // A few more collects: nothing more arrives.
    records.extend(inst.collect_until(Duration::from_secs(2), |_| false));
    assert_eq!(records.len(), want, "every event once");
    assert_eq!(passes(), 1, "no listing pass but the first");
    let said = |needle: &str| {
        logs_containing(needle)
            .into_iter()
            .filter(|(_, l)| l.contains(&bucket))
            .count()
    };
    assert_eq!(said(&format!("missing: s3://{bucket}/{deleted}")), 1);
    assert_eq!(
        logs_containing(unannounced)
            .iter()
            .filter(|(_, l)| l.contains("found through its digest") && l.contains(&bucket))
            .count(),
        1
    );
    assert_eq!(said("digests missing from"), 0, "no gap reported");
    assert_eq!(metric(&listen, "digests_read_total"), 3);
}
