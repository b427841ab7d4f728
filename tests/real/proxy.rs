//! A counting HTTP proxy in front of the S3 test server: the host's S3 endpoint points here,
//! and every request is recorded with the time it arrived, so a test can tell when each
//! object download started (e.g. that none started while the host had the input paused).
//! It can hold each object download back for a while, so downloading is slower than the
//! host's intake and a download would fall inside a pause unless the pause stops it. One
//! request per connection (the answer says `Connection: close`), which the AWS SDK handles
//! like any server closing an idle connection.
//!
//! It can also stand for an S3 that is briefly overloaded: [`SlowDown`] answers the first
//! GETs of each chosen object `503 SlowDown` (S3's XML error body) and forwards the rest.
//! Or for a bucket policy that denies reads: [`AccessDenied`] answers every GET of the
//! chosen objects `403 AccessDenied` until the denial is lifted
//! ([`CountingProxy::lift_denial`], as when an administrator fixes the policy).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::fluent_bit::now_ms;

/// A request seen: method, path and query, arrival in Unix milliseconds.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub at_ms: i64,
    /// Answered `503 SlowDown` by the proxy (not forwarded).
    pub slowed_down: bool,
    /// Answered `403 AccessDenied` by the proxy (not forwarded).
    pub denied: bool,
    /// The `X-Amz-Target` header: the operation of a JSON protocol (DynamoDB's
    /// `DynamoDB_20120810.PutItem`).
    pub target: Option<String>,
}

impl Seen {
    /// A GET of a CloudTrail object (not a listing).
    pub fn is_object_get(&self) -> bool {
        self.method == "GET" && self.path.contains(".json.gz") && !self.path.contains("list-type")
    }

    /// The path without its query (`/bucket/key` in path style).
    pub fn object_path(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }
}

/// `503 SlowDown` for the first `times` GETs of each object whose path (`/bucket/key`)
/// contains `path_contains`; later GETs of it are forwarded.
#[derive(Clone, Debug)]
pub struct SlowDown {
    pub path_contains: String,
    pub times: usize,
}

/// `403 AccessDenied` for every GET of an object whose path (`/bucket/key`) contains
/// `path_contains`, until [`CountingProxy::lift_denial`]; listings are forwarded.
#[derive(Clone, Debug)]
pub struct AccessDenied {
    pub path_contains: String,
}

#[derive(Default)]
struct State {
    seen: Mutex<Vec<Seen>>,
    slow_down: Option<SlowDown>,
    access_denied: Option<AccessDenied>,
    /// Set by [`CountingProxy::lift_denial`]: `access_denied` no longer applies.
    lifted: AtomicBool,
    /// Object GETs so far, by object path (for `slow_down`).
    gets: Mutex<HashMap<String, usize>>,
}

pub struct CountingProxy {
    pub endpoint: String,
    state: Arc<State>,
}

impl CountingProxy {
    /// Forwards to `upstream`, each object GET answered `object_delay` after it came.
    pub fn start(upstream: &str, object_delay: Duration) -> CountingProxy {
        Self::serve(upstream, object_delay, State::default())
    }

    /// Forwards to `upstream` at once, but answers `503 SlowDown` as `slow_down` says.
    pub fn with_slow_down(upstream: &str, slow_down: SlowDown) -> CountingProxy {
        Self::serve(
            upstream,
            Duration::ZERO,
            State {
                slow_down: Some(slow_down),
                ..State::default()
            },
        )
    }

    /// Forwards to `upstream` at once, but answers `403 AccessDenied` as `denied` says
    /// until [`CountingProxy::lift_denial`].
    pub fn with_access_denied(upstream: &str, denied: AccessDenied) -> CountingProxy {
        Self::serve(
            upstream,
            Duration::ZERO,
            State {
                access_denied: Some(denied),
                ..State::default()
            },
        )
    }

    /// GETs are forwarded again from now on (the policy was fixed).
    pub fn lift_denial(&self) {
        self.state.lifted.store(true, Ordering::SeqCst);
    }

    fn serve(upstream: &str, object_delay: Duration, state: State) -> CountingProxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(state);
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (s, up) = (s.clone(), upstream.clone());
                std::thread::spawn(move || forward(conn, &up, &s, object_delay));
            }
        });
        CountingProxy { endpoint, state }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

/// Whether this object GET is one `slow_down` refuses (counting it).
fn refuse(state: &State, request: &Seen) -> bool {
    let Some(slow) = &state.slow_down else {
        return false;
    };
    if !request.is_object_get() || !request.object_path().contains(&slow.path_contains) {
        return false;
    }
    let mut gets = state.gets.lock().unwrap();
    let n = gets.entry(request.object_path().to_string()).or_insert(0);
    *n += 1;
    *n <= slow.times
}

/// Whether this object GET is one `access_denied` refuses.
fn deny(state: &State, request: &Seen) -> bool {
    let Some(denied) = &state.access_denied else {
        return false;
    };
    !state.lifted.load(Ordering::SeqCst)
        && request.is_object_get()
        && request.object_path().contains(&denied.path_contains)
}

/// S3's answer when it asks a client to slow down (HTTP 503, error code `SlowDown`).
fn slow_down_answer(resource: &str) -> String {
    error_answer(
        "503 Slow Down",
        "SlowDown",
        "Please reduce your request rate.",
        resource,
    )
}

/// S3's answer to a read the bucket policy or IAM does not allow (HTTP 403).
fn access_denied_answer(resource: &str) -> String {
    error_answer("403 Forbidden", "AccessDenied", "Access Denied", resource)
}

/// An S3 error answer: status line, XML error body with `code` and `message`.
fn error_answer(status: &str, code: &str, message: &str, resource: &str) -> String {
    let id = format!("{:016X}", crate::fluent_bit::now_ms());
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><Resource>{resource}</Resource>\
         <RequestId>{id}</RequestId></Error>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         x-amz-request-id: {id}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn forward(client: TcpStream, upstream: &str, state: &State, object_delay: Duration) {
    let Ok(mut out) = client.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(client);
    let Some(head) = read_head(&mut reader) else {
        return;
    };
    let first = head.lines().next().unwrap_or("").to_string();
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut request = Seen {
        method,
        path,
        at_ms: now_ms(),
        slowed_down: false,
        denied: false,
        target: header_value(&head, "x-amz-target"),
    };
    request.slowed_down = refuse(state, &request);
    request.denied = !request.slowed_down && deny(state, &request);
    let delay = request.is_object_get();
    let slowed_down = request
        .slowed_down
        .then(|| request.object_path().to_string());
    let denied = request.denied.then(|| request.object_path().to_string());
    state.seen.lock().unwrap().push(request);
    let length = header_value(&head, "content-length").map_or(0, |v| v.parse().unwrap_or(0));
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    if let Some(resource) = slowed_down {
        let _ = out.write_all(slow_down_answer(&resource).as_bytes());
        return;
    }
    if let Some(resource) = denied {
        let _ = out.write_all(access_denied_answer(&resource).as_bytes());
        return;
    }
    if delay {
        std::thread::sleep(object_delay);
    }
    let Ok(mut up) = TcpStream::connect(upstream) else {
        return;
    };
    let request = with_connection_close(&head);
    if up.write_all(request.as_bytes()).is_err() || up.write_all(&body).is_err() {
        return;
    }
    let mut up_reader = BufReader::new(up);
    let Some(answer_head) = read_head(&mut up_reader) else {
        return;
    };
    let _ = out.write_all(with_connection_close(&answer_head).as_bytes());
    let mut rest = Vec::new();
    let _ = up_reader.read_to_end(&mut rest);
    let _ = out.write_all(&rest);
}

/// The head up to and including the empty line.
fn read_head(r: &mut impl BufRead) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head += &line;
        if line == "\r\n" || line == "\n" {
            return Some(head);
        }
    }
}

fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

fn with_connection_close(head: &str) -> String {
    let mut out = String::new();
    for l in head.trim_end().lines() {
        if !l.to_ascii_lowercase().starts_with("connection:") {
            out += l;
            out += "\r\n";
        }
    }
    out + "Connection: close\r\n\r\n"
}
