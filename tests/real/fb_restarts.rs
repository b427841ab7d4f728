//! Crashes, stops and reloads of the real host in the middle of a run, counted at the
//! receiver (which outlives every Fluent Bit process):
//!
//! * SIGKILL at random points, restarting with the same `db` and filesystem storage:
//!   nothing lost; repeats only from batches not yet committed at each kill;
//! * SIGTERM at random points: nothing lost, nothing repeated (the host drains its ring
//!   buffer and flushes before Exit, where the plugin commits);
//! * hot reload (SIGHUP) twice: Exit and Init again in one process, nothing lost or repeated.
//!
//! The stop points are random (seeded, printed); every wait is for a condition.

use std::time::Duration;

use libtest_mimic::Failed;

use crate::check::{Expected, Tally, Time};
use crate::fluent_bit::{
    Conf, EMPTY_CHUNK_AFTER_KILL, FluentBit, RUN_LIMIT, dir_input, http_output,
};
use crate::json::J;
use crate::receiver::Receiver;
use crate::rng::Rng;
use crate::wait::{poll_until, wait_until};
use crate::work::Work;
use crate::{Body, data};

pub fn trials() -> Vec<(&'static str, Body<FluentBit>)> {
    vec![
        ("restarts::sigkill_x20_loses_nothing", sigkill),
        ("restarts::sigterm_x10_loses_and_repeats_nothing", sigterm),
        (
            "restarts::hot_reload_x2_loses_and_repeats_nothing",
            hot_reload,
        ),
    ]
}

/// Small batches spread the run over many collects (one a second), so the random stop
/// points land mid-run (2,900 events of ~1.1 KB: about 26 collects).
const BATCH: usize = 128 << 10;
/// Two reloads need only a few collects, so the reload test runs in bigger batches.
const RELOAD_BATCH: usize = 512 << 10;

/// The folder source with durable state and buffer, in batches of `batch` bytes, to the
/// receiver.
fn durable_conf(work: &Work, rx: &Receiver, batch: usize) -> Conf {
    let mut input = dir_input("cloudtrail", "ct");
    input.extend(crate::fluent_bit::section(&[
        ("storage.type", "filesystem"),
        ("db", work.path().join("state.json").to_str().unwrap()),
        ("batch_bytes", &batch.to_string()),
        // Fixed batches: the bounds on repeats count in them.
        ("batch_bytes_max", &batch.to_string()),
    ]));
    Conf::new()
        .with_storage(work.path())
        .input(input)
        .output(http_output("*", rx, "/receiver/v1/http/restarts"))
}

/// Runs a last time until every event arrived, stops gracefully, and checks the whole.
fn finish(
    fb: &FluentBit,
    work: &Work,
    conf: &std::path::Path,
    rx: &Receiver,
    tally: &mut Tally,
    allowed: &[&str],
) {
    let mut host = fb.start(work.path(), "final", conf, &[]);
    // Not a panic on timeout: what never arrived is counted below, as lost.
    poll_until(RUN_LIMIT, || {
        assert!(host.try_status().is_none(), "{}", host.stderr_tail(40));
        tally.follow(rx).all_arrived()
    });
    let status = host.stop();
    assert!(status.success(), "{status}\n{}", host.stderr_tail(30));
    host.assert_no_errors_except(allowed);
    tally.follow(rx);
    tally.assert_well_formed("after restarts");
}

/// Msgpack bytes of an average bundled event as the plugin hands it over (body plus the
/// `[[time, {}], ...]` envelope), to turn "batches" into "events".
fn average_event_bytes() -> usize {
    fn to_mp(j: &J) -> rmpv::Value {
        match j {
            J::Null => rmpv::Value::Nil,
            J::Bool(b) => rmpv::Value::Boolean(*b),
            J::Int(i) => i64::try_from(*i).map_or(rmpv::Value::from(*i as u64), rmpv::Value::from),
            J::Float(f) => rmpv::Value::F64(*f),
            J::Str(s) => rmpv::Value::from(s.as_str()),
            J::Arr(a) => rmpv::Value::Array(a.iter().map(to_mp).collect()),
            J::Obj(o) => rmpv::Value::Map(
                o.iter()
                    .map(|(k, v)| (rmpv::Value::from(k.as_str()), to_mp(v)))
                    .collect(),
            ),
        }
    }
    const ENVELOPE: usize = 1 + 1 + 10 + 1;
    let (mut total, mut n) = (0, 0);
    for o in data::objects() {
        for e in o.events() {
            let mut buf = Vec::new();
            rmpv::encode::write_value(&mut buf, &to_mp(&J::parse(&e))).unwrap();
            total += buf.len() + ENVELOPE;
            n += 1;
        }
    }
    total / n
}

fn sigkill(fb: &FluentBit) -> Result<(), Failed> {
    const KILLS: usize = 20;
    let work = Work::new("restarts-sigkill");
    let rx = Receiver::start();
    let conf = durable_conf(&work, &rx, BATCH).write_yaml(work.path());
    let mut tally = Tally::new(&Expected::all(), Time::LeadingIso("timestamp"), false);
    let mut rng = Rng::new(&format!("SIGKILL test on {}", fb.label()));
    let mut mid_run = 0;
    for i in 0..KILLS {
        let mut host = fb.start(work.path(), &format!("life{i}"), &conf, &[]);
        // The kill point: a random moment of this life (start-up, a collect, a flush).
        std::thread::sleep(rng.between(Duration::from_millis(200), Duration::from_millis(2200)));
        assert!(
            host.try_status().is_none(),
            "Fluent Bit ended by itself\n{}",
            host.stderr_tail(40)
        );
        host.signal(libc::SIGKILL);
        host.wait_exit(Duration::from_secs(30));
        // A killed life's log ends at the kill; up to there it has no errors either (but
        // Fluent Bit's own word on an empty chunk the kill before this one left).
        host.assert_no_errors_except(&[EMPTY_CHUNK_AFTER_KILL]);
        if !tally.follow(&rx).all_arrived() {
            mid_run += 1;
        }
    }
    assert!(
        mid_run >= KILLS / 2,
        "only {mid_run} of {KILLS} kills landed while events remained"
    );
    finish(fb, &work, &conf, &rx, &mut tally, &[EMPTY_CHUNK_AFTER_KILL]);
    let per_batch = BATCH.div_ceil(average_event_bytes());
    let bound = KILLS * 2 * per_batch;
    eprintln!(
        "SIGKILL x{KILLS} on {}: {} lost, {} repeated (bound {bound} = {KILLS} kills x 2 batches of ~{per_batch} events; {mid_run} kills mid-run)",
        fb.label(),
        tally.lost(),
        tally.repeated()
    );
    assert_eq!(tally.lost(), 0, "{}", tally.summary());
    assert!(tally.repeated() <= bound, "{}", tally.summary());
    Ok(())
}

fn sigterm(fb: &FluentBit) -> Result<(), Failed> {
    const STOPS: usize = 10;
    let work = Work::new("restarts-sigterm");
    let rx = Receiver::start();
    let conf = durable_conf(&work, &rx, BATCH).write_yaml(work.path());
    let mut tally = Tally::new(&Expected::all(), Time::LeadingIso("timestamp"), false);
    let mut rng = Rng::new(&format!("SIGTERM test on {}", fb.label()));
    let mut mid_run = 0;
    for i in 0..STOPS {
        let mut host = fb.start(work.path(), &format!("life{i}"), &conf, &[]);
        host.wait_started(1);
        // The stop point: a random moment of this life (a collect, a flush, between).
        std::thread::sleep(rng.between(Duration::from_millis(100), Duration::from_millis(1500)));
        let status = host.stop();
        assert!(status.success(), "{status}\n{}", host.stderr_tail(30));
        host.assert_no_errors();
        if !tally.follow(&rx).all_arrived() {
            mid_run += 1;
        }
    }
    assert!(
        mid_run >= STOPS / 2,
        "only {mid_run} of {STOPS} stops landed while events remained"
    );
    finish(fb, &work, &conf, &rx, &mut tally, &[]);
    eprintln!(
        "SIGTERM x{STOPS} on {}: {} lost, {} repeated ({mid_run} stops mid-run)",
        fb.label(),
        tally.lost(),
        tally.repeated()
    );
    tally.assert_exactly_once("SIGTERM and restart");
    Ok(())
}

fn hot_reload(fb: &FluentBit) -> Result<(), Failed> {
    const RELOADS: usize = 2;
    let work = Work::new("restarts-reload");
    let rx = Receiver::start();
    let conf = durable_conf(&work, &rx, RELOAD_BATCH)
        .service("hot_reload", "on")
        .write_yaml(work.path());
    let mut tally = Tally::new(&Expected::all(), Time::LeadingIso("timestamp"), false);
    let mut host = fb.start(work.path(), "reload", &conf, &[]);
    let mut reloaded_mid_run = 0;
    for n in 1..=RELOADS {
        // Reload once some more events arrived, while others remain.
        let before = rx.line_count();
        wait_until("events before the reload", RUN_LIMIT, || {
            rx.line_count() > before
        });
        if !tally.follow(&rx).all_arrived() {
            reloaded_mid_run += 1;
        }
        host.signal(libc::SIGHUP);
        wait_until("the reload to finish", RUN_LIMIT, || {
            assert!(host.try_status().is_none(), "{}", host.stderr_tail(40));
            host.stderr.count("successful reload done") >= n
        });
    }
    wait_until("every event at the receiver", RUN_LIMIT, || {
        tally.follow(&rx).all_arrived()
    });
    let status = host.stop();
    assert!(status.success(), "{status}\n{}", host.stderr_tail(30));
    tally.follow(&rx);
    eprintln!(
        "hot reload x{RELOADS} on {}: {} lost, {} repeated ({reloaded_mid_run} reloads mid-run)",
        fb.label(),
        tally.lost(),
        tally.repeated()
    );
    assert_eq!(
        reloaded_mid_run, RELOADS,
        "each reload came while events remained"
    );
    tally.assert_exactly_once("hot reload");
    host.assert_no_errors();
    Ok(())
}
