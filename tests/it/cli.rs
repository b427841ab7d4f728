//! The `cloudtrail-s3` command: JSON lines on stdout, the same state and guarantees as the
//! plugin, clean stops on SIGTERM and on a closed pipe, and the Vector sample around it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use crate::data::{self, EVENTS};
use crate::json::J;
use crate::server::{self, s3_props};

const BIN: &str = env!("CARGO_BIN_EXE_cloudtrail-s3");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn write_toml(dir: &Path, props: &[(&str, String)]) -> PathBuf {
    let text: String = props
        .iter()
        .map(|(k, v)| format!("{k} = {v:?}\n"))
        .collect();
    let path = dir.join("settings.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn(config: &Path, extra: &[&str]) -> (Child, Receiver<String>) {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(extra)
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

fn wait(child: &mut Child, deadline: Duration) -> i32 {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().expect("exited, not killed by a signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    panic!("cloudtrail-s3 did not exit within {deadline:?}");
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut s).unwrap();
    s
}

fn ids(lines: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for l in lines {
        let j = J::parse(l);
        *m.entry(j.str("eventID").expect("eventID").to_string())
            .or_insert(0) += 1;
    }
    m
}

#[test]
fn demo_prints_every_event_once_as_in_the_source() {
    let out = Command::new(BIN)
        .args(["--config", "conf/demo.toml", "--once"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let expected = data::expected();
    let mut seen = HashMap::new();
    for line in text.lines() {
        let J::Obj(mut entries) = J::parse(line) else {
            panic!("not an object")
        };
        let (key, meta) = entries.pop().unwrap();
        assert_eq!(key, "s3", "the demo's metadata_key comes last");
        assert!(
            meta.str("key")
                .unwrap()
                .starts_with("AWSLogs/218007301253/CloudTrail/us-east-1/2023/07/10/")
        );
        let event = J::Obj(entries);
        let id = event.str("eventID").unwrap().to_string();
        assert_eq!(&expected[&id].0, &event, "line equals its source event");
        *seen.entry(id).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), EVENTS);
    assert!(seen.values().all(|n| *n == 1));
}

#[test]
fn sigterm_stops_cleanly_and_a_restart_neither_loses_nor_repeats() {
    let bucket = server::bucket("cli-term");
    data::upload_all(&bucket, "");
    let dir = tempfile::tempdir().unwrap();
    let mut props = s3_props(&bucket);
    props.extend([
        (
            "db",
            dir.path().join("state.json").to_str().unwrap().to_string(),
        ),
        ("batch_bytes", "64K".into()),
        ("workers", "1".into()),
    ]);
    let config = write_toml(dir.path(), &props);

    let (mut child, rx) = spawn(&config, &[]);
    let mut first = Vec::new();
    let end = Instant::now() + Duration::from_secs(60);
    while first.len() < 500 && Instant::now() < end {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            first.push(l);
        }
    }
    assert!(first.len() >= 500);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(
        wait(&mut child, Duration::from_secs(30)),
        0,
        "SIGTERM is a clean stop"
    );
    first.extend(rx.iter());
    assert!(
        first.len() < EVENTS,
        "stopped before the end ({})",
        first.len()
    );
    assert!(stderr_of(&mut child).contains("signal received"));

    let (mut child, rx) = spawn(&config, &["--once"]);
    assert_eq!(wait(&mut child, Duration::from_secs(120)), 0);
    let second: Vec<String> = rx.iter().collect();
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    let seen = ids(&all);
    let dups: usize = seen.values().map(|n| n - 1).sum();
    assert_eq!(
        (seen.len(), dups),
        (EVENTS, 0),
        "first run {}, second {}",
        first.len(),
        second.len()
    );
}

#[test]
fn closed_stdout_ends_the_run_with_state_saved() {
    let dir = tempfile::tempdir().unwrap();
    let props = vec![
        ("dir", data::root().to_str().unwrap().to_string()),
        ("start_time", "2023-07-01T00:00:00Z".into()),
        (
            "db",
            dir.path().join("state.json").to_str().unwrap().to_string(),
        ),
        ("batch_bytes", "64K".into()),
        ("workers", "1".into()),
    ];
    let config = write_toml(dir.path(), &props);
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = Vec::new();
    for _ in 0..100 {
        let mut l = String::new();
        reader.read_line(&mut l).unwrap();
        first.push(l);
    }
    drop(reader);
    assert_eq!(
        wait(&mut child, Duration::from_secs(30)),
        0,
        "a closed pipe is a clean stop"
    );
    assert!(stderr_of(&mut child).contains("stdout closed by the reader"));

    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("--once")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let second: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let seen = ids(&second);
    assert!(
        seen.values().all(|n| *n == 1),
        "no duplicates within the resumed run"
    );
    assert!(
        second.len() < EVENTS - 100,
        "the first run's progress was kept ({} shipped again)",
        second.len()
    );
    // Lines of the batch whose write the closed pipe cut short were not delivered, so they
    // come again; nothing before that batch does. A batch is at most batch_bytes (64K) plus
    // one 16K chunk.
    let repeated: usize = first
        .iter()
        .filter(|l| seen.contains_key(J::parse(l).str("eventID").unwrap()))
        .map(|l| l.len())
        .sum();
    assert!(
        repeated <= 80 << 10,
        "{repeated} bytes of already-read lines shipped again"
    );
}

#[test]
fn settings_are_checked_and_unknown_keys_named() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let path = dir.path().join("s.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .arg("--check-config")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(check("bucket = \"my-trail\"\n").0, 0);
    let (code, err) = check("bucket = \"my-trail\"\nscan_intervall = 5\n");
    assert_eq!(code, 2);
    assert!(err.contains("scan_intervall"), "{err}");
    let (code, err) = check("bucket = \"my-trail\"\nworkers = 0\n");
    assert_eq!(code, 2);
    assert!(err.contains("'workers'"), "{err}");
    let out = Command::new(BIN).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["--check-config", "--config", "conf/cloudtrail-s3.toml"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "the sample settings are valid");
}

/// The Sumo Logic sample is valid as shipped, and checking it never prints the token its
/// URL holds (the path of a Sumo Logic HTTP source URL is the credential).
#[test]
fn sumo_sample_is_valid_and_its_token_never_printed() {
    let text = std::fs::read_to_string(repo().join("conf/cloudtrail-s3-sumo.toml")).unwrap();
    let token = "REPLACE_WITH_YOUR_TOKEN";
    assert!(text.contains(token));
    let dir = tempfile::tempdir().unwrap();
    let secret = "ZaVnC4dhaV1-secret-token-0123456789";
    let run = |text: &str, extra: &[&str]| {
        let path = dir.path().join("sumo.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .args(["--check-config", "--config"])
            .arg(&path)
            .args(extra)
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), all)
    };
    let filled = text.replace(token, secret);
    let (code, out) = run(&filled, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains(secret), "the token was printed: {out}");
    // A mistake beside the URL: the error names the key, never the token.
    let broken = filled.replace("compress = \"gzip\"", "compress = \"zstd-max\"");
    assert_ne!(broken, filled);
    let (code, out) = run(&broken, &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("compress"), "{out}");
    assert!(!out.contains(secret), "the token was printed: {out}");
    // A URL that does not parse is refused without echoing it.
    let bad_url = filled.replace("https://", "https//");
    let (code, out) = run(&bad_url, &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(!out.contains(secret), "the token was printed: {out}");
}

#[test]
fn vector_sample_runs_this_command_with_flags_that_exist() {
    let text = std::fs::read_to_string(repo().join("conf/vector.yaml")).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    // The supervisor runs the command, which posts to the acknowledged http_server.
    let supervisor = &doc["sources"]["cloudtrail_s3"];
    assert_eq!(supervisor["type"].as_str(), Some("exec"));
    assert_eq!(supervisor["mode"].as_str(), Some("streaming"));
    let command: Vec<&str> = supervisor["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(command[0], "cloudtrail-s3");
    let help = String::from_utf8(Command::new(BIN).arg("--help").output().unwrap().stdout).unwrap();
    for flag in command.iter().filter(|a| a.starts_with('-')) {
        assert!(help.contains(flag), "{flag} is not a flag of cloudtrail-s3");
    }
    assert!(command.contains(&"--exit-with-parent"));
    let events = &doc["sources"]["cloudtrail"];
    assert_eq!(events["type"].as_str(), Some("http_server"));
    assert_eq!(events["decoding"]["codec"].as_str(), Some("json"));
    let address = events["address"].as_str().unwrap();
    let url = command[command.iter().position(|a| *a == "--http-url").unwrap() + 1];
    assert_eq!(
        url,
        format!("http://{address}/"),
        "the command posts to the source"
    );
    let remap = &doc["transforms"]["cloudtrail_events"];
    assert_eq!(remap["type"].as_str(), Some("remap"));
    assert!(
        remap["source"]
            .as_str()
            .unwrap()
            .contains(".timestamp = parse_timestamp(.eventTime")
    );
    let sink = &doc["sinks"]["sumo"];
    assert_eq!(sink["type"].as_str(), Some("http"));
    assert_eq!(sink["compression"].as_str(), Some("gzip"));
    assert_eq!(sink["uri"].as_str(), Some("${SUMO_HTTP_URL}"));
    assert!(
        sink["request"]["headers"]["X-Sumo-Category"]
            .as_str()
            .is_some()
    );
    // Acknowledged once delivered: a 200 to the command survives a kill of Vector. Not a
    // disk buffer: Vector 0.56's answers before its write reaches the file.
    assert_eq!(sink["acknowledgements"]["enabled"].as_bool(), Some(true));
    assert_eq!(sink["buffer"]["type"].as_str(), Some("memory"));
}
