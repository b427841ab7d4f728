//! `cloudtrail-s3 verify` on the S3 test server: digests for the bundled objects, built and
//! signed here with a generated RSA key as CloudTrail builds and signs them, uploaded with
//! the signature in the object's metadata; `ListPublicKeys` answered by a stand-in on
//! loopback (the test server does not implement it). Each fault is provoked and must be
//! reported once: a log file deleted, a log file altered, two digests deleted in a row, a
//! digest signed by another key, a digest moved, a trail gone silent.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use cloudtrail_s3::digest::sha256;

use crate::data;
use crate::digest_data::{DAY, Writer, gzip, key_on, key_server, upload_logs, upload_logs_on};
use crate::server::{self, block_on};

/// Writes the shipper's settings for `bucket` (a ledger file, digests checked so hashes
/// are kept, and `extra`) and ships once with the command. Returns the settings and the
/// ledger's paths.
fn ship_once(dir: &Path, bucket: &str, extra: &[(&'static str, &str)]) -> (PathBuf, PathBuf) {
    let db = dir.join("state.db");
    let mut props = server::s3_props(bucket);
    props.push(("db", db.display().to_string()));
    props.push(("digest.validate", "true".into()));
    props.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let settings = write_settings(dir, "shipper.toml", &props);
    let out = Command::new(env!("CARGO_BIN_EXE_cloudtrail-s3"))
        .arg("--config")
        .arg(&settings)
        .arg("--once")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (settings, db)
}

/// A TOML settings file of `props`.
fn write_settings(dir: &Path, name: &str, props: &[(&str, String)]) -> PathBuf {
    let path = dir.join(name);
    let text: String = props
        .iter()
        .map(|(k, v)| format!("{k} = {v:?}\n"))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// A recent day (`YYYY-MM-DD`) whose 16:00 is past, and less than a day ago: its 12:00 and
/// 13:00 digests are then more than two hours old whenever the test runs, so a trail whose
/// last digest is one of them is silent (said) at every time of day, not only at some.
pub fn recent_day() -> String {
    let (y, m, d) = cloudtrail_s3::timestamp::civil_from_days(
        (i64::from(cloudtrail_s3::timestamp::EventTime::now().secs()) - 16 * 3600) / 86_400,
    );
    format!("{y:04}-{m:02}-{d:02}")
}

fn verify(dir: &Path, bucket: &str, keys: &str, to: &str) -> (i32, serde_json::Value) {
    let settings = write_settings(dir, &format!("{bucket}.toml"), &server::s3_props(bucket));
    let out = Command::new(env!("CARGO_BIN_EXE_cloudtrail-s3"))
        .args(["verify", "--json", "--config"])
        .arg(&settings)
        .args(["--from", "2023-07-10T10:30:00Z", "--to", to])
        .args(["--cloudtrail-endpoint", keys])
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap(), report)
}

#[test]
fn every_file_of_an_intact_trail_verifies() {
    let bucket = server::bucket("verify-ok");
    let key = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let keys = key_server(vec![key.public_key().as_ref().to_vec()]);
    let (eleven, twelve) = upload_logs(&bucket);
    let mut w = Writer {
        bucket: &bucket,
        day: DAY,
        trail: "org-trail",
        key: &key,
        previous: None,
    };
    w.write(12, &eleven, None, None);
    w.write(13, &twelve, None, None);
    w.write(14, &[], None, None);
    let dir = tempfile::tempdir().unwrap();
    let (code, report) = verify(dir.path(), &bucket, &keys, "2023-07-10T14:00:00Z");
    assert_eq!(code, 0, "{report:#}");
    let hours = report["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 3, "{report:#}");
    assert!(hours.iter().all(|h| h["complete"] == true), "{report:#}");
    let logs: u64 = hours.iter().map(|h| h["logs"].as_u64().unwrap()).sum();
    assert_eq!(logs as usize, data::OBJECTS);
    assert_eq!(report["chain"], serde_json::json!([]));
}

#[test]
fn each_provoked_fault_is_reported_once() {
    let bucket = server::bucket("verify-faults");
    let key = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let other = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let keys = key_server(vec![key.public_key().as_ref().to_vec()]);
    let (eleven, twelve) = upload_logs(&bucket);
    let mut w = Writer {
        bucket: &bucket,
        day: DAY,
        trail: "org-trail",
        key: &key,
        previous: None,
    };
    w.write(12, &eleven, None, None);
    w.write(13, &twelve, None, None);
    let (gone_a, gone_b) = (w.write(14, &[], None, None), w.write(15, &[], None, None));
    w.write(16, &[], None, None);
    // Two digests deleted in a row.
    for k in [&gone_a, &gone_b] {
        block_on(
            server::client()
                .delete_object()
                .bucket(&bucket)
                .key(k)
                .send(),
        )
        .unwrap();
    }
    // A log file of 11:xx deleted, one of 12:xx altered (one byte of its JSON).
    let deleted = &eleven[0].0;
    block_on(
        server::client()
            .delete_object()
            .bucket(&bucket)
            .key(deleted)
            .send(),
    )
    .unwrap();
    let altered = &twelve[0].0;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(twelve[0].1.as_slice())
        .read_to_end(&mut raw)
        .unwrap();
    let at = raw.iter().position(|b| *b == b'Z').unwrap();
    raw[at] = b'z';
    server::put(&bucket, altered, gzip(&raw));
    // Another trail: its first digest signed by a key CloudTrail never published; its
    // second stored somewhere other than where it says it is.
    let mut forged = Writer {
        bucket: &bucket,
        day: DAY,
        trail: "second",
        key: &key,
        previous: None,
    };
    let forged_key = forged.write(12, &[], Some(&other), None);
    let moved_to = forged.key_of(13).replace("T130000Z", "T133000Z");
    forged.write(13, &[], None, Some(&moved_to));

    let dir = tempfile::tempdir().unwrap();
    let (code, report) = verify(dir.path(), &bucket, &keys, "2023-07-10T16:00:00Z");
    assert_eq!(code, 1, "{report:#}");
    let text = report.to_string();
    let once = |needle: &str| {
        assert_eq!(
            text.matches(needle).count(),
            1,
            "{needle:?} once in {report:#}"
        );
    };
    once(&format!("missing: s3://{bucket}/{deleted}"));
    once(&format!("altered: s3://{bucket}/{altered}"));
    once("digests missing from 2023-07-10T13:00:00Z to 2023-07-10T15:00:00Z");
    once("the signature does not verify");
    once("not where it was found: moved");
    assert!(text.contains(&forged_key));
    // The second trail's last digest ended at 13:00, three hours before the range's end.
    once("no digest after 2023-07-10T13:00:00Z");
    let hours = report["hours"].as_array().unwrap();
    let incomplete = hours.iter().filter(|h| h["complete"] == false).count();
    // 12:00 (deleted file), 13:00 (altered file), and the second trail's two.
    assert_eq!(incomplete, 4, "{report:#}");
}

#[test]
fn the_engine_keeps_the_sha256_of_each_file_it_shipped() {
    let bucket = server::bucket("verify-hash");
    data::upload_all(&bucket, "");
    // One file with a byte after its JSON (a newline), which the digest's hash covers.
    let extra = "AWSLogs/218007301253/CloudTrail/us-east-1/2023/07/10/218007301253_CloudTrail_us-east-1_20230710T1300Z_newline000000001.json.gz";
    let raw_extra = b"{\"Records\":[{\"eventVersion\":\"1.08\",\"eventTime\":\"2023-07-10T13:00:00Z\",\"eventID\":\"x1\"}]}\n";
    server::put(&bucket, extra, gzip(raw_extra));
    let dir = tempfile::tempdir().unwrap();
    let (_, db) = ship_once(dir.path(), &bucket, &[]);
    let now = cloudtrail_s3::timestamp::EventTime::now().secs();
    let ledger = cloudtrail_s3::ops::open(&db, now).unwrap();
    let mut files: Vec<(String, Vec<u8>)> = data::objects()
        .into_iter()
        .map(|o| {
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(o.gz.as_slice())
                .read_to_end(&mut raw)
                .unwrap();
            (o.key, raw)
        })
        .collect();
    files.push((extra.to_string(), raw_extra.to_vec()));
    for (key, raw) in files {
        let entry = ledger
            .entry(&format!("s3://{bucket}/{key}"))
            .unwrap()
            .unwrap_or_else(|| panic!("{key}: no entry"));
        assert_eq!(entry.sha256, Some(sha256(&raw)), "{key}");
    }
}

#[test]
fn with_the_ledger_files_are_checked_against_what_was_shipped() {
    let bucket = server::bucket("verify-ledger");
    let key = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let keys = key_server(vec![key.public_key().as_ref().to_vec()]);
    // A recent day: the ledger judges only what it surely still remembers.
    let day = recent_day();
    let (eleven, mut twelve) = upload_logs_on(&bucket, &day);
    // One file is shipped altered (a byte changed before the shipper read it): the digest
    // names CloudTrail's bytes.
    let (tampered, original) = twelve[1].clone();
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(original.as_slice())
        .read_to_end(&mut raw)
        .unwrap();
    let at = raw.iter().position(|b| *b == b'Z').unwrap();
    raw[at] = b'z';
    server::put(&bucket, &tampered, gzip(&raw));
    let dir = tempfile::tempdir().unwrap();
    let (settings, _) = ship_once(dir.path(), &bucket, &[("lookback", "120h")]);
    // A file CloudTrail wrote after the shipper stopped: in the bucket, never shipped.
    let late = eleven[0]
        .0
        .replace("T1145Z_", "T1259Z_")
        .replace("7xgocspSowgK0Gto", "neverShipped0001");
    server::put(&bucket, &late, eleven[0].1.clone());
    twelve.push((late.clone(), eleven[0].1.clone()));
    let mut w = Writer {
        bucket: &bucket,
        day: &day,
        trail: "t",
        key: &key,
        previous: None,
    };
    w.write(12, &eleven, None, None);
    twelve[1].1 = original;
    w.write(13, &twelve, None, None);

    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_cloudtrail-s3"))
            .args(["verify", "--json", "--config"])
            .arg(&settings)
            .args(["--from", &format!("{day}T10:30:00Z")])
            .args(["--to", &format!("{day}T13:00:00Z")])
            .args(["--cloudtrail-endpoint", &keys])
            .args(extra)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap(), report)
    };
    let (code, report) = run(&[]);
    assert_eq!(code, 1, "{report:#}");
    let hours = report["hours"].as_array().unwrap();
    assert_eq!(hours[0]["complete"], true, "{report:#}");
    assert_eq!(hours[0]["shipped"], eleven.len(), "{report:#}");
    assert_eq!(hours[1]["shipped"], twelve.len() - 2, "{report:#}");
    let problems: Vec<&str> = hours[1]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems.iter().any(|p| p.starts_with(&format!(
            "altered: s3://{bucket}/{tampered} was shipped with SHA-256"
        ))),
        "{problems:#?}"
    );
    assert!(
        problems.iter().any(|p| p.starts_with(&format!(
            "not shipped: s3://{bucket}/{late} is in the bucket"
        ))),
        "{problems:#?}"
    );
    // The bucket alone: the tampered file is altered in the bucket too, the late one fine.
    let (code, report) = run(&["--no-ledger"]);
    assert_eq!(code, 1);
    let text = report["hours"][1]["problems"].to_string();
    assert!(
        text.contains(&format!("altered: s3://{bucket}/{tampered} (SHA-256")),
        "{text}"
    );
    assert!(!text.contains("not shipped"), "{text}");
    assert!(report["hours"][1].get("shipped").is_none());
}

#[test]
fn in_sqs_mode_a_file_no_notification_announced_is_found_through_its_digest_and_shipped() {
    let bucket = server::bucket("digest-heal");
    let q = crate::sqs::queue("digest-heal");
    let key = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let keys = key_server(vec![key.public_key().as_ref().to_vec()]);
    // A recent day, whose 13:00 is past: the ledger vouches only for what it still
    // remembers, and shipped files are forgotten a lookback after (older digests' unknown
    // files are not judged, let alone shipped again).
    let day = recent_day();
    let (eleven, twelve) = upload_logs_on(&bucket, &day);
    // Two files no notification announces; a third deleted before anything read it.
    let unannounced = [&twelve[0].0, &twelve[1].0];
    let deleted = &twelve[2].0;
    block_on(
        server::client()
            .delete_object()
            .bucket(&bucket)
            .key(deleted)
            .send(),
    )
    .unwrap();
    for (k, gz) in eleven.iter().chain(&twelve[3..]) {
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
    let announced = want - events_of(&unannounced);
    let props = crate::sqs::sqs_props(
        &q,
        &[
            ("digest.validate", "true"),
            ("digest.bucket", &bucket),
            ("digest.every", "1"),
            ("digest.grace", "0"),
            ("digest.cloudtrail_endpoint", &keys),
            ("lookback", "120h"),
            // SQS alone with this shipper's own ledger: off unless it is the only one.
            ("digest.ship_missing", "true"),
            // Each finding a record too, beside the events.
            ("digest.findings_as_records", "true"),
        ],
    );
    // A ledger file, so that a restart remembers what was reported.
    let state = tempfile::tempdir().unwrap();
    let db = state.path().join("state.db").display().to_string();
    let mut props: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
    props.push(("db", &db));
    // The live status, for the integrity per account and region.
    let listen = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("127.0.0.1:{}", probe.local_addr().unwrap().port())
    };
    props.push(("metrics.listen", &listen));
    let mut inst = crate::host::Plugin::load().start(&props).expect("init");
    // What the notifications announced arrives first; then CloudTrail's digests land (an
    // hour's digest lands after its files): with no grace time, what they list that is
    // not shipped by then is a finding at once.
    let mut records =
        inst.collect_until(std::time::Duration::from_secs(60), |r| r.len() >= announced);
    assert_eq!(records.len(), announced);
    crate::sqs::wait_until_empty(&q, &inst);
    let mut w = Writer {
        bucket: &bucket,
        day: &day,
        trail: "t",
        key: &key,
        previous: None,
    };
    w.write(12, &eleven, None, None);
    w.write(13, &twelve, None, None);
    let so_far = records.len();
    records.extend(inst.collect_until(std::time::Duration::from_secs(60), |r| {
        so_far + events_in(r) >= want
    }));
    // A few more passes: nothing is shipped or reported twice.
    records.extend(inst.collect_until(std::time::Duration::from_secs(3), |_| false));
    // Each finding logged is a record too (queued before its line is logged).
    let logged = || {
        crate::host::logs_containing("digest: ")
            .into_iter()
            .map(|(_, l)| l)
            .filter(|l| l.contains(&bucket) && !l.contains("digest: pass over"))
            .count()
    };
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while finding_texts(&records).len() < logged() {
        assert!(std::time::Instant::now() < end, "finding records missing");
        records.extend(inst.collect_until(std::time::Duration::from_millis(500), |_| false));
    }
    let sent = finding_texts(&records);
    assert_eq!(sent.len(), logged(), "{sent:#?}");
    assert_eq!(
        sent.iter().collect::<std::collections::HashSet<_>>().len(),
        sent.len(),
        "each finding sent once: {sent:#?}"
    );
    assert!(
        sent.iter()
            .any(|f| f.contains(&format!("missing: s3://{bucket}/{deleted}"))),
        "{sent:#?}"
    );
    let mut ids = std::collections::HashMap::new();
    for r in records.iter().filter(|r| r.body.str("eventID").is_some()) {
        *ids.entry(r.body.str("eventID").unwrap().to_string())
            .or_insert(0) += 1;
    }
    let repeated: usize = ids.values().map(|n| n - 1).sum();
    assert_eq!((ids.len(), repeated), (want, 0), "every event once");
    let logs = |needle: &str| {
        crate::host::logs_containing(needle)
            .into_iter()
            .filter(|(_, l)| l.contains(&bucket))
            .count()
    };
    for k in unannounced {
        assert_eq!(
            crate::host::logs_containing(k)
                .iter()
                .filter(|(_, l)| l.contains("found through its digest") && l.contains(&bucket))
                .count(),
            1,
            "{k}"
        );
    }
    assert_eq!(logs("found through its digest"), 2);
    assert_eq!(logs(&format!("missing: s3://{bucket}/{deleted}")), 1);
    // The trail is silent since the last digest (more than two hours old, see
    // `recent_day`): said once. A pass that lists the digests between the two uploads
    // above sees the 12:00 digest as the last and says so too, rightly: once at most.
    let silent = logs(&format!("no digest after {day}T13:00:00Z"));
    assert_eq!(silent, 1);
    let silent_before = logs(&format!("no digest after {day}T12:00:00Z"));
    assert!(silent_before <= 1);
    let silent = silent + silent_before;
    let findings: Vec<String> = crate::host::logs_containing("digest: ")
        .into_iter()
        .map(|(_, l)| l)
        .filter(|l| l.contains(&bucket) && !l.contains("digest: pass over"))
        .collect();
    assert_eq!(findings.len(), 3 + silent, "{findings:#?}");
    // `GET /status` on the running instance: the 12:00 hour verified, the 13:00 hour
    // incomplete with the deleted file and the two no notification announced.
    let (code, body) = crate::live_ops::request(&listen, "GET", "/status").expect("status");
    assert_eq!(code, 200, "{body}");
    // The ledger's report first, in `status --json`'s order, then the integrity rows.
    assert!(body.starts_with("{\n  \"ledger\": "), "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rows = status["integrity"].as_array().expect("integrity rows");
    let sum = |field: &str| -> u64 { rows.iter().filter_map(|r| r[field].as_u64()).sum() };
    assert_eq!(
        (
            sum("hours_complete"),
            sum("hours_incomplete"),
            sum("hours_pending")
        ),
        (1, 1, 0),
        "{body}"
    );
    let problems: Vec<String> = rows
        .iter()
        .filter_map(|r| r["problems"].as_array())
        .flatten()
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems.iter().any(|p| p.contains(deleted.as_str())),
        "{problems:#?}"
    );
    inst.exit();
    drop(inst);

    // A restart reads the same digests again: nothing is reported or shipped twice.
    let passes =
        || crate::host::logs_containing(&format!("digest: pass over s3://{bucket} ")).len();
    let passes_before = passes();
    let inst = crate::host::Plugin::load().start(&props).expect("init");
    let again = inst.collect_until(std::time::Duration::from_secs(60), |_| {
        passes() >= passes_before + 3
    });
    assert!(
        passes() >= passes_before + 3,
        "three passes after the restart"
    );
    assert_eq!(events_in(&again), 0, "events shipped again");
    let again_sent = finding_texts(&again);
    assert!(
        again_sent.iter().all(|f| !sent.contains(f)),
        "findings sent again after a restart: {again_sent:#?}"
    );
    let after: Vec<String> = crate::host::logs_containing("digest: ")
        .into_iter()
        .map(|(_, l)| l)
        .filter(|l| {
            l.contains(&bucket)
                && !l.contains("digest: pass over")
                && !l.contains("digest: reported before: ")
        })
        .collect();
    let remembered = crate::host::logs_containing("digest: reported before: ")
        .into_iter()
        .filter(|(_, l)| l.contains(&bucket))
        .count();
    assert!(
        remembered >= 1,
        "the missing file's finding is found again, and remembered"
    );
    assert_eq!(after, findings, "findings said again after a restart");
    drop(inst);
}

/// Records that are CloudTrail events (they have an `eventID`).
fn events_in(records: &[crate::host::Record]) -> usize {
    records
        .iter()
        .filter(|r| r.body.str("eventID").is_some())
        .count()
}

/// The findings among `records` (`eventType` `IntegrityFinding`), in order; each must
/// carry its time and severity.
fn finding_texts(records: &[crate::host::Record]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.body.str("eventType") == Some("IntegrityFinding"))
        .map(|r| {
            assert_eq!(r.body.str("eventSource"), Some("cloudtrail-s3"));
            assert!(matches!(r.body.str("severity"), Some("error" | "warning")));
            assert!(r.secs > 0);
            r.body.str("finding").expect("finding text").to_string()
        })
        .collect()
}
