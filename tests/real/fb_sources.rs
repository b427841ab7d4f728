//! Each way of finding objects, in the real host: a bucket listing (YAML configuration),
//! whole or in stretches of `scan_claims`, and a folder (classic), records read back from Fluent Bit's `stdout` `json_lines` with
//! the time in its `date` field; S3 notifications through SQS shared by three Fluent
//! Bit processes on one queue; and one account whose objects are denied for ever ahead of
//! another's on the queue.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libtest_mimic::Failed;

use crate::check::{self, Expected, Tally, Time};
use crate::fluent_bit::{
    Conf, FluentBit, RUN_LIMIT, dir_input, http_output, s3_input, section, stdout_output,
};
use crate::json::J;
use crate::proxy::{AccessDenied, CountingProxy};
use crate::receiver::Receiver;
use crate::wait::wait_until;
use crate::work::Work;
use crate::{Body, data, queue, server};

pub fn trials() -> Vec<(&'static str, Body<FluentBit>)> {
    vec![
        ("sources::s3_listing", s3_listing),
        ("sources::s3_listing_in_stretches", s3_listing_in_stretches),
        ("sources::folder", folder),
        ("sources::event_kinds", event_kinds),
        ("sources::sqs_three_hosts_one_queue", sqs_three_hosts),
        (
            "sources::sqs_one_denied_account_stalls_no_other",
            sqs_denied_account,
        ),
    ]
}

/// Runs `conf` (written as YAML, or classic with its plugins file) with a stdout output
/// until every bundled event was printed, then stops.
fn run_to_stdout(fb: &FluentBit, work: &Work, conf: Conf, classic: bool, what: &str) {
    let conf = conf.output(stdout_output("*"));
    let conf = if classic {
        conf.write_classic(work.path())
    } else {
        conf.write_yaml(work.path())
    };
    let mut host = fb.start(work.path(), what, &conf, &[]);
    let mut tally = Tally::new(&Expected::all(), Time::EpochSeconds("date"), false);
    wait_until("every event on stdout", RUN_LIMIT, || {
        assert!(host.try_status().is_none(), "{}", host.stderr_tail(40));
        tally.follow_lines(&host.stdout).all_arrived()
    });
    let status = host.stop();
    assert!(status.success(), "{status}");
    tally.follow_lines(&host.stdout);
    eprintln!("{} {what}: {}", fb.label(), tally.summary());
    tally.assert_exactly_once(what);
    host.assert_no_errors();
}

fn s3_listing(fb: &FluentBit) -> Result<(), Failed> {
    let work = Work::new("sources-s3");
    let bucket = server::bucket("real-s3");
    data::upload_all(&bucket, "");
    let conf = Conf::new().input(s3_input("cloudtrail", "ct", &bucket, server::endpoint()));
    run_to_stdout(fb, &work, conf, false, "S3 listing");
    Ok(())
}

/// The 55 bundled objects (one prefix) with `scan_claims 10` and an hour's
/// `scan_interval`: six scans of ten, each following the last as its objects finish, ship
/// every event once well before the hour.
fn s3_listing_in_stretches(fb: &FluentBit) -> Result<(), Failed> {
    let work = Work::new("sources-stretches");
    let bucket = server::bucket("real-stretches");
    data::upload_all(&bucket, "");
    let mut input = s3_input("cloudtrail", "ct", &bucket, server::endpoint());
    input.retain(|(k, _)| k != "scan_interval");
    input.extend(section(&[("scan_interval", "1h"), ("scan_claims", "10")]));
    let conf = Conf::new().input(input);
    run_to_stdout(fb, &work, conf, false, "S3 listing in stretches");
    Ok(())
}

fn folder(fb: &FluentBit) -> Result<(), Failed> {
    let work = Work::new("sources-folder");
    let conf = Conf::new().input(dir_input("cloudtrail", "ct"));
    run_to_stdout(fb, &work, conf, true, "folder");
    Ok(())
}

/// `event_kinds all` in the real host (5.1.1 checks the key against the plugin's
/// `config_map`): one event of each kind in its own folder arrives once, with its kind's time
/// as the record time (an aggregated event's `timeWindow.windowStart`, as it has no
/// `eventTime`); the digest beside them is not shipped.
fn event_kinds(fb: &FluentBit) -> Result<(), Failed> {
    let work = Work::new("sources-kinds");
    let bucket = server::bucket("real-kinds");
    let account = "AWSLogs/111122223333";
    let day = "eu-west-1/2023/07/10";
    for k in data::KIND_EXAMPLES {
        server::put(&bucket, &k.key(account, day), k.object());
    }
    server::put(
        &bucket,
        &format!("{account}/CloudTrail-Digest/{day}/digest.json.gz"),
        data::gzip(br#"{"awsAccountId":"111122223333","logFiles":[]}"#),
    );
    let mut input = s3_input("cloudtrail", "ct", &bucket, server::endpoint());
    input.push(("event_kinds".into(), "all".into()));
    let conf = Conf::new()
        .input(input)
        .output(stdout_output("*"))
        .write_yaml(work.path());
    let mut host = fb.start(work.path(), "event kinds", &conf, &[]);
    // eventID (eventId for aggregated events) -> the record times it arrived with, in ms.
    let arrived = |lines: &[String]| {
        let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
        for line in lines.iter().filter(|l| l.starts_with('{')) {
            let Ok(j) = serde_json::from_str::<J>(line) else {
                continue;
            };
            let Some(id) = j.str("eventID").or_else(|| j.str("eventId")) else {
                continue;
            };
            let date = match j.get("date") {
                Some(J::Float(f)) => *f,
                Some(J::Int(i)) => *i as f64,
                _ => -1.0,
            };
            seen.entry(id.to_string())
                .or_default()
                .push((date * 1000.0).round() as i64);
        }
        seen
    };
    wait_until("one event of each kind on stdout", RUN_LIMIT, || {
        assert!(host.try_status().is_none(), "{}", host.stderr_tail(40));
        arrived(&host.stdout.snapshot()).len() >= data::KIND_EXAMPLES.len()
    });
    let status = host.stop();
    assert!(status.success(), "{status}");
    let lines = host.stdout.snapshot();
    let seen = arrived(&lines);
    for k in data::KIND_EXAMPLES {
        let want = (check::parse_instant(k.time).unwrap() / 1_000_000) as i64;
        assert_eq!(
            seen.get(k.id),
            Some(&vec![want]),
            "{} ({}) once at {}",
            k.id,
            k.folder,
            k.time
        );
    }
    assert_eq!(seen.len(), data::KIND_EXAMPLES.len(), "{seen:?}");
    assert!(
        !lines.iter().any(|l| l.contains("awsAccountId")),
        "a digest was shipped"
    );
    eprintln!("{} event kinds: {seen:?}", fb.label());
    host.assert_no_errors();
    Ok(())
}

/// Three Fluent Bit processes on one queue, configured with `sqs.queue_url` alone (no
/// `sqs.endpoint`: a queue URL that is not AWS's names its own endpoint). Objects are
/// uploaded once all three are polling, so each notification goes to whichever receives
/// it; every event must arrive exactly once across the three, and the queue must empty.
fn sqs_three_hosts(fb: &FluentBit) -> Result<(), Failed> {
    const HOSTS: usize = 3;
    let work = Work::new("sources-sqs3");
    let bucket = server::bucket("real-sqs3");
    let q = queue::create("real-sqs3");
    queue::notify_bucket(&bucket, &q);
    let rx = Receiver::start();
    let mut hosts: Vec<_> = (0..HOSTS)
        .map(|i| {
            let dir = work.path().join(format!("host{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let input = section(&[
                ("name", "cloudtrail"),
                ("tag", "ct"),
                ("sqs.queue_url", &q),
                ("sqs.wait_time_secs", "1"),
                ("endpoint", server::endpoint()),
                ("force_path_style", "on"),
                ("region", "us-east-1"),
                ("start_time", "2023-07-01T00:00:00Z"),
                ("db", dir.join("state.json").to_str().unwrap()),
            ]);
            let conf = Conf::new()
                .input(input)
                .output(http_output("*", &rx, &format!("/host{i}")))
                .write_yaml(&dir);
            fb.start(&dir, &format!("host{i}"), &conf, &[])
        })
        .collect();
    for h in &mut hosts {
        h.wait_started(1);
    }
    data::upload_all(&bucket, "");
    let mut tally = Tally::new(&Expected::all(), Time::LeadingIso("timestamp"), true);
    wait_until("every event at the receiver", RUN_LIMIT, || {
        for h in &mut hosts {
            assert!(h.try_status().is_none(), "{}", h.stderr_tail(40));
        }
        tally.follow(&rx).all_arrived()
    });
    wait_until("the queue to empty", RUN_LIMIT, || {
        queue::messages_in(&q) == 0
    });
    for h in &mut hosts {
        let status = h.stop();
        assert!(status.success(), "{status}\n{}", h.stderr_tail(30));
    }
    tally.follow(&rx);
    let per_host: Vec<usize> = (0..HOSTS)
        .map(|i| {
            let path = format!("/host{i}");
            rx.lines().iter().filter(|l| l.path == path).count()
        })
        .collect();
    eprintln!(
        "{} SQS, {HOSTS} hosts on one queue: {}, events per host {per_host:?}",
        fb.label(),
        tally.summary()
    );
    tally.assert_exactly_once("three hosts on one queue");
    for h in &hosts {
        h.assert_no_errors();
    }
    assert!(
        per_host.iter().filter(|n| **n > 0).count() >= 2,
        "the work was shared: {per_host:?}"
    );
    Ok(())
}

/// The account whose reads are denied (a KMS key the shipper may not use).
const DENIED_ACCOUNT: &str = "999999999999";
const DENIED_OBJECTS: usize = 150;

/// SQS mode, one shipper at the defaults: 150 objects of one account answer
/// `403 AccessDenied` for ever, announced on the queue ahead of the bundled objects of
/// another account. Every good event must arrive within 90 s, every message must leave the
/// queue, and the denied objects must stay in the ledger, open, for their retry.
fn sqs_denied_account(fb: &FluentBit) -> Result<(), Failed> {
    const GOOD_WITHIN: Duration = Duration::from_secs(90);
    let work = Work::new("sources-sqs-denied");
    let bucket = server::bucket("real-sqs-denied");
    let q = queue::create("real-sqs-denied");
    queue::notify_bucket(&bucket, &q);
    for i in 0..DENIED_OBJECTS {
        let (key, body) = denied_object(i);
        server::put(&bucket, &key, body);
    }
    data::upload_all(&bucket, "");
    let proxy = CountingProxy::with_access_denied(
        server::endpoint(),
        AccessDenied {
            path_contains: format!("/AWSLogs/{DENIED_ACCOUNT}/"),
        },
    );
    let rx = Receiver::start();
    let db = work.path().join("ledger.db");
    let input = section(&[
        ("name", "cloudtrail"),
        ("tag", "ct"),
        ("sqs.queue_url", &q),
        ("endpoint", &proxy.endpoint),
        ("force_path_style", "on"),
        ("region", "us-east-1"),
        ("start_time", "2023-07-01T00:00:00Z"),
        ("db", db.to_str().unwrap()),
    ]);
    let conf = Conf::new()
        .input(input)
        .output(http_output("*", &rx, "/denied"))
        .write_yaml(work.path());
    let mut host = fb.start(work.path(), "denied-account", &conf, &[]);
    let started = Instant::now();
    let mut tally = Tally::new(&Expected::all(), Time::LeadingIso("timestamp"), false);
    wait_until("every good event at the receiver", GOOD_WITHIN, || {
        assert!(host.try_status().is_none(), "{}", host.stderr_tail(40));
        tally.follow(&rx).all_arrived()
    });
    let good_in = started.elapsed();
    wait_until("the queue to empty", RUN_LIMIT, || {
        queue::messages_in(&q) == 0
    });
    let status = host.stop();
    assert!(status.success(), "{status}\n{}", host.stderr_tail(30));
    tally.follow(&rx);
    let denied_gets = proxy.seen().iter().filter(|s| s.denied).count();
    eprintln!(
        "{} SQS, {DENIED_OBJECTS} denied objects ahead of the bundled ones: every good event in {:.1} s, {denied_gets} GETs denied; {}",
        fb.label(),
        good_in.as_secs_f64(),
        tally.summary()
    );
    tally.assert_exactly_once("behind a denied account");
    host.assert_no_errors_except(&["needs s3:GetObject"]);
    let said = format!("{DENIED_OBJECTS} objects are open in");
    assert_eq!(
        host.stderr.count(&said),
        1,
        "at exit it says how many objects only the ledger knows now: {}",
        host.stderr_tail(10)
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cloudtrail-s3"))
        .args(["status", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let open = report["open"].as_array().unwrap();
    let denied_open = open
        .iter()
        .filter(|o| {
            o["id"].as_str().unwrap().contains(DENIED_ACCOUNT)
                && o["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("AccessDenied"))
        })
        .count();
    assert_eq!(
        (denied_open, open.len()),
        (DENIED_OBJECTS, DENIED_OBJECTS),
        "every denied object stays open for its retry, nothing else: {open:?}"
    );
    assert_eq!(report["counts"]["done"], data::OBJECTS, "{report}");
    Ok(())
}

/// The `i`-th object of the denied account: one valid event (it would ship if it could be
/// read).
fn denied_object(i: usize) -> (String, Vec<u8>) {
    let (hour, minute) = (i / 12, i % 12 * 5);
    let stamp = format!("20230701T{hour:02}{minute:02}Z");
    let key = format!(
        "AWSLogs/{DENIED_ACCOUNT}/CloudTrail/us-east-1/2023/07/01/{DENIED_ACCOUNT}_CloudTrail_us-east-1_{stamp}_d{i:03}.json.gz"
    );
    let event = serde_json::json!({"Records": [{
        "eventVersion": "1.08",
        "eventTime": format!("2023-07-01T{hour:02}:{minute:02}:00Z"),
        "eventSource": "s3.amazonaws.com",
        "eventName": "GetObject",
        "eventID": format!("denied-{i}"),
        "recipientAccountId": DENIED_ACCOUNT,
    }]});
    (key, data::gzip(event.to_string().as_bytes()))
}
