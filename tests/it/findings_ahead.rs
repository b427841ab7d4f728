//! Integrity findings sent as records (`digest.findings_as_records`), at a graceful stop
//! behind a batch the destination left unanswered: the command's `http` output records the
//! chunks delivered behind it (`Engine::commit_ahead`). A finding among them is in the
//! destination, so it counts as reported and the next run does not send it again; the
//! events delivered with it are passed, and only the unanswered batch's are sent again.

use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use cloudtrail_s3::engine::Unsettled;
use cloudtrail_s3::engine::handoff::Batch;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::data;
use crate::digest_data::{Writer, key_server, upload_logs_on};
use crate::engine::{Lines, start_with};
use crate::json::J;
use crate::server::{self, block_on};
use crate::verify::recent_day;

/// The lines of a batch (the engine writes JSON lines here).
fn lines(batch: &Batch) -> Vec<J> {
    std::str::from_utf8(&batch.bytes)
        .unwrap()
        .lines()
        .map(J::parse)
        .collect()
}

/// The finding texts among `lines`.
fn findings(lines: &[J]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.str("eventType") == Some("IntegrityFinding"))
        .map(|l| l.str("finding").unwrap().to_string())
        .collect()
}

#[test]
fn a_finding_delivered_behind_an_unanswered_batch_is_not_sent_again() {
    let bucket = server::bucket("finding-ahead");
    let key = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let keys = key_server(vec![key.public_key().as_ref().to_vec()]);
    let day = recent_day();
    let (eleven, twelve) = upload_logs_on(&bucket, &day);
    // Deleted before anything read it: its digest lists it, a finding.
    let deleted = twelve[0].0.clone();
    block_on(
        server::client()
            .delete_object()
            .bucket(&bucket)
            .key(&deleted)
            .send(),
    )
    .unwrap();
    let want = data::EVENTS
        - data::objects()
            .iter()
            .filter(|o| crate::digest_data::key_on(&o.key, &day) == deleted)
            .map(|o| o.events().len())
            .sum::<usize>();
    let state = tempfile::tempdir().unwrap();
    let mut props = server::s3_props(&bucket);
    props.extend([
        ("db", state.path().join("state.db").display().to_string()),
        ("batch_bytes", "64K".into()),
        ("lookback", "120h".into()),
        ("digest.validate", "true".into()),
        ("digest.every", "1".into()),
        ("digest.grace", "0".into()),
        ("digest.cloudtrail_endpoint", keys),
        ("digest.findings_as_records", "true".into()),
    ]);

    let log = std::sync::Arc::new(Lines::default());
    let mut first = start_with(&props, log.clone());
    // The first batch: taken, never answered.
    let end = Instant::now() + Duration::from_secs(60);
    let held = loop {
        assert!(Instant::now() < end, "no first batch");
        if let Some(b) = first.take(64 << 10, Duration::from_millis(100)) {
            break b;
        }
    };
    // CloudTrail's digests land; every later batch is delivered, up to the one with the
    // deleted file's finding.
    let mut w = Writer {
        bucket: &bucket,
        day: &day,
        trail: "t",
        key: &key,
        previous: None,
    };
    w.write(12, &eleven, None, None);
    w.write(13, &twelve, None, None);
    let missing = format!("missing: s3://{bucket}/{deleted}");
    let mut delivered: Vec<Batch> = Vec::new();
    while !delivered
        .iter()
        .any(|b| findings(&lines(b)).iter().any(|f| f.contains(&missing)))
    {
        assert!(Instant::now() < end, "no finding for {deleted}");
        delivered.extend(first.take(64 << 10, Duration::from_millis(100)));
    }
    let window: Vec<Unsettled<'_>> = held
        .marks
        .iter()
        .map(|mark| Unsettled {
            delivered: false,
            mark,
        })
        .chain(delivered.iter().flat_map(|b| {
            b.marks.iter().map(|mark| Unsettled {
                delivered: true,
                mark,
            })
        }))
        .collect();
    first.commit_ahead(&window);
    first.shutdown();
    drop(first);
    let sent_first: Vec<J> = delivered.iter().flat_map(lines).collect();
    let reported = findings(&sent_first);

    // The next run: every event the destination lacks, none it has, no finding again.
    let log = std::sync::Arc::new(Lines::default());
    let passes = || {
        log.0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(&format!("digest: pass over s3://{bucket} ")))
            .count()
    };
    let mut second = start_with(&props, log.clone());
    // Until every event is in (the held batch's again) and three digest passes ran.
    let events_in = |first: &[J], second: &[J]| {
        first
            .iter()
            .chain(second)
            .filter_map(|l| l.str("eventID"))
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    let mut sent_second: Vec<J> = Vec::new();
    let end = Instant::now() + Duration::from_secs(60);
    while passes() < 3 || events_in(&sent_first, &sent_second) < want {
        assert!(Instant::now() < end, "the second run did not finish");
        if let Some(batch) = second.take(64 << 10, Duration::from_millis(100)) {
            sent_second.extend(lines(&batch));
            second.commit(&batch.marks);
        }
    }
    second.shutdown();
    let again: Vec<String> = findings(&sent_second)
        .into_iter()
        .filter(|f| reported.contains(f))
        .collect();
    assert!(
        again.is_empty(),
        "findings the destination had, sent again: {again:#?}"
    );
    let mut ids: HashMap<String, usize> = HashMap::new();
    for l in sent_first.iter().chain(&sent_second) {
        if let Some(id) = l.str("eventID") {
            *ids.entry(id.to_string()).or_default() += 1;
        }
    }
    let repeated: usize = ids.values().map(|n| n - 1).sum();
    assert_eq!((ids.len(), repeated), (want, 0), "every event once");
}
