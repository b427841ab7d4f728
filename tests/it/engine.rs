//! The engine through its library API against the real S3 server: discovery over the
//! CloudTrail layout, listing cursors, and objects that vanish between list and get.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloudtrail_s3::encode::ndjson::NdjsonEncoder;
use cloudtrail_s3::ledger::{Entry, Ledger, Status};
use cloudtrail_s3::log::{Level, LogSink, Logger};
use cloudtrail_s3::{Engine, Settings};

use crate::data;
use crate::json::J;
use crate::server::{self, s3_props};

/// Log messages as written, and the errors among them.
#[derive(Default)]
pub struct Lines(pub Mutex<Vec<String>>, pub Mutex<Vec<String>>);

impl Lines {
    /// The messages logged at error level.
    pub fn errors(&self) -> Vec<String> {
        self.1.lock().unwrap().clone()
    }
}

impl LogSink for Lines {
    fn max_level(&self) -> Level {
        Level::Debug
    }
    fn write(&self, level: Level, message: &str) {
        eprintln!("[{}] {message}", level.as_str());
        self.0.lock().unwrap().push(message.to_string());
        if level == Level::Error {
            self.1.lock().unwrap().push(message.to_string());
        }
    }
}

pub fn start(props: &[(&'static str, String)]) -> (Engine, Arc<Lines>) {
    let lines = Arc::new(Lines::default());
    (start_with(props, lines.clone()), lines)
}

/// An engine on these properties, logging into `sink`.
pub fn start_with(props: &[(&'static str, String)], sink: Arc<dyn LogSink>) -> Engine {
    start_encoding(props, NdjsonEncoder::default(), sink)
}

/// An engine on these properties writing JSON lines with `encoder`, logging into `sink`.
pub fn start_encoding(
    props: &[(&'static str, String)],
    encoder: NdjsonEncoder,
    sink: Arc<dyn LogSink>,
) -> Engine {
    let settings = Settings::from_properties(|k| {
        props
            .iter()
            .find(|(pk, _)| *pk == k)
            .map(|(_, v)| v.clone())
    })
    .unwrap();
    Engine::start(
        settings.validate().unwrap(),
        Arc::new(encoder),
        Logger::new(sink),
    )
    .unwrap()
}

/// Takes and commits batches until `done`, returning the events (as JSON lines).
pub fn drain_until(engine: &Engine, deadline: Duration, done: impl Fn(&Engine) -> bool) -> Vec<J> {
    let end = Instant::now() + deadline;
    let mut out = Vec::new();
    while Instant::now() < end && !done(engine) {
        if let Some(batch) = engine.take(1 << 20, Duration::from_millis(50)) {
            let text = std::str::from_utf8(&batch.bytes).unwrap();
            out.extend(text.lines().map(J::parse));
            engine.commit(&batch.marks);
        }
    }
    assert!(done(engine), "deadline passed");
    out
}

/// The ledger's entry for an object, read after the engine has closed the ledger.
pub fn ledger_entry(db: &std::path::Path, id: &str) -> Option<Entry> {
    Ledger::open(Some(db), None, 0).unwrap().entry(id).unwrap()
}

/// The events' `eventID`s, sorted.
fn sorted_ids(events: &[J]) -> Vec<String> {
    let mut ids: Vec<String> = events
        .iter()
        .map(|e| e.str("eventID").unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

pub fn one_event(id: &str) -> Vec<u8> {
    data::gzip(
        format!(r#"{{"Records":[{{"eventID":"{id}","eventTime":"2023-07-10T00:00:00Z"}}]}}"#)
            .as_bytes(),
    )
}

#[test]
fn layout_walk_finds_the_right_objects_once_and_does_not_relist_old_days() {
    let bucket = server::bucket("layout");
    let mut wanted = Vec::new();
    let mut put = |key: String, want: bool| {
        server::put(&bucket, &key, one_event(&key));
        if want {
            wanted.push(key);
        }
    };
    for account in [
        "AWSLogs/111111111111/",
        "AWSLogs/222222222222/",
        "AWSLogs/o-abc123def4/333333333333/",
    ] {
        for region in ["us-east-1", "eu-west-1"] {
            for day in ["08", "09", "10"] {
                for n in 0..2 {
                    put(
                        format!("{account}CloudTrail/{region}/2023/07/{day}/{n}.json.gz"),
                        true,
                    );
                }
            }
            // Delivered before start_time (2023-07-08): skipped.
            put(
                format!("{account}CloudTrail/{region}/2023/07/01/old.json.gz"),
                false,
            );
        }
        put(
            format!("{account}CloudTrail-Digest/us-east-1/2023/07/10/digest.json.gz"),
            false,
        );
        put(
            format!("{account}CloudTrail-Insight/us-east-1/2023/07/10/insight.json.gz"),
            false,
        );
    }
    put("other/2023/07/10/x.json.gz".into(), false);

    let mut props = s3_props(&bucket);
    props.retain(|(k, _)| *k != "start_time");
    props.push(("start_time", "2023-07-08T00:00:00Z".into()));
    props.push(("lookback", "24h".into()));
    let (engine, _) = start(&props);
    let events = drain_until(&engine, Duration::from_secs(60), |e| e.is_idle());
    let got = sorted_ids(&events);
    wanted.sort();
    assert_eq!(
        got, wanted,
        "exactly the CloudTrail objects from start_time on, each once"
    );

    // The scan after the one that shipped everything moves the watermarks to the newest
    // day's last key (claimed objects are not finished yet when their scan ends).
    let scans = engine.stats().scans;
    drain_until(&engine, Duration::from_secs(30), |e| {
        e.stats().scans > scans && e.is_idle()
    });

    // A late delivery into the newest day, then a scan that starts after it.
    let late = "AWSLogs/111111111111/CloudTrail/us-east-1/2023/07/10/late.json.gz".to_string();
    server::put(&bucket, &late, one_event(&late));
    let scans = engine.stats().scans;
    let events = drain_until(&engine, Duration::from_secs(30), |e| {
        e.stats().scans >= scans + 2 && e.is_idle()
    });
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].str("eventID"), Some(late.as_str()));
    // A scan lists only from a day (the lookback) before each region's watermark: 3
    // accounts x 2 regions x 2 days x 2 objects, plus the late one. Nothing from 07/01 or
    // 07/08.
    let stats = engine.stats();
    assert_eq!(
        stats.last_scan_keys_listed,
        3 * 2 * 2 * 2 + 1,
        "keys listed by a scan after the catch-up"
    );
    // Accounts and regions are not enumerated again on every scan: one LIST per region.
    assert_eq!(stats.last_scan_list_calls, 6, "LIST calls of an idle scan");
}

/// A backfill larger than `scan_claims` goes out in stretches: each scan claims four
/// objects per prefix (a setting under 25 holds whole in each), the next follows as soon as half of them are finished (an hour's
/// `scan_interval` is never waited), every event arrives once, and the engine is idle only
/// once no scan leaves keys.
#[test]
fn a_backfill_past_scan_claims_ships_in_stretches_without_waiting_scan_interval() {
    let bucket = server::bucket("stretches");
    let mut wanted = Vec::new();
    for region in ["us-east-1", "eu-west-1"] {
        for day in ["08", "09", "10"] {
            for n in 0..5 {
                let key =
                    format!("AWSLogs/111122223333/CloudTrail/{region}/2023/07/{day}/{n}.json.gz");
                server::put(&bucket, &key, one_event(&key));
                wanted.push(key);
            }
        }
    }
    let mut props = s3_props(&bucket);
    props.retain(|(k, _)| !["start_time", "scan_interval"].contains(k));
    props.push(("start_time", "2023-07-08T00:00:00Z".into()));
    props.push(("scan_interval", "1h".into()));
    props.push(("scan_claims", "4".into()));
    let (engine, lines) = start(&props);
    let events = drain_until(&engine, Duration::from_secs(90), |e| e.is_idle());
    let got = sorted_ids(&events);
    wanted.sort();
    assert_eq!(got, wanted, "every object once");
    let stats = engine.stats();
    // 15 objects a prefix, 4 a scan: four scans at least.
    assert!(stats.scans >= 4, "{} scans", stats.scans);
    assert_eq!(stats.last_scan_left, 0);
    let left: Vec<String> = lines
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("scan found 8 new objects, left 22 for the next"))
        .cloned()
        .collect();
    assert_eq!(left.len(), 1, "the first scan claims 4 of each prefix's 15");
}

#[test]
fn object_deleted_between_list_and_get_is_logged_and_the_rest_ships() {
    let bucket = server::bucket("vanish");
    let day = "AWSLogs/111122223333/CloudTrail/us-east-1/2023/07/10/";
    // A large first object keeps the single worker busy (the queue fills and nobody takes
    // from it yet) while the scan hands the second object over.
    let objects = data::objects();
    let mut records = Vec::new();
    for o in &objects[..20] {
        records.extend(o.events());
    }
    let big = format!("{{\"Records\":[{}]}}", records.join(","));
    server::put(
        &bucket,
        &format!("{day}a-big.json.gz"),
        data::gzip(big.as_bytes()),
    );
    let gone = format!("{day}b-gone.json.gz");
    server::put(&bucket, &gone, one_event("gone"));

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.json");
    let mut props = s3_props(&bucket);
    props.extend([
        ("workers", "1".to_string()),
        ("batch_bytes", "64K".to_string()),
        ("buffer_bytes", "64K".to_string()),
        ("db", db.to_str().unwrap().to_string()),
    ]);
    let (engine, lines) = start(&props);
    let end = Instant::now() + Duration::from_secs(30);
    while engine.stats().scans == 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        engine.stats().scans > 0,
        "first scan done: both objects were listed"
    );
    server::block_on(
        server::client()
            .delete_object()
            .bucket(&bucket)
            .key(&gone)
            .send(),
    )
    .unwrap();

    let events = drain_until(&engine, Duration::from_secs(60), |e| e.is_idle());
    assert_eq!(
        events.len(),
        records.len(),
        "every event of the other object"
    );
    assert_eq!(
        (engine.stats().objects_done, engine.stats().objects_failed),
        (1, 1)
    );
    let url = format!("s3://{bucket}/{gone}");
    let logged = lines
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(&url))
        .cloned()
        .collect::<Vec<_>>();
    assert!(
        logged
            .iter()
            .any(|l| l.contains("404") && l.contains("NoSuchKey")),
        "{logged:?}"
    );
    drop(engine);
    let entry = ledger_entry(&db, &url);
    assert!(
        entry
            .as_ref()
            .is_some_and(|e| e.status == Status::Failed && e.reason.contains("NoSuchKey")),
        "the vanished object is recorded as failed with its reason: {entry:?}"
    );
}

#[test]
fn assume_role_goes_through_sts_and_secrets_stay_out_of_logs() {
    let bucket = server::bucket("role");
    let objects = data::objects();
    server::put(&bucket, &objects[0].key, objects[0].gz.clone());
    let want = objects[0].events().len();
    let role = [
        (
            "role_arn",
            "arn:aws:iam::123456789012:role/cloudtrail-reader".to_string(),
        ),
        ("external_id", "ext-id-do-not-log-9f8e7d".to_string()),
    ];

    // Through the test server's STS: the assumed credentials read the bucket.
    let mut props = s3_props(&bucket);
    props.extend(role.clone());
    props.push(("sts_endpoint", server::endpoint().to_string()));
    let (engine, lines) = start(&props);
    let events = drain_until(&engine, Duration::from_secs(60), |e| e.is_idle());
    assert_eq!(events.len(), want);
    drop(engine);

    // With STS unreachable there are no credentials: nothing ships, the failure is logged.
    let mut props = s3_props(&bucket);
    props.extend(role);
    props.push(("sts_endpoint", "http://127.0.0.1:9".to_string()));
    let (engine, failing) = start(&props);
    let end = Instant::now() + Duration::from_secs(60);
    while engine.stats().scans == 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        engine
            .take(1 << 20, Duration::from_millis(200))
            .map(|b| b.events),
        None
    );
    drop(engine);
    let failing = failing.0.lock().unwrap();
    assert!(
        failing
            .iter()
            .any(|l| l.contains(&format!("s3://{bucket}"))),
        "{failing:?}"
    );
    for line in lines.0.lock().unwrap().iter().chain(failing.iter()) {
        for secret in [server::SECRET_KEY, "ext-id-do-not-log-9f8e7d"] {
            assert!(!line.contains(secret), "secret in a log line: {line}");
        }
    }
}

#[test]
fn a_large_scan_is_a_backfill_with_progress_and_an_end() {
    let bucket = server::bucket("backfill");
    let keys: Vec<String> = (0..310)
        .map(|n| format!("AWSLogs/111111111111/CloudTrail/us-east-1/2023/07/10/{n:04}.json.gz"))
        .collect();
    for k in &keys {
        server::put(&bucket, k, one_event(k));
    }
    let mut props = s3_props(&bucket);
    props.retain(|(k, _)| *k != "start_time");
    props.push(("start_time", "2023-07-08T00:00:00Z".into()));
    let (engine, lines) = start(&props);
    let seen = std::cell::Cell::new(None);
    let events = drain_until(&engine, Duration::from_secs(90), |e| {
        seen.set(seen.get().or(e.backfill()));
        e.stats().events as usize >= keys.len() && e.is_idle()
    });
    assert_eq!(events.len(), keys.len());
    let first = seen.get().expect("the backfill was visible while it ran");
    assert_eq!(first.found, 310);
    // The progress line every 30 s ends with one line saying it is done.
    let logged = |what: &str| lines.0.lock().unwrap().iter().any(|l| l.contains(what));
    assert!(logged("backfill: 310 objects to ship"));
    let end = Instant::now() + Duration::from_secs(75);
    while !logged("backfill: done, 310 objects") {
        assert!(Instant::now() < end, "no end-of-backfill line in 75 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(engine.backfill(), None);
}

/// A valid event holding a number beyond f64's range (`1e400`) ships with that number as
/// its JSON text: before, it was logged as unencodable and the object marked done past it,
/// so the event never shipped.
#[test]
fn an_event_with_a_number_beyond_f64_ships_with_it_as_text() {
    let bucket = server::bucket("bignum");
    let key = "AWSLogs/111122223333/CloudTrail/us-east-1/2023/07/10/big-number.json.gz";
    let json = r#"{"Records":[{"eventID":"a","eventTime":"2023-07-10T00:00:00Z"},{"eventID":"b","eventTime":"2023-07-10T00:00:01Z","responseElements":{"size":1e400,"n":-1E+999}},{"eventID":"c","eventTime":"2023-07-10T00:00:02Z"}]}"#;
    server::put(&bucket, key, data::gzip(json.as_bytes()));
    let mut props = s3_props(&bucket);
    props.push(("workers", "1".to_string()));
    let (engine, _lines) = start(&props);
    let events = drain_until(&engine, Duration::from_secs(60), |e| {
        e.stats().objects_done == 1
    });
    let ids: Vec<&str> = events.iter().map(|e| e.str("eventID").unwrap()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    let b = events[1].get("responseElements").unwrap();
    assert_eq!(b.str("size"), Some("1e400"));
    assert_eq!(b.str("n"), Some("-1E+999"));
    assert_eq!(engine.stats().events_unencodable, 0);
}

/// `event_kinds`: each kind's folder is found by the same account/region walk (one LIST per
/// kind and region prefix on an idle scan, not a flat listing of the bucket), each event is
/// stamped with its kind's time (`eventTime`; an aggregated event's `timeWindow.windowStart`),
/// digests are never shipped, and the default ships management and data events only.
#[test]
fn event_kinds_ship_each_kind_from_its_folder_with_its_time() {
    let bucket = server::bucket("kinds");
    let account = "AWSLogs/o-abc123def4/111122223333";
    let day = "us-east-1/2023/07/10";
    for k in data::KIND_EXAMPLES {
        server::put(&bucket, &k.key(account, day), k.object());
    }
    server::put(
        &bucket,
        &format!("{account}/CloudTrail-Digest/{day}/digest.json.gz"),
        data::gzip(br#"{"awsAccountId":"111122223333","digestStartTime":"2023-07-10T11:00:00Z","logFiles":[]}"#),
    );

    let run = |kinds: Option<&str>| {
        let mut props = s3_props(&bucket);
        if let Some(k) = kinds {
            props.push(("event_kinds", k.to_string()));
        }
        let engine = start_encoding(
            &props,
            NdjsonEncoder {
                metadata_key: None,
                time_key: Some("t".into()),
            },
            Arc::new(Lines::default()),
        );
        let events = drain_until(&engine, Duration::from_secs(60), |e| e.is_idle());
        // An idle scan after the one that shipped: one LIST per kind's region prefix.
        let scans = engine.stats().scans;
        drain_until(&engine, Duration::from_secs(30), |e| {
            e.stats().scans > scans + 1 && e.is_idle()
        });
        let lists = engine.stats().last_scan_list_calls;
        let mut got: Vec<(String, String)> = events
            .iter()
            .map(|e| {
                let id = e.str("eventID").or_else(|| e.str("eventId")).unwrap();
                (id.to_string(), e.str("t").unwrap().to_string())
            })
            .collect();
        got.sort();
        (got, lists)
    };

    let (all, lists) = run(Some("all"));
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let mut want: Vec<(&str, &str)> = data::KIND_EXAMPLES.iter().map(|k| (k.id, k.time)).collect();
    want.sort();
    assert_eq!(all, pairs(&want), "each kind once, at its own time");
    assert_eq!(
        lists, 4,
        "LIST calls of an idle scan: one per kind's region prefix"
    );

    let (default, lists) = run(None);
    assert_eq!(default, pairs(&[("mgmt-1", "2023-07-10T11:42:36Z")]));
    assert_eq!(lists, 1);

    let (some, _) = run(Some("insights,aggregated"));
    let ids: Vec<&str> = some.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["aggregated-1", "insight-1"]);
}
