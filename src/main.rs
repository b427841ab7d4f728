//! `cloudtrail-s3`: the engine as a command, writing one JSON event per line to stdout
//! (for a pipe) or posting them to an HTTP receiver (Vector's acknowledged `http_server`
//! source, a Sumo Logic HTTP source).
//!
//! On stdout a line counts as delivered once it is written and flushed; over HTTP once the
//! receiver answered 2xx. Only then does the state move, so a restart repeats at most what
//! was on its way when it stopped.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cloudtrail_s3::config::Secret;
use cloudtrail_s3::encode::ndjson::NdjsonEncoder;
use cloudtrail_s3::engine::StartError;
use cloudtrail_s3::ledger::LedgerError;
use cloudtrail_s3::log::{Level, Logger, StderrSink};
use cloudtrail_s3::output::http::settings::{HttpConfig, HttpSettings};
use cloudtrail_s3::{Config, Engine};

mod verify_command;

const USAGE: &str = "\
cloudtrail-s3: ship AWS CloudTrail events from S3 (or a folder) as JSON lines, on stdout
or posted to an HTTP receiver (the [http] table of the settings, or --http-url)

Usage: cloudtrail-s3 --config FILE [--once] [--http-url URL] [--exit-with-parent] [-v | -q]
       cloudtrail-s3 --config FILE --check-config
       cloudtrail-s3 status (--db FILE | --dynamodb-table NAME) [--json]
       cloudtrail-s3 retry (--db FILE | --dynamodb-table NAME) (KEY... | --all-failed)
       cloudtrail-s3 verify --config FILE --from TIME [--to TIME] [--json] [--no-ledger]

Options:
  -c, --config FILE   settings, TOML (.toml) or YAML (.yaml/.yml); same keys as the
                      Fluent Bit plugin's properties (see README)
      --once          exit when everything the first scan found (past scan_claims: the
                      scans that follow it at once) has been delivered
      --http-url URL  post the lines to URL (sets the [http] table's url); a batch
                      counts as delivered when the receiver answers 2xx
      --exit-with-parent
                      stop (saving the state) when the parent process is gone: under
                      a supervisor such as Vector's exec source, a supervisor killed
                      alone must not leave this process holding the ledger
      --check-config  validate the settings and exit
  -v, --verbose       debug logging on stderr (or RUST_LOG=error|warn|info|debug)
  -q, --quiet         warnings and errors only
  -h, --help          this text
  -V, --version       the version

SIGTERM or SIGINT: stop after the batch being written (over HTTP: once the requests on
the wire are answered); the state is saved.
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
  --dynamodb-table NAME [--dynamodb-endpoint URL] [--region R]
                      in place of --db: a shared ledger ('ledger.dynamodb_table'), read
                      and changed while shippers run (credentials from the SDK's chain)
  Exit codes: 0 done; 1 the ledger is missing or held by a running shipper, or (retry)
  some KEY was not failed or not known; 2 bad usage.

Proof from CloudTrail's signed digests (log file validation on the trail):
  verify --config FILE --from TIME [--to TIME]
                      for the settings' bucket, every digest ending in the range (TIME:
                      RFC 3339 or -DURATION, e.g. -24h; --to defaults to now): its
                      signature (CloudTrail's public keys, ListPublicKeys), its link to
                      the previous digest (walked forwards: deleted digests show as a
                      gap, however many in a row), and each log file it lists (present,
                      with the SHA-256 it names). Per digest: complete or INCOMPLETE with
                      the missing and altered keys. With the settings' ledger ('db', which
                      needs the shipper stopped, or 'ledger.dynamodb_table'), each file is
                      checked against what was shipped: its SHA-256 as shipped (no
                      download), and a file never shipped is reported.
        [--no-ledger] the bucket only
        [--json]      the same as one JSON document
        [--cloudtrail-endpoint URL]
                      CloudTrail's endpoint (a VPC endpoint, or a test stand-in)
  Exit codes: 0 every digest verified and every listed file present and unaltered;
  1 something missing, altered, unsigned or unreadable; 2 bad usage or settings.
";

struct Args {
    config: PathBuf,
    once: bool,
    check_only: bool,
    level: Level,
    http_url: Option<Secret>,
    exit_with_parent: bool,
}

enum Parsed {
    Run(Args),
    Exit(ExitCode),
}

fn parse_args() -> anyhow::Result<Parsed> {
    let mut config = None;
    let mut once = false;
    let mut check_only = false;
    let mut http_url = None;
    let mut exit_with_parent = false;
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
            "--http-url" => {
                http_url = Some(Secret::new(args.next().context("--http-url needs a URL")?));
            }
            "--exit-with-parent" => exit_with_parent = true,
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
        http_url,
        exit_with_parent,
    }))
}

/// Reads and checks the settings file (the engine's keys and the `[http]` table); errors
/// name the file, line and column or the key, never the file's text.
fn load_settings(
    path: &Path,
    http_url: Option<Secret>,
) -> anyhow::Result<(Config, Option<HttpConfig>)> {
    let (settings, http) =
        cloudtrail_s3::config::load_file_with::<HttpSettings>(path, Some("http"))?;
    let mut http = http.unwrap_or_default();
    if let Some(url) = http_url {
        http.url = Some(url);
    }
    let http = http.validate()?;
    Ok((settings.validate()?, http))
}

fn main() -> ExitCode {
    if let Some(command) = std::env::args()
        .nth(1)
        .filter(|a| a == "status" || a == "retry")
    {
        return operator(&command, std::env::args().skip(2));
    }
    if std::env::args().nth(1).as_deref() == Some("verify") {
        return verify_command::run(std::env::args().skip(2));
    }
    let args = match parse_args() {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Exit(code)) => return code,
        Err(e) => {
            eprintln!("cloudtrail-s3: {e:#}");
            return ExitCode::from(2);
        }
    };
    let (config, http) = match load_settings(&args.config, args.http_url.clone()) {
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
    match run(config, http, &args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // stderr may be gone with a dead supervisor: no panic over a last line.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "cloudtrail-s3: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(mut config: Config, http: Option<HttpConfig>, args: &Args) -> anyhow::Result<()> {
    if let Some(h) = &http {
        // The engine closes a chunk at the first event past a quarter of `batch_bytes`:
        // with that at half a request body, each chunk travels in one request (unless one
        // event is that large), so a stop that leaves one request unanswered can tell which
        // chunks the others delivered.
        config.batch_bytes = config.batch_bytes.min(2 * h.max_body_bytes);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let batch_bytes = config.batch_bytes;
    let encoder = Arc::new(NdjsonEncoder {
        metadata_key: config.metadata_key.clone(),
        time_key: http.as_ref().and_then(|h| h.time_key.clone()),
    });
    let log = Logger::new(Arc::new(StderrSink(args.level)));
    let parent_gone = Arc::new(AtomicBool::new(false));
    if args.exit_with_parent {
        watch_parent(stop.clone(), parent_gone.clone(), log.clone());
    }
    let has_db = config.db.is_some() || config.shared_ledger.is_some();
    let Some(mut engine) = start_engine(config, encoder, &log, &stop)? else {
        return Ok(());
    };
    let mut progress = Progress::new(std::io::stderr().is_terminal());
    let result = match http {
        Some(http) => {
            log.info(format_args!(
                "http output: posting to {} (gzip {}, {} requests in flight, bodies of at most {} bytes); a batch is committed once answered 2xx",
                http.display_url(),
                if http.gzip { "on" } else { "off" },
                http.max_in_flight,
                http.max_body_bytes
            ));
            let acked = engine.observe().clone();
            cloudtrail_s3::output::http::run(&engine, http, &stop, args.once, &mut |e| {
                progress.set(acked.output.bytes_acked.load(Ordering::Relaxed));
                progress.draw(e);
            })
            .map_err(anyhow::Error::new)
        }
        None => {
            use cloudtrail_s3::output::stdout;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let ended = stdout::run(
                &engine,
                &mut out,
                batch_bytes,
                &stop,
                args.once,
                &mut |e, n| {
                    progress.add(n);
                    progress.draw(e);
                },
            );
            match ended {
                Ok(stdout::End::Stopped) => Ok(()),
                Ok(stdout::End::ReaderGone) => {
                    log.info(format_args!("stdout closed by the reader; stopping"));
                    Ok(())
                }
                Err(e) => Err(anyhow::Error::new(e).context("writing to stdout")),
            }
        }
    };
    if stop.load(Ordering::Relaxed) && !parent_gone.load(Ordering::Relaxed) {
        log.info(format_args!(
            "signal received; stopping, with the state saved"
        ));
    }
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

/// How long a new instance waits for the ledger while another process holds it: a
/// supervisor (Vector) restarts the command while the old one may still be saving its
/// state after its parent went away.
const LEDGER_WAIT: Duration = Duration::from_secs(30);

/// Starts the engine, waiting up to [`LEDGER_WAIT`] for a ledger held by another process;
/// `None` when stopped while waiting.
fn start_engine(
    config: Config,
    encoder: Arc<NdjsonEncoder>,
    log: &Logger,
    stop: &AtomicBool,
) -> anyhow::Result<Option<Engine>> {
    let deadline = Instant::now() + LEDGER_WAIT;
    let mut said = false;
    loop {
        match Engine::start(config.clone(), encoder.clone(), log.clone()) {
            Ok(engine) => return Ok(Some(engine)),
            Err(StartError::State(e @ LedgerError::InUse { .. })) if Instant::now() < deadline => {
                if !said {
                    log.warn(format_args!(
                        "{e}; waiting up to {} s for it to be let go",
                        LEDGER_WAIT.as_secs()
                    ));
                    said = true;
                }
                if stop.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sets `stop` when the parent process is gone (this process was handed to another
/// parent). Polled, since Linux's parent-death signal follows the parent *thread* that
/// started us, and a supervisor's runtime may end that thread while the process lives on.
fn watch_parent(stop: Arc<AtomicBool>, gone: Arc<AtomicBool>, log: Logger) {
    let parent = std::os::unix::process::parent_id();
    let thread_log = log.clone();
    let spawned = std::thread::Builder::new()
        .name("parent-watch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                if std::os::unix::process::parent_id() != parent {
                    gone.store(true, Ordering::Relaxed);
                    stop.store(true, Ordering::Relaxed);
                    thread_log.warn(format_args!(
                        "the parent process (pid {parent}) is gone; stopping, with the state saved, so the supervisor's next instance takes over"
                    ));
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        log.error(format_args!(
            "--exit-with-parent: cannot watch the parent: {e}"
        ));
    }
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

    fn set(&mut self, bytes: u64) {
        self.bytes = bytes;
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
    let mut table = None;
    let mut table_endpoint = None;
    let mut region = None;
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
            "--dynamodb-table" => match args.next() {
                Some(t) => table = Some(t),
                None => return usage("--dynamodb-table needs a table name"),
            },
            "--dynamodb-endpoint" => match args.next() {
                Some(e) => table_endpoint = Some(e),
                None => return usage("--dynamodb-endpoint needs a URL"),
            },
            "--region" => match args.next() {
                Some(r) => region = Some(r),
                None => return usage("--region needs a region"),
            },
            "--json" if command == "status" => json = true,
            "--all-failed" if command == "retry" => all_failed = true,
            flag if flag.starts_with('-') => return usage(&format!("unknown argument '{flag}'")),
            _ if command == "retry" => keys.push(arg),
            other => return usage(&format!("unknown argument '{other}'")),
        }
    }
    let (db, shared) = match (db, table) {
        (Some(_), Some(_)) => return usage("give either --db FILE or --dynamodb-table NAME"),
        (None, None) => return usage("--db FILE (or --dynamodb-table NAME) is required"),
        (Some(db), None) => (db, None),
        (None, Some(t)) => (PathBuf::from(format!("dynamodb:{t}")), Some(t)),
    };
    if shared.is_none() && (table_endpoint.is_some() || region.is_some()) {
        return usage("--dynamodb-endpoint and --region go with --dynamodb-table");
    }
    let selection = match (all_failed, keys.is_empty()) {
        (true, false) => return usage("give either KEY... or --all-failed, not both"),
        (true, true) => Some(ops::Selection::AllFailed),
        (false, false) => Some(ops::Selection::Ids(keys)),
        (false, true) if command == "retry" => return usage("give KEY... or --all-failed"),
        (false, true) => None,
    };
    let now = cloudtrail_s3::timestamp::EventTime::now().secs();
    let opened = match &shared {
        Some(t) => ops::open_shared(t, table_endpoint.as_deref(), region.as_deref()),
        None => ops::open(&db, now),
    };
    let ledger = match opened {
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
