//! A proxy in front of the test server that adds a round trip's latency to every request:
//! what S3 and SQS cost from a nearby region, which loopback hides.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A runtime of its own running [`latency_proxy`] in front of the test server, and the
/// proxy's endpoint. Keep the runtime for as long as the proxy is used.
pub fn proxied_test_server() -> (tokio::runtime::Runtime, String) {
    let (rt, endpoint, _) = counting_proxy(LATENCY);
    (rt, endpoint)
}

/// When each S3 listing request (`list-type=2`) reached the proxy, in order.
pub type Listings = Arc<Mutex<Vec<Instant>>>;

/// [`proxied_test_server`] with `latency` (zero for none), noting every listing request
/// that passes: what the server was asked, counted outside the shipper.
pub fn counting_proxy(latency: Duration) -> (tokio::runtime::Runtime, String, Listings) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let upstream = crate::server::endpoint()
        .trim_start_matches("http://")
        .to_string();
    let listings = Listings::default();
    let proxy = rt.block_on(latency_proxy(upstream, latency, listings.clone()));
    (rt, proxy, listings)
}

/// What marks an S3 listing in a request line (`GET /bucket?list-type=2&…`).
const LISTING: &[u8] = b"list-type=2";

/// Added before each request reaches the server: S3's own latency from a nearby region.
pub const LATENCY: Duration = Duration::from_millis(30);

/// Forwards loopback connections to `upstream`, each client write held `latency` first
/// (a listing request is one write; the answers flow back at once), noting listings.
async fn latency_proxy(upstream: String, latency: Duration, listings: Listings) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let upstream = upstream.clone();
            let listings = listings.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                });
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    // A request line is in the write that starts the request.
                    let lists = buf[..n]
                        .windows(LISTING.len())
                        .filter(|w| *w == LISTING)
                        .count();
                    if lists > 0 {
                        let now = Instant::now();
                        listings.lock().unwrap().extend((0..lists).map(|_| now));
                    }
                    if !latency.is_zero() {
                        tokio::time::sleep(latency).await;
                    }
                    if sw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}
