//! Backpressure from the real host: memory storage with a small `mem_buf_limit` and a
//! receiver that first refuses (503, retried by Fluent Bit) and then answers slowly, so
//! Fluent Bit pauses the input again and again. Nothing is lost or repeated, the process
//! stays small, and no object download starts while the input is paused.
//!
//! How "no download while paused" is seen: S3 is reached through a counting proxy that
//! notes when each object GET arrives and answers it only after [`DOWNLOAD_DELAY`], with
//! one worker, so downloading (about 2.5 objects a second) is no faster than the host's
//! intake, and the plugin's buffer (`buffer_bytes`, larger than all the data) never fills.
//! Only the pause can then keep a download out of a paused interval: an engine that
//! ignored it would go on fetching. The plugin logs `paused by the host` / `resumed by the
//! host` at debug level and Fluent Bit stamps those lines (in UTC, to the millisecond).

use std::time::Duration;

use libtest_mimic::Failed;

use crate::check::{Expected, Tally, Time};
use crate::fluent_bit::{
    Conf, FluentBit, RUN_LIMIT, http_output, log_time_ms, now_ms, s3_input, section,
};
use crate::proxy::CountingProxy;
use crate::receiver::{Answer, Receiver};
use crate::wait::wait_until;
use crate::work::Work;
use crate::{Body, data, server};

pub fn trials() -> Vec<(&'static str, Body<FluentBit>)> {
    vec![(
        "backpressure::slow_receiver_pauses_the_input",
        slow_receiver,
    )]
}

const BATCH: usize = 128 << 10;
const MEM_BUF_LIMIT: usize = 256 << 10;
/// More than the test's data: downloads never wait for room, only for the pause.
const BUFFER: usize = 4 << 20;
const DOWNLOAD_DELAY: Duration = Duration::from_millis(400);
/// The first objects: 1,000 events, enough for several pauses.
const OBJECTS: usize = 15;
/// How long the receiver takes per request: longer than the host's 1 s collect period,
/// so chunks pile up past `mem_buf_limit`.
const SLOW: Duration = Duration::from_millis(1500);
/// A download already on its way when the pause came may reach the proxy a little later.
const PAUSE_SLACK_MS: i64 = 300;
/// Requests answered 503 before the receiver turns slow.
const REFUSED: usize = 3;
/// Fewer pauses than this would not show that the input stops and starts again.
const MIN_PAUSES: usize = 3;

/// `(paused at, resumed at)` in Unix ms, from the plugin's debug lines; a pause not yet
/// resumed ends at `end`.
fn pauses(lines: &[String], end: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut open = None;
    for l in lines {
        if l.contains("paused by the host") {
            open = open.or(log_time_ms(l));
        } else if l.contains("resumed by the host")
            && let (Some(p), Some(r)) = (open.take(), log_time_ms(l))
        {
            out.push((p, r));
        }
    }
    if let Some(p) = open {
        out.push((p, end));
    }
    out
}

/// The most the process may grow past its size at start-up, in bytes, with the reason for
/// each part: what backpressure is meant to bound.
fn growth_bound(objects: &[data::Object]) -> usize {
    let largest_object = objects.iter().map(|o| o.json().len()).max().unwrap();
    let host_chunks = MEM_BUF_LIMIT + BATCH; // the limit is soft: one batch past it
    let ring_buffer = BATCH; // one collect not yet drained into a chunk
    let plugin_queue = BUFFER + BATCH; // buffer_bytes, and the batch the host is copying
    let download = largest_object; // one worker: one object being split
    let http_output = 2 * host_chunks; // a chunk as JSON lines, then gzipped
    let slack = 16 << 20; // allocator arenas and thread stacks of a busy process
    host_chunks + ring_buffer + plugin_queue + download + http_output + slack
}

fn slow_receiver(fb: &FluentBit) -> Result<(), Failed> {
    let work = Work::new("backpressure");
    let bucket = server::bucket("real-backpressure");
    let objects: Vec<data::Object> = data::objects().into_iter().take(OBJECTS).collect();
    for o in &objects {
        server::put(&bucket, &o.key, o.gz.clone());
    }
    let proxy = CountingProxy::start(server::endpoint(), DOWNLOAD_DELAY);
    let rx = Receiver::start();
    rx.answer(Answer::Status(503));
    let mut input = s3_input("cloudtrail", "ct", &bucket, &proxy.endpoint);
    input.extend(section(&[
        ("storage.type", "memory"),
        ("mem_buf_limit", &MEM_BUF_LIMIT.to_string()),
        ("batch_bytes", &BATCH.to_string()),
        // Fixed batches: the memory bound counts in them.
        ("batch_bytes_max", &BATCH.to_string()),
        ("buffer_bytes", &BUFFER.to_string()),
        ("workers", "1"),
        ("log_level", "debug"),
    ]));
    let conf = Conf::new()
        // Retries after 1-2 s, not Fluent Bit's default 5 s and up.
        .service("scheduler.base", "1")
        .service("scheduler.cap", "2")
        .input(input)
        .output(http_output("*", &rx, "/receiver/v1/http/slow"))
        .write_yaml(work.path());
    let mut host = fb.start(work.path(), "backpressure", &conf, &[]);
    host.wait_started(1);
    let start_rss = host.proc_status_kb("VmRSS").unwrap() << 10;
    let expected = Expected::of(&objects);
    let mut tally = Tally::new(&expected, Time::LeadingIso("timestamp"), false);
    let mut hwm = 0;
    wait_until("refused requests", RUN_LIMIT, || {
        assert!(host.try_status().is_none(), "{}", host.stderr_tail(40));
        rx.rejected() >= REFUSED
    });
    rx.answer(Answer::Slow(SLOW));
    wait_until("every event at the slow receiver", RUN_LIMIT * 3, || {
        assert!(host.try_status().is_none(), "{}", host.stderr_tail(40));
        hwm = hwm.max(host.proc_status_kb("VmHWM").unwrap_or(0) << 10);
        tally.follow(&rx).all_arrived()
    });
    hwm = hwm.max(host.proc_status_kb("VmHWM").unwrap_or(0) << 10);
    let end = now_ms();
    let lines = host.stderr.snapshot();
    let status = host.stop();
    assert!(status.success(), "{status}\n{}", host.stderr_tail(30));
    tally.follow(&rx);

    let paused = pauses(&lines, end);
    let paused_ms: i64 = paused.iter().map(|(p, r)| r - p).sum();
    let gets: Vec<i64> = proxy
        .seen()
        .iter()
        .filter(|s| s.is_object_get())
        .map(|s| s.at_ms)
        .collect();
    let during: Vec<(i64, (i64, i64))> = gets
        .iter()
        .filter_map(|&g| {
            paused
                .iter()
                .find(|(p, r)| g > p + PAUSE_SLACK_MS && g < *r)
                .map(|iv| (g, *iv))
        })
        .collect();
    let bound = start_rss + growth_bound(&objects) as u64;
    eprintln!(
        "backpressure on {}: {} ({} requests refused first); {} pauses ({:.1} s paused in all), {} object GETs, {} started while paused; VmRSS at start {} MiB, VmHWM {} MiB (bound {} MiB)",
        fb.label(),
        tally.summary(),
        rx.rejected(),
        paused.len(),
        paused_ms as f64 / 1000.0,
        gets.len(),
        during.len(),
        start_rss >> 20,
        hwm >> 20,
        bound >> 20
    );
    tally.assert_exactly_once("backpressure");
    host.assert_no_errors_except(&["HTTP status=503"]);
    assert!(
        paused.len() >= MIN_PAUSES,
        "only {} pauses: the host did not push back",
        paused.len()
    );
    assert!(
        during.is_empty(),
        "object downloads started while paused (time, pause): {during:?}"
    );
    assert!(hwm <= bound, "VmHWM {hwm} bytes over the bound {bound}");
    Ok(())
}
