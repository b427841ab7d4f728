//! The operator's commands, `cloudtrail-s3 status` and `cloudtrail-s3 retry`, run as the
//! built binary on a ledger written through the library: failed objects are listed with their
//! reasons and put back in line with their positions, watermarks are shown per account and
//! region, and a ledger held by a running shipper (or missing) is refused plainly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudtrail_s3::engine::handoff::{End, Mark};
use cloudtrail_s3::ledger::{Backoff, Claimable, Honour, Ledger, LedgerError, Status};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_cloudtrail-s3");

const ACCOUNT: &str = "111122223333";
const TRAIL: &str = "s3://trail-bucket/AWSLogs/o-abc123/";
const FLAT: &str = "s3://flat-bucket/logs/";
/// When the ledger was written (2023-07-10T12:00:00Z).
const T: u32 = 1_688_990_400;

fn prefix(region: &str) -> String {
    format!("{TRAIL}{ACCOUNT}/CloudTrail/{region}/")
}

/// A CloudTrail key id of July 10th 2023, delivered at `hhmm`.
fn key(region: &str, hhmm: &str, unique: &str) -> String {
    format!(
        "{}2023/07/10/{ACCOUNT}_CloudTrail_{region}_20230710T{hhmm}Z_{unique}.json.gz",
        prefix(region)
    )
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
    /// The watermark of us-east-1.
    done: String,
    /// Failed, with these reasons and positions.
    gzip: String,
    records: String,
    folder: String,
    /// Open: backing off after a transient error, and partly shipped.
    backing_off: String,
    partial: String,
}

fn mark(id: &str, position: u64, end: Option<End>) -> Mark {
    Mark {
        id: Arc::from(id),
        events: position,
        position,
        end,
        ..Mark::default()
    }
}

/// A ledger with every kind of entry: a watermark per account and region (one region has
/// none yet), a flat listing's time watermark, failed, open and done objects.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let done = key("us-east-1", "1140", "done");
    let gzip = key("us-east-1", "1145", "gzip");
    let records = key("us-east-1", "1150", "records");
    let backing_off = key("us-east-1", "1155", "slow");
    let partial = key("us-east-1", "1158", "partial");
    let eu = key("eu-west-1", "1100", "eu");
    let flat = format!("{FLAT}a.json.gz");
    let folder = "dir:AWSLogs/x/broken.json.gz".to_string();

    let ledger = Ledger::open(Some(&db), None, T).unwrap();
    let mut objects: Vec<Claimable<'_>> =
        [&done, &gzip, &records, &backing_off, &partial, &eu, &folder]
            .iter()
            .map(|id| Claimable {
                id,
                size: 1000,
                modified: (T, 0),
                forget_by: None,
            })
            .collect();
    objects.push(Claimable {
        id: &flat,
        size: 10,
        modified: (T - 60, 0),
        forget_by: Some(("flat:s3://flat-bucket/logs/", T - 60)),
    });
    assert_eq!(ledger.claim(&objects, T, Honour::Backoff).unwrap().len(), 8);
    ledger
        .commit(
            &[
                mark(&done, 12, Some(End::Done)),
                mark(&gzip, 7, Some(End::Failed("gzip: invalid header".into()))),
                mark(
                    &records,
                    0,
                    Some(End::Failed("'Records' is not an array".into())),
                ),
                mark(&backing_off, 2, Some(End::Abandoned("503 SlowDown".into()))),
                mark(&partial, 3, None),
                mark(&eu, 4, Some(End::Done)),
                mark(&flat, 1, Some(End::Done)),
                mark(
                    &folder,
                    5,
                    Some(End::Failed("truncated gzip stream".into())),
                ),
            ],
            T + 1,
            Backoff::TRANSIENT,
        )
        .unwrap();
    let p = prefix("us-east-1");
    ledger.advance(&p, &done, &p).unwrap();
    ledger
        .advance_time("flat:s3://flat-bucket/logs/", T - 60)
        .unwrap();
    drop(ledger);
    Fixture {
        _dir: dir,
        db,
        done,
        gzip,
        records,
        folder,
        backing_off,
        partial,
    }
}

/// Runs `cloudtrail-s3 COMMAND --db DB ARGS...` once.
fn run_once(args: &[&str], db: &Path) -> Output {
    Command::new(BIN)
        .arg(args[0])
        .arg("--db")
        .arg(db)
        .args(&args[1..])
        .output()
        .unwrap()
}

/// Whether a ledger just closed here may still look held: a child that another test is
/// starting at that moment has copies of this process's descriptors, the ledger's locks
/// with them, until it execs (seen now and then with tests in parallel). A shipper never
/// holds these ledgers.
const SETTLE: Duration = Duration::from_secs(5);

/// Runs `cloudtrail-s3 COMMAND --db DB ARGS...`, again while the ledger this test process
/// closed last still looks held (see [`SETTLE`]).
fn run(args: &[&str], db: &Path) -> Output {
    let end = Instant::now() + SETTLE;
    loop {
        let out = run_once(args, db);
        if code(&out) == 1
            && text(&out.stderr).contains("held by a running shipper")
            && Instant::now() < end
        {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        return out;
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed by a signal")
}

fn reopen(db: &Path) -> Ledger {
    let end = Instant::now() + SETTLE;
    loop {
        match Ledger::open(Some(db), None, T + 10) {
            Err(LedgerError::InUse { .. }) if Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other.unwrap(),
        }
    }
}

#[test]
fn status_shows_watermarks_per_account_and_region_and_every_failed_object() {
    let f = fixture();
    let out = run(&["status"], &f.db);
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), 0, "{stdout}{}", text(&out.stderr));
    println!("{stdout}");
    // The counts, the trail and its account and regions, the watermark's day and file name.
    assert!(
        stdout.contains("8 entries (2 open, 3 done, 3 failed)"),
        "{stdout}"
    );
    assert!(stdout.contains(TRAIL), "{stdout}");
    let row = |region: &str| {
        stdout
            .lines()
            .find(|l| l.contains(ACCOUNT) && l.contains(region) && !l.contains("s3://"))
            .unwrap_or_else(|| panic!("no row for {region}:\n{stdout}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let name = f.done.rsplit('/').next().unwrap();
    let us = row("us-east-1");
    assert_eq!(us[0], ACCOUNT);
    assert_eq!(us[2], "2023-07-10");
    assert!(us.last().unwrap() == name, "{us:?}");
    // open, done, failed of the prefix, after the lag (two words: "Nd HHh").
    assert_eq!(&us[us.len() - 4..us.len() - 1], ["2", "1", "2"], "{us:?}");
    let eu = row("eu-west-1");
    assert!(
        eu.contains(&"(none".to_string()),
        "no watermark yet: {eu:?}"
    );
    // The flat listing's time watermark.
    assert!(stdout.contains("flat") && stdout.contains(FLAT), "{stdout}");
    assert!(stdout.contains("2023-07-10T11:59:00Z"), "{stdout}");
    // Every failed object, its reason and position.
    for (id, reason, position) in [
        (&f.gzip, "gzip: invalid header", 7),
        (&f.records, "'Records' is not an array", 0),
        (&f.folder, "truncated gzip stream", 5),
    ] {
        let at = stdout
            .find(&format!("  {id}\n"))
            .unwrap_or_else(|| panic!("{id} not listed:\n{stdout}"));
        let detail = stdout[at..].lines().nth(1).unwrap();
        assert!(
            detail.contains(reason) && detail.contains(&format!("at position {position}")),
            "{detail}"
        );
    }
    // Open objects: attempts, next try, last error.
    let at = stdout.find(&format!("  {}\n", f.backing_off)).unwrap();
    let detail = stdout[at..].lines().nth(1).unwrap();
    assert!(
        detail.contains("1 failed attempt,") && detail.contains("last error: 503 SlowDown"),
        "{detail}"
    );
    assert!(stdout.contains(&f.partial), "{stdout}");
}

#[test]
fn status_json_carries_the_same_for_machines() {
    let f = fixture();
    let out = run(&["status", "--json"], &f.db);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["counts"]["failed"], 3);
    let prefixes = j["prefixes"].as_array().unwrap();
    let us = prefixes
        .iter()
        .find(|p| p["region"] == "us-east-1")
        .unwrap();
    assert_eq!(us["account"], ACCOUNT);
    assert_eq!(us["organization"], "o-abc123");
    assert_eq!(us["bucket"], "trail-bucket");
    assert_eq!(us["watermark"], f.done.as_str());
    assert_eq!(us["day"], "2023-07-10");
    assert_eq!(us["lag_from"], "file name");
    assert_eq!(us["watermark_time_text"], "2023-07-10T11:40:00Z");
    let lag = us["lag_secs"].as_i64().unwrap();
    let now = cloudtrail_s3::timestamp::EventTime::now().secs();
    assert!(
        (i64::from(now) - 1_688_989_200 - lag).abs() <= 60,
        "lag {lag} measured from 11:40 in the file name"
    );
    assert_eq!(
        us["counts"],
        serde_json::json!({"open": 2, "done": 1, "failed": 2})
    );
    let eu = prefixes
        .iter()
        .find(|p| p["region"] == "eu-west-1")
        .unwrap();
    assert!(eu["watermark"].is_null() && eu["lag_secs"].is_null());
    let windows = j["windows"].as_array().unwrap();
    let window = windows.iter().find(|w| w["kind"] == "flat").unwrap();
    let folder = windows.iter().find(|w| w["kind"] == "folder").unwrap();
    assert!(folder["watermark_time"].is_null(), "no watermark yet");
    assert_eq!(folder["counts"]["failed"], 1);
    assert_eq!(
        (window["kind"].as_str(), window["location"].as_str()),
        (Some("flat"), Some(FLAT))
    );
    assert_eq!(window["watermark_time"], T - 60);
    let failed = j["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 3);
    let gzip = failed.iter().find(|o| o["id"] == f.gzip.as_str()).unwrap();
    assert_eq!(
        (gzip["reason"].as_str(), gzip["position"].as_u64()),
        (Some("gzip: invalid header"), Some(7))
    );
    let open = j["open"].as_array().unwrap();
    assert_eq!(open[0]["id"], f.backing_off.as_str(), "troubled first");
    assert_eq!(open[0]["attempts"], 1);
    assert_eq!(open[0]["last_error"], "503 SlowDown");
    assert_eq!(open[0]["next_try"], T + 1 + 5);
}

#[test]
fn retry_puts_failed_objects_back_with_their_positions_and_reports_the_others() {
    let f = fixture();
    // One failed object, named twice, beside ids that are done, open, unknown or not ids.
    let unknown = key("us-east-1", "0000", "never-seen");
    let out = run(
        &[
            "retry",
            &f.gzip,
            &f.done,
            &f.partial,
            &unknown,
            "AWSLogs/bare-key.json.gz",
            &f.gzip,
        ],
        &f.db,
    );
    let stdout = text(&out.stdout);
    println!("{stdout}");
    assert_eq!(code(&out), 1, "some named objects were not failed");
    assert!(
        stdout.contains("put 1 failed object back in line"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("  {} (from position 7)", f.gzip)),
        "{stdout}"
    );
    assert!(stdout.contains("not put back (4)"), "{stdout}");
    for (id, why) in [
        (f.done.as_str(), "already shipped"),
        (f.partial.as_str(), "already open"),
        (unknown.as_str(), "not in the ledger"),
        ("AWSLogs/bare-key.json.gz", "not an object id"),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("  {id}: ")))
            .unwrap_or_else(|| panic!("{id} not reported:\n{stdout}"));
        assert!(line.contains(why), "{line}");
    }
    let ledger = reopen(&f.db);
    let e = ledger.entry(&f.gzip).unwrap().unwrap();
    assert_eq!((e.status, e.position, e.attempts), (Status::Open, 7, 0));
    assert!(e.reason.contains("gzip: invalid header"), "{}", e.reason);
    assert_eq!(
        ledger.entry(&f.records).unwrap().unwrap().status,
        Status::Failed
    );
    assert_eq!(ledger.entry(&f.done).unwrap().unwrap().status, Status::Done);
    drop(ledger);

    // Every named one failed: exit 0.
    let out = run(&["retry", &f.records], &f.db);
    assert_eq!(code(&out), 0, "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains(&format!("  {} (from position 0)", f.records)));

    // The rest (the folder's object).
    let out = run(&["retry", "--all-failed"], &f.db);
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), 0, "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("put 1 failed object back in line")
            && stdout.contains(&format!("  {} (from position 5)", f.folder)),
        "{stdout}"
    );
    let ledger = reopen(&f.db);
    assert_eq!(ledger.counts().unwrap(), (5, 3, 0));
    let e = ledger.entry(&f.folder).unwrap().unwrap();
    assert_eq!((e.status, e.position), (Status::Open, 5));
    drop(ledger);
    let out = run(&["retry", "--all-failed"], &f.db);
    assert_eq!(code(&out), 0);
    assert!(text(&out.stdout).contains("no objects put back in line"));
    let out = run(&["status"], &f.db);
    assert!(text(&out.stdout).contains("No failed objects."));
}

#[test]
fn retry_all_failed_puts_every_failed_object_back() {
    let f = fixture();
    let out = run(&["retry", "--all-failed"], &f.db);
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), 0, "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("put 3 failed objects back in line"),
        "{stdout}"
    );
    let ledger = reopen(&f.db);
    for (id, position) in [(&f.gzip, 7), (&f.records, 0), (&f.folder, 5)] {
        let e = ledger.entry(id).unwrap().unwrap();
        assert_eq!((e.status, e.position), (Status::Open, position), "{id}");
    }
    // Put back in line means due at once: the next scan re-queues them.
    let due: Vec<String> = ledger
        .due(T + 10, 100)
        .unwrap()
        .into_iter()
        .map(|d| d.0)
        .collect();
    for id in [&f.gzip, &f.records, &f.folder] {
        assert!(due.contains(id), "{id} due: {due:?}");
    }
}

#[test]
fn a_ledger_held_by_a_running_shipper_is_refused_plainly() {
    let f = fixture();
    let held = reopen(&f.db);
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["retry", "--all-failed"],
    ] {
        let out = run_once(args, &f.db);
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 1, "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            stderr.contains("held by a running shipper")
                && stderr.contains("two writers would undo each other's work")
                && stderr.contains("Stop the shipper"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
    }
    drop(held);
    assert_eq!(
        code(&run(&["status"], &f.db)),
        0,
        "free once the shipper stops"
    );
    // Nothing was put back while it was held.
    assert_eq!(reopen(&f.db).counts().unwrap().2, 3);
}

#[test]
fn a_missing_ledger_is_reported_not_created_and_bad_usage_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nope/state.db");
    for args in [&["status"][..], &["retry", "--all-failed"]] {
        let out = run(args, &db);
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 1, "{stderr}");
        assert!(stderr.contains("there is no ledger at"), "{stderr}");
    }
    assert!(
        !dir.path().join("nope").exists(),
        "neither the file nor its folder was created"
    );
    let json = dir.path().join("state.json");
    std::fs::write(&json, "{\"version\":1,\"done\":[]}").unwrap();
    let out = run(&["status"], &json);
    assert_eq!(code(&out), 1);
    assert!(text(&out.stderr).contains("earlier release"));
    assert_eq!(
        std::fs::read_to_string(&json).unwrap(),
        "{\"version\":1,\"done\":[]}",
        "left for the shipper to convert"
    );

    let usage = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        (code(&out), text(&out.stderr))
    };
    for args in [
        &["status"][..],
        &["retry", "--db", "x.db"],
        &["retry", "--db", "x.db", "--all-failed", "s3://b/k"],
        &["status", "--db", "x.db", "s3://b/k"],
        &["status", "--db", "x.db", "--bogus"],
        &["status", "--db"],
    ] {
        let (c, stderr) = usage(args);
        assert_eq!(c, 2, "{args:?}: {stderr}");
        assert!(stderr.contains("see --help"), "{stderr}");
    }
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = text(&help.stdout);
    assert!(help.contains("status --db FILE") && help.contains("--all-failed"));
}
