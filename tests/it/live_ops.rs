//! The operator commands on a running instance (`metrics.listen`): `GET /status` shows a
//! failed object, and `POST /retry` puts it back in line, so that a file mended in place
//! ships without stopping the shipper.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use crate::data;
use crate::json::J;

const BIN: &str = env!("CARGO_BIN_EXE_cloudtrail-s3");
const KEY: &str = "AWSLogs/111122223333/CloudTrail/us-east-1/2023/07/10/111122223333_CloudTrail_us-east-1_20230710T0000Z_mended.json.gz";

/// `METHOD path` on `addr`: the status and body, `None` while nothing listens.
pub fn request(addr: &str, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn failed_ids(status: &str) -> Vec<String> {
    if !status.starts_with('{') {
        return Vec::new();
    }
    match J::parse(status).get("failed") {
        Some(J::Arr(items)) => items
            .iter()
            .filter_map(|f| f.str("id").map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn a_failed_object_mended_in_place_ships_after_a_live_retry() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let file = logs.join(KEY);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, b"not gzip at all").unwrap();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let settings = dir.path().join("settings.toml");
    std::fs::write(
        &settings,
        format!(
            "dir = {:?}\nstart_time = \"2023-07-01T00:00:00Z\"\ndb = {:?}\nscan_interval = 1\n[metrics]\nlisten = {addr:?}\n",
            logs.to_str().unwrap(),
            dir.path().join("state.db").to_str().unwrap(),
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&settings)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, lines) = channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    let mut status = String::new();
    wait_until("the object failed in /status", || {
        status = match request(&addr, "GET", "/status") {
            Some((200, b)) => b,
            _ => String::new(),
        };
        !failed_ids(&status).is_empty()
    });
    let id = failed_ids(&status).remove(0);
    assert!(
        id.starts_with("dir:") && id.ends_with("_mended.json.gz"),
        "{id}"
    );
    assert_eq!(
        request(&addr, "POST", "/status").map(|a| a.0),
        Some(405),
        "status is read-only"
    );
    assert_eq!(request(&addr, "GET", "/retry").map(|a| a.0), Some(405));
    assert_eq!(
        request(&addr, "POST", "/retry?all_failed&id=x").map(|a| a.0),
        Some(400),
        "ids or all_failed, not both"
    );

    let object = &data::objects()[0];
    std::fs::write(&file, &object.gz).unwrap();
    let encoded = id.replace('%', "%25").replace(' ', "%20");
    let (code, body) = request(&addr, "POST", &format!("/retry?id={encoded}")).unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&id), "put back: {body}");
    let want = object.events().len();
    let mut got = Vec::new();
    wait_until("the mended object's events on stdout", || {
        got.extend(lines.try_iter());
        got.len() >= want
    });
    wait_until("nothing failed in /status", || {
        request(&addr, "GET", "/status").is_some_and(|(code, b)| {
            code == 200 && failed_ids(&b).is_empty() && b.contains("\"done\": 1")
        })
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    got.extend(lines.try_iter());
    assert_eq!(got.len(), want, "each event once");
}
