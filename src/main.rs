//! `cloudtrail-s3`: the engine as a command, writing one JSON event per line to stdout
//! (for Vector's `exec` source, or a pipe).
//!
//! A line counts as delivered once it is written and stdout is flushed; only then does the
//! state move, so a restart repeats at most the batch being written when it stopped.

use std::io::{ErrorKind, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use cloudtrail_s3::log::{Level, Logger, StderrSink};
use cloudtrail_s3::ndjson::NdjsonEncoder;
use cloudtrail_s3::{Engine, Settings};

const USAGE: &str = "\
cloudtrail-s3: ship AWS CloudTrail events from S3 (or a folder) as JSON lines on stdout

Usage: cloudtrail-s3 --config FILE [--once] [-v | -q]
       cloudtrail-s3 --config FILE --check-config

Options:
  -c, --config FILE   settings, TOML (.toml) or YAML (.yaml/.yml); same keys as the
                      Fluent Bit plugin's properties (see README)
      --once          exit when everything the first scan found has been written
      --check-config  validate the settings and exit
  -v, --verbose       debug logging on stderr
  -q, --quiet         warnings and errors only
  -h, --help          this text
  -V, --version       the version

Exit codes: 0 done (or stdout closed by the reader), 1 runtime failure, 2 bad usage or settings.
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
    let mut level = Level::Info;
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

/// Reads the settings file; YAML by extension, TOML otherwise.
fn load_settings(path: &PathBuf) -> anyhow::Result<Settings> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let yaml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    if yaml {
        serde_yaml_ng::from_str(&text).with_context(|| format!("{}", path.display()))
    } else {
        toml::from_str(&text).with_context(|| format!("{}", path.display()))
    }
}

fn main() -> ExitCode {
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
    let batch_bytes = config.batch_bytes;
    let encoder = Arc::new(NdjsonEncoder {
        metadata_key: config.metadata_key.clone(),
    });
    let log = Logger::new(Arc::new(StderrSink(args.level)));
    let mut engine = Engine::start(config, encoder, log.clone())?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    loop {
        if let Some(batch) = engine.take(batch_bytes, Duration::from_millis(200)) {
            if !batch.bytes.is_empty() {
                match out.write_all(&batch.bytes).and_then(|()| out.flush()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::BrokenPipe => {
                        log.info(format_args!("stdout closed by the reader; stopping"));
                        break;
                    }
                    Err(e) => {
                        engine.shutdown();
                        return Err(e).context("writing to stdout");
                    }
                }
            }
            engine.commit(&batch.marks);
        } else if args.once && engine.is_idle() {
            break;
        }
    }
    engine.shutdown();
    let s = engine.stats();
    log.info(format_args!(
        "done: {} objects shipped, {} failed, {} events",
        s.objects_done, s.objects_failed, s.events
    ));
    Ok(())
}
