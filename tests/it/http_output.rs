//! The command's `http` output against a loopback receiver standing in for Sumo Logic (or
//! Vector's acknowledged `http_server`): a batch is committed only once answered 2xx, so
//! 500s and 429s delay delivery but lose and repeat nothing, and SIGKILL of the command at
//! random points loses nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::data::{self, EVENTS};
use crate::json::J;
use crate::receiver::{Answer, Receiver};

const BIN: &str = env!("CARGO_BIN_EXE_cloudtrail-s3");
const PATH: &str = "/receiver/v1/http/SECRETTOKEN";

fn settings(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("settings.toml");
    std::fs::write(
        &path,
        format!(
            "dir = {:?}\nstart_time = \"2023-07-01T00:00:00Z\"\ndb = {:?}\n{extra}",
            data::root().to_str().unwrap(),
            dir.join("state.db").to_str().unwrap()
        ),
    )
    .unwrap();
    path
}

fn spawn(config: &Path, url: &str, extra: &[&str]) -> Child {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(["--http-url", url])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn exit_code(child: &mut Child, limit: Duration) -> i32 {
    let mut code = None;
    wait_until("the command to exit", limit, || {
        code = child.try_wait().unwrap().map(|s| s.code().unwrap_or(-1));
        code.is_some()
    });
    code.unwrap()
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut s).unwrap();
    s
}

/// eventID -> times received.
fn received(rx: &Receiver) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for l in rx.lines() {
        let id = J::parse(&l.text).str("eventID").unwrap().to_string();
        *m.entry(id).or_insert(0) += 1;
    }
    m
}

#[test]
fn every_event_once_through_500s_then_429s_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start();
    rx.answer(Answer::Status(500));
    let config = settings(
        dir.path(),
        "[http]\ntime_key = \"timestamp\"\nmax_body_bytes = \"256K\"\n[http.headers]\n\"X-Sumo-Category\" = \"aws/cloudtrail\"\n\"X-Sumo-Fields\" = \"account={account},region={region}\"\n",
    );
    let mut child = spawn(&config, &rx.url(PATH), &["--once"]);
    // 500s: retried with backoff, nothing taken beyond the requests in flight.
    wait_until("three 500s", Duration::from_secs(60), || rx.rejected() >= 3);
    rx.answer(Answer::Throttle(1));
    let before = rx.rejected();
    wait_until("two 429s", Duration::from_secs(60), || {
        rx.rejected() >= before + 2
    });
    assert_eq!(rx.line_count(), 0, "nothing counted before a 200");
    rx.answer(Answer::Ok);
    let code = exit_code(&mut child, Duration::from_secs(120));
    let log = stderr_of(&mut child);
    assert_eq!(code, 0, "{log}");
    assert!(
        !log.contains("SECRETTOKEN"),
        "the URL's token in the log:\n{log}"
    );
    assert!(log.contains("500 Internal Server Error"), "{log}");

    let seen = received(&rx);
    let repeats: usize = seen.values().map(|n| n - 1).sum();
    assert_eq!((seen.len(), repeats), (EVENTS, 0));
    let expected = data::expected();
    for l in rx.lines() {
        // The event's time first, then the event as CloudTrail wrote it.
        let J::Obj(mut entries) = J::parse(&l.text) else {
            panic!("not an object: {}", l.text)
        };
        let (key, time) = entries.remove(0);
        assert_eq!(key, "timestamp");
        let event = J::Obj(entries);
        let id = event.str("eventID").unwrap().to_string();
        assert_eq!(expected[&id].0, event, "the line is its source event");
        assert_eq!(Some(&time), event.get("eventTime"));
    }
    for r in rx.requests() {
        assert_eq!(r.header("Content-Encoding"), Some("gzip"));
        assert_eq!(r.header("X-Sumo-Category"), Some("aws/cloudtrail"));
        assert_eq!(
            r.header("X-Sumo-Fields"),
            Some("account=218007301253,region=us-east-1")
        );
    }
    assert!(rx.requests().len() > 1, "bodies of at most 256K");
}

#[test]
fn sigkill_at_random_points_loses_nothing() {
    const KILLS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start();
    // One request at a time, each answered after 100 ms: a run takes seconds.
    rx.answer(Answer::Slow(Duration::from_millis(100)));
    let config = settings(dir.path(), "[http]\nmax_body_bytes = \"64K\"\n");
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for kill in 0..KILLS {
        let mut child = spawn(&config, &rx.url(PATH), &[]);
        let before = rx.line_count();
        wait_until("lines from this run", Duration::from_secs(60), || {
            rx.line_count() > before
        });
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(seed % 700));
        child.kill().unwrap();
        child.wait().unwrap();
        eprintln!("kill {kill}: {} lines received", rx.line_count());
    }
    rx.answer(Answer::Ok);
    let mut child = spawn(&config, &rx.url(PATH), &["--once"]);
    let code = exit_code(&mut child, Duration::from_secs(120));
    assert_eq!(code, 0, "{}", stderr_of(&mut child));
    let seen = received(&rx);
    let repeats: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "SIGKILL x{KILLS}: {} of {EVENTS} received, {repeats} repeated",
        seen.len()
    );
    assert_eq!(seen.len(), EVENTS, "events lost");
    // At most the requests in flight (4 x 64K; no bundled event is under 650 bytes) per kill.
    assert!(repeats <= KILLS * 4 * 64 * 1024 / 650, "{repeats} repeated");
}

/// Reads a child's stderr on a thread, so a test can wait for a line while it runs.
fn follow_stderr(child: &mut Child) -> std::sync::Arc<std::sync::Mutex<String>> {
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::BufRead::read_line(&mut stderr, &mut line).unwrap_or(0) > 0 {
            sink.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    log
}

/// A receiver that stops as Vector's `http_server` does leaves one post unanswered while
/// later ones were delivered. Batches commit in order, so those later ones could not
/// commit; the graceful stop records them as delivered ahead, and the next run passes them:
/// every event once, none repeated.
#[test]
fn a_graceful_stop_repeats_nothing_delivered_behind_an_unanswered_post() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start();
    rx.answer(Answer::HoldFirst);
    let config = settings(
        dir.path(),
        "[http]\nmax_body_bytes = \"64K\"\ntimeout = 600\n",
    );
    let mut child = spawn(&config, &rx.url(PATH), &[]);
    let log = follow_stderr(&mut child);
    // Four posts in flight at most (`http.max_in_flight`): of those answered after the
    // hold, the first three may have been sent before the held one; the fourth was sent
    // after it.
    wait_until(
        "a post held and a later one delivered",
        Duration::from_secs(60),
        || rx.answered_since_hold() >= 4,
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_until(
        "the stop to wait for the answers",
        Duration::from_secs(60),
        || log.lock().unwrap().contains("waiting up to"),
    );
    // The held post's connection closes with no answer: not delivered.
    rx.answer(Answer::Ok);
    let code = exit_code(&mut child, Duration::from_secs(60));
    wait_until("the first run's last line", Duration::from_secs(10), || {
        log.lock().unwrap().contains("done:")
    });
    let first = log.lock().unwrap().clone();
    assert_eq!(code, 0, "{first}");
    let recorded = first
        .split(" were delivered (")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok());
    assert!(
        recorded.is_some_and(|n| n > 0),
        "the posts answered behind the held one are recorded at the stop:\n{first}"
    );
    let delivered_first = received(&rx).len();
    assert!(delivered_first > 0 && delivered_first < EVENTS);

    let mut child = spawn(&config, &rx.url(PATH), &["--once"]);
    let code = exit_code(&mut child, Duration::from_secs(120));
    assert_eq!(code, 0, "{}", stderr_of(&mut child));
    let seen = received(&rx);
    let repeats: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "held post, graceful stop: {delivered_first} events delivered before the stop; after the next run {} of {EVENTS}, {repeats} repeated",
        seen.len()
    );
    assert_eq!((seen.len(), repeats), (EVENTS, 0), "{first}");
}

/// `http.commit_delay` holds each commit that long after its answer: a crash inside the
/// delay sends those events again (for a receiver that answers before it is durable).
#[test]
fn commit_delay_holds_the_commits_after_the_answers() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start();
    let config = settings(dir.path(), "[http]\ncommit_delay = 60\n");
    let mut child = spawn(&config, &rx.url(PATH), &[]);
    wait_until("every event delivered", Duration::from_secs(60), || {
        received(&rx).len() == EVENTS
    });
    // Well inside the minute: nothing is committed yet.
    child.kill().unwrap();
    child.wait().unwrap();
    // The same ledger, without the delay.
    let config = settings(dir.path(), "");
    let mut child = spawn(&config, &rx.url(PATH), &["--once"]);
    let code = exit_code(&mut child, Duration::from_secs(120));
    assert_eq!(code, 0, "{}", stderr_of(&mut child));
    let seen = received(&rx);
    assert_eq!(seen.len(), EVENTS);
    assert!(
        seen.values().all(|n| *n == 2),
        "every event sent again: none was committed within the delay"
    );
}
