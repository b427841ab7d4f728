//! An HTTP receiver on 127.0.0.1 standing in for a Sumo Logic HTTP source: HTTP/1.1 with
//! keep-alive, `Content-Length` or chunked bodies, gunzipped when `Content-Encoding: gzip`.
//! It records every request's headers and each JSON line of the bodies it accepted.
//!
//! It can be told to answer slowly or with 503, which is how tests create backpressure
//! in the host. A line counts as received only when its request is answered 200, as at a
//! real destination (a 503'd body comes again). It lives in the test, not in the host, so
//! it outlives host restarts and counts what really arrived across them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flate2::read::MultiGzDecoder;

/// How the receiver answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 200 at once.
    Ok,
    /// 200 after this long, one request at a time (a destination with a fixed
    /// throughput; the body is counted when answered).
    Slow(Duration),
    /// This status (e.g. 503): the body is not counted.
    Status(u16),
    /// 429 with `Retry-After` of this many seconds: the body is not counted (used by the
    /// `it` tests of the command's http output, which include this file).
    #[allow(dead_code)]
    Throttle(u64),
    /// The first request that comes while this is the answer is read and held unanswered
    /// until the answer changes, then its connection is closed with no answer (as Vector's
    /// `http_server` does to some posts when it stops); the others get 200 at once.
    #[allow(dead_code)]
    HoldFirst,
}

/// One request answered 200.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One received JSON line, with the path of its request.
#[derive(Clone, Debug)]
pub struct Line {
    pub path: String,
    pub text: String,
}

#[derive(Default)]
struct State {
    /// Held while a slow answer is pending: slow answers come one after another.
    slow: Mutex<()>,
    requests: Mutex<Vec<Request>>,
    lines: Mutex<Vec<Line>>,
    rejected: AtomicUsize,
    bad: Mutex<Vec<String>>,
    /// A request was held by [`Answer::HoldFirst`].
    held: AtomicBool,
    /// Requests answered before the held one was read (set once it is).
    answered_before_hold: Mutex<Option<usize>>,
}

pub struct Receiver {
    port: u16,
    answer: Arc<Mutex<Answer>>,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = Arc::new(Mutex::new(Answer::Ok));
        let state = Arc::new(State::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s, st) = (answer.clone(), state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (a, s) = (a.clone(), s.clone());
                std::thread::spawn(move || serve(conn, &a, &s));
            }
        });
        Receiver {
            port,
            answer,
            state,
            stop,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn answer(&self, a: Answer) {
        *self.answer.lock().unwrap() = a;
    }

    pub fn lines(&self) -> Vec<Line> {
        self.state.lines.lock().unwrap().clone()
    }

    /// Lines from index `from` on.
    pub fn lines_since(&self, from: usize) -> Vec<Line> {
        let g = self.state.lines.lock().unwrap();
        g.get(from..).map(<[Line]>::to_vec).unwrap_or_default()
    }

    pub fn line_count(&self) -> usize {
        self.state.lines.lock().unwrap().len()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Requests answered with an error status.
    pub fn rejected(&self) -> usize {
        self.state.rejected.load(Ordering::Relaxed)
    }

    /// Whether a request was held by [`Answer::HoldFirst`].
    #[allow(dead_code)]
    pub fn held(&self) -> bool {
        self.state.held.load(Ordering::Acquire)
    }

    /// Requests answered since the held one was read (0 before a hold). A client with
    /// `n` requests in flight may still have `n - 1` sent before the held one among them;
    /// past that, each was sent after it.
    #[allow(dead_code)]
    pub fn answered_since_hold(&self) -> usize {
        let Some(before) = *self.state.answered_before_hold.lock().unwrap() else {
            return 0;
        };
        self.requests().len().saturating_sub(before)
    }

    /// Requests the receiver could not read (bad framing, bad gzip, not UTF-8).
    pub fn bad(&self) -> Vec<String> {
        self.state.bad.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Serves one connection until the client closes it or says `Connection: close`.
fn serve(conn: TcpStream, answer: &Mutex<Answer>, state: &State) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(300)));
    let mut out = match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    };
    let mut reader = BufReader::new(conn);
    loop {
        let Some((path, headers)) = read_head(&mut reader) else {
            return;
        };
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            read_chunked(&mut reader)
        } else {
            let n = header("content-length").map_or(0, |v| v.parse().unwrap_or(0));
            let mut b = vec![0; n];
            reader.read_exact(&mut b).ok().map(|_| b)
        };
        let Some(body) = body else { return };
        let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));

        let a = *answer.lock().unwrap();
        if a == Answer::HoldFirst && !state.held.swap(true, Ordering::AcqRel) {
            let answered = state.requests.lock().unwrap().len();
            *state.answered_before_hold.lock().unwrap() = Some(answered);
            while *answer.lock().unwrap() == Answer::HoldFirst {
                std::thread::sleep(Duration::from_millis(20));
            }
            return;
        }
        let status = match a {
            Answer::Ok | Answer::HoldFirst => 200,
            Answer::Slow(d) => {
                let _one_at_a_time = state.slow.lock().unwrap();
                std::thread::sleep(d);
                200
            }
            Answer::Status(s) => s,
            Answer::Throttle(_) => 429,
        };
        if status == 200 {
            record(state, path, headers, &body);
        } else {
            state.rejected.fetch_add(1, Ordering::Relaxed);
        }
        let reason = if status == 200 { "OK" } else { "Error" };
        let retry_after = match a {
            Answer::Throttle(secs) => format!("Retry-After: {secs}\r\n"),
            _ => String::new(),
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\n{retry_after}Connection: {}\r\n\r\n",
            if close { "close" } else { "keep-alive" }
        );
        if out.write_all(head.as_bytes()).is_err() || close {
            return;
        }
    }
}

fn record(state: &State, path: String, headers: Vec<(String, String)>, body: &[u8]) {
    let gzip = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("content-encoding") && v.contains("gzip"));
    let text = if gzip {
        let mut s = String::new();
        match MultiGzDecoder::new(body).read_to_string(&mut s) {
            Ok(_) => s,
            Err(e) => {
                state.bad.lock().unwrap().push(format!("{path}: gzip: {e}"));
                return;
            }
        }
    } else {
        match String::from_utf8(body.to_vec()) {
            Ok(s) => s,
            Err(e) => {
                state.bad.lock().unwrap().push(format!("{path}: {e}"));
                return;
            }
        }
    };
    let mut lines = state.lines.lock().unwrap();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        lines.push(Line {
            path: path.clone(),
            text: l.to_string(),
        });
    }
    state
        .requests
        .lock()
        .unwrap()
        .push(Request { path, headers });
}

fn read_head(r: &mut impl BufRead) -> Option<(String, Vec<(String, String)>)> {
    let mut first = String::new();
    loop {
        first.clear();
        if r.read_line(&mut first).ok()? == 0 {
            return None;
        }
        if !first.trim().is_empty() {
            break;
        }
    }
    let path = first.split(' ').nth(1)?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            return Some((path, headers));
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
}

fn read_chunked(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size).ok()?;
        let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        if n == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut l = String::new();
                if r.read_line(&mut l).ok()? == 0 || l.trim().is_empty() {
                    return Some(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + n, 0);
        r.read_exact(&mut body[start..]).ok()?;
        let mut crlf = [0; 2];
        r.read_exact(&mut crlf).ok()?;
    }
}
