//! The HTTP endpoint (`metrics.listen`): `GET /metrics` (Prometheus text), `GET /health`
//! (200 or 503, JSON with the reasons), `GET /status` and `POST /retry` (the operator
//! commands, on the running instance).
//!
//! A scrape endpoint answers a handful of requests a minute from one scraper, so this is a
//! deliberately small HTTP/1.1 responder on the engine's runtime: one request per
//! connection, a bounded request head read under a deadline, no request body (a POST says
//! what it wants in its query). Routes run on a blocking thread: `/status` reads the whole
//! ledger.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a route answers: status, content type, body.
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// What a route is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The query's `name=value` pairs, percent-decoded (`name` alone: an empty value).
    pub query: Vec<(String, String)>,
    /// The peer is on this machine's loopback: what may change state is allowed from there
    /// alone.
    pub loopback: bool,
}

/// Answers a request.
pub type Route = Arc<dyn Fn(&Request) -> Answer + Send + Sync>;

const HEAD_LIMIT: usize = 8 << 10;

/// Serves until the listener's task is dropped.
pub async fn serve(listener: TcpListener, route: Route) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, most likely: wait rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let route = route.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, route)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, route: Route) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > HEAD_LIMIT {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let request = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: parse_query(query),
        loopback: stream.peer_addr().is_ok_and(|a| a.ip().is_loopback()),
    };
    let a = tokio::task::spawn_blocking(move || route(&request))
        .await
        .unwrap_or_else(|_| Answer {
            status: 500,
            content_type: "text/plain",
            body: "the answer failed\n".into(),
        });
    let reason = match a.status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    };
    let response = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        a.status,
        a.content_type,
        a.body.len(),
        a.body
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// `a=1&b&c=%2F` into pairs, percent-decoded (`+` is a space, as forms send it).
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_split_and_decoded() {
        let q = parse_query("id=s3%3A%2F%2Fb%2Fk%20x&all_failed&&id=dir:a+b&bad=%zz%4");
        let want = [
            ("id", "s3://b/k x"),
            ("all_failed", ""),
            ("id", "dir:a b"),
            ("bad", "%zz%4"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(q, want);
    }
}
