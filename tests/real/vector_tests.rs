//! `conf/vector.yaml` in the real Vector with the `cloudtrail-s3` command of this build on
//! its PATH, changed only in paths and the loopback address (its `data_dir`, and the port
//! of the `http_server` source the command posts to): the sample's `http` sink posts to the
//! receiver, the command reads the bundled objects. Every event arrives once, the first
//! timestamp of every line is the eventTime; SIGTERM to Vector mid-run followed by a
//! restart loses nothing and repeats at most the posts in flight; SIGKILL (to the whole
//! group, and to Vector alone)
//! loses nothing, and no command outlives its Vector.
//!
//! Vector writes an event's keys sorted. In the bundled events nothing that sorts before
//! `eventTime` holds a timestamp, so the folder gets one more object whose event has an
//! earlier timestamp in `additionalEventData` (which sorts first): without the sample's
//! `@timestamp` that line would start with the wrong time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use libtest_mimic::Failed;

use crate::check::{Expected, Tally, Time};
use crate::child::Child;
use crate::fluent_bit::RUN_LIMIT;
use crate::proxy::CountingProxy;
use crate::receiver::{Answer, Receiver};
use crate::rng::Rng;
use crate::vector::{STOP_LIMIT, Vector, errors};
use crate::wait::wait_until;
use crate::work::Work;
use crate::{Body, data, server};

pub fn trials() -> Vec<(&'static str, Body<Vector>)> {
    let mut trials: Vec<(&'static str, Body<Vector>)> = vec![
        ("sample", sample),
        ("sigterm_and_restart_lose_nothing", sigterm_restart),
        ("sigkill_and_restart_lose_nothing", sigkill_restart),
    ];
    if std::env::var_os("CLOUDTRAIL_S3_LONG").is_some() {
        trials.push(("sigkill_58000_events_slow_receiver", sigkill_slow_receiver));
    }
    trials
}

const URI: &str = "/receiver/v1/http/vector-token";
/// Each object download in the restart test waits this long at the proxy: the 56 objects
/// take over ten seconds.
const DOWNLOAD_DELAY: Duration = Duration::from_millis(200);
/// The command's request body: at most this much is posted per request, four at a time.
const BATCH: usize = 64 << 10;

/// The sample with its `data_dir` in `work` and its `http_server` on a free port: the only
/// changes a test makes.
fn sample_in(work: &Work) -> PathBuf {
    let path = work.path().join("vector.yaml");
    if !path.exists() {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/vector.yaml"))
                .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = work.path().join("vector-data");
        std::fs::create_dir_all(&data).unwrap();
        assert!(text.contains("127.0.0.1:8687") && text.contains("data_dir: /var/lib/vector"));
        let text = text
            .replace("127.0.0.1:8687", &format!("127.0.0.1:{port}"))
            .replace(
                "data_dir: /var/lib/vector",
                &format!("data_dir: {}", data.display()),
            );
        std::fs::write(&path, text).unwrap();
    }
    path
}

/// An event whose key that sorts first holds a timestamp earlier than its eventTime.
const EARLY_KEY_EVENT: &str = r#"{"eventVersion":"1.08","userIdentity":{"type":"AssumedRole","accountId":"123456789012"},"eventTime":"2023-07-10T12:00:00Z","eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity","awsRegion":"us-east-1","sourceIPAddress":"10.0.0.1","userAgent":"test","requestParameters":null,"responseElements":null,"additionalEventData":{"sessionStartedAt":"2023-07-10T09:00:00Z"},"requestID":"req-early-key","eventID":"early-key-0000-0000-0000-000000000001","readOnly":true,"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"123456789012","eventCategory":"Management"}"#;

/// The bundled objects plus one with [`EARLY_KEY_EVENT`].
fn objects() -> Vec<data::Object> {
    let mut objects = data::objects();
    objects.push(data::Object {
        key: "AWSLogs/123456789012/CloudTrail/us-east-1/2023/07/10/early-key.json.gz".into(),
        gz: data::gzip(format!("{{\"Records\":[{EARLY_KEY_EVENT}]}}").as_bytes()),
    });
    objects
}

/// The objects copied into `work/bucket`: the command's source settings.
fn folder(work: &Work, objects: &[data::Object]) -> String {
    let root = work.path().join("bucket");
    for o in objects {
        let p = root.join(&o.key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &o.gz).unwrap();
    }
    format!("dir = {:?}\n", root.to_str().unwrap())
}

/// The objects in a new bucket read through `endpoint`, one at a time: the command's
/// source settings (credentials come from the environment).
fn bucket(objects: &[data::Object], endpoint: &str) -> String {
    let bucket = server::bucket("real-vector");
    for o in objects {
        server::put(&bucket, &o.key, o.gz.clone());
    }
    format!(
        "bucket = {bucket:?}\nendpoint = {endpoint:?}\nregion = \"us-east-1\"\nforce_path_style = true\nworkers = 1\n"
    )
}

/// The command's settings: `source`, state in `work`, bodies of at most `body` bytes.
fn settings(work: &Work, source: &str, body: usize) -> PathBuf {
    let path = work.path().join("cloudtrail-s3.toml");
    std::fs::write(
        &path,
        format!(
            "{source}start_time = \"2023-07-01T00:00:00Z\"\ndb = {:?}\n[http]\nmax_body_bytes = \"{}K\"\n",
            work.path().join("state.db").to_str().unwrap(),
            body >> 10
        ),
    )
    .unwrap();
    path
}

fn start(vector: &Vector, work: &Work, source: &str, name: &str, rx: &Receiver) -> Child {
    start_with(vector, work, source, BATCH, name, rx)
}

fn start_with(
    vector: &Vector,
    work: &Work,
    source: &str,
    body: usize,
    name: &str,
    rx: &Receiver,
) -> Child {
    let env = [
        ("SUMO_HTTP_URL", rx.url(URI)),
        (
            "CLOUDTRAIL_S3_CONFIG",
            settings(work, source, body).to_str().unwrap().to_string(),
        ),
    ];
    vector.start(work.path(), name, &sample_in(work), &env)
}

fn stop(vector: &mut Child) {
    // Before its signal handlers are in place, SIGTERM would just kill it.
    wait_until("Vector to start", RUN_LIMIT, || {
        assert!(vector.try_status().is_none(), "{}", vector.stderr_tail(40));
        vector.stderr.any("Vector has started")
    });
    vector.signal(libc::SIGTERM);
    let status = vector.wait_exit(STOP_LIMIT);
    assert!(status.success(), "{status}\n{}", vector.stderr_tail(30));
    let errors = errors(vector);
    assert!(
        errors.is_empty(),
        "Vector logged errors:\n{}",
        errors.join("\n")
    );
    let leaks = vector.stderr.count(server::SECRET_KEY);
    assert_eq!(leaks, 0, "{leaks} log lines hold the AWS secret key");
}

fn check_requests(rx: &Receiver) {
    for r in rx.requests() {
        assert_eq!(r.path, URI);
        assert_eq!(r.header("X-Sumo-Category"), Some("aws/cloudtrail"));
        assert_eq!(r.header("Content-Encoding"), Some("gzip"));
    }
}

fn sample(vector: &Vector) -> Result<(), Failed> {
    let work = Work::new("vector-sample");
    let objects = objects();
    let source = folder(&work, &objects);
    let expected = Expected::of(&objects);
    let rx = Receiver::start();
    let mut v = start(vector, &work, &source, "vector", &rx);
    let mut tally = Tally::new(&expected, Time::NotInLine, true);
    wait_until("every event at the receiver", RUN_LIMIT, || {
        assert!(v.try_status().is_none(), "{}", v.stderr_tail(40));
        tally.follow(&rx).all_arrived()
    });
    stop(&mut v);
    tally.follow(&rx);
    eprintln!("{} sample: {}", vector.label(), tally.summary());
    tally.assert_exactly_once("Vector sample");
    check_requests(&rx);
    Ok(())
}

fn sigterm_restart(vector: &Vector) -> Result<(), Failed> {
    const STOPS: usize = 3;
    let work = Work::new("vector-sigterm");
    let objects = objects();
    // Downloads held back by the proxy spread the run over seconds (Vector itself would
    // take everything the command writes into one request), so a stop lands mid-run.
    let proxy = CountingProxy::start(server::endpoint(), DOWNLOAD_DELAY);
    let source = bucket(&objects, &proxy.endpoint);
    let expected = Expected::of(&objects);
    let rx = Receiver::start();
    let mut tally = Tally::new(&expected, Time::NotInLine, true);
    let mut rng = Rng::new(&format!("SIGTERM test on {}", vector.label()));
    let mut mid_run = 0;
    let mut stops = 0;
    while stops < STOPS && !tally.follow(&rx).all_arrived() {
        let mut v = start(vector, &work, &source, &format!("life{stops}"), &rx);
        let before = rx.line_count();
        wait_until("events from this run", RUN_LIMIT, || {
            assert!(v.try_status().is_none(), "{}", v.stderr_tail(40));
            rx.line_count() > before
        });
        // The stop point: a random moment once this run delivers.
        std::thread::sleep(rng.between(Duration::ZERO, Duration::from_millis(3000)));
        stop(&mut v);
        stops += 1;
        if !tally.follow(&rx).all_arrived() {
            mid_run += 1;
        }
    }
    let mut v = start(vector, &work, &source, "final", &rx);
    wait_until("every event at the receiver", RUN_LIMIT, || {
        assert!(v.try_status().is_none(), "{}", v.stderr_tail(40));
        tally.follow(&rx).all_arrived()
    });
    stop(&mut v);
    tally.follow(&rx);
    // Vector stops its http_server when it stops, and may leave a post unanswered while
    // later ones were delivered: the command records those as delivered ahead, and each
    // chunk travels in one request, so a graceful stop repeats nothing.
    eprintln!(
        "SIGTERM x{stops} on {}: {} lost, {} repeated ({mid_run} stops mid-run)",
        vector.label(),
        tally.lost(),
        tally.repeated()
    );
    tally.assert_well_formed("Vector restarts");
    assert!(mid_run >= 1, "no stop landed while events remained");
    tally.assert_exactly_once("SIGTERM to Vector, restarted");
    check_requests(&rx);
    Ok(())
}

/// Processes running the command with this work folder's settings (a command that outlived
/// its Vector would show here).
fn commands_of(work: &Work) -> Vec<i32> {
    let settings = work.path().join("cloudtrail-s3.toml");
    let settings = settings.to_str().unwrap();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("cloudtrail-s3") && cmdline.contains(settings) {
            pids.push(pid);
        }
    }
    pids
}

/// SIGKILL at random points once a run delivers, every other one to Vector's process alone
/// (as the OOM killer does) and the others to its whole group; Vector restarted each time
/// with the same `data_dir` and settings. Nothing is lost: the command commits only what
/// Vector acknowledged, which is what its sink delivered. Repeats stay within what was
/// unacknowledged at each kill: the command's requests in flight (4 bodies), in events.
fn sigkill_restart(vector: &Vector) -> Result<(), Failed> {
    let objects = objects();
    // Downloads held back by the proxy spread the run over seconds.
    let proxy = CountingProxy::start(server::endpoint(), DOWNLOAD_DELAY);
    let kill = Kills {
        name: "vector-sigkill",
        body: BATCH,
        answer: Answer::Ok,
    };
    kill.run(vector, &objects, &proxy)
}

/// The issue's measure, run by hand (`CLOUDTRAIL_S3_LONG=1`, about three minutes): 58,000
/// events (20 renamed copies of the bundled objects), the command's default 1 MB bodies, a
/// receiver answering one request a second (a slow or throttling Sumo Logic), SIGKILL x6.
fn sigkill_slow_receiver(vector: &Vector) -> Result<(), Failed> {
    let objects = copies(&objects(), 20);
    let proxy = CountingProxy::start(server::endpoint(), Duration::ZERO);
    let kill = Kills {
        name: "vector-sigkill-58k",
        body: 1 << 20,
        answer: Answer::Slow(Duration::from_secs(1)),
    };
    kill.run(vector, &objects, &proxy)
}

/// `n` copies of `objects`, each under its own key with its own eventIDs (`cNN-` before
/// each), so every event of every copy is expected once.
fn copies(objects: &[data::Object], n: usize) -> Vec<data::Object> {
    let mut out = Vec::new();
    for c in 0..n {
        for o in objects {
            let json = o.json();
            let tag = format!("\"eventID\":\"c{c:02}-");
            let renamed = json.replace("\"eventID\":\"", &tag);
            assert_eq!(renamed.matches(&tag).count(), o.events().len(), "{}", o.key);
            out.push(data::Object {
                key: o.key.replace(".json.gz", &format!("-c{c:02}.json.gz")),
                gz: data::gzip(renamed.as_bytes()),
            });
        }
    }
    out
}

/// One SIGKILL trial: six kills at random points, then a last run to the end.
struct Kills {
    name: &'static str,
    /// The command's `http.max_body_bytes`.
    body: usize,
    /// How the receiver (Vector's sink's destination) answers.
    answer: Answer,
}

impl Kills {
    fn run(
        &self,
        vector: &Vector,
        objects: &[data::Object],
        proxy: &CountingProxy,
    ) -> Result<(), Failed> {
        const KILLS: usize = 6;
        let work = Work::new(self.name);
        let source = bucket(objects, &proxy.endpoint);
        let expected = Expected::of(objects);
        let rx = Receiver::start();
        rx.answer(self.answer);
        let mut tally = Tally::new(&expected, Time::NotInLine, true);
        let mut rng = Rng::new(&format!("{} on {}", self.name, vector.label()));
        let mut mid_run = 0;
        let mut kills = 0;
        while kills < KILLS && !tally.follow(&rx).all_arrived() {
            let life = format!("life{kills}");
            let mut v = start_with(vector, &work, &source, self.body, &life, &rx);
            let before = rx.line_count();
            wait_until("events from this run", RUN_LIMIT, || {
                assert!(v.try_status().is_none(), "{}", v.stderr_tail(40));
                rx.line_count() > before || tally.follow(&rx).all_arrived()
            });
            std::thread::sleep(rng.between(Duration::ZERO, Duration::from_millis(3000)));
            let alone = kills % 2 == 1;
            if alone {
                v.signal(libc::SIGKILL);
            } else {
                // SAFETY: kill(2) on the process group Child::spawn made for this Vector.
                unsafe { libc::kill(-v.pid(), libc::SIGKILL) };
            }
            v.wait_exit(STOP_LIMIT);
            wait_until(
                "the command to end with its Vector",
                Duration::from_secs(20),
                || commands_of(&work).is_empty(),
            );
            kills += 1;
            if !tally.follow(&rx).all_arrived() {
                mid_run += 1;
            }
        }
        let mut v = start_with(vector, &work, &source, self.body, "final", &rx);
        let limit = RUN_LIMIT + Duration::from_secs(expected.len() as u64 / 200);
        wait_until("every event at the receiver", limit, || {
            assert!(v.try_status().is_none(), "{}", v.stderr_tail(40));
            tally.follow(&rx).all_arrived()
        });
        stop(&mut v);
        tally.follow(&rx);
        // No bundled event is under 650 bytes of JSON.
        let per_kill = 4 * self.body / 650;
        eprintln!(
            "SIGKILL x{kills} (every other to Vector alone) on {}, {} events: {} lost, {} repeated ({mid_run} kills mid-run, at most {per_kill} unacknowledged per kill)",
            vector.label(),
            expected.len(),
            tally.lost(),
            tally.repeated()
        );
        tally.assert_well_formed("Vector kills");
        assert_eq!(tally.lost(), 0, "{}", tally.summary());
        assert!(mid_run >= 1, "no kill landed while events remained");
        assert!(
            tally.repeated() <= kills * per_kill,
            "more repeated than was unacknowledged: {}",
            tally.summary()
        );
        check_requests(&rx);
        Ok(())
    }
}
