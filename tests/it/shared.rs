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

fn dynamodb() -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(server::endpoint())
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            server::ACCESS_KEY,
            server::SECRET_KEY,
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
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
        &[("ledger.dynamodb_table", &table), ("batch_bytes", "64K")],
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
        dynamodb()
            .get_item()
            .table_name(&table)
            .key(
                "id",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("s3://{bucket}/{}", big.key)),
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
