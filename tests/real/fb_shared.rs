//! Several Fluent Bit processes sharing one SQS queue and one DynamoDB ledger table
//! (`ledger.dynamodb_table`), counted at the receiver, which outlives every process:
//!
//! * two shippers, a 23,200-event object among the bundled ones, SIGTERM to the one
//!   shipping it part-way through, and a restart: every event once, **0 repeated** (the
//!   other shipper resumes after the committed position);
//! * the same with SIGKILL and filesystem storage: 0 lost, repeats within the killed
//!   shipper's uncommitted batches (the other takes the object over after the lease time).
//!
//! The DynamoDB requests go through a counting proxy: the closing figures per object come
//! from here.

use std::collections::BTreeMap;

use libtest_mimic::Failed;

use crate::check::{Expected, Tally, Time};
use crate::fluent_bit::{Conf, FluentBit, RUN_LIMIT, http_output, section};
use crate::proxy::CountingProxy;
use crate::receiver::Receiver;
use crate::wait::wait_until;
use crate::work::Work;
use crate::{Body, data, queue, server};

pub fn trials() -> Vec<(&'static str, Body<FluentBit>)> {
    vec![
        (
            "shared::sigterm_mid_object_two_shippers_repeat_nothing",
            sigterm,
        ),
        (
            "shared::sigkill_mid_object_two_shippers_lose_nothing",
            sigkill,
        ),
    ]
}

/// Copies of every bundled event: the big object.
const COPIES: usize = 8;
/// Events of the big object marked by this eventID prefix.
const BIG: &str = "\"eventID\":\"big";
/// Bytes a collect hands over: the big object takes several collects (one a second).
const BATCH: &str = "2M";
const LEASE_SECS: u64 = 5;

/// One object of every bundled event `COPIES` times, with new eventIDs.
fn big_object() -> data::Object {
    let mut events = Vec::new();
    for c in 0..COPIES {
        for o in data::objects() {
            for e in o.events() {
                events.push(e.replacen("\"eventID\":\"", &format!("{BIG}{c}-"), 1));
            }
        }
    }
    data::Object {
        key: "AWSLogs/111122223333/CloudTrail/us-east-1/2023/07/10/111122223333_CloudTrail_us-east-1_20230710T2355Z_big0000000000001.json.gz".into(),
        gz: data::gzip(format!("{{\"Records\":[{}]}}", events.join(",")).as_bytes()),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Stop {
    Term,
    Kill,
}

fn sigterm(fb: &FluentBit) -> Result<(), Failed> {
    two_shippers(fb, Stop::Term)
}

fn sigkill(fb: &FluentBit) -> Result<(), Failed> {
    two_shippers(fb, Stop::Kill)
}

fn two_shippers(fb: &FluentBit, stop: Stop) -> Result<(), Failed> {
    let what = match stop {
        Stop::Term => "SIGTERM",
        Stop::Kill => "SIGKILL",
    };
    let tag = format!(
        "shared-{}-{}",
        what.to_lowercase(),
        fb.label().replace(|c: char| !c.is_ascii_alphanumeric(), "")
    );
    let work = Work::new(&tag);
    let bucket = server::bucket(&tag);
    let q = queue::create(&tag);
    queue::notify_bucket(&bucket, &q);
    let table = format!("{tag}-{}", std::process::id());
    let dynamo = CountingProxy::start(server::endpoint(), std::time::Duration::ZERO);
    let rx = Receiver::start();
    let big = big_object();
    let mut objects = data::objects();
    let conf_of = |i: usize| {
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
            ("batch_bytes", BATCH),
            ("storage.type", "filesystem"),
            ("ledger.dynamodb_table", &table),
            ("ledger.dynamodb_endpoint", &dynamo.endpoint),
            // A killed shipper's held message comes back this soon (its object is taken
            // over through the table sooner, after the lease time).
            ("sqs.visibility_timeout_secs", "10"),
            ("ledger.lease_time", &LEASE_SECS.to_string()),
        ]);
        let conf = Conf::new()
            .with_storage(&dir)
            .input(input)
            .output(http_output("*", &rx, &format!("/host{i}")))
            .write_yaml(&dir);
        (dir, conf)
    };
    let confs: Vec<_> = (0..2).map(conf_of).collect();
    let mut hosts: Vec<_> = confs
        .iter()
        .enumerate()
        .map(|(i, (dir, conf))| fb.start(dir, &format!("host{i}-life0"), conf, &[]))
        .collect();
    for h in &mut hosts {
        h.wait_started(1);
    }
    // The big object first, so one shipper is deep in it while the rest arrive.
    server::put(&bucket, &big.key, big.gz.clone());
    data::upload_all(&bucket, "");
    objects.push(big);
    let expected = Expected::of(&objects);
    let mut tally = Tally::new(&expected, Time::LeadingIso("timestamp"), true);

    // The shipper of the big object, once some of it (not all) arrived.
    let mut shipper = None;
    wait_until("the big object to start arriving", RUN_LIMIT, || {
        for h in &mut hosts {
            assert!(h.try_status().is_none(), "{}", h.stderr_tail(40));
        }
        shipper = rx
            .lines()
            .iter()
            .find(|l| l.text.contains(BIG))
            .map(|l| l.path.clone());
        shipper.is_some()
    });
    let path = shipper.unwrap();
    let i: usize = path.trim_start_matches("/host").parse().unwrap();
    let big_arrived = |rx: &Receiver| rx.lines().iter().filter(|l| l.text.contains(BIG)).count();
    let before = big_arrived(&rx);
    match stop {
        Stop::Term => {
            let status = hosts[i].stop();
            assert!(status.success(), "{status}\n{}", hosts[i].stderr_tail(30));
            hosts[i].assert_no_errors();
        }
        Stop::Kill => {
            hosts[i].signal(libc::SIGKILL);
            hosts[i].wait_exit(RUN_LIMIT);
        }
    }
    let at_stop = big_arrived(&rx);
    let whole = COPIES * data::EVENTS;
    assert!(
        at_stop < whole,
        "the stop came after the whole big object arrived ({at_stop} of {whole}): not part-way"
    );
    let (dir, conf) = &confs[i];
    hosts[i] = fb.start(dir, &format!("host{i}-life1"), conf, &[]);
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
        h.assert_no_errors();
    }
    tally.follow(&rx);
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    for s in dynamo.seen() {
        let op = s
            .target
            .as_deref()
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("?")
            .to_string();
        *ops.entry(op).or_default() += 1;
    }
    let per_object: Vec<String> = ["GetItem", "PutItem", "Query"]
        .iter()
        .map(|op| {
            let n = ops.get(*op).copied().unwrap_or(0);
            format!("{op} {:.2}", n as f64 / objects.len() as f64)
        })
        .collect();
    eprintln!(
        "{what} to the shipper of the big object on {} ({before}..{at_stop} of its {whole} events had arrived): {}; DynamoDB requests {ops:?} for {} objects, per object: {}",
        fb.label(),
        tally.summary(),
        objects.len(),
        per_object.join(", ")
    );
    match stop {
        Stop::Term => tally.assert_exactly_once("SIGTERM with a shared ledger"),
        Stop::Kill => {
            tally.assert_well_formed("SIGKILL with a shared ledger");
            assert_eq!(tally.lost(), 0, "{}", tally.summary());
            // What the killed shipper handed its host and had not committed: at most the
            // batches in flight (a collect's batch, and the one being committed).
            let per_batch = (2usize << 20).div_ceil(1000);
            assert!(
                tally.repeated() <= 2 * per_batch,
                "{} (bound {})",
                tally.summary(),
                2 * per_batch
            );
        }
    }
    Ok(())
}
