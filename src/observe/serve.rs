//! The HTTP endpoint (`metrics.listen`): `GET /metrics` (Prometheus text) and
//! `GET /health` (200 or 503, JSON with the reasons).
//!
//! A scrape endpoint answers a handful of requests a minute from one scraper, so this is a
//! deliberately small HTTP/1.1 responder on the engine's runtime: one request per
//! connection, a bounded request head read under a deadline, GET only.

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

/// Answers a path.
pub type Route = Arc<dyn Fn(&str) -> Answer + Send + Sync>;

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
    let path = target.split('?').next().unwrap_or("");
    let a = if method == "GET" {
        route(path)
    } else {
        Answer {
            status: 405,
            content_type: "text/plain",
            body: "GET only\n".into(),
        }
    };
    let reason = match a.status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
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
