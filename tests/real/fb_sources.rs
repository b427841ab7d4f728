//! Each way of finding objects, in the real host: a bucket listing (YAML configuration)
//! and a folder (classic), records read back from Fluent Bit's `stdout` `json_lines` with
//! the time in its `date` field; and S3 notifications through SQS shared by three Fluent
//! Bit processes on one queue.

use libtest_mimic::Failed;

use crate::check::{Expected, Tally, Time};
use crate::fluent_bit::{
    Conf, FluentBit, RUN_LIMIT, dir_input, http_output, s3_input, section, stdout_output,
};
use crate::receiver::Receiver;
use crate::wait::wait_until;
use crate::work::Work;
use crate::{Body, data, queue, server};

pub fn trials() -> Vec<(&'static str, Body<FluentBit>)> {
    vec![
        ("sources::s3_listing", s3_listing),
        ("sources::folder", folder),
        ("sources::sqs_three_hosts_one_queue", sqs_three_hosts),
    ]
}

/// Runs `conf` (written as YAML, or classic with its plugins file) with a stdout output
/// until every bundled event was printed, then stops.
fn run_to_stdout(fb: &FluentBit, work: &Work, conf: Conf, classic: bool, what: &str) {
    let conf = conf.output(stdout_output("*"));
    let conf = if classic {
        conf.write_classic(work.path())
    } else {
        conf.write_yaml(work.path())
    };
    let mut host = fb.start(work.path(), what, &conf, &[]);
    let mut tally = Tally::new(&Expected::all(), Time::EpochSeconds("date"), false);
    wait_until("every event on stdout", RUN_LIMIT, || {
        assert!(host.try_status().is_none(), "{}", host.stderr_tail(40));
        tally.follow_lines(&host.stdout).all_arrived()
    });
    let status = host.stop();
    assert!(status.success(), "{status}");
    tally.follow_lines(&host.stdout);
    eprintln!("{} {what}: {}", fb.label(), tally.summary());
    tally.assert_exactly_once(what);
    host.assert_no_errors();
}

fn s3_listing(fb: &FluentBit) -> Result<(), Failed> {
    let work = Work::new("sources-s3");
    let bucket = server::bucket("real-s3");
    data::upload_all(&bucket, "");
    let conf = Conf::new().input(s3_input("cloudtrail", "ct", &bucket, server::endpoint()));
    run_to_stdout(fb, &work, conf, false, "S3 listing");
    Ok(())
}

fn folder(fb: &FluentBit) -> Result<(), Failed> {
    let work = Work::new("sources-folder");
    let conf = Conf::new().input(dir_input("cloudtrail", "ct"));
    run_to_stdout(fb, &work, conf, true, "folder");
    Ok(())
}

/// Three Fluent Bit processes on one queue, configured with `sqs.queue_url` alone (no
/// `sqs.endpoint`: a queue URL that is not AWS's names its own endpoint). Objects are
/// uploaded once all three are polling, so each notification goes to whichever receives
/// it; every event must arrive exactly once across the three, and the queue must empty.
fn sqs_three_hosts(fb: &FluentBit) -> Result<(), Failed> {
    const HOSTS: usize = 3;
    let work = Work::new("sources-sqs3");
    let bucket = server::bucket("real-sqs3");
    let q = queue::create("real-sqs3");
    queue::notify_bucket(&bucket, &q);
    let rx = Receiver::start();
    let mut hosts: Vec<_> = (0..HOSTS)
        .map(|i| {
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
                ("db", dir.join("state.json").to_str().unwrap()),
            ]);
            let conf = Conf::new()
                .input(input)
                .output(http_output("*", &rx, &format!("/host{i}")))
                .write_yaml(&dir);
            fb.start(&dir, &format!("host{i}"), &conf, &[])
        })
        .collect();
    for h in &mut hosts {
        h.wait_started(1);
    }
    data::upload_all(&bucket, "");
    let mut tally = Tally::new(&Expected::all(), Time::LeadingIso("timestamp"), true);
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
    }
    tally.follow(&rx);
    let per_host: Vec<usize> = (0..HOSTS)
        .map(|i| {
            let path = format!("/host{i}");
            rx.lines().iter().filter(|l| l.path == path).count()
        })
        .collect();
    eprintln!(
        "{} SQS, {HOSTS} hosts on one queue: {}, events per host {per_host:?}",
        fb.label(),
        tally.summary()
    );
    tally.assert_exactly_once("three hosts on one queue");
    for h in &hosts {
        h.assert_no_errors();
    }
    assert!(
        per_host.iter().filter(|n| **n > 0).count() >= 2,
        "the work was shared: {per_host:?}"
    );
    Ok(())
}
