//! Shippers sharing one SQS queue and one DynamoDB ledger table on the test server, each a
//! plugin instance in this process (the stand-in host): the hand-over of a half-shipped
//! object at a graceful stop, the take-over after a crash, and the table's rows.

use std::collections::HashMap;
use std::time::Duration;

use crate::data;
use crate::host::{Plugin, Record, logs_containing};
use crate::server::{self, block_on};
use crate::sqs::{notify_bucket, queue, sqs_props};

/// One object of every bundled event `copies` times, with new eventIDs (`big<c>-…`).
pub(crate) fn big_object(copies: usize, key: &str) -> data::Object {
    let mut events = Vec::new();
    for c in 0..copies {
        for o in data::objects() {
            for e in o.events() {
                events.push(e.replacen("\"eventID\":\"", &format!("\"eventID\":\"big{c}-"), 1));
            }
        }
    }
    data::Object {
        key: key.into(),
        gz: data::gzip(format!("{{\"Records\":[{}]}}", events.join(",")).as_bytes()),
    }
}

fn ids(records: &[Record]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for r in records {
        *seen
            .entry(r.body.str("eventID").unwrap().to_string())
            .or_insert(0) += 1;
    }
    seen
}

fn table(tag: &str) -> String {
    format!("it-{tag}-{}", std::process::id())
}

#[test]
fn a_graceful_stop_hands_a_half_shipped_object_to_the_next_shipper() {
    let bucket = server::bucket("shared-stop");
    let q = queue("shared-stop");
    notify_bucket(&bucket, &q);
    let big = big_object(
        2,
        "AWSLogs/111122223333/CloudTrail/us-east-1/2023/07/10/111122223333_CloudTrail_us-east-1_20230710T2355Z_big0000000000001.json.gz",
    );
    let want = 2 * data::EVENTS;
    let table = table("stop");
    let props = sqs_props(
        &q,
        &[
            ("ledger.dynamodb_table", &table),
            ("ledger.dynamodb_endpoint", server::endpoint()),
            ("batch_bytes", "64K"),
        ],
    );
    let props: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let plugin = Plugin::load();
    let mut a = plugin.start(&props).expect("init A");
    server::put(&bucket, &big.key, big.gz.clone());
    let first = a.collect_until(Duration::from_secs(60), |r| r.len() >= 500);
    assert!(first.len() >= 500 && first.len() < want, "{}", first.len());
    // A stops part-way: what its host took is committed, its lease given up, its message
    // handed back.
    assert_eq!(a.exit(), 1, "FLB_OK");
    drop(a);
    let b = plugin.start(&props).expect("init B");
    let second = b.collect_until(Duration::from_secs(60), |r| first.len() + r.len() >= want);
    let mut all = first.clone();
    all.extend(second.iter().cloned());
    let seen = ids(&all);
    let repeated: usize = seen.values().map(|n| n - 1).sum();
    assert_eq!(
        (seen.len(), repeated),
        (want, 0),
        "every event once: A shipped {}, B {}",
        first.len(),
        second.len()
    );
    crate::sqs::wait_until_empty(&q, &b);
    let rows = block_on(
        server::dynamodb()
            .get_item()
            .table_name(&table)
            // Partition: the object's region prefix; sort: the rest of its key.
            .key(
                "p",
                aws_sdk_dynamodb::types::AttributeValue::S(format!(
                    "s3://{bucket}/AWSLogs/111122223333/CloudTrail/us-east-1/"
                )),
            )
            .key(
                "k",
                aws_sdk_dynamodb::types::AttributeValue::S(
                    big.key
                        .trim_start_matches("AWSLogs/111122223333/CloudTrail/us-east-1/")
                        .to_string(),
                ),
            )
            .consistent_read(true)
            .send(),
    )
    .unwrap();
    let item = rows.item().expect("the object's row");
    assert!(item.get("own").is_none(), "done: nobody holds it");
    assert!(item.get("exp").is_some(), "done rows expire by TTL");
    assert!(
        !logs_containing("ledger table")
            .iter()
            .any(|(_, l)| l.contains(&table) && !l.contains("shared with")),
        "no ledger errors"
    );
}

/// Runs `cloudtrail-s3 COMMAND --dynamodb-table TABLE …` against the test server.
fn operator(args: &[&str], table: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cloudtrail-s3"))
        .arg(args[0])
        .args(["--dynamodb-table", table])
        .args(["--dynamodb-endpoint", server::endpoint()])
        .args(["--region", "us-east-1"])
        .args(&args[1..])
        .env("AWS_ACCESS_KEY_ID", server::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", server::SECRET_KEY)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap()
}

#[test]
fn status_and_retry_read_and_change_the_shared_table_while_a_shipper_runs() {
    let bucket = server::bucket("shared-ops");
    let q = queue("shared-ops");
    notify_bucket(&bucket, &q);
    let table = table("ops");
    let props = sqs_props(
        &q,
        &[
            ("ledger.dynamodb_table", &table),
            ("ledger.dynamodb_endpoint", server::endpoint()),
            ("sqs.max_receive_count", "1"),
        ],
    );
    let props: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let inst = Plugin::load().start(&props).expect("init");
    let bad = "AWSLogs/111122223333/CloudTrail/us-east-1/2023/07/10/111122223333_CloudTrail_us-east-1_20230710T1200Z_notgzip000000001.json.gz";
    server::put(&bucket, bad, b"not gzip at all".to_vec());
    let good = &data::objects()[0];
    server::put(&bucket, &good.key, good.gz.clone());
    let records = inst.collect_until(Duration::from_secs(60), |r| r.len() >= good.events().len());
    assert_eq!(records.len(), good.events().len());
    let id = format!("s3://{bucket}/{bad}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let report = loop {
        inst.collect();
        let out = operator(&["status", "--json"], &table);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let failed = report["failed"].as_array().unwrap().clone();
        // The good object's done commit comes at a collect after its records.
        if failed.iter().any(|f| f["id"] == id.as_str()) && report["counts"]["done"] == 1 {
            break report;
        }
        assert!(std::time::Instant::now() < deadline, "{report:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(report["ledger"], format!("dynamodb:{table}"));
    let failed = &report["failed"][0];
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("not a CloudTrail log file"),
        "{failed:#}"
    );
    assert_eq!(report["counts"]["done"], 1, "{report:#}");
    // Put back in line while the shipper runs: any shipper may take it now.
    let out = operator(&["retry", &id], &table);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = operator(&["status", "--json"], &table);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["open"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["id"] == id.as_str()),
        "{report:#}"
    );
    // A table that does not exist is refused plainly, not created.
    let out = operator(&["status"], "no-such-ledger-table");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(inst);
}

#[test]
fn a_message_that_comes_back_after_the_commit_ships_nothing_on_another_shipper() {
    let bucket = server::bucket("shared-again");
    let q = queue("shared-again");
    notify_bucket(&bucket, &q);
    let table = table("again");
    // A short visibility timeout: a long poll of A still open at the server when A stopped
    // may take the message, which then comes back to B this soon.
    let props = sqs_props(
        &q,
        &[
            ("ledger.dynamodb_table", &table),
            ("ledger.dynamodb_endpoint", server::endpoint()),
            ("sqs.visibility_timeout_secs", "2"),
        ],
    );
    let props: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let plugin = Plugin::load();
    let o = &data::objects()[3];
    let a = plugin.start(&props).expect("init A");
    server::put(&bucket, &o.key, o.gz.clone());
    let shipped = a.collect_until(Duration::from_secs(60), |r| r.len() >= o.events().len());
    assert_eq!(shipped.len(), o.events().len());
    crate::sqs::wait_until_empty(&q, &a);
    drop(a);
    // The notification again, as after a crash between commit and delete (or a delete
    // that failed): another shipper receives it.
    let body = crate::queue::s3_notice(&bucket, &o.key, o.gz.len());
    crate::sqs::send(&q, &body);
    let b = plugin.start(&props).expect("init B");
    // Every record B hands over until its queue is empty, and for a while after.
    let mut again = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while crate::sqs::messages_in(&q) > 0 {
        assert!(std::time::Instant::now() < deadline, "the message stayed");
        again.extend(crate::host::decode(&b.collect().1));
        std::thread::sleep(Duration::from_millis(50));
    }
    again.extend(b.collect_until(Duration::from_secs(2), |_| false));
    // A is gone: the queue emptied because B deleted the message, having found the object
    // done in the shared table.
    assert!(again.is_empty(), "{} events shipped again", again.len());
}

/// The owner of each prefix row in the table.
fn prefix_owners(table: &str) -> HashMap<String, Option<String>> {
    let out = block_on(
        server::dynamodb()
            .query()
            .table_name(table)
            .consistent_read(true)
            .key_condition_expression("p = :p")
            .expression_attribute_values(
                ":p",
                aws_sdk_dynamodb::types::AttributeValue::S("~prefix".into()),
            )
            .send(),
    )
    .unwrap();
    out.items()
        .iter()
        .map(|i| {
            let text = |k: &str| i.get(k).and_then(|v| v.as_s().ok()).cloned();
            (text("k").unwrap(), text("own"))
        })
        .collect()
}

#[test]
fn two_shippers_listing_one_bucket_split_its_prefixes_and_ship_each_event_once() {
    let bucket = server::bucket("shared-list");
    let table = table("list");
    let (objects, prefixes) = data::spread_objects(4);
    for o in &objects {
        server::put(&bucket, &o.key, o.gz.clone());
    }
    let mut props = server::s3_props(&bucket);
    props.push(("ledger.dynamodb_table", table.clone()));
    props.push(("ledger.dynamodb_endpoint", server::endpoint().into()));
    props.push(("ledger.lease_time", "5".into()));
    let props: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let plugin = Plugin::load();
    let a = plugin.start(&props).expect("init A");
    let b = plugin.start(&props).expect("init B");
    let mut shipped = (Vec::new(), Vec::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    // Until every event arrived and the prefixes are split two and two (B takes its share
    // from A at its first scans; a prefix listed by both for a moment repeats nothing).
    loop {
        shipped.0.extend(crate::host::decode(&a.collect().1));
        shipped.1.extend(crate::host::decode(&b.collect().1));
        let owners = prefix_owners(&table);
        let mut per_owner: HashMap<&str, usize> = HashMap::new();
        for o in owners.values().flatten() {
            *per_owner.entry(o).or_default() += 1;
        }
        let split =
            owners.len() == 4 && per_owner.len() == 2 && per_owner.values().all(|n| *n == 2);
        if shipped.0.len() + shipped.1.len() >= data::EVENTS && split {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} events; prefix owners {owners:?}",
            shipped.0.len() + shipped.1.len(),
            data::EVENTS
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut all = shipped.0.clone();
    all.extend(shipped.1.iter().cloned());
    let seen = ids(&all);
    let repeated: usize = seen.values().map(|n| n - 1).sum();
    assert_eq!(
        (seen.len(), repeated),
        (data::EVENTS, 0),
        "every event once"
    );
    let owners = prefix_owners(&table);
    let mut want: Vec<String> = prefixes
        .iter()
        .map(|p| format!("s3://{bucket}/{p}"))
        .collect();
    want.sort();
    let mut got: Vec<&String> = owners.keys().collect();
    got.sort();
    assert_eq!(got, want.iter().collect::<Vec<_>>());

    // A stops gracefully: B lists A's prefixes from its next scan, and an object landing
    // in one of them now is shipped by B, once.
    drop(a);
    let late = &data::objects()[0];
    let late_key = format!(
        "{}2023/07/10/{}_CloudTrail_x_20230710T2359Z_late000000000001.json.gz",
        prefixes[0],
        &prefixes[0][8..20]
    );
    let events = late.events().len();
    server::put(&bucket, &late_key, late.gz.clone());
    let more = b.collect_until(Duration::from_secs(60), |r| r.len() >= events);
    assert_eq!(
        more.len(),
        events,
        "B ships the late object in A's former prefix"
    );
    let owners = prefix_owners(&table);
    assert_eq!(
        owners
            .values()
            .flatten()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        1,
        "B holds every prefix: {owners:?}"
    );
    let again = b.collect_until(Duration::from_secs(3), |_| false);
    assert!(again.is_empty(), "{} events again", again.len());
}
