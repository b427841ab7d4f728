//! The Fluent Bit plugin, loaded as a `.so` and driven like Fluent Bit drives it, against
//! the real S3 server.

use std::collections::HashMap;
use std::time::Duration;

use crate::data::{self, EVENTS};
use crate::host::{self, Plugin, Record, logs_containing};
use crate::json::J;
use crate::server::{self, s3_props};

fn props<'a>(list: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    list.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Counts records per eventID and checks each against its source event and eventTime.
fn check_against_source(records: &[Record]) -> HashMap<String, usize> {
    let expected = data::expected();
    let mut seen = HashMap::new();
    for r in records {
        let id = r.body.str("eventID").expect("eventID").to_string();
        let (event, time) = expected
            .get(&id)
            .unwrap_or_else(|| panic!("unknown event {id}"));
        assert_eq!(
            &r.body, event,
            "record {id} equals its source event, keys in order"
        );
        assert_eq!(
            (r.secs, r.nanos),
            (*time, 0),
            "record {id} carries its eventTime"
        );
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

#[test]
fn registers_as_cloudtrail_input() {
    let p = Plugin::load();
    assert_eq!(p.name, "cloudtrail");
    assert!(!p.description.is_empty());
}

#[test]
fn real_objects_arrive_once_each_with_their_event_time() {
    let bucket = server::bucket("real");
    data::upload_all(&bucket, "");
    let plugin = Plugin::load();
    let mut inst = plugin.start(&props(&s3_props(&bucket))).expect("init");
    let records = inst.collect_until(Duration::from_secs(120), |r| r.len() >= EVENTS);
    // A few more collects: nothing may follow the full set.
    let extra = inst.collect_until(Duration::from_millis(1500), |_| false);
    assert_eq!(inst.exit(), 1);
    assert_eq!(records.len(), EVENTS);
    assert!(
        extra.is_empty(),
        "{} records after the full set",
        extra.len()
    );
    let seen = check_against_source(&records);
    assert_eq!(seen.len(), EVENTS, "every event exactly once");
}

/// Issue 20, item 1: while downloads wait for the host, each collect hands over more, up to
/// `batch_bytes_max`, and never past it; every event still arrives once.
#[test]
fn batches_grow_while_a_backlog_waits_and_stay_under_the_ceiling() {
    let bucket = server::bucket("pace");
    data::upload_all(&bucket, "");
    let mut list = s3_props(&bucket);
    list.push(("batch_bytes", "64K".into()));
    list.push(("batch_bytes_max", "256K".into()));
    let plugin = Plugin::load();
    let inst = plugin.start(&props(&list)).expect("init");
    let mut sizes = Vec::new();
    let mut records = Vec::new();
    let end = std::time::Instant::now() + Duration::from_secs(120);
    while records.len() < EVENTS {
        assert!(
            std::time::Instant::now() < end,
            "{} of {EVENTS} events",
            records.len()
        );
        // A host's tick, shortened: the downloads fill the queue between collects.
        std::thread::sleep(Duration::from_millis(100));
        let (rc, data) = inst.collect();
        assert_eq!(rc, 1);
        if !data.is_empty() {
            sizes.push(data.len());
            records.extend(host::decode(&data));
        }
    }
    drop(inst);
    let largest = sizes.iter().copied().max().unwrap_or(0);
    assert!(
        largest > 80 << 10,
        "batches grew past 64K and its last chunk: {sizes:?}"
    );
    assert!(largest <= 256 << 10, "never past 256K: {sizes:?}");
    let seen = check_against_source(&records);
    assert_eq!(
        (seen.len(), records.len()),
        (EVENTS, EVENTS),
        "every event exactly once"
    );
}

#[test]
fn restart_with_the_same_db_neither_loses_nor_repeats() {
    let bucket = server::bucket("restart");
    data::upload_all(&bucket, "");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.json");
    let mut list = s3_props(&bucket);
    list.push(("db", db.to_str().unwrap().to_string()));
    // Small batches and one worker, so a run is many collects and is stopped mid-object.
    list.push(("batch_bytes", "64K".into()));
    list.push(("workers", "1".into()));
    let plugin = Plugin::load();

    let mut all = Vec::new();
    let mut runs = 0;
    while all.len() < EVENTS && runs < 20 {
        runs += 1;
        let mut inst = plugin.start(&props(&list)).expect("init");
        let target = all.len() + 700;
        let got = inst.collect_until(Duration::from_secs(60), |r| {
            all.len() + r.len() >= target.min(EVENTS)
        });
        assert_eq!(inst.exit(), 1);
        all.extend(got);
    }
    assert!(
        runs >= 4,
        "the data must span several runs to test restarts ({runs})"
    );
    // One more run: nothing left to ship.
    let inst = plugin.start(&props(&list)).expect("init");
    let after = inst.collect_until(Duration::from_secs(3), |_| false);
    drop(inst);
    assert!(
        after.is_empty(),
        "{} records repeated after everything was shipped",
        after.len()
    );
    let seen = check_against_source(&all);
    let dups: usize = seen.values().map(|n| n - 1).sum();
    assert_eq!(
        (seen.len(), dups),
        (EVENTS, 0),
        "all events, no duplicates, over {runs} runs"
    );
}

#[test]
fn bad_objects_are_logged_and_skipped_while_good_ones_arrive() {
    let bucket = server::bucket("bad");
    let day = "AWSLogs/111122223333/CloudTrail/us-east-1/2023/07/10/";
    let objects = data::objects();
    let good = &objects[0];
    let good_events = good.events().len();
    server::put(&bucket, &format!("{day}good.json.gz"), good.gz.clone());
    // Damaged copies of two other objects: what precedes the damage may ship, in order.
    let (for_corrupt, for_truncated) = (&objects[1], &objects[2]);
    let mut corrupt = for_corrupt.gz.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid..mid + 16].fill(0xAA);
    server::put(&bucket, &format!("{day}corrupt-middle.json.gz"), corrupt);
    let mut bad_header = good.gz.clone();
    bad_header[2] = 0; // compression method must be 8 (deflate)
    server::put(&bucket, &format!("{day}bad-header.json.gz"), bad_header);
    let json = for_truncated.json();
    server::put(
        &bucket,
        &format!("{day}truncated.json.gz"),
        data::gzip(&json.as_bytes()[..json.len() / 2]),
    );
    server::put(
        &bucket,
        &format!("{day}empty-object.json.gz"),
        data::gzip(b"{}"),
    );
    server::put(
        &bucket,
        &format!("{day}array.json.gz"),
        data::gzip(b"[1,2,3]"),
    );
    server::put(
        &bucket,
        &format!("{day}no-time.json.gz"),
        data::gzip(br#"{"Records":[{"eventID":"nt-1","eventName":"X"},{"eventID":"nt-2","eventTime":"not a time"}]}"#),
    );
    server::put(
        &bucket,
        "AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2023/07/10/digest.json.gz",
        data::gzip(br#"{"awsAccountId":"111122223333","digestStartTime":"2023-07-10T11:00:00Z"}"#),
    );
    let no_time_lm = server::last_modified(&bucket, &format!("{day}no-time.json.gz"));

    let plugin = Plugin::load();
    let inst = plugin.start(&props(&s3_props(&bucket))).expect("init");
    // Every object ends in a log line (failure) or in records; wait for all six outcomes.
    let records = inst.collect_until(Duration::from_secs(60), |r| {
        r.len() >= good_events + 2 && logs_containing(&format!("s3://{bucket}/")).len() >= 5
    });
    let mut records = records;
    records.extend(inst.collect_until(Duration::from_millis(1500), |_| false));
    drop(inst);

    let ids: Vec<&str> = records
        .iter()
        .filter_map(|r| r.body.str("eventID"))
        .collect();
    let ids_of = |o: &data::Object| -> Vec<String> {
        o.events()
            .iter()
            .map(|e| J::parse(e).str("eventID").unwrap().to_string())
            .collect()
    };
    let good_ids = ids_of(good);
    assert!(
        good_ids
            .iter()
            .all(|g| ids.iter().filter(|i| **i == g.as_str()).count() == 1),
        "the good object arrives whole, once"
    );
    assert!(ids.contains(&"nt-1") && ids.contains(&"nt-2"));
    for damaged in [for_corrupt, for_truncated] {
        let all = ids_of(damaged);
        let shipped: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|i| all.iter().any(|a| a == i))
            .collect();
        let prefix: Vec<&str> = all.iter().take(shipped.len()).map(String::as_str).collect();
        assert_eq!(
            shipped, prefix,
            "a damaged object ships at most the events before the damage, in order"
        );
        assert!(shipped.len() < all.len());
    }
    for r in records
        .iter()
        .filter(|r| r.body.str("eventID").is_some_and(|i| i.starts_with("nt-")))
    {
        assert_eq!(
            r.secs, no_time_lm,
            "no usable eventTime: stamped with LastModified"
        );
    }
    for (key, reason) in [
        ("bad-header.json.gz", "decompression failed"),
        // Damage inside the deflate stream shows as garbage before the CRC check can fail.
        (
            "corrupt-middle.json.gz",
            "events before the damage were shipped",
        ),
        ("truncated.json.gz", "truncated"),
        ("empty-object.json.gz", "no 'Records'"),
        ("array.json.gz", "top level is not a JSON object"),
    ] {
        let url = format!("s3://{bucket}/{day}{key}");
        let lines = logs_containing(&url);
        assert!(
            lines.iter().any(|(_, l)| l.contains(reason)),
            "{url}: expected a log line with {reason:?}, got {lines:?}"
        );
    }
    assert!(
        logs_containing("digest.json.gz").is_empty(),
        "digest files are never fetched"
    );
    for (_, line) in host::LOGS.lock().unwrap().iter() {
        assert!(
            !line.contains(server::SECRET_KEY),
            "a log line carries the secret key: {line}"
        );
    }
}

#[test]
fn metadata_key_adds_bucket_and_key() {
    let bucket = server::bucket("meta");
    let key = "AWSLogs/111122223333/CloudTrail/eu-west-1/2023/07/10/one.json.gz";
    server::put(
        &bucket,
        key,
        data::gzip(br#"{"Records":[{"eventTime":"2023-07-10T11:00:00.250Z","a":1}]}"#),
    );
    let mut list = s3_props(&bucket);
    list.push(("metadata_key", "s3".into()));
    let inst = Plugin::load().start(&props(&list)).expect("init");
    let records = inst.collect_until(Duration::from_secs(30), |r| !r.is_empty());
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].secs, records[0].nanos),
        (1_688_986_800, 250_000_000)
    );
    let expected = J::Obj(vec![
        (
            "eventTime".into(),
            J::Str("2023-07-10T11:00:00.250Z".into()),
        ),
        ("a".into(), J::Int(1)),
        (
            "s3".into(),
            J::Obj(vec![
                ("bucket".into(), J::Str(bucket.clone())),
                ("key".into(), J::Str(key.into())),
            ]),
        ),
    ]);
    assert_eq!(records[0].body, expected);
}

#[test]
fn invalid_configuration_fails_init_naming_the_key() {
    let plugin = Plugin::load();
    for (list, key) in [
        (vec![("bucket", "b-1"), ("workers", "zero")], "workers"),
        (
            vec![("bucket", "b-1"), ("scan_interval", "-5")],
            "scan_interval",
        ),
        (vec![("path_expression", "AWSLogs/*")], "bucket"),
    ] {
        assert_eq!(plugin.start(&list).err(), Some(-1), "{list:?}");
        let lines = logs_containing(&format!("'{key}'"));
        assert!(
            lines.iter().any(|(lvl, _)| *lvl == 1),
            "an error line names '{key}': {lines:?}"
        );
    }
}

#[test]
fn panics_never_cross_the_boundary() {
    let plugin = Plugin::load();
    assert_eq!(
        plugin
            .start(&[("bucket", "b-1"), ("debug.panic", "init")])
            .err(),
        Some(-1)
    );

    let dir = tempfile::tempdir().unwrap();
    let data_dir = data::root();
    let db = dir.path().join("s.json");
    let list = vec![
        ("dir", data_dir.to_str().unwrap()),
        ("start_time", "2000-01-01T00:00:00Z"),
        ("debug.panic", "collect"),
        ("db", db.to_str().unwrap()),
    ];
    let inst = plugin.start(&list).expect("init");
    let (rc, data) = inst.collect();
    assert_eq!(
        (rc, data.len()),
        (-1, 0),
        "the panicking collect returns -1 and no data"
    );
    let records = inst.collect_until(Duration::from_secs(30), |r| r.len() >= EVENTS);
    assert_eq!(
        records.len(),
        EVENTS,
        "the instance keeps working after a caught panic"
    );
}

#[test]
fn pause_then_resume_loses_nothing() {
    let list = vec![
        ("dir", data::root().to_str().unwrap().to_string()),
        ("start_time", "2000-01-01T00:00:00Z".to_string()),
    ];
    let inst = Plugin::load().start(&props(&list)).expect("init");
    inst.pause();
    inst.resume();
    let records = inst.collect_until(Duration::from_secs(30), |r| r.len() >= EVENTS);
    assert_eq!(records.len(), EVENTS);
    check_against_source(&records);
}

#[test]
fn exports_only_the_entry_points() {
    use object::{Object, ObjectSymbol};
    let bytes = std::fs::read(host::so_path()).unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    let mut exported: Vec<String> = file
        .dynamic_symbols()
        .filter(|s| s.is_definition() && s.is_global())
        .map(|s| s.name().unwrap().to_string())
        .collect();
    exported.sort();
    assert_eq!(
        exported,
        [
            "FLBPluginExit",
            "FLBPluginInit",
            "FLBPluginInputCallback",
            "FLBPluginInputCallbackCtx",
            "FLBPluginInputCleanupCallback",
            "FLBPluginInputCleanupCallbackCtx",
            "FLBPluginInputPause",
            "FLBPluginInputPreExit",
            "FLBPluginInputResume",
            "FLBPluginRegister",
            "FLBPluginUnregister",
        ]
    );
    let name = host::so_path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        !name.starts_with("flb-"),
        "Fluent Bit routes flb-* files to its native loader"
    );
}
