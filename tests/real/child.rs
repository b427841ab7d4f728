//! A host process under test (Fluent Bit, Vector): in its own process group so that it and
//! whatever it spawned die together, killed on drop so a failed assertion leaves nothing
//! running, with stdout and stderr read line by line as they come (a test waits for a log
//! line or a record, not for the process to end) and stderr also kept in a file for a
//! failure message.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::wait::poll_until;

/// Lines read so far from one of the child's streams.
#[derive(Default)]
pub struct Lines(Mutex<Vec<String>>);

impl Lines {
    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Lines from `from` on (for incremental parsing).
    pub fn since(&self, from: usize) -> Vec<String> {
        let g = self.0.lock().unwrap();
        g.get(from..).map(<[String]>::to_vec).unwrap_or_default()
    }

    pub fn count(&self, pat: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(pat))
            .count()
    }

    pub fn any(&self, pat: &str) -> bool {
        self.count(pat) > 0
    }

    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
}

pub struct Child {
    name: String,
    child: std::process::Child,
    status: Option<ExitStatus>,
    pub stdout: Arc<Lines>,
    pub stderr: Arc<Lines>,
    readers: Vec<std::thread::JoinHandle<()>>,
    stderr_file: PathBuf,
}

impl Child {
    /// Starts `cmd` in a new process group with stdin closed; stderr is also appended to
    /// `stderr_file`. The child gets SIGKILL if this test process dies.
    pub fn spawn(name: &str, mut cmd: Command, stderr_file: &Path) -> Child {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = Arc::new(Lines::default());
        let stderr = Arc::new(Lines::default());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(stderr_file)
            .unwrap();
        let readers = vec![
            read_lines(child.stdout.take().unwrap(), stdout.clone(), None),
            read_lines(child.stderr.take().unwrap(), stderr.clone(), Some(file)),
        ];
        Child {
            name: name.to_string(),
            child,
            status: None,
            stdout,
            stderr,
            readers,
            stderr_file: stderr_file.to_path_buf(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `sig` to the process itself (not its group).
    pub fn signal(&self, sig: i32) {
        if self.status.is_none() {
            // SAFETY: plain kill(2) on our own child, which has not been reaped.
            unsafe { libc::kill(self.pid(), sig) };
        }
    }

    /// The exit status, once the process has ended (reaped here).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status
    }

    /// Waits for the process to end, and for its output to be read to the end.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let ended = poll_until(limit, || self.try_status().is_some());
        assert!(
            ended,
            "{} did not exit within {limit:?}\n{}",
            self.name,
            self.stderr_tail(30)
        );
        // A grandchild may still hold a pipe open; the output is complete once the readers
        // saw EOF, which follows the exit at once unless one does.
        poll_until(Duration::from_secs(10), || {
            self.readers.iter().all(|r| r.is_finished())
        });
        self.status.unwrap()
    }

    fn kill_group(&self) {
        // SAFETY: the group was created for this child (process_group(0)) and the child is
        // not reaped yet (callers check), so its pid still names that group.
        unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
    }

    /// A field of /proc/PID/status in kB (e.g. `VmHWM`, `VmRSS`).
    pub fn proc_status_kb(&self, field: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The last `n` lines of stderr, for failure messages.
    pub fn stderr_tail(&self, n: usize) -> String {
        let lines = self.stderr.snapshot();
        let from = lines.len().saturating_sub(n);
        format!(
            "--- last {} stderr lines of {} (all in {}):\n{}",
            lines.len() - from,
            self.name,
            self.stderr_file.display(),
            lines[from..].join("\n")
        )
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // Only while the leader is unreaped: its pid (the group id) cannot have been reused.
        if self.try_status().is_none() {
            self.kill_group();
            let _ = self.child.wait();
        }
    }
}

fn read_lines(
    stream: impl Read + Send + 'static,
    into: Arc<Lines>,
    mut copy: Option<std::fs::File>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if let Some(f) = copy.as_mut() {
                        let _ = f.write_all(&buf);
                    }
                    let line = String::from_utf8_lossy(&buf);
                    into.push(line.trim_end_matches(['\n', '\r']).to_string());
                }
            }
        }
    })
}
