//! The real `vector` (from `VECTOR`) running a configuration, with the `cloudtrail-s3`
//! command this build made first on its `PATH` (as a user installs it), so the exec source
//! of `conf/vector.yaml` runs the command under test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::child::Child;
use crate::fluent_bit::test_env;

pub const STOP_LIMIT: Duration = Duration::from_secs(90);

pub struct Vector {
    pub path: PathBuf,
    pub version: String,
}

impl Vector {
    /// `None` when `VECTOR` is unset; an error when it does not name a working binary.
    pub fn from_env() -> Option<Result<Vector, String>> {
        let path = PathBuf::from(std::env::var_os("VECTOR")?);
        Some(Self::at(&path))
    }

    fn at(path: &Path) -> Result<Vector, String> {
        let path =
            std::fs::canonicalize(path).map_err(|e| format!("VECTOR={}: {e}", path.display()))?;
        let out = Command::new(&path)
            .arg("--version")
            .output()
            .map_err(|e| format!("{} --version: {e}", path.display()))?;
        // "vector 0.56.0 (x86_64-unknown-linux-gnu)"
        let version = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| format!("{} --version printed nothing", path.display()))?
            .to_string();
        Ok(Vector { path, version })
    }

    pub fn label(&self) -> String {
        format!("Vector {}", self.version)
    }

    /// Starts `vector --config conf` in `work` with `env`; `work/bin` (made here) holds the
    /// command and comes first on `PATH`.
    pub fn start(&self, work: &Path, name: &str, conf: &Path, env: &[(&str, String)]) -> Child {
        let bin = work.join("bin");
        if !bin.exists() {
            std::fs::create_dir_all(&bin).unwrap();
            std::os::unix::fs::symlink(
                env!("CARGO_BIN_EXE_cloudtrail-s3"),
                bin.join("cloudtrail-s3"),
            )
            .unwrap();
        }
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(&self.path);
        cmd.arg("--config")
            .arg(conf)
            .current_dir(work)
            .env("PATH", path);
        for (k, v) in test_env() {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let log = work.join(format!("{name}.stderr.log"));
        Child::spawn(&format!("{} ({name})", self.label()), cmd, &log)
    }
}

/// Vector's log lines at error level.
pub fn errors(child: &Child) -> Vec<String> {
    child
        .stderr
        .snapshot()
        .into_iter()
        .filter(|l| l.contains(" ERROR "))
        .collect()
}
