//! Getting an object's bytes, from S3 or a local file, with errors that say whether trying
//! again can help.
//!
//! Throttling, 5xx answers and broken connections are retried by the SDK (standard retry
//! mode, with backoff and jitter) before they reach here; what is left as `Transient` is
//! retried on a later scan. A denied read (permissions, KMS, credentials, a wrong bucket or
//! region) is `Denied`: retried on a long backoff, since it gets fixed without a restart. A
//! missing or archived object, or an oversized one, is `Permanent`: it is recorded with its
//! reason and not fetched again. [`crate::aws::error`] sorts the answers by their code.

use std::io::Read;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;

use crate::aws::error::{ErrorClass, Operation, describe, err_chain};
use crate::object::{Location, ObjectRef};
use crate::timestamp::EventTime;

/// Why an object's bytes could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Worth another try soon (throttling, 5xx, timeouts, connection errors, expired
    /// session credentials, a skewed clock).
    #[error("{0} (will retry)")]
    Transient(String),
    /// A permission, key or setting problem (AccessDenied, KMS, credentials, NoSuchBucket):
    /// worth another try after a long pause, since it gets fixed without a restart.
    #[error("{0} (will retry after a longer pause)")]
    Denied(String),
    /// Will not get better by retrying (NoSuchKey, an archived object, too large, an
    /// unreadable file).
    #[error("{0}")]
    Permanent(String),
}

impl FetchError {
    pub fn new(class: ErrorClass, text: String) -> Self {
        match class {
            ErrorClass::Transient => FetchError::Transient(text),
            ErrorClass::Denied => FetchError::Denied(text),
            ErrorClass::Permanent => FetchError::Permanent(text),
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            FetchError::Transient(_) => ErrorClass::Transient,
            FetchError::Denied(_) => ErrorClass::Denied,
            FetchError::Permanent(_) => ErrorClass::Permanent,
        }
    }
}

/// An object whose first response has arrived: its bytes are read as a stream.
pub struct Opened {
    /// The object's LastModified as the GET answered it (S3 only): the time for events
    /// without a usable `eventTime` when discovery had none of its own (CloudTrail's SNS
    /// notification names keys only). `None` for files, or when S3 sent none (or one Fluent
    /// Bit cannot carry).
    pub last_modified: Option<EventTime>,
    body: Body,
}

enum Body {
    File(std::fs::File),
    /// Chunks of a download in progress; resumed with ranged GETs by its own task.
    S3(tokio::sync::mpsc::Receiver<Piece>),
}

/// What the download task sends.
pub enum Piece {
    Data(bytes::Bytes),
    End,
    /// The download broke off for good (after resumes); the object is retried later.
    Failed(String),
}

impl Opened {
    /// A blocking reader over the (compressed) bytes; call from a blocking thread.
    pub fn into_reader(self) -> Box<dyn Read + Send> {
        match self.body {
            Body::File(f) => Box::new(f),
            Body::S3(rx) => Box::new(PieceReader {
                rx,
                current: bytes::Bytes::new(),
                ended: false,
            }),
        }
    }
}

/// Opens the object: the first request's answer decides between an error (permanent,
/// denied or transient, see [`FetchError`]) and a stream whose later failures surface as a
/// [`DownloadError`] inside `io::Error`.
pub async fn open(
    client: Option<&Client>,
    object: &ObjectRef,
    max_bytes: u64,
) -> Result<Opened, FetchError> {
    if object.size > max_bytes {
        return Err(too_large(object.size, max_bytes));
    }
    match &object.location {
        Location::File { path, .. } => {
            let path = path.clone();
            let file = tokio::task::spawn_blocking(move || {
                let f = std::fs::File::open(&path)?;
                let len = f.metadata()?.len();
                Ok::<_, std::io::Error>((f, len))
            })
            .await
            .map_err(|e| FetchError::Transient(format!("open task failed: {e}")))?
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    FetchError::Permanent(format!("read: {e}"))
                }
                _ => FetchError::Transient(format!("read: {e}")),
            })?;
            check_len(file.1, max_bytes)?;
            Ok(Opened {
                last_modified: None,
                body: Body::File(file.0),
            })
        }
        Location::S3 { bucket, key } => {
            let client = client.ok_or_else(|| FetchError::Permanent("no S3 client".into()))?;
            let resp = client
                .get_object()
                .bucket(bucket.as_ref())
                .key(key)
                .send()
                .await
                .map_err(|e| {
                    let (class, text) = describe(Operation::GetObject { bucket, key }, &e);
                    FetchError::new(class, text)
                })?;
            if let Some(len) = resp.content_length() {
                check_len(u64::try_from(len).unwrap_or(0), max_bytes)?;
            }
            let (tx, rx) = tokio::sync::mpsc::channel(PIECES_IN_FLIGHT);
            let etag = resp.e_tag().map(String::from);
            let last_modified = resp
                .last_modified()
                .and_then(|t| EventTime::new(t.secs(), t.subsec_nanos()));
            let task = Pump {
                client: client.clone(),
                bucket: bucket.to_string(),
                key: key.clone(),
                etag,
                tx,
            };
            tokio::spawn(task.run(resp.body));
            Ok(Opened {
                last_modified,
                body: Body::S3(rx),
            })
        }
    }
}

/// Chunks buffered between the download and the splitter: memory for a download is
/// bounded by this many body chunks, whatever the object's size.
const PIECES_IN_FLIGHT: usize = 8;

/// How many times a download that broke off mid-body is resumed before the object is left
/// for the next scan.
const RESUMES: u32 = 5;

/// Feeds a download's chunks to the splitter, resuming with a ranged GET (pinned to the
/// first response's ETag) when the body breaks off, so a reset connection costs the rest of
/// the object, not all of it.
struct Pump {
    client: Client,
    bucket: String,
    key: String,
    etag: Option<String>,
    tx: tokio::sync::mpsc::Sender<Piece>,
}

impl Pump {
    async fn run(self, first: aws_sdk_s3::primitives::ByteStream) {
        let mut body = first;
        let mut sent: u64 = 0;
        let mut resumes = 0;
        loop {
            let broke = loop {
                match body.try_next().await {
                    Ok(Some(chunk)) => {
                        sent += chunk.len() as u64;
                        if self.tx.send(Piece::Data(chunk)).await.is_err() {
                            return; // the splitter stopped (shutdown or a bad object)
                        }
                    }
                    Ok(None) => {
                        let _ = self.tx.send(Piece::End).await;
                        return;
                    }
                    Err(e) => break err_chain(&e),
                }
            };
            if resumes == RESUMES {
                let msg =
                    format!("download broke off {resumes} times, last at byte {sent}: {broke}");
                let _ = self.tx.send(Piece::Failed(msg)).await;
                return;
            }
            resumes += 1;
            tokio::time::sleep(backoff(resumes)).await;
            let mut req = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .range(format!("bytes={sent}-"));
            if let Some(tag) = &self.etag {
                req = req.if_match(tag);
            }
            match req.send().await {
                Ok(resp) => body = resp.body,
                Err(e) => {
                    let msg = if http_status(&e) == Some(412) {
                        "the object changed during the download".to_string()
                    } else {
                        let op = Operation::GetObject {
                            bucket: &self.bucket,
                            key: &self.key,
                        };
                        describe(op, &e).1
                    };
                    let _ = self.tx.send(Piece::Failed(msg)).await;
                    return;
                }
            }
        }
    }
}

/// A download that broke off; travels inside `io::Error` through the decompressor.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DownloadError(pub String);

struct PieceReader {
    rx: tokio::sync::mpsc::Receiver<Piece>,
    current: bytes::Bytes,
    ended: bool,
}

impl Read for PieceReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Piece::Data(b)) => self.current = b,
                Some(Piece::End) => self.ended = true,
                Some(Piece::Failed(reason)) => {
                    return Err(std::io::Error::other(DownloadError(reason)));
                }
                None => {
                    return Err(std::io::Error::other(DownloadError(
                        "download stopped".into(),
                    )));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

fn http_status<E>(e: &SdkError<E, HttpResponse>) -> Option<u16> {
    match e {
        SdkError::ServiceError(s) => Some(s.raw().status().as_u16()),
        _ => None,
    }
}

/// Exponential backoff with full jitter: up to 100 ms, 200 ms, 400 ms ... capped at 5 s.
pub fn backoff(attempt: u32) -> std::time::Duration {
    let cap_ms = (100u64 << attempt.min(6)).min(5_000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::time::Duration::from_millis(u64::from(nanos) % cap_ms.max(1))
}

fn check_len(len: u64, max: u64) -> Result<(), FetchError> {
    if len > max {
        Err(too_large(len, max))
    } else {
        Ok(())
    }
}

fn too_large(len: u64, max: u64) -> FetchError {
    FetchError::Permanent(format!(
        "object is {len} bytes, more than max_object_bytes ({max})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Arc;

    /// An HTTP server answering every request with `head` (status line and headers) and
    /// `body`.
    fn serve(head: &'static str, body: &'static [u8]) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes());
                let _ = conn.write_all(body);
            }
        });
        url
    }

    fn client(url: &str) -> Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "AKIDTEST", "secret", None, None, "test",
            ))
            .endpoint_url(url)
            .force_path_style(true)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .build();
        Client::from_conf(conf)
    }

    fn object(time: EventTime) -> ObjectRef {
        ObjectRef::s3(&Arc::from("trail"), "AWSLogs/x.json.gz".into(), 2, time)
    }

    #[tokio::test]
    async fn an_opened_object_carries_the_last_modified_of_its_get() {
        let url = serve(
            "HTTP/1.1 200 OK\r\nLast-Modified: Mon, 10 Jul 2023 11:45:00 GMT\r\nETag: \"e\"",
            b"{}",
        );
        let now = EventTime::now();
        let opened = open(Some(&client(&url)), &object(now), 1 << 20)
            .await
            .ok()
            .unwrap();
        assert_eq!(
            opened.last_modified.map(|t| (t.secs(), t.nanos())),
            Some((1_688_989_500, 0))
        );
    }

    #[tokio::test]
    async fn a_denied_get_is_denied_with_what_it_needs() {
        let url = serve(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml",
            b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
        );
        let err = open(Some(&client(&url)), &object(EventTime::now()), 1 << 20)
            .await
            .err()
            .unwrap();
        assert_eq!(
            err,
            FetchError::Denied(
                "S3 answered 403 AccessDenied: Access Denied; needs s3:GetObject on \
                 arn:aws:s3:::trail/AWSLogs/* (and kms:Decrypt for SSE-KMS)"
                    .into()
            )
        );
    }
}
