//! The metrics endpoint (`metrics.listen`) of the plugin inside the real Fluent Bit (issue
//! 11), scraped with a plain HTTP/1.1 GET over TCP while the host runs:
//!
//! * the counters against what was shipped: the 2,900 bundled events in 55 objects over two
//!   account/region prefixes, plus three damaged objects that fail for good (one bad gzip,
//!   one not JSON, one cut short after three events): objects shipped and failed, events,
//!   bytes, requests, the commit histogram, and per account and region the newest
//!   `eventTime` and LastModified shipped;
//! * `403 AccessDenied` on every object read (through the counting proxy): `/health`
//!   answers 503 with the denial as its reason and `requests_total{operation="GetObject",
//!   outcome="denied"}` counts exactly the GETs the proxy refused; once the denial is lifted
//!   everything arrives and `/health` answers 200 again;
//! * silence: a prefix that shipped and then gets nothing new for `silence_alarm` raises
//!   `cloudtrail_s3_silent` and logs one warn line; one more object brings it back to 0
//!   with one "delivering again" line.
//!
//! Every wait is for a condition under a deadline: a scrape is repeated until the counters
//! settle (the plugin commits a batch at the collect after the host stored it, so the
//! receiver may have the events a second before the counters say so).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::time::{Duration, Instant};

use libtest_mimic::Failed;

use crate::check::{Expected, Tally, Time};
use crate::fluent_bit::{Conf, Fb, FluentBit, RUN_LIMIT, http_output, s3_input, section};
use crate::http_get::{free_addr, get};
use crate::json::J;
use crate::proxy::{AccessDenied, CountingProxy};
use crate::receiver::Receiver;
use crate::wait::poll_until;
use crate::work::Work;
use crate::{Body, data, server};

pub fn trials() -> Vec<(&'static str, Body<FluentBit>)> {
    vec![
        (
            "metrics::counters_match_what_was_shipped_and_what_failed",
            counters,
        ),
        (
            "metrics::access_denied_degrades_health_and_is_counted",
            access_denied,
        ),
        (
            "metrics::a_region_that_stops_delivering_goes_silent_and_comes_back",
            silence,
        ),
    ]
}

/// The bundled objects' account and region.
const ACCOUNT: &str = "218007301253";
const REGION: &str = "us-east-1";
/// Where the last bundled objects are moved, so two prefixes are tracked.
const MOVED: (&str, &str) = ("111122223333", "eu-west-1");
/// How many bundled objects (the last in key order) move there.
const MOVED_OBJECTS: usize = 15;
/// The damaged objects' prefix.
const DAMAGED: (&str, &str) = ("444455556666", "ap-southeast-2");

/// `silence_alarm` of the silence trial. A prefix comes back only if its new object is
/// shipped and committed before it is `SILENCE_ALARM` old (LastModified, whole seconds) at
/// a check (every alarm/4): listing (`scan_interval 1`), download, the host's next collect
/// and the commit one collect later take 2 to 4 s when idle. 15 s leaves room for a
/// loaded 2-core machine; 5 s would fail whenever the trip takes more than about 3 s.
const SILENCE_ALARM: u32 = 15;

/// Polls `done` until it holds, the host staying up; panics naming `what` at `limit`.
fn wait_for(host: &mut Fb, what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let ok = poll_until(limit, || {
        assert!(host.try_status().is_none(), "{}", host.stderr_tail(40));
        done()
    });
    assert!(
        ok,
        "timed out after {limit:?} waiting for {what}\n{}",
        host.stderr_tail(30)
    );
}

/// `/health`: status, the JSON answer and its text.
fn health(addr: &str) -> Option<(u16, serde_json::Value, String)> {
    let (status, body) = get(addr, "/health")?;
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("/health {body:?}: {e}"));
    Some((status, v, body))
}

/// One sample of a scrape.
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A `/metrics` answer, parsed.
struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    fn take(addr: &str) -> Option<Scrape> {
        let (status, text) = get(addr, "/metrics")?;
        assert_eq!(status, 200, "/metrics answered {status}: {text}");
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| parse_sample(l).unwrap_or_else(|| panic!("unparsable sample {l:?}")))
            .collect();
        Some(Scrape { text, samples })
    }

    /// The sample named `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// As [`Scrape::value`], which must exist, as a whole number.
    fn n(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let v = self
            .value(name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in the scrape:\n{}", self.text));
        assert!(v >= 0.0 && v.fract() == 0.0, "{name}{labels:?} = {v}");
        v as u64
    }

    /// A plain counter or gauge (no labels).
    fn c(&self, name: &str) -> u64 {
        self.n(&format!("cloudtrail_s3_{name}"), &[])
    }

    fn requests(&self, operation: &str, outcome: &str) -> u64 {
        let service = if operation.contains("Message") {
            "sqs"
        } else {
            "s3"
        };
        self.n(
            "cloudtrail_s3_requests_total",
            &[
                ("service", service),
                ("operation", operation),
                ("outcome", outcome),
            ],
        )
    }

    /// A per account and region gauge.
    fn prefix(&self, name: &str, (account, region): (&str, &str)) -> Option<u64> {
        self.value(
            &format!("cloudtrail_s3_{name}"),
            &[("account", account), ("region", region)],
        )
        .map(|v| v as u64)
    }

    /// The account/region pairs the scrape has gauges for.
    fn prefixes(&self) -> BTreeSet<(String, String)> {
        self.samples
            .iter()
            .filter(|s| s.name == "cloudtrail_s3_lag_seconds")
            .map(|s| (s.labels["account"].clone(), s.labels["region"].clone()))
            .collect()
    }

    /// The sample lines whose name contains one of `parts` (for the report).
    fn excerpt(&self, parts: &[&str]) -> String {
        self.text
            .lines()
            .filter(|l| !l.starts_with('#') && parts.iter().any(|p| l.contains(p)))
            .filter(|l| !l.ends_with(" 0") || l.contains("{account="))
            .collect::<Vec<_>>()
            .join("\n  ")
    }
}

/// `name{k="v",...} value` or `name value`.
fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let Some((name, rest)) = series.split_once('{') else {
        return Some(Sample {
            name: series.to_string(),
            labels: BTreeMap::new(),
            value,
        });
    };
    let mut labels = BTreeMap::new();
    let mut rest = rest.strip_suffix('}')?;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"")?;
        let mut v = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => v.push(match chars.next()?.1 {
                    'n' => '\n',
                    other => other,
                }),
                '"' => break i,
                c => v.push(c),
            }
        };
        labels.insert(k.to_string(), v);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Scrapes until `settled` holds for a scrape, the host staying up; that scrape.
fn scrape_until(
    host: &mut Fb,
    addr: &str,
    what: &str,
    mut settled: impl FnMut(&Scrape) -> bool,
) -> Scrape {
    let mut last = None;
    let ok = poll_until(RUN_LIMIT, || {
        assert!(host.try_status().is_none(), "{}", host.stderr_tail(40));
        let Some(s) = Scrape::take(addr) else {
            return false;
        };
        let ok = settled(&s);
        last = Some(s);
        ok
    });
    assert!(
        ok,
        "timed out after {RUN_LIMIT:?} waiting for {what}; last scrape:\n{}\n{}",
        last.map_or("(none answered)".into(), |s| s.text),
        host.stderr_tail(30)
    );
    last.unwrap()
}

/// An object put in the bucket: its key, size, and the events it ships.
struct Put {
    key: String,
    size: u64,
    /// Account and region, from the key.
    prefix: (String, String),
    /// eventTime (Unix seconds) of each event it ships.
    times: Vec<u32>,
    /// Shipped whole (false: fails for good).
    good: bool,
    /// Decompressed (JSON) bytes.
    json_bytes: u64,
}

fn put(bucket: &str, key: String, gz: Vec<u8>, times: Vec<u32>, good: bool) -> Put {
    let account_region = key.split('/').collect::<Vec<_>>();
    let prefix = (account_region[1].to_string(), account_region[3].to_string());
    let json_bytes = {
        let mut out = Vec::new();
        let _ = flate2::read::MultiGzDecoder::new(&gz[..]).read_to_end(&mut out);
        out.len() as u64
    };
    let size = gz.len() as u64;
    server::put(bucket, &key, gz);
    Put {
        key,
        size,
        prefix,
        times,
        good,
        json_bytes,
    }
}

fn event_times(o: &data::Object) -> Vec<u32> {
    o.events()
        .iter()
        .map(|e| {
            let t = J::parse(e).str("eventTime").unwrap().to_string();
            time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                .unwrap()
                .unix_timestamp() as u32
        })
        .collect()
}

/// The key of a bundled object moved to another account and region.
fn moved_key(key: &str, (account, region): (&str, &str)) -> String {
    key.replacen(
        &format!("AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/"),
        &format!("AWSLogs/{account}/CloudTrail/{region}/"),
        1,
    )
    .replacen(
        &format!("{ACCOUNT}_CloudTrail_{REGION}_"),
        &format!("{account}_CloudTrail_{region}_"),
        1,
    )
}

/// A damaged object's key in the [`DAMAGED`] prefix.
fn damaged_key(name: &str) -> String {
    let (a, r) = DAMAGED;
    format!(
        "AWSLogs/{a}/CloudTrail/{r}/2023/07/10/{a}_CloudTrail_{r}_20230710T1200Z_{name}.json.gz"
    )
}

/// Three events of the damaged prefix, as a whole log file (what was meant to be shipped)
/// and as the same file cut short inside a fourth event (what is uploaded).
fn truncated_file() -> (data::Object, Vec<u8>, Vec<u32>) {
    let events: Vec<String> = (1..=3)
        .map(|i| {
            format!(
                r#"{{"eventVersion":"1.08","eventTime":"2023-07-10T12:0{i}:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject","awsRegion":"{}","eventID":"metrics-truncated-{i}","recipientAccountId":"{}"}}"#,
                DAMAGED.1, DAMAGED.0
            )
        })
        .collect();
    let whole = format!(r#"{{"Records":[{}]}}"#, events.join(","));
    let cut = format!(
        r#"{{"Records":[{},{{"eventVersion":"1.08","eventTime":"2023-07-10T12:04:00Z","eventSo"#,
        events.join(",")
    );
    let times = (1..=3).map(|i| 1_688_990_400 + 60 * i).collect();
    let object = data::Object {
        key: damaged_key("Truncated0000001"),
        gz: data::gzip(whole.as_bytes()),
    };
    (object, data::gzip(cut.as_bytes()), times)
}

/// The input with `metrics.listen` at `addr` and `extra` settings, to the receiver.
fn conf(
    work: &Work,
    rx: &Receiver,
    bucket: &str,
    endpoint: &str,
    addr: &str,
    extra: &[(&str, &str)],
) -> std::path::PathBuf {
    let mut input = s3_input("cloudtrail", "ct", bucket, endpoint);
    input.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    // Every account and region's own series, to check each (the default keeps silent ones).
    input.extend(section(&[
        ("metrics.listen", addr),
        ("metrics.per_region", "all"),
    ]));
    input.extend(section(extra));
    Conf::new()
        .input(input)
        .output(http_output("*", rx, "/receiver/v1/http/metrics"))
        .write_yaml(work.path())
}

/// Every counter against what was uploaded, shipped and failed.
fn counters(fb: &FluentBit) -> Result<(), Failed> {
    let work = Work::new("metrics-counters");
    let bucket = server::bucket("real-metrics");
    let objects = data::objects();
    let mut puts = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        let key = if i >= objects.len() - MOVED_OBJECTS {
            moved_key(&o.key, MOVED)
        } else {
            o.key.clone()
        };
        puts.push(put(&bucket, key, o.gz.clone(), event_times(o), true));
    }
    // Three objects that fail for good: gzip's magic and header, then no deflate stream;
    // gzip of something that is not JSON; and a log file cut short after three events,
    // which are shipped before the damage is found.
    let mut bad_gzip = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    bad_gzip.extend_from_slice(b"this is no deflate stream, just bytes after a gzip header");
    puts.push(put(
        &bucket,
        damaged_key("BadGzip000000001"),
        bad_gzip,
        vec![],
        false,
    ));
    puts.push(put(
        &bucket,
        damaged_key("NotJson000000001"),
        data::gzip(b"<html><body>503 Service Unavailable</body></html>"),
        vec![],
        false,
    ));
    let (truncated, cut, times) = truncated_file();
    puts.push(put(&bucket, truncated.key.clone(), cut, times, false));
    let mut all = data::objects();
    all.push(truncated);
    let expected = Expected::of(&all);

    let rx = Receiver::start();
    let addr = free_addr();
    let conf = conf(&work, &rx, &bucket, server::endpoint(), &addr, &[]);
    let started = Instant::now();
    let mut host = fb.start(work.path(), "counters", &conf, &[]);
    host.wait_started(1);
    let mut tally = Tally::new(&expected, Time::LeadingIso("timestamp"), false);
    wait_for(
        &mut host,
        "every good event at the receiver",
        RUN_LIMIT,
        || tally.follow(&rx).all_arrived(),
    );
    let arrived = started.elapsed();

    let good = puts.iter().filter(|p| p.good).count() as u64;
    let failed = puts.len() as u64 - good;
    let events: u64 = puts.iter().map(|p| p.times.len() as u64).sum();
    let s = scrape_until(&mut host, &addr, "the counters to settle", |s| {
        s.c("objects_shipped_total") == good
            && s.c("objects_failed_total") == failed
            && s.c("events_shipped_total") == events
            && s.c("objects_in_flight") == 0
    });
    let settled = started.elapsed();
    let (status, h, body) = health(&addr).expect("/health answers");
    tally.follow(&rx);
    let lines = rx.line_count() as u64;

    // What is exactly true of bytes: every byte of every object, good or damaged, passes
    // through the download counter, and every byte its gzip stream yields through the
    // decompressed one: a good object is read to its end (the multi-member gzip decoder
    // reads to EOF), a damaged one up to its damage, and both counters see reads of 64 KiB
    // blocks, which cover these small damaged objects (under 1 KB) whole. A damaged object
    // larger than a block would count less than its size.
    let sizes_good: u64 = puts.iter().filter(|p| p.good).map(|p| p.size).sum();
    let sizes_all: u64 = puts.iter().map(|p| p.size).sum();
    let json_good: u64 = puts.iter().filter(|p| p.good).map(|p| p.json_bytes).sum();
    let json_all: u64 = puts.iter().map(|p| p.json_bytes).sum();
    let mut newest: BTreeMap<(String, String), (u32, u32)> = BTreeMap::new();
    for p in puts.iter().filter(|p| p.good) {
        let modified = server::last_modified(&bucket, &p.key);
        let e = newest.entry(p.prefix.clone()).or_default();
        e.0 = e.0.max(p.times.iter().copied().max().unwrap_or(0));
        e.1 = e.1.max(modified);
    }
    let gets_ok = s.requests("GetObject", "ok");
    let report = format!(
        "{} metrics after {} objects ({good} good, {failed} damaged), {events} events: every event at the receiver in {:.1} s, counters settled in {:.1} s; receiver lines {lines}; uploaded bytes {sizes_all} (good {sizes_good}), JSON bytes {json_all} (good objects {json_good}); /health {status} {}\n  {}",
        fb.label(),
        puts.len(),
        arrived.as_secs_f64(),
        settled.as_secs_f64(),
        body,
        s.excerpt(&[
            "objects_",
            "events_",
            "bytes_",
            "requests_total",
            "commit_seconds_count",
            "commit_seconds_sum",
            "scans_total",
            "healthy",
            "handoff",
            "{account=",
        ])
    );
    eprintln!("{report}");

    tally.assert_exactly_once("metrics counters");
    assert_eq!(s.c("events_shipped_total"), lines, "{report}");
    assert_eq!(s.c("objects_shipped_total"), good, "{report}");
    assert_eq!(s.c("objects_failed_total"), failed, "{report}");
    assert_eq!(s.c("objects_quarantined_total"), 0, "{report}");
    assert_eq!(s.c("events_fallback_time_total"), 0, "{report}");
    assert_eq!(s.c("events_unencodable_total"), 0, "{report}");
    assert!(
        gets_ok >= good + failed,
        "a GET per object at least: {report}"
    );
    assert!(s.requests("ListObjectsV2", "ok") > 0, "{report}");
    for outcome in ["denied", "permanent"] {
        for op in ["GetObject", "ListObjectsV2"] {
            assert_eq!(s.requests(op, outcome), 0, "{op} {outcome}: {report}");
        }
    }
    for op in ["ReceiveMessage", "DeleteMessage", "ChangeMessageVisibility"] {
        for outcome in ["ok", "transient", "denied", "permanent"] {
            assert_eq!(s.requests(op, outcome), 0, "no SQS: {report}");
        }
    }
    assert!(s.c("objects_listed_total") >= good + failed, "{report}");
    assert!(s.c("scans_total") > 0, "{report}");
    assert_eq!(s.c("bytes_downloaded_total"), sizes_all, "{report}");
    assert_eq!(s.c("bytes_decompressed_total"), json_all, "{report}");
    let count = s.n("cloudtrail_s3_commit_seconds_count", &[]);
    assert!(count > 0, "{report}");
    assert_eq!(
        s.n("cloudtrail_s3_commit_seconds_bucket", &[("le", "+Inf")]),
        count,
        "{report}"
    );
    assert_eq!(s.c("handoff_bytes"), 0, "{report}");
    assert_eq!(s.c("sqs_messages_held"), 0, "{report}");
    assert_eq!(s.c("healthy"), 1, "{report}");
    let want: BTreeSet<_> = newest.keys().cloned().collect();
    assert!(
        s.prefixes().is_superset(&want),
        "a series per good prefix: {report}"
    );
    assert!(
        s.c("regions_watched") as usize >= want.len() && s.c("regions_silent") == 0,
        "the totals: {report}"
    );
    for ((account, region), (event, object)) in &newest {
        let p = (account.as_str(), region.as_str());
        let shown = |n| s.prefix(n, p).unwrap();
        assert_eq!(
            shown("newest_event_time_seconds"),
            u64::from(*event),
            "newest eventTime of {p:?}: {report}"
        );
        assert_eq!(
            shown("newest_object_time_seconds"),
            u64::from(*object),
            "newest LastModified of {p:?}: {report}"
        );
        assert_eq!(shown("silent"), 0, "{report}");
    }
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        h,
        serde_json::json!({"status": "ok", "reasons": []}),
        "{report}"
    );

    let status = host.stop();
    assert!(status.success(), "{status}\n{}", host.stderr_tail(30));
    host.assert_no_errors_except(&[DAMAGED.0]);
    Ok(())
}

/// `403 AccessDenied` on every object read, then lifted.
fn access_denied(fb: &FluentBit) -> Result<(), Failed> {
    let work = Work::new("metrics-denied");
    let bucket = server::bucket("real-metrics-denied");
    data::upload_all(&bucket, "");
    let proxy = CountingProxy::with_access_denied(
        server::endpoint(),
        AccessDenied {
            path_contains: "/AWSLogs/".into(),
        },
    );
    let rx = Receiver::start();
    let addr = free_addr();
    // A short denied backoff (default 5 min, doubling) so the reads come back soon after
    // the denial is lifted.
    let conf = conf(
        &work,
        &rx,
        &bucket,
        &proxy.endpoint,
        &addr,
        &[("denied_backoff", "2"), ("scan_interval", "1")],
    );
    let started = Instant::now();
    let mut host = fb.start(work.path(), "denied", &conf, &[]);
    host.wait_started(1);
    let objects = data::OBJECTS as u64;
    let mut last_health = None;
    let denied = scrape_until(&mut host, &addr, "every object denied", |s| {
        s.requests("GetObject", "denied") >= objects && {
            last_health = health(&addr);
            last_health.as_ref().is_some_and(|(code, ..)| *code == 503)
        }
    });
    let (code, h, body) = last_health.unwrap();
    let degraded_in = started.elapsed();
    let reasons: Vec<&str> = h["reasons"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r.as_str()).collect())
        .unwrap_or_default();
    let before_lift = rx.line_count();
    let report_denied = format!(
        "{} under 403 AccessDenied: /health {code} after {:.1} s, {}\n  {}",
        fb.label(),
        degraded_in.as_secs_f64(),
        body,
        denied.excerpt(&["GetObject", "healthy", "objects_shipped"])
    );
    eprintln!("{report_denied}");
    assert_eq!(before_lift, 0, "nothing read while denied: {report_denied}");
    assert_eq!(h["status"], "degraded", "{report_denied}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("denied") && r.contains("403 AccessDenied")),
        "a reason names the denial: {report_denied}"
    );
    assert_eq!(denied.c("healthy"), 0, "{report_denied}");
    assert_eq!(denied.requests("GetObject", "ok"), 0, "{report_denied}");

    proxy.lift_denial();
    let lifted = Instant::now();
    let mut tally = Tally::new(&Expected::all(), Time::LeadingIso("timestamp"), false);
    wait_for(
        &mut host,
        "every event once reads are allowed",
        RUN_LIMIT,
        || tally.follow(&rx).all_arrived(),
    );
    let s = scrape_until(&mut host, &addr, "every object shipped", |s| {
        s.c("objects_shipped_total") == objects && s.c("objects_in_flight") == 0
    });
    let (code, _, body) = health(&addr).expect("/health answers");
    tally.follow(&rx);
    let seen = proxy.seen();
    let refused = seen.iter().filter(|s| s.denied).count() as u64;
    let forwarded = seen
        .iter()
        .filter(|s| s.is_object_get() && !s.denied)
        .count() as u64;
    let report = format!(
        "{} after the denial was lifted: every event in {:.1} s; the proxy refused {refused} GETs and forwarded {forwarded}; /health {code} {}\n  {}",
        fb.label(),
        lifted.elapsed().as_secs_f64(),
        body,
        s.excerpt(&["GetObject", "healthy", "objects_shipped", "events_shipped"])
    );
    eprintln!("{report}");
    tally.assert_exactly_once("after access denied");
    assert_eq!(s.requests("GetObject", "denied"), refused, "{report}");
    assert_eq!(s.requests("GetObject", "ok"), forwarded, "{report}");
    assert_eq!(
        forwarded, objects,
        "one successful read per object: {report}"
    );
    assert_eq!(s.c("healthy"), 1, "{report}");
    assert_eq!(code, 200, "{report}");
    let status = host.stop();
    assert!(status.success(), "{status}\n{}", host.stderr_tail(30));
    // Denied reads are errors (a permission to fix), and the only ones.
    assert!(
        host.errors()
            .iter()
            .any(|l| l.contains("needs s3:GetObject")),
        "denied reads not logged at error"
    );
    host.assert_no_errors_except(&["needs s3:GetObject"]);
    Ok(())
}

/// One prefix ships, goes quiet for `silence_alarm`, then gets one more object.
fn silence(fb: &FluentBit) -> Result<(), Failed> {
    const FIRST: usize = 5;
    let work = Work::new("metrics-silence");
    let bucket = server::bucket("real-metrics-silence");
    let objects: Vec<_> = data::objects().into_iter().take(FIRST + 1).collect();
    for o in &objects[..FIRST] {
        server::put(&bucket, &o.key, o.gz.clone());
    }
    let rx = Receiver::start();
    let addr = free_addr();
    let alarm = SILENCE_ALARM.to_string();
    let conf = conf(
        &work,
        &rx,
        &bucket,
        server::endpoint(),
        &addr,
        &[("silence_alarm", &alarm), ("scan_interval", "1")],
    );
    let started = Instant::now();
    let mut host = fb.start(work.path(), "silence", &conf, &[]);
    host.wait_started(1);
    let prefix = (ACCOUNT, REGION);
    let mut tally = Tally::new(
        &Expected::of(&objects),
        Time::LeadingIso("timestamp"),
        false,
    );
    let first_events: usize = objects[..FIRST].iter().map(|o| o.events().len()).sum();
    wait_for(&mut host, "the first objects' events", RUN_LIMIT, || {
        tally.follow(&rx).lines >= first_events
    });
    let log = host.stderr.clone();
    let warned = |log: &crate::child::Lines| log.count("nothing new for");
    let s = scrape_until(&mut host, &addr, "the prefix to go silent", |s| {
        s.prefix("silent", prefix) == Some(1) && warned(&log) == 1
    });
    let silent_after = started.elapsed();
    let first_lag = s.prefix("lag_seconds", prefix).unwrap();
    // It stays silent through more checks (one every alarm/4), with no second line.
    let tick = u64::from((SILENCE_ALARM / 4).max(1));
    let quiet = u64::from(SILENCE_ALARM) + 3 * tick;
    let s = scrape_until(&mut host, &addr, "more checks while silent", |s| {
        s.prefix("lag_seconds", prefix).is_some_and(|l| l >= quiet)
    });
    let still = s.prefix("silent", prefix);
    let warnings: Vec<String> = log
        .snapshot()
        .into_iter()
        .filter(|l| l.contains("nothing new for"))
        .collect();

    let late = &objects[FIRST];
    let uploaded = Instant::now();
    server::put(&bucket, &late.key, late.gz.clone());
    let modified = u64::from(server::last_modified(&bucket, &late.key));
    let mut recorded = None;
    let back = scrape_until(&mut host, &addr, "the prefix to deliver again", |s| {
        if recorded.is_none() && s.prefix("newest_object_time_seconds", prefix) == Some(modified) {
            recorded = Some(uploaded.elapsed());
        }
        s.prefix("silent", prefix) == Some(0) && log.count("delivering again") == 1
    });
    let back_in = uploaded.elapsed();
    let warned_at_end = warned(&log);
    wait_for(&mut host, "the late object's events", RUN_LIMIT, || {
        tally.follow(&rx).all_arrived()
    });
    let report = format!(
        "{} silence_alarm {SILENCE_ALARM} s: silent {:.1} s after start (lag {first_lag} s at that scrape), still silent at lag >= {quiet} s with {} warn line(s): {:?}; one more object: recorded {:.1} s after its upload, silent 0 after {:.1} s\n  {}\n  then:\n  {}",
        fb.label(),
        silent_after.as_secs_f64(),
        warnings.len(),
        warnings,
        recorded.map_or(f64::NAN, |d| d.as_secs_f64()),
        back_in.as_secs_f64(),
        s.excerpt(&["{account="]),
        back.excerpt(&["{account="]),
    );
    eprintln!("{report}");
    assert_eq!(still, Some(1), "{report}");
    assert_eq!(warnings.len(), 1, "one warn line: {report}");
    assert!(
        warnings[0].contains("warn]")
            && warnings[0].contains(&format!("account {ACCOUNT} region {REGION}")),
        "{report}"
    );
    assert_eq!(warned_at_end, 1, "{report}");
    assert_eq!(
        back.prefix("newest_object_time_seconds", prefix),
        Some(modified),
        "{report}"
    );
    assert!(back.prefix("lag_seconds", prefix).unwrap() <= u64::from(SILENCE_ALARM));
    let again: Vec<String> = log
        .snapshot()
        .into_iter()
        .filter(|l| l.contains("delivering again"))
        .collect();
    assert!(
        again[0].contains("info]")
            && again[0].contains(&format!("account {ACCOUNT} region {REGION}")),
        "{again:?}"
    );
    tally.assert_exactly_once("silence");
    let status = host.stop();
    assert!(status.success(), "{status}\n{}", host.stderr_tail(30));
    host.assert_no_errors();
    Ok(())
}
