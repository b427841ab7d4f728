//! The `fb-backlog` stage (issue 20, item 1): how fast the real Fluent Bit moves a backlog
//! through the plugin, and what it costs in memory. The bench corpus (`COPIES` x the
//! bundled objects) copied into `DAYS` day folders (580,000 events) is read by the release plugin loaded into the Fluent Bit
//! named by `FLUENT_BIT`, whose `http` output posts gzipped JSON lines to a receiver on
//! loopback, as the Sumo Logic sample does. The time runs from the start to the last line
//! received; the peak RSS is the process's `VmHWM`; the idle RSS is `VmRSS` read once the
//! backlog is done and the process has been idle for `SETTLE`.
//!
//! Two runs side by side: the defaults (batches grow while a backlog waits) and the same
//! with `batch_bytes_max` equal to `batch_bytes` (a fixed 4M per collect, as before).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::receiver::Receiver;
use crate::{COPIES, DAY_DIR, corpus_dir, host, proc_status_kb, repo, vm_hwm_kb, watch_host};

/// The backlog: the bench corpus copied into this many day folders.
const DAYS: usize = 5;

/// How long the process sits idle before its resident set is read.
const SETTLE: Duration = Duration::from_secs(40);

pub struct Run {
    pub secs: f64,
    pub events: u64,
    pub peak_kb: u64,
    pub idle_kb: u64,
    pub requests: usize,
}

/// The row: the defaults, and the fixed 4M batches of before, in one run.
pub fn run(fb: &Path) -> (f64, u64, u64, String) {
    let adaptive = backlog(fb, &[]);
    let fixed = backlog(fb, &[("batch_bytes_max", "4M")]);
    let note = format!(
        "real {} at the defaults, http output (gzip, json_lines) to loopback: {:.0} events/s, peak {:.0} MB, idle after {} s {:.0} MB, {} requests; with batch_bytes_max 4M (fixed batches): {:.0} events/s, peak {:.0} MB, idle {:.0} MB ({:.1}x faster adaptive)",
        fb.file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
        adaptive.events as f64 / adaptive.secs,
        adaptive.peak_kb as f64 / 1024.0,
        SETTLE.as_secs(),
        adaptive.idle_kb as f64 / 1024.0,
        adaptive.requests,
        fixed.events as f64 / fixed.secs,
        fixed.peak_kb as f64 / 1024.0,
        fixed.idle_kb as f64 / 1024.0,
        fixed.secs / adaptive.secs,
    );
    (adaptive.secs, adaptive.events, adaptive.peak_kb, note)
}

/// The bench corpus's files copied into [`DAYS`] day folders (written once).
fn big_corpus() -> std::path::PathBuf {
    let root = repo().join("target/bench-corpus-days");
    let src = corpus_dir().join(DAY_DIR);
    let files: Vec<_> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for day in 0..DAYS {
        let dir = root.join(DAY_DIR.replace("/10", &format!("/{:02}", 10 + day)));
        if std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0) == files.len() {
            continue;
        }
        std::fs::create_dir_all(&dir).unwrap();
        for f in &files {
            std::fs::copy(f, dir.join(f.file_name().unwrap())).unwrap();
        }
    }
    root
}

/// One Fluent Bit over the corpus with `settings` added to the defaults.
pub fn backlog(fb: &Path, settings: &[(&str, &str)]) -> Run {
    let want = 2_900 * COPIES * DAYS;
    let corpus = big_corpus();
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("fluent-bit.yaml");
    let extra: String = settings
        .iter()
        .map(|(k, v)| format!("      {k}: '{v}'\n"))
        .collect();
    std::fs::write(
        &conf,
        format!(
            "service:\n  flush: 1\n  log_level: warn\n  storage.path: {storage}\nplugins:\n  - {so}\npipeline:\n  inputs:\n    - name: cloudtrail\n      tag: ct\n      dir: {corpus}\n      db: {db}\n      start_time: '2023-07-01T00:00:00Z'\n{extra}  outputs:\n    - name: http\n      match: '*'\n      host: 127.0.0.1\n      port: {port}\n      uri: /bench\n      format: json_lines\n      json_date_key: timestamp\n      json_date_format: iso8601\n      compress: gzip\n      retry_limit: false\n",
            so = host::so_path().display(),
            corpus = corpus.display(),
            db = dir.path().join("state.db").display(),
            storage = dir.path().join("storage").display(),
            port = receiver.port(),
        ),
    )
    .unwrap();
    let mut child = Command::new(fb)
        .arg("-c")
        .arg(&conf)
        .envs(
            std::env::var("FB_BACKLOG_ENV")
                .ok()
                .and_then(|e| {
                    e.split_once('=')
                        .map(|(k, v)| vec![(k.to_string(), v.to_string())])
                })
                .unwrap_or_default(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start Fluent Bit");
    let (secs, mut peak_kb) = watch_host(
        &mut child,
        Duration::from_millis(100),
        |_| receiver.line_count() >= want,
        || format!("{} of {want} lines", receiver.line_count()),
    );
    std::thread::sleep(SETTLE);
    peak_kb = peak_kb.max(vm_hwm_kb(child.id()));
    let idle_kb = proc_status_kb(child.id(), "VmRSS");
    let _ = child.kill();
    let _ = child.wait();
    Run {
        secs,
        events: receiver.line_count() as u64,
        peak_kb,
        idle_kb,
        requests: receiver.requests().len(),
    }
}
