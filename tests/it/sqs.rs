//! Event-driven discovery through SQS against the real test server: every notification
//! shape, delete only after handoff, the visibility heartbeat, poison messages, hybrid mode
//! and three host processes sharing one queue.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::data;
use crate::engine::{drain_until, start};
use crate::host::Plugin;
use crate::json::J;
use crate::server::{self, block_on};

pub(crate) use crate::queue::{
    client as sqs, counts as queue_counts, messages_in, notify_bucket, send,
};

/// A new queue named after `tag`; returns its URL.
pub(crate) fn queue(tag: &str) -> String {
    crate::queue::create(tag)
}

fn wait_for(what: &str, deadline: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Properties for SQS-only discovery (no bucket to list).
pub(crate) fn sqs_props(
    queue_url: &str,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut props: Vec<(&'static str, String)> = server::s3_props("unused")
        .into_iter()
        .filter(|(k, _)| *k != "bucket")
        .collect();
    props.extend([
        ("sqs.queue_url", queue_url.to_string()),
        ("sqs.endpoint", server::endpoint().to_string()),
        ("sqs.wait_time_secs", "1".to_string()),
    ]);
    for (k, v) in extra {
        props.retain(|(pk, _)| pk != k);
        props.push((k, v.to_string()));
    }
    props
}

fn as_list<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, s)| (*k, s.as_str())).collect()
}

/// How often each eventID occurs.
fn count_ids<'a>(events: impl Iterator<Item = &'a J>) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for e in events {
        *seen
            .entry(e.str("eventID").unwrap().to_string())
            .or_insert(0) += 1;
    }
    seen
}

/// Collects until the queue is empty (a batch is committed, and its message deleted, at a
/// collect after the host stored it).
pub(crate) fn wait_until_empty(q: &str, inst: &crate::host::Instance) {
    wait_for("the queue to empty", Duration::from_secs(60), || {
        inst.collect();
        messages_in(q) == 0
    });
}

fn ids_of(o: &data::Object) -> Vec<String> {
    o.ids()
}

#[test]
fn s3_notifications_ship_every_object_and_empty_the_queue() {
    let bucket = server::bucket("sqs-s3");
    let q = queue("s3");
    notify_bucket(&bucket, &q);
    let objects = data::objects();
    for o in &objects[..10] {
        server::put(&bucket, &o.key, o.gz.clone());
    }
    server::put(
        &bucket,
        "AWSLogs/218007301253/CloudTrail-Digest/us-east-1/2023/07/10/digest.json.gz",
        data::gzip(b"{}"),
    );
    let want: usize = objects[..10].iter().map(|o| o.events().len()).sum();
    let props = sqs_props(&q, &[]);
    let inst = Plugin::load().start(&as_list(&props)).expect("init");
    let records = inst.collect_until(Duration::from_secs(60), |r| r.len() >= want);
    let seen = count_ids(records.iter().map(|r| &r.body));
    assert_eq!(
        (records.len(), seen.len()),
        (want, want),
        "every event once"
    );
    // The host keeps ticking: a batch is committed (and its message deleted) at a collect
    // after the host has stored it.
    wait_for("the queue to empty", Duration::from_secs(30), || {
        inst.collect();
        messages_in(&q) == 0
    });
}

#[test]
fn every_notification_shape_is_understood() {
    let bucket = server::bucket("sqs-shapes");
    let q = queue("shapes");
    let objects = data::objects();
    let o: Vec<&data::Object> = objects.iter().take(5).collect();
    for x in &o {
        server::put(&bucket, &x.key, x.gz.clone());
    }
    // Keys in S3 notifications are URL-encoded, `+` for a space.
    let spaced = "AWSLogs/218007301253/CloudTrail/us-east-1/2023/07/10/with space=1.json.gz";
    server::put(
        &bucket,
        spaced,
        data::gzip(br#"{"Records":[{"eventID":"spaced","eventTime":"2023-07-10T00:00:00Z"}]}"#),
    );
    let s3_event = |key: &str| {
        serde_json::json!({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "eventTime": "2023-07-10T12:00:00.000Z", "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 1}}}]})
        .to_string()
    };
    send(&q, &s3_event(&o[0].key));
    send(
        &q,
        &s3_event("AWSLogs/218007301253/CloudTrail/us-east-1/2023/07/10/with+space%3D1.json.gz"),
    );
    send(&q, &serde_json::json!({"Type": "Notification", "MessageId": "sns-1", "Message": s3_event(&o[1].key)}).to_string());
    send(
        &q,
        &serde_json::json!({"version": "0", "detail-type": "Object Created", "source": "aws.s3", "time": "2023-07-10T12:00:00Z",
            "detail": {"bucket": {"name": bucket}, "object": {"key": o[2].key, "size": 1}}})
        .to_string(),
    );
    let ct =
        serde_json::json!({"s3Bucket": bucket, "s3ObjectKey": [o[3].key, o[4].key]}).to_string();
    send(
        &q,
        &serde_json::json!({"Type": "Notification", "MessageId": "sns-2", "Message": ct})
            .to_string(),
    );
    send(
        &q,
        r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2023-07-10T12:00:00Z","Bucket":"b"}"#,
    );
    send(&q, r#"{"hello":"not a notification"}"#);

    let mut want: Vec<String> = o.iter().flat_map(|x| ids_of(x)).collect();
    want.push("spaced".into());
    let props = sqs_props(&q, &[("sqs.visibility_timeout_secs", "2")]);
    let (engine, lines) = start(&props);
    let events = drain_until(&engine, Duration::from_secs(60), |e| {
        e.stats().events as usize >= want.len() && e.stats().objects_done == 6
    });
    let mut got: Vec<String> = events
        .iter()
        .map(|e| e.str("eventID").unwrap().to_string())
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // Everything is deleted but the unknown message, which stays for the redrive policy.
    wait_for(
        "only the unknown message to remain",
        Duration::from_secs(30),
        || messages_in(&q) == 1,
    );
    drop(engine);
    let lines = lines.0.lock().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("sqs message") && l.contains("left in the queue")),
        "{lines:?}"
    );
}

#[test]
fn a_message_is_deleted_only_after_its_records_are_handed_over() {
    let bucket = server::bucket("sqs-handoff");
    let q = queue("handoff");
    notify_bucket(&bucket, &q);
    let o = &data::objects()[0];
    server::put(&bucket, &o.key, o.gz.clone());
    let props = sqs_props(&q, &[("sqs.visibility_timeout_secs", "2")]);
    let plugin = Plugin::load();

    // The host never collects: nothing was handed over, so the message must survive.
    let inst = plugin.start(&as_list(&props)).expect("init");
    std::thread::sleep(Duration::from_secs(3));
    drop(inst);
    assert_eq!(
        messages_in(&q),
        1,
        "the message outlives a host that took nothing"
    );

    let inst = plugin.start(&as_list(&props)).expect("init");
    let records = inst.collect_until(Duration::from_secs(30), |r| r.len() >= ids_of(o).len());
    assert_eq!(records.len(), ids_of(o).len());
    wait_for("the message to be deleted", Duration::from_secs(30), || {
        inst.collect();
        messages_in(&q) == 0
    });
}

#[test]
fn the_heartbeat_keeps_a_held_message_from_other_consumers() {
    let bucket = server::bucket("sqs-heartbeat");
    let q = queue("heartbeat");
    notify_bucket(&bucket, &q);
    // Three messages held at once: the heartbeat extends them in one batch call.
    let objects = &data::objects()[1..4];
    for o in objects {
        server::put(&bucket, &o.key, o.gz.clone());
    }
    let want: usize = objects.iter().map(|o| ids_of(o).len()).sum();
    let props = sqs_props(&q, &[("sqs.visibility_timeout_secs", "2")]);
    let inst = Plugin::load().start(&as_list(&props)).expect("init");
    // Wait until the plugin holds the messages, then stay paused (no collect) for three
    // visibility timeouts while another consumer polls the queue.
    wait_for(
        "the plugin to take the messages",
        Duration::from_secs(20),
        || queue_counts(&q).1 == objects.len(),
    );
    inst.pause();
    let end = Instant::now() + Duration::from_secs(6);
    let mut stolen = 0;
    while Instant::now() < end {
        let got = block_on(
            sqs()
                .receive_message()
                .queue_url(&q)
                .wait_time_seconds(1)
                .visibility_timeout(1)
                .send(),
        )
        .unwrap();
        stolen += got.messages().len();
    }
    assert_eq!(stolen, 0, "another consumer got a held message");
    inst.resume();
    let records = inst.collect_until(Duration::from_secs(30), |r| r.len() >= want);
    assert_eq!(records.len(), want);
    wait_for(
        "the messages to be deleted",
        Duration::from_secs(30),
        || {
            inst.collect();
            messages_in(&q) == 0
        },
    );
}

#[test]
fn a_poison_message_is_retried_then_quarantined() {
    let bucket = server::bucket("sqs-poison");
    let q = queue("poison");
    notify_bucket(&bucket, &q);
    let key = "AWSLogs/218007301253/CloudTrail/us-east-1/2023/07/10/poison.json.gz";
    let mut corrupt = data::gzip(br#"{"Records":[{"eventID":"p"}]}"#);
    corrupt[2] = 0;
    server::put(&bucket, key, corrupt);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.json");
    let props = sqs_props(
        &q,
        &[
            ("sqs.visibility_timeout_secs", "2"),
            ("sqs.max_receive_count", "2"),
            ("sqs.delete_quarantined", "true"),
            ("db", db.to_str().unwrap()),
        ],
    );
    let (engine, lines) = start(&props);
    let url = format!("s3://{bucket}/{key}");
    wait_for("the quarantine", Duration::from_secs(90), || {
        if let Some(b) = engine.take(1 << 20, Duration::ZERO) {
            engine.commit(&b.marks);
        }
        lines
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("quarantined after 2 receives") && l.contains(&url))
    });
    wait_for(
        "the quarantined message to be deleted",
        Duration::from_secs(30),
        || messages_in(&q) == 0,
    );
    drop(engine);
    let entry = crate::engine::ledger_entry(&db, &url);
    assert!(
        entry
            .as_ref()
            .is_some_and(|e| e.status == cloudtrail_s3::ledger::Status::Failed
                && e.reason.contains("decompression failed")),
        "{entry:?}"
    );
}

#[test]
fn hybrid_listing_catches_a_notification_that_never_came() {
    let bucket = server::bucket("sqs-hybrid");
    let q = queue("hybrid");
    let objects = data::objects();
    for o in &objects[..3] {
        server::put(&bucket, &o.key, o.gz.clone());
    }
    for o in &objects[..2] {
        send(
            &q,
            &serde_json::json!({"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": {"key": o.key}}}]})
                .to_string(),
        );
    }
    let mut props = sqs_props(&q, &[]);
    props.push(("bucket", bucket.clone()));
    let (engine, _) = start(&props);
    let want: usize = objects[..3].iter().map(|o| o.events().len()).sum();
    let events = drain_until(&engine, Duration::from_secs(60), |e| {
        e.is_idle() && e.stats().events as usize >= want
    });
    let seen = count_ids(events.iter());
    assert_eq!(
        (events.len(), seen.len()),
        (want, want),
        "each event once, whichever path found it"
    );
    wait_for("both messages deleted", Duration::from_secs(30), || {
        messages_in(&q) == 0
    });
}

/// Hybrid mode, an object that lands days late in a day folder the listing has left behind
/// (below its watermark less the lookback), announced by CloudTrail's own notification
/// (`s3Bucket`/`s3ObjectKey`, inside SNS), which carries no time: it ships. Before, the
/// missing time counted as "older than the lookback" and the object was taken as shipped,
/// never read. The message's SQS `SentTimestamp` now dates it; a notice with no date at
/// all ships too (a repeat is better than a loss).
#[test]
fn hybrid_ships_a_late_object_announced_by_cloudtrails_notification() {
    let bucket = server::bucket("sqs-late");
    let q = queue("late");
    let day = |days_ago: i64| {
        let d = time::OffsetDateTime::now_utc() - time::Duration::days(days_ago);
        (
            format!("{:04}/{:02}/{:02}", d.year(), u8::from(d.month()), d.day()),
            format!("{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day()),
        )
    };
    let key = |days_ago: i64, name: &str| {
        let (path, compact) = day(days_ago);
        format!(
            "AWSLogs/111122223333/CloudTrail/us-east-1/{path}/111122223333_CloudTrail_us-east-1_{compact}T0000Z_{name}.json.gz"
        )
    };
    let objects = data::objects();
    let (a, b, late) = (&objects[0], &objects[1], &objects[2]);
    server::put(&bucket, &key(1, "a"), a.gz.clone());
    server::put(&bucket, &key(0, "b"), b.gz.clone());
    let mut props = sqs_props(&q, &[]);
    props.push(("bucket", bucket.clone()));
    let (engine, _) = start(&props);
    let listed = a.events().len() + b.events().len();
    let mut events = drain_until(&engine, Duration::from_secs(60), |e| {
        e.is_idle() && e.stats().events as usize >= listed
    });
    // Two more scans: the first after both finished moves the watermark to today, so
    // later scans list from two days back (the lookback) and never see the late object.
    let scans = engine.stats().scans;
    wait_for("two more scans", Duration::from_secs(30), || {
        engine.stats().scans >= scans + 2
    });
    // Five days back: behind the listing's horizon (today's watermark less 2 days).
    let late_key = key(5, "late");
    server::put(&bucket, &late_key, late.gz.clone());
    let cloudtrail = serde_json::json!({"s3Bucket": bucket, "s3ObjectKey": [late_key]});
    let sns = serde_json::json!({
        "Type": "Notification",
        "MessageId": "5e3f4c1a-0000-0000-0000-000000000001",
        "TopicArn": "arn:aws:sns:us-east-1:111122223333:cloudtrail",
        "Message": cloudtrail.to_string(),
    });
    send(&q, &sns.to_string());
    let want = listed + late.events().len();
    events.extend(drain_until(&engine, Duration::from_secs(60), |e| {
        e.stats().events as usize >= want
    }));
    let seen = count_ids(events.iter());
    for id in ids_of(late) {
        assert_eq!(seen.get(&id), Some(&1), "late event {id}");
    }
    assert_eq!((events.len(), seen.len()), (want, want));
    wait_for("the message deleted", Duration::from_secs(30), || {
        messages_in(&q) == 0
    });
}

/// SQS with `event_kinds`: a notification for a chosen kind's file ships it; one for a kind
/// left out is counted unmatched and logged as such (not as a wrong path_expression).
#[test]
fn notifications_follow_event_kinds() {
    let bucket = server::bucket("sqs-kinds");
    let q = queue("kinds");
    notify_bucket(&bucket, &q);
    for k in data::KIND_EXAMPLES {
        let key = k.key("AWSLogs/111122223333", "us-east-1/2023/07/10");
        server::put(&bucket, &key, k.object());
    }
    let props = sqs_props(&q, &[("event_kinds", "events,insights")]);
    let (engine, lines) = start(&props);
    let events = drain_until(&engine, Duration::from_secs(60), |e| {
        e.stats().objects_done == 2 && e.stats().notices_unmatched == 2
    });
    let mut ids: Vec<&str> = events.iter().map(|e| e.str("eventID").unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["insight-1", "mgmt-1"]);
    let said = lines.0.lock().unwrap().clone();
    assert!(
        said.iter()
            .any(|l| l.contains("which 'event_kinds' (events,insights) leaves out")),
        "{said:?}"
    );
    wait_for("the queue to empty", Duration::from_secs(30), || {
        engine.take(1 << 20, Duration::from_millis(50));
        messages_in(&q) == 0
    });
}

#[test]
fn a_failing_message_is_quarantined_before_the_queue_moves_it_to_its_dead_letter_queue() {
    use aws_sdk_sqs::types::QueueAttributeName;
    let bucket = server::bucket("sqs-redrive");
    let dlq = queue("redrive-dlq");
    let dlq_arn = block_on(
        sqs()
            .get_queue_attributes()
            .queue_url(&dlq)
            .attribute_names(QueueAttributeName::QueueArn)
            .send(),
    )
    .unwrap()
    .attributes()
    .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    let q = queue("redrive");
    block_on(
        sqs()
            .set_queue_attributes()
            .queue_url(&q)
            .attributes(
                QueueAttributeName::RedrivePolicy,
                format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"2"}}"#),
            )
            .send(),
    )
    .unwrap();
    notify_bucket(&bucket, &q);
    let key = "AWSLogs/218007301253/CloudTrail/us-east-1/2023/07/10/redrive.json.gz";
    let mut corrupt = data::gzip(br#"{"Records":[{"eventID":"r"}]}"#);
    corrupt[2] = 0;
    server::put(&bucket, key, corrupt);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    // sqs.max_receive_count stays at its default (5), above the queue's threshold (2).
    let props = sqs_props(
        &q,
        &[
            ("sqs.visibility_timeout_secs", "2"),
            ("db", db.to_str().unwrap()),
        ],
    );
    let (engine, lines) = start(&props);
    let url = format!("s3://{bucket}/{key}");
    wait_for("the quarantine", Duration::from_secs(90), || {
        if let Some(b) = engine.take(1 << 20, Duration::ZERO) {
            engine.commit(&b.marks);
        }
        lines
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("quarantined after 2 receives") && l.contains(&url))
    });
    let lines = lines.0.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("dead-letter queue after 2 receives")),
        "the start says the threshold was lowered: {lines:#?}"
    );
    drop(engine);
    let entry = crate::engine::ledger_entry(&db, &url);
    assert!(
        entry
            .as_ref()
            .is_some_and(|e| e.status == cloudtrail_s3::ledger::Status::Failed),
        "recorded as failed with its reason before SQS moved it: {entry:?}"
    );
}
