//! The real `fluent-bit` (from `FLUENT_BIT`): its version, a generated configuration (YAML
//! or classic) that loads the plugin by absolute path, and a running process.
//!
//! AWS credentials reach the plugin through the environment (the SDK's default chain, as
//! the samples say), never through a configuration file, so nothing a test writes or
//! prints holds a secret. Fluent Bit logs in UTC (`TZ=UTC`), so its log times can be
//! compared with the test's clock.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::child::Child;
use crate::receiver::Receiver;
use crate::server;
use crate::wait::wait_until;

/// How long a Fluent Bit start, stop or full run over the bundled data may take before a
/// test calls it hung (generous: a loaded 2-core machine).
pub const RUN_LIMIT: Duration = Duration::from_secs(120);
pub const STOP_LIMIT: Duration = Duration::from_secs(60);

/// What Fluent Bit itself logs at error, on the start after a SIGKILL, for a chunk file it
/// had created and not yet written when it was killed (seen on 5.1.1, `storage_backlog`):
/// its own storage recovery of an empty chunk, with no records to lose. The trials that
/// allow it still count every event at the receiver.
pub const EMPTY_CHUNK_AFTER_KILL: &str = "removing empty chunk from the queue";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

pub struct FluentBit {
    pub path: PathBuf,
    pub version: Version,
}

impl FluentBit {
    /// `None` when `FLUENT_BIT` is unset; an error when it does not name a working binary.
    pub fn from_env() -> Option<Result<FluentBit, String>> {
        let path = PathBuf::from(std::env::var_os("FLUENT_BIT")?);
        Some(Self::at(&path))
    }

    fn at(path: &Path) -> Result<FluentBit, String> {
        let path = std::fs::canonicalize(path)
            .map_err(|e| format!("FLUENT_BIT={}: {e}", path.display()))?;
        let out = Command::new(&path)
            .arg("--version")
            .output()
            .map_err(|e| format!("{} --version: {e}", path.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "Fluent Bit v5.1.1"
        let version = text
            .lines()
            .find_map(|l| l.strip_prefix("Fluent Bit v"))
            .and_then(|v| {
                let mut n = v.trim().split('.').map(|p| p.parse::<u32>().ok());
                Some(Version(n.next()??, n.next()??, n.next()??))
            })
            .ok_or_else(|| format!("{} --version printed {text:?}", path.display()))?;
        Ok(FluentBit { path, version })
    }

    pub fn label(&self) -> String {
        let Version(a, b, c) = self.version;
        format!("Fluent Bit {a}.{b}.{c}")
    }

    /// A name for a trial's bucket, queue and table on this host: `PREFIX-fluentbitABC`
    /// (lower case: bucket names take no capitals).
    pub fn tag(&self, prefix: &str) -> String {
        let Version(a, b, c) = self.version;
        format!("{prefix}-fluentbit{a}{b}{c}")
    }

    /// 5.1.1 reads the registration's `config_map` and refuses unknown keys (ABI doc 2.6).
    pub fn checks_unknown_keys(&self) -> bool {
        self.version >= Version(5, 1, 1)
    }

    /// Starts `fluent-bit -c conf` with the test environment plus `env`.
    pub fn start(&self, work: &Path, name: &str, conf: &Path, env: &[(&str, String)]) -> Fb {
        let mut cmd = Command::new(&self.path);
        cmd.arg("-c").arg(conf).current_dir(work);
        for (k, v) in test_env() {
            cmd.env(k, v);
        }
        for k in ["AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"] {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let log = work.join(format!("{name}.stderr.log"));
        Fb(Child::spawn(
            &format!("{} ({name})", self.label()),
            cmd,
            &log,
        ))
    }
}

/// The environment of every host process: UTC logs, the test server's credentials through
/// the SDK's default chain, no shared AWS config or instance metadata from this machine.
pub fn test_env() -> Vec<(&'static str, String)> {
    vec![
        ("TZ", "UTC".into()),
        ("AWS_ACCESS_KEY_ID", server::ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY", server::SECRET_KEY.into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
    ]
}

/// The plugin the tests load, by absolute path (`cargo build -p cloudtrail-s3-plugin`
/// puts it beside this test binary's `deps/`).
pub fn plugin_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let so = dir.join("libcloudtrail_s3_plugin.so");
    assert!(
        so.exists(),
        "{} is missing: build it first (cargo build -p cloudtrail-s3-plugin; scripts/test does)",
        so.display()
    );
    so
}

pub type Section = Vec<(String, String)>;

pub fn section(pairs: &[(&str, &str)]) -> Section {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A Fluent Bit configuration, written as YAML or classic.
pub struct Conf {
    pub service: Section,
    pub plugins: Vec<PathBuf>,
    pub inputs: Vec<Section>,
    pub outputs: Vec<Section>,
}

impl Conf {
    /// Flush every second, info logs, the plugin loaded by absolute path.
    pub fn new() -> Conf {
        Conf {
            service: section(&[("flush", "1"), ("log_level", "info")]),
            plugins: vec![plugin_path()],
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Filesystem buffering under `dir` (as the samples do).
    pub fn with_storage(mut self, dir: &Path) -> Conf {
        self.service.extend(section(&[
            ("storage.path", dir.join("flb-storage").to_str().unwrap()),
            ("storage.sync", "full"),
            ("storage.backlog.mem_limit", "64M"),
        ]));
        self
    }

    pub fn service(mut self, key: &str, value: &str) -> Conf {
        self.service.retain(|(k, _)| k != key);
        self.service.push((key.into(), value.into()));
        self
    }

    pub fn input(mut self, s: Section) -> Conf {
        self.inputs.push(s);
        self
    }

    pub fn output(mut self, s: Section) -> Conf {
        self.outputs.push(s);
        self
    }

    pub fn write_yaml(&self, dir: &Path) -> PathBuf {
        let q = |v: &str| format!("'{}'", v.replace('\'', "''"));
        let mut y = String::from("service:\n");
        for (k, v) in &self.service {
            y += &format!("  {k}: {}\n", q(v));
        }
        y += "plugins:\n";
        for p in &self.plugins {
            y += &format!("  - {}\n", p.display());
        }
        y += "pipeline:\n  inputs:\n";
        for s in &self.inputs {
            y += &yaml_item(s, &q);
        }
        y += "  outputs:\n";
        for s in &self.outputs {
            y += &yaml_item(s, &q);
        }
        let path = dir.join("fluent-bit.yaml");
        std::fs::write(&path, y).unwrap();
        path
    }

    /// The classic file and, beside it, the plugins file it names.
    pub fn write_classic(&self, dir: &Path) -> PathBuf {
        let mut p = String::from("[PLUGINS]\n");
        for so in &self.plugins {
            p += &format!("    Path {}\n", so.display());
        }
        std::fs::write(dir.join("plugins.conf"), p).unwrap();
        let mut c = String::from("[SERVICE]\n    plugins_file plugins.conf\n");
        for (k, v) in &self.service {
            c += &format!("    {k} {v}\n");
        }
        for (name, sections) in [("INPUT", &self.inputs), ("OUTPUT", &self.outputs)] {
            for s in sections {
                c += &format!("[{name}]\n");
                for (k, v) in s {
                    c += &format!("    {k} {v}\n");
                }
            }
        }
        let path = dir.join("fluent-bit.conf");
        std::fs::write(&path, c).unwrap();
        path
    }
}

fn yaml_item(s: &Section, q: &dyn Fn(&str) -> String) -> String {
    let mut y = String::new();
    for (i, (k, v)) in s.iter().enumerate() {
        let lead = if i == 0 { "    - " } else { "      " };
        y += &format!("{lead}{k}: {}\n", q(v));
    }
    y
}

/// The bundled objects as a folder source (`dir`), from 2023-07-01 on.
pub fn dir_input(name: &str, tag: &str) -> Section {
    let dir = crate::data::root();
    section(&[
        ("name", name),
        ("tag", tag),
        ("dir", dir.to_str().unwrap()),
        ("start_time", "2023-07-01T00:00:00Z"),
    ])
}

/// A bucket on the test server (credentials come from the environment).
pub fn s3_input(name: &str, tag: &str, bucket: &str, endpoint: &str) -> Section {
    section(&[
        ("name", name),
        ("tag", tag),
        ("bucket", bucket),
        ("endpoint", endpoint),
        ("region", "us-east-1"),
        ("force_path_style", "on"),
        ("start_time", "2023-07-01T00:00:00Z"),
        ("scan_interval", "2"),
    ])
}

/// The samples' Sumo Logic output, pointed at `receiver` (plain HTTP). The date key is
/// written first, as ISO 8601, so it is the line's first timestamp.
pub fn http_output(matching: &str, receiver: &Receiver, uri: &str) -> Section {
    let port = receiver.port().to_string();
    section(&[
        ("name", "http"),
        ("match", matching),
        ("host", "127.0.0.1"),
        ("port", &port),
        ("uri", uri),
        ("format", "json_lines"),
        ("json_date_key", "timestamp"),
        ("json_date_format", "iso8601"),
        ("compress", "gzip"),
        ("header", "X-Sumo-Category aws/cloudtrail"),
        ("retry_limit", "false"),
    ])
}

/// Records as JSON lines on stdout, the record time in a float `date` field.
pub fn stdout_output(matching: &str) -> Section {
    section(&[
        ("name", "stdout"),
        ("match", matching),
        ("format", "json_lines"),
    ])
}

/// A running Fluent Bit.
pub struct Fb(pub Child);

impl std::ops::Deref for Fb {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Fb {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Fb {
    /// Log lines at error level.
    pub fn errors(&self) -> Vec<String> {
        self.stderr
            .snapshot()
            .into_iter()
            .filter(|l| l.contains("[error]"))
            .collect()
    }

    pub fn assert_no_errors(&self) {
        self.assert_no_errors_except(&[]);
    }

    /// No error lines but those containing one of `expected`; and no line holds the
    /// secret key the plugin got from the environment (the offending lines are counted,
    /// not printed).
    pub fn assert_no_errors_except(&self, expected: &[&str]) {
        let leaks = self.stderr.count(server::SECRET_KEY) + self.stdout.count(server::SECRET_KEY);
        assert_eq!(leaks, 0, "{leaks} output lines hold the AWS secret key");
        let mut errors = self.errors();
        errors.retain(|l| !expected.iter().any(|e| l.contains(e)));
        assert!(
            errors.is_empty(),
            "Fluent Bit logged errors:\n{}\n{}",
            errors.join("\n"),
            self.stderr_tail(30)
        );
    }

    /// Waits until the instance(s) started: the plugin logs `started:` at the end of Init.
    pub fn wait_started(&mut self, instances: usize) {
        let what = format!("{instances} instance(s) to start");
        wait_until(&what, RUN_LIMIT, || {
            assert!(
                self.try_status().is_none(),
                "Fluent Bit exited at start-up\n{}",
                self.stderr_tail(40)
            );
            self.stderr.count("] started: ") >= instances
        });
    }

    /// SIGTERM, then the exit status once it stopped.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(STOP_LIMIT)
    }
}

/// Unix milliseconds of a Fluent Bit log line, read as UTC. 5.1.1 prints milliseconds
/// (`[2026/11/24 16:25:26.376] ...`); 4.1.2 prints the nanoseconds with `%03ld`, so not
/// padded to nine digits: `26.82860916` is 26 s and 82,860,916 ns, not 26.828 s. Three
/// digits are read as milliseconds (on 4.1.2 that misreads only a time in the first
/// microsecond of a second).
pub fn log_time_ms(line: &str) -> Option<i64> {
    let inner = line.strip_prefix('[')?.split(']').next()?;
    let (date, time) = inner.split_once(' ')?;
    let mut d = date.split('/').map(|p| p.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, s) = (t.next()??, t.next()??, t.next()??);
    let frac_value = frac.parse::<i64>().ok()?;
    let ms = if frac.len() <= 3 {
        frac_value
    } else {
        frac_value / 1_000_000
    };
    let date =
        time::Date::from_calendar_date(y as i32, time::Month::try_from(mo as u8).ok()?, da as u8)
            .ok()?;
    let days = date.to_julian_day() as i64
        - time::Date::from_calendar_date(1970, time::Month::January, 1)
            .ok()?
            .to_julian_day() as i64;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms)
}

/// The test's clock in Unix milliseconds (comparable with [`log_time_ms`]).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
