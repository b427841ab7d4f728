//! A proxy in front of the test server that adds a round trip's latency to every request:
//! what S3 and SQS cost from a nearby region, which loopback hides.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A runtime of its own running [`latency_proxy`] in front of the test server, and the
/// proxy's endpoint. Keep the runtime for as long as the proxy is used.
pub fn proxied_test_server() -> (tokio::runtime::Runtime, String) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let upstream = crate::server::endpoint()
        .trim_start_matches("http://")
        .to_string();
    let proxy = rt.block_on(latency_proxy(upstream));
    (rt, proxy)
}

/// Added before each request reaches the server: S3's own latency from a nearby region.
pub const LATENCY: Duration = Duration::from_millis(30);

/// Forwards loopback connections to `upstream`, each client write held `LATENCY` first
/// (a listing request is one write; the answers flow back at once).
async fn latency_proxy(upstream: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let upstream = upstream.clone();
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
                    tokio::time::sleep(LATENCY).await;
                    if sw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}
