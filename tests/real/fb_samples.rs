//! The sample configurations of `conf/` in the real Fluent Bit, changed only where a test
//! must: the plugin path, the source (the test server's endpoint and path-style
//! addressing, a start time before the bundled 2023 data; credentials come from the
//! environment, as the samples say) and the output target (the receiver on 127.0.0.1,
//! plain HTTP). Every event arrives once, and the first timestamp of every line is its
//! eventTime, which is what Sumo Logic will take as the message time.

use std::path::Path;

use libtest_mimic::Failed;

use crate::check::{Expected, Tally, Time, events_whose_first_timestamp_is_not_event_time};
use crate::fluent_bit::{FluentBit, RUN_LIMIT, plugin_path};
use crate::receiver::Receiver;
use crate::wait::wait_until;
use crate::work::Work;
use crate::{Body, data, queue, server};

pub fn trials() -> Vec<(&'static str, Body<FluentBit>)> {
    vec![
        ("samples::yaml", yaml),
        ("samples::classic", classic),
        ("samples::sqs_yaml", sqs_yaml),
    ]
}

const SAMPLE_PLUGIN: &str = "/usr/local/lib/fluent-bit/libcloudtrail_s3_plugin.so";
const SUMO_URI: &str = "/receiver/v1/http/sample-token";

fn sample(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("conf")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The sample's text with `key`'s value replaced, in YAML (`key: value`) or classic
/// (`key value`) form. The key must occur exactly once: a sample that changes shape
/// fails here rather than being tested half-edited.
fn set(text: &str, key: &str, value: &str) -> String {
    edit(text, key, false, &[(key, value)])
}

/// `key`'s line, followed by `extra` lines in the same form and indentation.
fn add_after(text: &str, key: &str, extra: &[(&str, &str)]) -> String {
    edit(text, key, true, extra)
}

fn edit(text: &str, key: &str, keep: bool, with: &[(&str, &str)]) -> String {
    let mut found = 0;
    let mut out = Vec::new();
    for line in text.lines() {
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        let rest = body.strip_prefix(key).unwrap_or("#");
        // YAML `key: value`, or classic `key<spaces>value`.
        let sep = if rest.starts_with(": ") {
            ": ".to_string()
        } else if rest.starts_with(' ') {
            rest[..rest.len() - rest.trim_start().len()].to_string()
        } else {
            out.push(line.to_string());
            continue;
        };
        found += 1;
        if keep {
            out.push(line.to_string());
        }
        out.extend(with.iter().map(|(k, v)| format!("{indent}{k}{sep}{v}")));
    }
    assert_eq!(found, 1, "`{key}` should occur once in the sample");
    out.join("\n") + "\n"
}

/// The S3 source and the output pointed at the test server and the receiver.
fn for_test(text: &str, receiver: &Receiver) -> String {
    let mut t = text.replace(SAMPLE_PLUGIN, plugin_path().to_str().unwrap());
    // After `region`: every sample has it (the SQS sample has no `bucket`).
    t = add_after(
        &t,
        "region",
        &[("endpoint", server::endpoint()), ("force_path_style", "on")],
    );
    t = set(&t, "start_time", "2023-07-01T00:00:00Z");
    t = set(&t, "port", &receiver.port().to_string());
    t = set(&t, "tls", "off");
    t = set(&t, "tls.verify", "off");
    t
}

/// Runs the written sample until every event arrived, stops Fluent Bit, and checks.
fn run(
    fb: &FluentBit,
    work: &Work,
    conf: &Path,
    env: &[(&str, String)],
    rx: &Receiver,
    before_stop: impl FnOnce(),
) -> Tally {
    let mut host = fb.start(work.path(), "sample", conf, env);
    let mut tally = Tally::new(&Expected::all(), Time::LeadingIso("timestamp"), true);
    wait_until("every event at the receiver", RUN_LIMIT, || {
        assert!(host.try_status().is_none(), "{}", host.stderr_tail(40));
        tally.follow(rx).all_arrived()
    });
    before_stop();
    let status = host.stop();
    assert!(status.success(), "{status}\n{}", host.stderr_tail(30));
    tally.follow(rx);
    eprintln!(
        "{} sample {}: {}",
        fb.label(),
        conf.display(),
        tally.summary()
    );
    tally.assert_exactly_once("sample");
    host.assert_no_errors();
    for r in rx.requests() {
        assert_eq!(r.path, SUMO_URI);
        assert_eq!(r.header("X-Sumo-Category"), Some("aws/cloudtrail"));
        assert_eq!(r.header("Content-Encoding"), Some("gzip"));
    }
    tally
}

fn env(work: &Work, bucket: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CLOUDTRAIL_BUCKET", bucket.to_string()),
        ("AWS_REGION", "us-east-1".into()),
        ("SUMO_HOST", "127.0.0.1".into()),
        ("SUMO_URI", SUMO_URI.into()),
        ("STATE_DIR", work.path().to_str().unwrap().into()),
    ]
}

fn yaml(fb: &FluentBit) -> Result<(), Failed> {
    // The check below has teeth: many events carry an earlier timestamp than eventTime.
    let earlier = events_whose_first_timestamp_is_not_event_time();
    assert!(earlier > 0);
    eprintln!(
        "{earlier} of {} bundled events, as written, start with a timestamp that is not their eventTime",
        data::EVENTS
    );
    let work = Work::new("samples-yaml");
    let bucket = server::bucket("real-sample");
    data::upload_all(&bucket, "");
    let rx = Receiver::start();
    let text = sample("fluent-bit.yaml");
    assert!(
        text.contains(SAMPLE_PLUGIN),
        "the sample loads {SAMPLE_PLUGIN}"
    );
    let conf = work.path().join("fluent-bit.yaml");
    std::fs::write(&conf, for_test(&text, &rx)).unwrap();
    run(fb, &work, &conf, &env(&work, &bucket), &rx, || ());
    Ok(())
}

fn classic(fb: &FluentBit) -> Result<(), Failed> {
    let work = Work::new("samples-classic");
    let bucket = server::bucket("real-classic");
    data::upload_all(&bucket, "");
    let rx = Receiver::start();
    let conf = work.path().join("fluent-bit.conf");
    std::fs::write(&conf, for_test(&sample("fluent-bit.conf"), &rx)).unwrap();
    let plugins = sample("plugins.conf");
    assert!(plugins.contains(SAMPLE_PLUGIN));
    std::fs::write(
        work.path().join("plugins.conf"),
        plugins.replace(SAMPLE_PLUGIN, plugin_path().to_str().unwrap()),
    )
    .unwrap();
    run(fb, &work, &conf, &env(&work, &bucket), &rx, || ());
    Ok(())
}

/// The SQS sample (SQS alone: hosts may share the queue) on a queue that gets the
/// bucket's real S3 notifications. Only `sqs.queue_url` names the queue: the plugin takes
/// the endpoint from a non-AWS queue URL.
fn sqs_yaml(fb: &FluentBit) -> Result<(), Failed> {
    let work = Work::new("samples-sqs");
    let bucket = server::bucket("real-sqs-sample");
    let q = queue::create("real-sqs-sample");
    queue::notify_bucket(&bucket, &q);
    data::upload_all(&bucket, "");
    let rx = Receiver::start();
    let conf = work.path().join("fluent-bit-sqs.yaml");
    std::fs::write(&conf, for_test(&sample("fluent-bit-sqs.yaml"), &rx)).unwrap();
    let mut env = env(&work, &bucket);
    env.push(("CLOUDTRAIL_QUEUE", q.clone()));
    run(fb, &work, &conf, &env, &rx, || {
        // Every notification is deleted once its object is shipped.
        wait_until("the queue to empty", RUN_LIMIT, || {
            queue::messages_in(&q) == 0
        });
    });
    Ok(())
}
