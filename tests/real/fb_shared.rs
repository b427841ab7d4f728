//! Several Fluent Bit processes sharing one SQS queue and one DynamoDB ledger table
//! (`ledger.dynamodb_table`), counted at the receiver, which outlives every process:
//!
//! * two shippers, a 23,200-event object among the bundled ones, SIGTERM to the one
//!   shipping it part-way through, and a restart: every event once, **0 repeated** (the
//!   other shipper resumes after the committed position);
//! * the same with SIGKILL and filesystem storage: 0 lost, repeats within the killed
//!   shipper's uncommitted batches (the other takes the object over after the lease time);
//! * two shippers listing one bucket (no SQS), the bundled objects spread over four
//!   account/region prefixes: every event once, and while idle each prefix is listed by
//!   one shipper only (each host's S3 requests go through a proxy of its own);
//! * three shippers in hybrid mode, notifications for half the objects: every event once.
//!
//! The DynamoDB requests go through a counting proxy: the closing figures per object come
//! from here.

use std::collections::BTreeMap;

use libtest_mimic::Failed;

use crate::check::{Expected, Tally, Time};
use crate::fluent_bit::{Conf, EMPTY_CHUNK_AFTER_KILL, FluentBit, RUN_LIMIT, http_output, section};
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
        (
            "shared::two_listing_shippers_split_the_prefixes",
            two_listing,
        ),
        (
            "shared::three_hybrid_shippers_ship_each_event_once",
            three_hybrid,
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
            // Fixed batches: the bound on repeats counts in them.
            ("batch_bytes_max", BATCH),
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
        h.assert_no_errors_except(&[EMPTY_CHUNK_AFTER_KILL]);
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

/// Account/region prefixes the bundled objects are spread over.
const PREFIXES: usize = 4;

/// The `prefix` parameter of a region listing (one with `start-after`; enumerations list
/// with a delimiter instead), decoded.
fn region_listed(path: &str) -> Option<String> {
    let query = path.split_once('?')?.1;
    if !query.contains("list-type=2") || !query.contains("start-after=") {
        return None;
    }
    let prefix = query.split('&').find_map(|kv| kv.strip_prefix("prefix="))?;
    Some(prefix.replace("%2F", "/"))
}

/// Object rows in the table that are finished (not in the open index: no `q`).
fn finished_rows(table: &str) -> usize {
    let client = server::dynamodb();
    let out = server::block_on(
        client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .filter_expression("begins_with(id, :s) AND attribute_not_exists(q)")
            .expression_attribute_values(
                ":s",
                aws_sdk_dynamodb::types::AttributeValue::S("s3://".into()),
            )
            .send(),
    )
    .unwrap();
    out.items().len()
}

/// Region listings per prefix by each proxy since `before` (listings per proxy then).
fn since(
    proxies: &[CountingProxy],
    before: &[BTreeMap<String, usize>],
) -> Vec<BTreeMap<String, usize>> {
    proxies
        .iter()
        .zip(before)
        .map(|(proxy, was)| {
            listings(proxy)
                .into_iter()
                .map(|(p, n)| {
                    let n = n - was.get(&p).copied().unwrap_or(0);
                    (p, n)
                })
                .filter(|(_, n)| *n > 0)
                .collect()
        })
        .collect()
}

/// Whether every prefix was listed at least `times` over all the proxies together.
fn listed_each(per_proxy: &[BTreeMap<String, usize>], times: usize) -> bool {
    let mut total: BTreeMap<&String, usize> = BTreeMap::new();
    for (p, n) in per_proxy.iter().flatten() {
        *total.entry(p).or_default() += n;
    }
    total.len() == PREFIXES && total.values().all(|n| *n >= times)
}

/// Region listings per prefix seen by a proxy so far.
fn listings(proxy: &CountingProxy) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for s in proxy.seen() {
        if let Some(p) = region_listed(&s.path) {
            *out.entry(p).or_default() += 1;
        }
    }
    out
}

/// The input section of a shipper on the shared table, reaching S3 at `s3` and listing
/// `bucket` (and reading `queue`, when given).
fn lister_input(
    s3: &str,
    bucket: &str,
    queue: Option<&str>,
    (table, dynamodb): (&str, &str),
) -> crate::fluent_bit::Section {
    let mut pairs = vec![
        ("name", "cloudtrail"),
        ("tag", "ct"),
        ("bucket", bucket),
        ("endpoint", s3),
        ("force_path_style", "on"),
        ("region", "us-east-1"),
        ("start_time", "2023-07-01T00:00:00Z"),
        ("scan_interval", "1"),
        ("ledger.dynamodb_table", table),
        ("ledger.dynamodb_endpoint", dynamodb),
        ("ledger.lease_time", "10"),
    ];
    if let Some(q) = queue {
        pairs.extend([("sqs.queue_url", q), ("sqs.wait_time_secs", "1")]);
    }
    section(&pairs)
}

fn two_listing(fb: &FluentBit) -> Result<(), Failed> {
    let tag = fb.tag("shared-list");
    let work = Work::new(&tag);
    let bucket = server::bucket(&tag);
    let table = format!("{tag}-{}", std::process::id());
    let (objects, _) = data::spread_objects(PREFIXES);
    for o in &objects {
        server::put(&bucket, &o.key, o.gz.clone());
    }
    let rx = Receiver::start();
    let dynamo = CountingProxy::start(server::endpoint(), std::time::Duration::ZERO);
    let proxies: Vec<CountingProxy> = (0..2)
        .map(|_| CountingProxy::start(server::endpoint(), std::time::Duration::ZERO))
        .collect();
    let mut hosts: Vec<_> = proxies
        .iter()
        .enumerate()
        .map(|(i, proxy)| {
            let dir = work.path().join(format!("host{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let conf = Conf::new()
                .input(lister_input(
                    &proxy.endpoint,
                    &bucket,
                    None,
                    (&table, &dynamo.endpoint),
                ))
                .output(http_output("*", &rx, &format!("/host{i}")))
                .write_yaml(&dir);
            fb.start(&dir, &format!("host{i}"), &conf, &[])
        })
        .collect();
    let expected = Expected::of(&objects);
    let mut tally = Tally::new(&expected, Time::LeadingIso("timestamp"), true);
    wait_until("every event at the receiver", RUN_LIMIT, || {
        for h in &mut hosts {
            assert!(h.try_status().is_none(), "{}", h.stderr_tail(40));
        }
        tally.follow(&rx).all_arrived()
    });
    // Idle once every object's done commit is in the table (the commits follow the
    // host's acknowledgements, after the events arrived): then every prefix listed at
    // least three more times, counted per host.
    wait_until("every object done in the table", RUN_LIMIT, || {
        finished_rows(&table) == objects.len()
    });
    // The listing that starts after the last commit raises its prefix's watermark (a
    // write); a shipper's scans run one after another, so once every prefix is listed twice
    // more, those writes are behind us and the idle window starts.
    let settled: Vec<_> = proxies.iter().map(listings).collect();
    wait_until(
        "each prefix listed twice after the commits",
        RUN_LIMIT,
        || listed_each(&since(&proxies, &settled), 2),
    );
    let before: Vec<_> = proxies.iter().map(listings).collect();
    let dynamo_before = dynamo.seen().len();
    let started = std::time::Instant::now();
    wait_until(
        "each prefix listed three times while idle",
        RUN_LIMIT,
        || listed_each(&since(&proxies, &before), 3),
    );
    let secs = started.elapsed().as_secs_f64();
    let idle = since(&proxies, &before);
    let (a, b) = (idle[0].clone(), idle[1].clone());
    let mut idle_ops: BTreeMap<String, usize> = BTreeMap::new();
    for s in &dynamo.seen()[dynamo_before..] {
        let op = s.target.as_deref().and_then(|t| t.rsplit('.').next());
        *idle_ops.entry(op.unwrap_or("?").to_string()).or_default() += 1;
    }
    for h in &mut hosts {
        let status = h.stop();
        assert!(status.success(), "{status}\n{}", h.stderr_tail(30));
        h.assert_no_errors();
    }
    tally.follow(&rx);
    let lists: usize = a.values().chain(b.values()).sum();
    eprintln!(
        "two listing shippers on {}: {}; while idle for {secs:.1}s, region listings by host0 {a:?}, by host1 {b:?}: {lists} LISTs over {PREFIXES} prefixes with a 1s scan interval; DynamoDB requests of both meanwhile {idle_ops:?}",
        fb.label(),
        tally.summary(),
    );
    assert!(
        !idle_ops.contains_key("GetItem"),
        "an idle scan reads no object rows: {idle_ops:?}"
    );
    // Writes while idle: heartbeats only, each shipper's at most every third of the lease
    // time (10 s), one more at each end of the window.
    let beats = 2.0 * (secs / (10.0 / 3.0) + 2.0);
    let writes = idle_ops.get("PutItem").copied().unwrap_or(0);
    assert!(
        writes as f64 <= beats,
        "idle writes beyond the heartbeats ({beats:.0}): {idle_ops:?}"
    );
    tally.assert_exactly_once("two shippers listing one bucket");
    let both: Vec<&String> = a.keys().filter(|p| b.contains_key(*p)).collect();
    assert!(
        both.is_empty(),
        "prefixes listed by both shippers while idle: {both:?} (host0 {a:?}, host1 {b:?})"
    );
    assert!(
        !a.is_empty() && !b.is_empty(),
        "the prefixes are split: host0 {a:?}, host1 {b:?}"
    );
    Ok(())
}

fn three_hybrid(fb: &FluentBit) -> Result<(), Failed> {
    let tag = fb.tag("shared-hybrid");
    let work = Work::new(&tag);
    let bucket = server::bucket(&tag);
    let q = queue::create(&tag);
    let table = format!("{tag}-{}", std::process::id());
    let (objects, _) = data::spread_objects(PREFIXES);
    let notify = |o: &data::Object| {
        queue::send(&q, &queue::s3_notice(&bucket, &o.key, o.gz.len()));
    };
    // Half the objects (every prefix among them) are there before the shippers start;
    // the rest land while they run. Notifications come for every other object, those
    // already there included: the listings and the queue race for the same objects.
    let (early, late) = objects.split_at(objects.len() / 2);
    for o in early {
        server::put(&bucket, &o.key, o.gz.clone());
    }
    let rx = Receiver::start();
    let mut hosts: Vec<_> = (0..3)
        .map(|i| {
            let dir = work.path().join(format!("host{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let conf = Conf::new()
                .input(lister_input(
                    server::endpoint(),
                    &bucket,
                    Some(&q),
                    (&table, server::endpoint()),
                ))
                .output(http_output("*", &rx, &format!("/host{i}")))
                .write_yaml(&dir);
            fb.start(&dir, &format!("host{i}"), &conf, &[])
        })
        .collect();
    for h in &mut hosts {
        h.wait_started(1);
    }
    for o in late {
        server::put(&bucket, &o.key, o.gz.clone());
    }
    for o in objects.iter().step_by(2) {
        notify(o);
    }
    let expected = Expected::of(&objects);
    let mut tally = Tally::new(&expected, Time::LeadingIso("timestamp"), true);
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
    let per_host: Vec<usize> = (0..3)
        .map(|i| {
            rx.lines()
                .iter()
                .filter(|l| l.path == format!("/host{i}"))
                .count()
        })
        .collect();
    eprintln!(
        "three hybrid shippers on {}: {}; events per host {per_host:?}",
        fb.label(),
        tally.summary()
    );
    tally.assert_exactly_once("three shippers in hybrid mode");
    Ok(())
}
