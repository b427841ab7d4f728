//! The `sqs-pace` stage (issue 20, item 3): how many objects a second one shipper moves
//! out of an SQS backlog. `OBJECTS` small objects (one event each, across 100 accounts) are
//! announced on the queue by S3's own notifications before the shipper starts; the stand-in
//! host loads the release plugin and collects once a second, as Fluent Bit does; every
//! request to S3 and SQS goes through a proxy that adds `LATENCY`. The time runs from the
//! start to the last record handed over, and to the queue's last delete. With `FLUENT_BIT`
//! set (`scripts/bench` sets it to `../shared/fluent-bit/bin/fluent-bit-5.1.1` when that is
//! there), the real host runs the same backlog at the defaults too, its records counted on
//! its `stdout` and its peak RSS taken from `VmHWM`.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cloudtrail_s3::layout::day_path;
use cloudtrail_s3::timestamp::EventTime;
use futures_util::{StreamExt, stream};

use crate::latency::{LATENCY, proxied_test_server};
use crate::{count_records, host, queue, server};

pub const OBJECTS: usize = 1_700;

/// The row: the old defaults (100 messages held, one long poll at a time) and today's,
/// side by side, each on a queue of its own.
pub fn run() -> (f64, u64, String) {
    let (old_all, old_empty) = pace(&[
        ("sqs.max_messages_in_flight", "100"),
        ("sqs.receivers", "1"),
    ]);
    let (all, empty) = pace(&[]);
    let real = match std::env::var_os("FLUENT_BIT") {
        Some(fb) => {
            let (secs, empty, hwm_kb) = pace_fluent_bit(std::path::Path::new(&fb));
            format!(
                "; real Fluent Bit ({}) at the defaults: {secs:.0} s ({:.0} objects/s, empty at {empty:.0} s), VmHWM {:.0} MB",
                std::path::Path::new(&fb)
                    .file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
                OBJECTS as f64 / secs,
                hwm_kb as f64 / 1024.0
            )
        }
        None => "; FLUENT_BIT unset: no real-host run".into(),
    };
    (
        all,
        OBJECTS as u64,
        format!(
            "{OBJECTS} objects announced before start, {} ms added per request, 1 collect/s: every record in {all:.0} s ({:.0} objects/s, queue empty at {empty:.0} s) vs {old_all:.0} s ({:.0} objects/s, empty at {old_empty:.0} s) with 100 held and 1 receiver ({:.1}x){real}",
            LATENCY.as_millis(),
            OBJECTS as f64 / all,
            OBJECTS as f64 / old_all,
            old_all / all
        ),
    )
}

/// A bucket of `OBJECTS` small objects whose notifications wait on a new queue.
fn backlog() -> (String, String) {
    let bucket = server::bucket("bench-sqs");
    let q = queue::create("pace");
    queue::notify_bucket(&bucket, &q);
    let day = day_path(i64::from(EventTime::now().secs()) / 86_400);
    let client = server::client();
    server::block_on(
        stream::iter(0..OBJECTS)
            .map(|i| {
                let account = 100_000_000_000 + i % 100;
                let key = format!(
                    "AWSLogs/{account:012}/CloudTrail/us-east-1/{day}/{account:012}_CloudTrail_us-east-1_{i:05}.json.gz"
                );
                let body = crate::gzip_bytes(
                    format!(
                        r#"{{"Records":[{{"eventID":"pace-{i}","eventTime":"2023-07-10T00:00:00Z"}}]}}"#
                    )
                    .as_bytes(),
                );
                client
                    .put_object()
                    .bucket(&bucket)
                    .key(key)
                    .body(body.into())
                    .send()
            })
            .buffer_unordered(16)
            .for_each(|r| async move {
                r.expect("put");
            }),
    );
    // One notification each, and S3's test event.
    assert_eq!(queue::messages_in(&q), OBJECTS + 1, "one notification each");
    (bucket, q)
}

/// The real Fluent Bit at `fb` with the release plugin, at the defaults, on a backlog of its
/// own: seconds until every record was on its stdout, until the queue was empty, and its
/// peak RSS in kB.
fn pace_fluent_bit(fb: &std::path::Path) -> (f64, f64, u64) {
    let (_bucket, q) = backlog();
    let (rt, proxy) = proxied_test_server();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("fluent-bit.yaml");
    let so = host::so_path();
    std::fs::write(
        &conf,
        format!(
            "service:\n  flush: 1\n  log_level: warn\nplugins:\n  - {}\npipeline:\n  inputs:\n    - name: cloudtrail\n      tag: ct\n      endpoint: {proxy}\n      region: us-east-1\n      force_path_style: 'on'\n      access_key_id: {}\n      secret_access_key: {}\n      start_time: '2023-07-01T00:00:00Z'\n      sqs.queue_url: {q}\n      sqs.endpoint: {proxy}\n  outputs:\n    - name: stdout\n      match: '*'\n      format: json_lines\n",
            so.display(),
            server::ACCESS_KEY,
            server::SECRET_KEY,
        ),
    )
    .unwrap();
    let mut child = Command::new(fb)
        .arg("-c")
        .arg(&conf)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start Fluent Bit");
    let records = Arc::new(AtomicU64::new(0));
    let stdout = child.stdout.take().unwrap();
    let counted = records.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if line.contains("\"pace-") {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let mut all_at = None;
    let (emptied, hwm) = crate::watch_host(
        &mut child,
        Duration::from_millis(200),
        |secs| {
            if all_at.is_none() && records.load(Ordering::Relaxed) >= OBJECTS as u64 {
                all_at = Some(secs);
            }
            all_at.is_some() && queue::messages_in(&q) == 0
        },
        || format!("{} of {OBJECTS} records", records.load(Ordering::Relaxed)),
    );
    let _ = child.kill();
    let _ = child.wait();
    drop(rt);
    (all_at.unwrap(), emptied, hwm)
}

/// Seconds until every record was handed over, and until the queue was empty, with
/// `settings` added to the defaults.
fn pace(settings: &[(&'static str, &str)]) -> (f64, f64) {
    let (_bucket, q) = backlog();
    let (rt, proxy) = proxied_test_server();
    let props: Vec<(&str, String)> = server::s3_props("x")
        .into_iter()
        .filter(|(k, _)| !matches!(*k, "bucket" | "endpoint"))
        .chain([
            ("endpoint", proxy.clone()),
            ("sqs.queue_url", q.clone()),
            ("sqs.endpoint", proxy),
        ])
        .chain(settings.iter().map(|(k, v)| (*k, v.to_string())))
        .collect();
    let list: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let inst = host::Plugin::load().start(&list).expect("init");
    let t = Instant::now();
    let mut events = 0u64;
    let mut all_at = None;
    loop {
        let tick = Instant::now();
        events += count_records(&inst.collect().1);
        if events >= OBJECTS as u64 && all_at.is_none() {
            all_at = Some(t.elapsed().as_secs_f64());
        }
        if all_at.is_some() && queue::messages_in(&q) == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(900),
            "{events} of {OBJECTS} records after 900 s"
        );
        std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
    }
    let emptied = t.elapsed().as_secs_f64();
    drop(inst);
    drop(rt);
    (all_at.unwrap(), emptied)
}
