//! Several instances in one Fluent Bit: two real file copies of the plugin (not links,
//! which would share one image), each registering the input name its file name gives
//! (`cloudtrail_a.so` -> `cloudtrail_a`). Fluent Bit sends pause and resume to the last
//! initialized instance of a plugin (ABI doc 6), so only separate copies let one instance
//! be paused by its own backpressure while the other keeps flowing. Each reads its own
//! bucket; records are routed by tag, one receiver per route.

use std::time::Duration;

use libtest_mimic::Failed;

use crate::check::{Expected, Tally, Time};
use crate::fluent_bit::{Conf, FluentBit, RUN_LIMIT, http_output, plugin_path, s3_input, section};
use crate::receiver::{Answer, Receiver};
use crate::wait::wait_until;
use crate::work::Work;
use crate::{Body, data, server};

pub fn trials() -> Vec<(&'static str, Body<FluentBit>)> {
    vec![("copies::two_copies_one_paused_one_flowing", two_copies)]
}

const A_OBJECTS: usize = 15;

fn two_copies(fb: &FluentBit) -> Result<(), Failed> {
    let work = Work::new("copies");
    let mut conf = Conf::new();
    conf.plugins.clear();
    for name in ["cloudtrail_a", "cloudtrail_b"] {
        let copy = work.path().join(format!("{name}.so"));
        std::fs::copy(plugin_path(), &copy).unwrap();
        conf.plugins.push(copy);
    }
    let (bucket_a, bucket_b) = (server::bucket("real-copy-a"), server::bucket("real-copy-b"));
    // a gets the first objects (1,200 events: its slow route sets the run time), b all.
    let objects_a: Vec<data::Object> = data::objects().into_iter().take(A_OBJECTS).collect();
    for o in &objects_a {
        server::put(&bucket_a, &o.key, o.gz.clone());
    }
    data::upload_all(&bucket_b, "");
    // Route a: small memory buffer, slow receiver: paused again and again.
    let slow = Receiver::start();
    slow.answer(Answer::Slow(Duration::from_millis(1500)));
    // Route b: no limit, a prompt receiver, larger batches: done long before a, yet
    // not before a's first pause (a few seconds in).
    let fast = Receiver::start();
    let mut a = s3_input("cloudtrail_a", "a", &bucket_a, server::endpoint());
    a.extend(section(&[
        ("mem_buf_limit", "256K"),
        ("batch_bytes", "128K"),
        ("log_level", "debug"),
    ]));
    let mut b = s3_input("cloudtrail_b", "b", &bucket_b, server::endpoint());
    b.extend(section(&[("batch_bytes", "512K"), ("log_level", "debug")]));
    let conf = conf
        .input(a)
        .input(b)
        .output(http_output("a", &slow, "/a"))
        .output(http_output("b", &fast, "/b"))
        .write_yaml(work.path());
    let mut host = fb.start(work.path(), "copies", &conf, &[]);
    host.wait_started(2);

    let mut tally_a = Tally::new(
        &Expected::of(&objects_a),
        Time::LeadingIso("timestamp"),
        false,
    );
    let mut tally_b = Tally::new(&Expected::all(), Time::LeadingIso("timestamp"), false);
    let paused = |host: &crate::fluent_bit::Fb, name: &str| {
        host.stderr
            .count(&format!("[input:{name}] paused by the host"))
    };
    wait_until("every event of bucket b", RUN_LIMIT, || {
        assert!(host.try_status().is_none(), "{}", host.stderr_tail(40));
        tally_b.follow(&fast).all_arrived()
    });
    let a_when_b_done = (tally_a.follow(&slow).lost(), paused(&host, "cloudtrail_a"));
    wait_until("every event of bucket a", RUN_LIMIT * 3, || {
        assert!(host.try_status().is_none(), "{}", host.stderr_tail(40));
        tally_a.follow(&slow).all_arrived()
    });
    let (paused_a, paused_b) = (paused(&host, "cloudtrail_a"), paused(&host, "cloudtrail_b"));
    let status = host.stop();
    assert!(status.success(), "{status}\n{}", host.stderr_tail(30));
    tally_a.follow(&slow);
    tally_b.follow(&fast);
    eprintln!(
        "two copies on {}: a (slow route) {}, paused {paused_a} times; b {}, paused {paused_b} times; when b was done, a had {} events to go and had been paused {} times",
        fb.label(),
        tally_a.summary(),
        tally_b.summary(),
        a_when_b_done.0,
        a_when_b_done.1
    );
    tally_a.assert_exactly_once("copy a");
    tally_b.assert_exactly_once("copy b");
    host.assert_no_errors();
    assert!(
        fast.lines().iter().all(|l| l.path == "/b") && slow.lines().iter().all(|l| l.path == "/a"),
        "records went by tag to their route"
    );
    assert!(paused_a >= 1, "copy a was never paused");
    assert_eq!(paused_b, 0, "copy b got a's backpressure");
    assert!(
        a_when_b_done.0 > 0 && a_when_b_done.1 >= 1,
        "b finished while a was held back: a had {} to go, {} pauses",
        a_when_b_done.0,
        a_when_b_done.1
    );
    Ok(())
}
