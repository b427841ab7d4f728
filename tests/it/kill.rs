//! Crash safety: a host process that stores what it collects (appended and fsynced before
//! the cleanup callback, like Fluent Bit's filesystem storage) is killed with SIGKILL at
//! random moments and restarted with the same `db`. At the end every event must be there;
//! duplicates may only come from the batch in flight at each kill.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::data;
use crate::host::{self, Plugin};

const KILLS: usize = 20;
const COPIES: usize = 4;
const BATCH_BYTES: usize = 64 << 10;
/// The stand-in's collect period (Fluent Bit's is 1 s; shorter spreads the run over the kills).
const TICK_MS: u64 = 40;

/// The host process (run by `sigkill_at_random_points_loses_nothing`, not on its own).
#[test]
#[ignore = "runs as the child of the kill test"]
fn kill_child_host_process() {
    let (Some(dir), Some(db), Some(out)) = (
        std::env::var_os("KILL_DIR"),
        std::env::var_os("KILL_DB"),
        std::env::var_os("KILL_OUT"),
    ) else {
        return;
    };
    let props = [
        ("dir", dir.to_str().unwrap()),
        ("db", db.to_str().unwrap()),
        ("start_time", "2000-01-01T00:00:00Z"),
        ("batch_bytes", "64K"),
        // Fixed batches: the bound on repeats below counts in them.
        ("batch_bytes_max", "64K"),
        ("workers", "2"),
        ("metadata_key", "src"),
    ];
    let inst = Plugin::load().start(&props).expect("init");
    let mut idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_secs(2) {
        let out = PathBuf::from(&out);
        let (_, data) = inst.collect_stored(move |bytes| host::store_event_lines(bytes, &out));
        std::thread::sleep(Duration::from_millis(TICK_MS));
        if !data.is_empty() {
            idle_since = Instant::now();
        }
    }
}

fn run_child(dir: &Path, db: &Path, out: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "kill::kill_child_host_process",
            "--nocapture",
        ])
        .env("KILL_DIR", dir)
        .env("KILL_DB", db)
        .env("KILL_OUT", out)
        .env("HOST_LOG_LEVEL", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn sigkill_at_random_points_loses_nothing() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("bucket");
    let mut expected = HashMap::new();
    for copy in 0..COPIES {
        for o in data::objects() {
            let key = o.key.replace(".json.gz", &format!("-{copy}.json.gz"));
            let p = dir.join(&key);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, &o.gz).unwrap();
            for e in o.events() {
                let id = crate::json::J::parse(&e)
                    .str("eventID")
                    .unwrap()
                    .to_string();
                expected.insert(format!("{key} {id}"), 0usize);
            }
        }
    }
    let db = work.path().join("state.json");
    let out = work.path().join("stored");
    let mut seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill test seed {seed}");
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let stored = || {
        std::fs::read_to_string(&out)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let mut mid_run = 0;
    for _ in 0..KILLS {
        let mut child = run_child(&dir, &db, &out);
        std::thread::sleep(Duration::from_millis(150 + next() % 1200));
        child.kill().unwrap();
        child.wait().unwrap();
        if stored() < expected.len() {
            mid_run += 1;
        }
    }
    assert!(
        mid_run >= KILLS / 2,
        "only {mid_run} kills landed while work remained"
    );
    let mut last = run_child(&dir, &db, &out);
    let end = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = last.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "the final run did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());

    let lines = host::stored_lines(&out);
    let mut unknown = 0;
    for line in &lines {
        match expected.get_mut(line.as_str()) {
            Some(n) => *n += 1,
            None => unknown += 1,
        }
    }
    let lost = expected.values().filter(|n| **n == 0).count();
    let dups: usize = expected.values().map(|n| n.saturating_sub(1)).sum();
    // One batch is at most batch_bytes plus one chunk; a real event is at least ~500 bytes.
    // A batch is committed at the first collect at least COMMIT_DELAY (500 ms) after its
    // cleanup, so with this host's 40 ms tick up to 500/40 + 2 batches are uncommitted at
    // a kill.
    let per_batch_bound = (BATCH_BYTES + BATCH_BYTES / 4) / 500 * (500 / TICK_MS as usize + 2);
    eprintln!(
        "kill test: {} events expected, {} stored lines, {KILLS} kills ({mid_run} mid-run), lost {lost}, duplicates {dups}",
        expected.len(),
        lines.len()
    );
    assert_eq!((unknown, lost), (0, 0), "nothing unknown, nothing lost");
    assert!(
        dups <= KILLS * per_batch_bound,
        "{dups} duplicates for {KILLS} kills"
    );
}
