//! `cloudtrail-s3`: the engine as a command, writing one JSON event per line to stdout
//! (for Vector's `exec` source, or a pipe).
//!
//! A line counts as delivered once it is written and stdout is flushed; only then does the
//! state move, so a restart repeats at most the batch being written when it stopped.

use std::io::{ErrorKind, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cloudtrail_s3::encode::ndjson::NdjsonEncoder;
use cloudtrail_s3::log::{Level, Logger, StderrSink};
use cloudtrail_s3::{Engine, Settings};

const USAGE: &str = "\
cloudtrail-s3: ship AWS CloudTrail events from S3 (or a folder) as JSON lines on stdout

Usage: cloudtrail-s3 --config FILE [--once] [-v | -q]
       cloudtrail-s3 --config FILE --check-config
       cloudtrail-s3 status --db FILE [--json]
       cloudtrail-s3 retry --db FILE (KEY... | --all-failed)

Options:
  -c, --config FILE   settings, TOML (.toml) or YAML (.yaml/.yml); same keys as the
                      Fluent Bit plugin's properties (see README)
      --once          exit when everything the first scan found has been written
      --check-config  validate the settings and exit
  -v, --verbose       debug logging on stderr (or RUST_LOG=error|warn|info|debug)
  -q, --quiet         warnings and errors only
  -h, --help          this text
  -V, --version       the version

SIGTERM or SIGINT: stop after the batch being written; the state is saved.
A progress line (objects, events, bytes, rate) is drawn on stderr when it is a terminal.

Exit codes: 0 done, stopped by a signal, or stdout closed by the reader;
            1 runtime failure; 2 bad usage or settings.

Operator commands, on the ledger (the 'db' setting) of a stopped shipper (only one
process may open a ledger, because two writers would undo each other's work):
  status --db FILE    per account and region: the watermark, its day and the lag; counts
                      of open, done and failed objects; every failed object with its
                      reason and position; open objects with attempts, next try and last
        [--json]      error. --json: the same as one JSON document.
  retry --db FILE KEY...
                      put failed objects back in line (status open, position kept); KEY
                      is an id as status prints it: s3://BUCKET/KEY or dir:PATH
        --all-failed  every failed object
  Exit codes: 0 done; 1 the ledger is missing or held by a running shipper, or (retry)
  some KEY was not failed or not known; 2 bad usage.
";

struct Args {
    config: PathBuf,
    once: bool,
    check_only: bool,
    level: Level,
}

enum Parsed {
    Run(Args),
    Exit(ExitCode),
}

fn parse_args() -> anyhow::Result<Parsed> {
    let mut config = None;
    let mut once = false;
    let mut check_only = false;
    let mut level = match std::env::var("RUST_LOG")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "error" => Level::Error,
        "warn" => Level::Warn,
        "debug" => Level::Debug,
        "trace" => Level::Trace,
        _ => Level::Info,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(Parsed::Exit(ExitCode::SUCCESS));
            }
            "-V" | "--version" => {
                println!("cloudtrail-s3 {}", env!("CARGO_PKG_VERSION"));
                return Ok(Parsed::Exit(ExitCode::SUCCESS));
            }
            "-c" | "--config" => {
                config = Some(PathBuf::from(args.next().context("--config needs a file")?));
            }
            "--once" => once = true,
            "--check-config" => check_only = true,
            "-v" | "--verbose" => level = Level::Debug,
            "-q" | "--quiet" => level = Level::Warn,
            other => bail!("unknown argument '{other}' (see --help)"),
        }
    }
    let config = config.context("--config FILE is required (see --help)")?;
    Ok(Parsed::Run(Args {
        config,
        once,
        check_only,
        level,
    }))
}

/// Reads the settings file (see [`cloudtrail_s3::config::load_file`]); its errors name the
/// file, line and column, never the file's text.
fn load_settings(path: &Path) -> anyhow::Result<Settings> {
    Ok(cloudtrail_s3::config::load_file(path)?)
}

fn main() -> ExitCode {
    if let Some(command) = std::env::args()
        .nth(1)
        .filter(|a| a == "status" || a == "retry")
    {
        return operator(&command, std::env::args().skip(2));
    }
    let args = match parse_args() {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Exit(code)) => return code,
        Err(e) => {
            eprintln!("cloudtrail-s3: {e:#}");
            return ExitCode::from(2);
        }
    };
    let config = match load_settings(&args.config).and_then(|s| Ok(s.validate()?)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cloudtrail-s3: {e:#}");
            return ExitCode::from(2);
        }
    };
    if args.check_only {
        eprintln!("cloudtrail-s3: {} is valid", args.config.display());
        return ExitCode::SUCCESS;
    }
    match run(config, &args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloudtrail-s3: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(config: cloudtrail_s3::Config, args: &Args) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let batch_bytes = config.batch_bytes;
    let encoder = Arc::new(NdjsonEncoder {
        metadata_key: config.metadata_key.clone(),
    });
    let log = Logger::new(Arc::new(StderrSink(args.level)));
    let has_db = config.db.is_some();
    let mut engine = Engine::start(config, encoder, log.clone())?;
    let mut progress = Progress::new(std::io::stderr().is_terminal());
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            log.info(format_args!("signal received; stopping"));
            break Ok(());
        }
        if let Some(batch) = engine.take(batch_bytes, Duration::from_millis(200)) {
            if !batch.bytes.is_empty() {
                match out.write_all(&batch.bytes).and_then(|()| out.flush()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::BrokenPipe => {
                        log.info(format_args!("stdout closed by the reader; stopping"));
                        break Ok(());
                    }
                    Err(e) => break Err(anyhow::Error::new(e).context("writing to stdout")),
                }
            }
            engine.commit(&batch.marks);
            progress.add(batch.bytes.len());
        } else if args.once && engine.is_idle() {
            break Ok(());
        }
        progress.draw(&engine);
    };
    progress.finish();
    engine.shutdown();
    let s = engine.stats();
    log.info(format_args!(
        "done: {} objects shipped, {} failed, {} events",
        s.objects_done, s.objects_failed, s.events
    ));
    // --once: objects still open (a transient failure waiting out its backoff) are not
    // shipped; say so, and fail, rather than exit as if everything was.
    let open = if args.once && result.is_ok() {
        engine.open_objects()
    } else {
        0
    };
    if open > 0 {
        bail!(
            "{open} objects found but not shipped yet (a transient failure; see the log): {}",
            if has_db {
                "the next run ships them from where they stopped"
            } else {
                "without 'db' they are not remembered"
            }
        );
    }
    result
}

/// The progress line for long backfills at a terminal.
struct Progress {
    on: bool,
    started: Instant,
    last: Instant,
    bytes: u64,
}

impl Progress {
    fn new(on: bool) -> Self {
        let now = Instant::now();
        Self {
            on,
            started: now,
            last: now,
            bytes: 0,
        }
    }

    fn add(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }

    fn draw(&mut self, engine: &Engine) {
        if !self.on || self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        let s = engine.stats();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        // During a backfill, the same figures as its log lines: done of found, time left.
        let backfill = engine.backfill().map_or(String::new(), |b| {
            format!(
                ", backfill {} of {}{}",
                b.finished,
                b.found,
                b.eta_secs
                    .map_or(String::new(), |eta| format!(", about {eta} s left"))
            )
        });
        eprint!(
            "\r{} objects, {} failed, {} events, {:.1} MB, {:.0} events/s{backfill}   ",
            s.objects_done,
            s.objects_failed,
            s.events,
            self.bytes as f64 / 1e6,
            s.events as f64 / secs
        );
    }

    fn finish(&self) {
        if self.on && self.last != self.started {
            eprintln!();
        }
    }
}

/// `status` and `retry`: parse their flags, open the ledger (never created, never shared
/// with a running shipper) and print what [`cloudtrail_s3::ops`] reports.
fn operator(command: &str, args: impl Iterator<Item = String>) -> ExitCode {
    use cloudtrail_s3::ops;

    let mut db = None;
    let mut json = false;
    let mut all_failed = false;
    let mut keys = Vec::new();
    let mut args = args;
    let usage = |e: &str| {
        eprintln!("cloudtrail-s3 {command}: {e} (see --help)");
        ExitCode::from(2)
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--db" => match args.next() {
                Some(f) => db = Some(PathBuf::from(f)),
                None => return usage("--db needs a file"),
            },
            "--json" if command == "status" => json = true,
            "--all-failed" if command == "retry" => all_failed = true,
            flag if flag.starts_with('-') => return usage(&format!("unknown argument '{flag}'")),
            _ if command == "retry" => keys.push(arg),
            other => return usage(&format!("unknown argument '{other}'")),
        }
    }
    let Some(db) = db else {
        return usage("--db FILE is required");
    };
    let selection = match (all_failed, keys.is_empty()) {
        (true, false) => return usage("give either KEY... or --all-failed, not both"),
        (true, true) => Some(ops::Selection::AllFailed),
        (false, false) => Some(ops::Selection::Ids(keys)),
        (false, true) if command == "retry" => return usage("give KEY... or --all-failed"),
        (false, true) => None,
    };
    let now = cloudtrail_s3::timestamp::EventTime::now().secs();
    let ledger = match ops::open(&db, now) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cloudtrail-s3 {command}: {e}");
            return ExitCode::from(1);
        }
    };
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("cloudtrail-s3 {command}: {e}");
        ExitCode::from(1)
    };
    let Some(selection) = selection else {
        let report = match ops::status(&ledger, &db, now) {
            Ok(r) => r,
            Err(e) => return fail(&e),
        };
        if json {
            match serde_json::to_string_pretty(&report) {
                Ok(text) => println!("{text}"),
                Err(e) => return fail(&e),
            }
        } else {
            print!("{}", report.to_text());
        }
        return ExitCode::SUCCESS;
    };
    match ops::retry(&ledger, &selection, now) {
        Ok(outcome) => {
            print!("{}", outcome.to_text());
            if outcome.all_put_back() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => fail(&e),
    }
}
