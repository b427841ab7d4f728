//! S3 faults, injected by a small HTTP proxy on 127.0.0.1 in front of the real test server:
//! throttling and 5xx answers, a connection reset in the middle of a body, a stalled
//! request, and a denied read. Each test names the keys that misbehave and how often.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudtrail_s3::Engine;

use crate::data;
use crate::engine::{drain_until, start};
use crate::server::{self, s3_props};

#[derive(Clone, Copy, Debug)]
pub(crate) enum Fault {
    /// An S3 error answer: status and error code.
    Status(u16, &'static str),
    /// The real answer's headers and half its body, then a reset.
    ResetMidBody,
    /// No answer for this long, then the connection closes.
    Stall(Duration),
}

struct Rule {
    key: String,
    fault: Fault,
    times: usize,
}

/// A request the proxy saw: method, path, Range header.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    method: String,
    path: String,
    range: Option<String>,
}

pub(crate) struct FaultProxy {
    pub(crate) endpoint: String,
    rules: Arc<Mutex<Vec<Rule>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FaultProxy {
    pub(crate) fn start() -> FaultProxy {
        let upstream = server::endpoint().trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let rules: Arc<Mutex<Vec<Rule>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (r, s) = (rules.clone(), seen.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (r, s, up) = (r.clone(), s.clone(), upstream.clone());
                std::thread::spawn(move || serve(conn, &up, &r, &s));
            }
        });
        FaultProxy {
            endpoint,
            rules,
            seen,
        }
    }

    pub(crate) fn inject(&self, key: &str, fault: Fault, times: usize) {
        self.rules.lock().unwrap().push(Rule {
            key: key.to_string(),
            fault,
            times,
        });
    }

    pub(crate) fn gets_of(&self, key: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == "GET" && s.path.contains(key) && !s.path.contains("list-type"))
            .cloned()
            .collect()
    }
}

/// One request per connection (the answer says `Connection: close`).
fn serve(mut client: TcpStream, upstream: &str, rules: &Mutex<Vec<Rule>>, seen: &Mutex<Vec<Seen>>) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, path) = (
        first.next().unwrap_or("").to_string(),
        first.next().unwrap_or("").to_string(),
    );
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = vec![
        0u8;
        header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    ];
    if client.read_exact(&mut body).is_err() {
        return;
    }
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        range: header("range"),
    });
    let fault = {
        let mut rules = rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|r| {
                method == "GET"
                    && path.contains(&r.key)
                    && !path.contains("list-type")
                    && r.times > 0
            })
            .map(|r| {
                r.times -= 1;
                r.fault
            })
    };
    match fault {
        Some(Fault::Status(status, code)) => {
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
            );
            let reason = if status == 403 { "Forbidden" } else { "Error" };
            let _ = write!(
                client,
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                xml.len()
            );
            return;
        }
        Some(Fault::Stall(d)) => {
            std::thread::sleep(d);
            return;
        }
        _ => {}
    }
    // Forward with `Connection: close`, read the whole answer, pass it on (or half of it).
    let Ok(mut up) = TcpStream::connect(upstream) else {
        return;
    };
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in &headers {
        if !k.eq_ignore_ascii_case("connection") {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    req.push_str("Connection: close\r\n\r\n");
    if up
        .write_all(req.as_bytes())
        .and_then(|()| up.write_all(&body))
        .is_err()
    {
        return;
    }
    let mut answer = Vec::new();
    let _ = up.read_to_end(&mut answer);
    if let Some(Fault::ResetMidBody) = fault {
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(0, |p| p + 4);
        let cut = split + (answer.len() - split) / 2;
        let _ = client.write_all(&answer[..cut]);
        let _ = client.flush();
        // A reset, not a clean end: linger 0 on close.
        linger_zero(&client);
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let _ = client.write_all(&answer);
}

/// Sets SO_LINGER to 0 so closing sends RST.
fn linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid socket fd and a properly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Runs the engine against the proxy until it is idle; returns event IDs and log lines.
fn run_through(
    proxy: &FaultProxy,
    bucket: &str,
    extra: &[(&'static str, &str)],
    db: &std::path::Path,
) -> (Vec<String>, Vec<String>, Engine) {
    let mut props: Vec<(&'static str, String)> = s3_props(bucket);
    props.retain(|(k, _)| *k != "endpoint" && !extra.iter().any(|(e, _)| e == k));
    props.push(("endpoint", proxy.endpoint.clone()));
    props.push(("db", db.to_str().unwrap().to_string()));
    props.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let (engine, lines) = start(&props);
    let events = drain_until(&engine, Duration::from_secs(90), Engine::is_idle);
    let ids = events
        .iter()
        .map(|e| e.str("eventID").unwrap().to_string())
        .collect();
    // Every message, then each error once more marked "[error] ".
    let mut logged = lines.0.lock().unwrap().clone();
    logged.extend(lines.errors().into_iter().map(|m| format!("[error] {m}")));
    (ids, logged, engine)
}

fn ids_of(o: &data::Object) -> Vec<String> {
    o.ids()
}

#[test]
fn throttling_and_server_errors_are_retried() {
    let proxy = FaultProxy::start();
    let bucket = server::bucket("slowdown");
    let objects = data::objects();
    let (a, b) = (&objects[0], &objects[1]);
    server::put(&bucket, &a.key, a.gz.clone());
    server::put(&bucket, &b.key, b.gz.clone());
    proxy.inject(&a.key, Fault::Status(503, "SlowDown"), 2);
    proxy.inject(&b.key, Fault::Status(500, "InternalError"), 1);
    let dir = tempfile::tempdir().unwrap();
    let (ids, _, _engine) = run_through(&proxy, &bucket, &[], &dir.path().join("s.json"));
    let mut want: Vec<String> = ids_of(a).into_iter().chain(ids_of(b)).collect();
    let mut got = ids;
    want.sort();
    got.sort();
    assert_eq!(got, want, "both objects arrive whole, once");
    assert_eq!(
        proxy.gets_of(&a.key).len(),
        3,
        "two SlowDown answers, then success"
    );
    assert_eq!(proxy.gets_of(&b.key).len(), 2);
}

#[test]
fn a_body_cut_off_mid_way_resumes_with_a_ranged_get() {
    let proxy = FaultProxy::start();
    let bucket = server::bucket("reset");
    let objects = data::objects();
    let o = objects.iter().max_by_key(|o| o.gz.len()).unwrap();
    server::put(&bucket, &o.key, o.gz.clone());
    proxy.inject(&o.key, Fault::ResetMidBody, 2);
    let dir = tempfile::tempdir().unwrap();
    let (ids, _, _engine) = run_through(&proxy, &bucket, &[], &dir.path().join("s.json"));
    assert_eq!(ids, ids_of(o), "the object arrives whole and in order");
    let gets = proxy.gets_of(&o.key);
    assert!(gets.len() >= 3, "{gets:?}");
    assert!(gets[0].range.is_none());
    assert!(
        gets[1..].iter().all(|g| g
            .range
            .as_deref()
            .is_some_and(|r| r.starts_with("bytes=") && r != "bytes=0-")),
        "the retries ask for the rest only: {gets:?}"
    );
}

#[test]
fn a_stalled_request_times_out_and_is_retried() {
    let proxy = FaultProxy::start();
    let bucket = server::bucket("stall");
    let objects = data::objects();
    let o = &objects[3];
    server::put(&bucket, &o.key, o.gz.clone());
    proxy.inject(&o.key, Fault::Stall(Duration::from_secs(4)), 1);
    let dir = tempfile::tempdir().unwrap();
    let (ids, _, _engine) = run_through(
        &proxy,
        &bucket,
        &[("request_timeout", "1")],
        &dir.path().join("s.json"),
    );
    assert_eq!(ids, ids_of(o));
    assert!(proxy.gets_of(&o.key).len() >= 2);
}

#[test]
fn access_denied_is_logged_with_the_permission_to_fix_and_retried_until_it_works() {
    // Permissions get fixed without a restart: a denied read is never recorded as failed
    // for good, it is tried again on later scans and ships once the read is allowed.
    let proxy = FaultProxy::start();
    let bucket = server::bucket("denied");
    let objects = data::objects();
    let (ok, denied) = (&objects[0], &objects[1]);
    server::put(&bucket, &ok.key, ok.gz.clone());
    server::put(&bucket, &denied.key, denied.gz.clone());
    proxy.inject(&denied.key, Fault::Status(403, "AccessDenied"), 3);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.json");
    // A second's wait instead of the default five minutes, doubling per failure.
    let (mut ids, logged, engine) = run_through(&proxy, &bucket, &[("denied_backoff", "1")], &db);
    let url = format!("s3://{bucket}/{}", denied.key);
    // At error level, as a setting to fix (the README's promise).
    assert!(
        logged.iter().any(|l| l.starts_with("[error] ")
            && l.contains(&url)
            && l.contains("403")
            && l.contains("AccessDenied")
            && l.contains("needs s3:GetObject")),
        "{logged:?}"
    );
    let more = drain_until(&engine, Duration::from_secs(60), |e| {
        e.stats().events as usize >= ok.ids().len() + denied.ids().len()
    });
    ids.extend(more.iter().map(|e| e.str("eventID").unwrap().to_string()));
    let mut want: Vec<String> = ids_of(ok).into_iter().chain(ids_of(denied)).collect();
    want.sort();
    ids.sort();
    assert_eq!(
        ids, want,
        "every event once, the denied object after its retries"
    );
    assert!(
        proxy.gets_of(&denied.key).len() >= 4,
        "denied three times, then read"
    );
    drop(engine);
    let entry = crate::engine::ledger_entry(&db, &url);
    assert_eq!(
        entry.as_ref().map(|e| e.status),
        Some(cloudtrail_s3::ledger::Status::Done),
        "never failed for good: {entry:?}"
    );
}

#[test]
fn a_download_that_keeps_breaking_is_tried_again_later_without_repeats() {
    let proxy = FaultProxy::start();
    let bucket = server::bucket("broken");
    let objects = data::objects();
    let o = objects.iter().max_by_key(|o| o.gz.len()).unwrap();
    server::put(&bucket, &o.key, o.gz.clone());
    // The first GET and all five resumes break: the object is let go and comes back on a
    // later scan, where the rest of it ships.
    proxy.inject(&o.key, Fault::ResetMidBody, 6);
    let dir = tempfile::tempdir().unwrap();
    let (mut ids, logged, engine) = run_through(&proxy, &bucket, &[], &dir.path().join("s.json"));
    // The first pass may end idle with the object let go; the next scan brings the rest.
    let want = ids_of(o);
    let rest = drain_until(&engine, Duration::from_secs(60), |e| {
        e.stats().events as usize >= want.len()
    });
    ids.extend(rest.iter().map(|e| e.str("eventID").unwrap().to_string()));
    assert_eq!(ids, want, "every event once, in order");
    assert!(
        logged
            .iter()
            .any(|l| l.contains("download broke off 5 times") && l.contains("later try")),
        "{logged:?}"
    );
    assert!(proxy.gets_of(&o.key).len() >= 7);
}
