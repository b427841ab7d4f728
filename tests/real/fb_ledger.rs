//! The delivery ledger through the real host (issue 10, cases 1 and 2): a bucket whose
//! 2,900 events lie in six day folders, as after a first start with `start_time -10d` or
//! catching up after downtime, and two ways a listing cursor could pass objects that were
//! never shipped:
//!
//! * SIGTERM three times during the catch-up, restarting each time with the same `db` and
//!   filesystem storage: every event arrives, none twice (the stops are graceful);
//! * `503 SlowDown` for the first GETs of every object of the oldest day folder, in one
//!   run: every event arrives exactly once (a transient error is retried, and the objects
//!   waiting for it hold the cursor back).
//!
//! Lost and repeated events are counted by eventID at the receiver, which outlives every
//! Fluent Bit process. Every wait is for a condition: the run is over when every event
//! arrived, or when nothing new arrived for [`STALL`] (what a lost object looks like from
//! outside), or at [`LIMIT`].

use std::time::{Duration, Instant};

use libtest_mimic::Failed;
use time::{Date, OffsetDateTime};

use crate::check::{Expected, Tally, Time};
use crate::fluent_bit::{Conf, Fb, FluentBit, http_output, s3_input, section};
use crate::proxy::{CountingProxy, SlowDown};
use crate::receiver::Receiver;
use crate::wait::poll_until;
use crate::work::Work;
use crate::{Body, data, server};

pub fn trials() -> Vec<(&'static str, Body<FluentBit>)> {
    vec![
        (
            "ledger::sigterm_x3_during_a_six_day_backlog_loses_and_repeats_nothing",
            restart_during_backlog,
        ),
        (
            "ledger::slow_down_on_the_oldest_day_loses_and_repeats_nothing",
            slow_down_on_oldest_day,
        ),
    ]
}

/// Day folders the bundled objects are spread over.
const DAYS: usize = 6;
/// The newest folder is this many days before today (UTC); the oldest is `DAYS` more.
const NEWEST_DAYS_AGO: i64 = 2;
/// Relative to the first start, so all six folders are in the window (config/mod.rs resolves
/// `-Nd` against the first start, which the state file remembers).
const START_TIME: &str = "-10d";
/// Small batches spread the catch-up over many collects (one a second; 2,900 events of
/// ~1.1 KB: about 26), so each stop lands mid-run.
const BATCH: usize = 128 << 10;
/// The plugin's debug line when a batch grows from `BATCH` to its ceiling.
const GROWN: &str = "batch size 131072 -> 262144 bytes per collect";
/// The most a whole run may take.
const LIMIT: Duration = Duration::from_secs(180);
/// Nothing new at the receiver for this long, with events missing, ends a wait: the
/// missing ones are not coming. Far above the longest quiet spell of a sound run (the
/// slow-down trial's retries: see [`SLOW_DOWNS`], under 30 s).
const STALL: Duration = Duration::from_secs(60);
/// Object GETs the AWS SDK makes per download attempt of the engine:
/// `RetryConfig::standard().with_max_attempts(4)` in `src/aws/client.rs`.
const SDK_ATTEMPTS: usize = 4;
/// Download attempts of the engine that fail, for each object of the oldest day.
const FAILED_ATTEMPTS: usize = 2;
/// 503s per object of the oldest day: two failed engine attempts of four SDK attempts each
/// (8 GETs), the third attempt succeeds. Time it costs per object, at most: the SDK's
/// jittered backoff between its attempts (up to 1 + 2 + 4 s, 3.5 s on average) in each of
/// the two failed attempts, plus the engine's backoff before the second and third (5 s,
/// then 10 s): 7 + 5 + 7 + 10 = 29 s, with the other days' objects shipping meanwhile. So
/// a sound run ends in well under a minute; a run that drops the failed objects never
/// gets them (the review saw 2,510 of 2,900 with six 503s per object).
const SLOW_DOWNS: usize = SDK_ATTEMPTS * FAILED_ATTEMPTS;

/// The bucket's layout: the 55 bundled objects, in key order, spread over six day folders
/// (about nine each), oldest first; the date in each file name follows its folder.
struct Backlog {
    bucket: String,
    /// `AWSLogs/ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/` of the oldest day.
    oldest_prefix: String,
    /// Objects and events per day folder, oldest first.
    per_day: Vec<(usize, usize)>,
}

impl Backlog {
    fn upload(tag: &str) -> Backlog {
        let today = OffsetDateTime::now_utc().date();
        let days: Vec<Date> = (0..DAYS as i64)
            .map(|i| today - time::Duration::days(NEWEST_DAYS_AGO + DAYS as i64 - 1 - i))
            .collect();
        let bucket = server::bucket(tag);
        let objects = data::objects();
        let mut per_day = vec![(0, 0); DAYS];
        let mut oldest_prefix = String::new();
        for (i, o) in objects.iter().enumerate() {
            let d = i * DAYS / objects.len();
            let day = days[d];
            let (y, m, dd) = (day.year(), day.month() as u8, day.day());
            let key = o
                .key
                .replacen("/2023/07/10/", &format!("/{y:04}/{m:02}/{dd:02}/"), 1)
                .replacen("_20230710T", &format!("_{y:04}{m:02}{dd:02}T"), 1);
            assert_ne!(key, o.key, "the bundled objects are in 2023/07/10");
            if d == 0 {
                let at = key.rfind('/').unwrap() + 1;
                oldest_prefix = key[..at].to_string();
            }
            per_day[d].0 += 1;
            per_day[d].1 += o.events().len();
            server::put(&bucket, &key, o.gz.clone());
        }
        Backlog {
            bucket,
            oldest_prefix,
            per_day,
        }
    }

    fn describe(&self) -> String {
        let days: Vec<String> = self
            .per_day
            .iter()
            .map(|(o, e)| format!("{o} objects/{e} events"))
            .collect();
        format!("six day folders, oldest first: {}", days.join(", "))
    }
}

/// The bucket (through `endpoint`) with `start_time -10d`, durable state and filesystem
/// buffering, to the receiver.
fn conf(work: &Work, rx: &Receiver, backlog: &Backlog, endpoint: &str) -> std::path::PathBuf {
    let mut input = s3_input("cloudtrail", "ct", &backlog.bucket, endpoint);
    input.retain(|(k, _)| k != "start_time");
    input.extend(section(&[
        ("start_time", START_TIME),
        ("storage.type", "filesystem"),
        ("db", work.path().join("state.json").to_str().unwrap()),
        ("batch_bytes", &BATCH.to_string()),
        // Batches may grow while the backlog waits (issue 20), to twice `batch_bytes` here
        // so each life still stops mid-run; the restart trial checks they did.
        ("batch_bytes_max", &(2 * BATCH).to_string()),
        ("log_level", "debug"),
    ]));
    Conf::new()
        .with_storage(work.path())
        .input(input)
        .output(http_output("*", rx, "/receiver/v1/http/ledger"))
        .write_yaml(work.path())
}

/// Follows the receiver until every event arrived, nothing new came for [`STALL`], or
/// [`LIMIT`] passed; the host must stay up meanwhile.
fn follow_to_the_end(host: &mut Fb, rx: &Receiver, tally: &mut Tally) {
    let mut last = (tally.lines, Instant::now());
    poll_until(LIMIT, || {
        assert!(host.try_status().is_none(), "{}", host.stderr_tail(40));
        if tally.follow(rx).all_arrived() {
            return true;
        }
        if tally.lines != last.0 {
            last = (tally.lines, Instant::now());
        }
        last.1.elapsed() >= STALL
    });
}

/// Issue 10, case 1. A first start over a six-day backlog, SIGTERM as soon as new events
/// reached the receiver, three times, then a last run to the end.
fn restart_during_backlog(fb: &FluentBit) -> Result<(), Failed> {
    const STOPS: usize = 3;
    let work = Work::new("ledger-restart");
    let backlog = Backlog::upload("real-ledger-restart");
    let rx = Receiver::start();
    let conf = conf(&work, &rx, &backlog, server::endpoint());
    let mut tally = Tally::new(&Expected::all(), Time::LeadingIso("timestamp"), false);
    // Per life: events at the receiver when it was stopped, and whether any came in it.
    let mut lives = Vec::new();
    let mut mid_run = 0;
    let mut grown = 0;
    for i in 0..STOPS {
        let mut host = fb.start(work.path(), &format!("life{i}"), &conf, &[]);
        host.wait_started(1);
        let before = rx.line_count();
        let moved = poll_until(STALL, || {
            assert!(host.try_status().is_none(), "{}", host.stderr_tail(40));
            rx.line_count() > before
        });
        let status = host.stop();
        assert!(status.success(), "{status}\n{}", host.stderr_tail(30));
        host.assert_no_errors();
        grown += host.stderr.count(GROWN);
        if !tally.follow(&rx).all_arrived() {
            mid_run += 1;
        }
        lives.push(format!(
            "life {i}: {} events by its stop{}",
            tally.lines,
            if moved { "" } else { " (none new in it)" }
        ));
    }
    let mut host = fb.start(work.path(), "final", &conf, &[]);
    follow_to_the_end(&mut host, &rx, &mut tally);
    let status = host.stop();
    assert!(status.success(), "{status}\n{}", host.stderr_tail(30));
    tally.follow(&rx);
    let report = format!(
        "SIGTERM x{STOPS} during a six-day backlog on {}: {} lost, {} repeated ({}; {}; {mid_run} stops mid-run)",
        fb.label(),
        tally.lost(),
        tally.repeated(),
        backlog.describe(),
        lives.join(", ")
    );
    eprintln!("{report}");
    assert_eq!(
        (tally.lost(), tally.repeated()),
        (0, 0),
        "every event at least once, none twice: {}\n{report}",
        tally.summary()
    );
    tally.assert_exactly_once("SIGTERM during a backlog");
    assert_eq!(mid_run, STOPS, "each stop came during the catch-up");
    grown += host.stderr.count(GROWN);
    assert!(grown > 0, "batches grew to 2 x batch_bytes in some life");
    host.assert_no_errors();
    Ok(())
}

/// Issue 10, case 2. One run through a proxy that answers `503 SlowDown` to the first
/// [`SLOW_DOWNS`] GETs of each object of the oldest day folder.
fn slow_down_on_oldest_day(fb: &FluentBit) -> Result<(), Failed> {
    let work = Work::new("ledger-slowdown");
    let backlog = Backlog::upload("real-ledger-slowdown");
    let proxy = CountingProxy::with_slow_down(
        server::endpoint(),
        SlowDown {
            path_contains: format!("/{}", backlog.oldest_prefix),
            times: SLOW_DOWNS,
        },
    );
    let rx = Receiver::start();
    let conf = conf(&work, &rx, &backlog, &proxy.endpoint);
    let mut tally = Tally::new(&Expected::all(), Time::LeadingIso("timestamp"), false);
    let mut host = fb.start(work.path(), "slowdown", &conf, &[]);
    host.wait_started(1);
    follow_to_the_end(&mut host, &rx, &mut tally);
    let status = host.stop();
    assert!(status.success(), "{status}\n{}", host.stderr_tail(30));
    tally.follow(&rx);

    // GETs of each object of the oldest day, and how many of them were refused.
    let mut gets: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for s in proxy.seen().iter().filter(|s| s.is_object_get()) {
        if s.object_path().contains(&backlog.oldest_prefix) {
            let e = gets.entry(s.object_path().to_string()).or_default();
            e.0 += 1;
            e.1 += usize::from(s.slowed_down);
        }
    }
    let (oldest_objects, oldest_events) = backlog.per_day[0];
    let got_through = gets.values().filter(|(n, refused)| n > refused).count();
    let report = format!(
        "503 SlowDown x{SLOW_DOWNS} per object of the oldest day on {}: {} lost, {} repeated ({}; of the oldest day's {oldest_objects} objects ({oldest_events} events) {got_through} were fetched after their 503s, GETs per object {:?})",
        fb.label(),
        tally.lost(),
        tally.repeated(),
        backlog.describe(),
        gets.values().map(|(n, _)| *n).collect::<Vec<_>>()
    );
    eprintln!("{report}");
    assert_eq!(
        (tally.lost(), tally.repeated()),
        (0, 0),
        "every event exactly once: {}\n{report}",
        tally.summary()
    );
    tally.assert_exactly_once("503 SlowDown on the oldest day");
    assert_eq!(
        gets.len(),
        oldest_objects,
        "every object of the oldest day was asked for"
    );
    assert!(
        gets.values().all(|(_, refused)| *refused == SLOW_DOWNS),
        "each object of the oldest day got its {SLOW_DOWNS} 503s: {gets:?}"
    );
    host.assert_no_errors();
    Ok(())
}
