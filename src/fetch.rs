//! Getting an object's bytes, from S3 or a local file, with errors that say whether trying
//! again can help.
//!
//! Throttling, 5xx answers and broken connections are retried by the SDK (standard retry
//! mode, with backoff and jitter) before they reach here; what is left as `Transient` is
//! retried on a later scan. A missing object, a denied read or an oversized object is
//! `Permanent`: it is recorded with its reason and not fetched again.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::object::{Location, ObjectRef};

/// Why an object's bytes could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Worth another try later (throttling, 5xx, timeouts, connection errors).
    #[error("{0} (will retry)")]
    Transient(String),
    /// Will not get better by retrying (404, 403, too large, unreadable file).
    #[error("{0}")]
    Permanent(String),
}

/// Reads the whole (compressed) object, refusing one larger than `max_bytes`.
pub async fn fetch(
    client: Option<&Client>,
    object: &ObjectRef,
    max_bytes: u64,
) -> Result<Vec<u8>, FetchError> {
    if object.size > max_bytes {
        return Err(too_large(object.size, max_bytes));
    }
    match &object.location {
        Location::File { path, .. } => {
            let path = path.clone();
            let bytes = tokio::task::spawn_blocking(move || std::fs::read(path))
                .await
                .map_err(|e| FetchError::Transient(format!("read task failed: {e}")))?
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                        FetchError::Permanent(format!("read: {e}"))
                    }
                    _ => FetchError::Transient(format!("read: {e}")),
                })?;
            check_len(bytes.len() as u64, max_bytes)?;
            Ok(bytes)
        }
        Location::S3 { bucket, key } => {
            let client = client.ok_or_else(|| FetchError::Permanent("no S3 client".into()))?;
            download(client, bucket, key, max_bytes).await
        }
    }
}

/// How many times a download that broke off mid-body is resumed before the object is left
/// for the next scan.
const RESUMES: u32 = 5;

/// GetObject, resuming with a ranged GET (pinned to the first response's ETag) when the
/// body breaks off, so a reset connection costs the rest of the object, not all of it.
async fn download(
    client: &Client,
    bucket: &str,
    key: &str,
    max_bytes: u64,
) -> Result<Vec<u8>, FetchError> {
    let mut bytes: Vec<u8> = Vec::new();
    let mut etag: Option<String> = None;
    let mut resumes = 0;
    loop {
        let mut req = client.get_object().bucket(bucket).key(key);
        if !bytes.is_empty() {
            req = req.range(format!("bytes={}-", bytes.len()));
            if let Some(tag) = &etag {
                req = req.if_match(tag);
            }
        }
        let resp = match req.send().await {
            Ok(resp) => resp,
            // The object changed between two parts (412 on If-Match): start over.
            Err(e) if !bytes.is_empty() && http_status(&e) == Some(412) => {
                bytes.clear();
                etag = None;
                continue;
            }
            Err(e) => return Err(classify_sdk_error(e)),
        };
        if bytes.is_empty() {
            etag = resp.e_tag().map(String::from);
            if let Some(len) = resp.content_length() {
                let len = u64::try_from(len).unwrap_or(0);
                check_len(len, max_bytes)?;
                bytes.reserve(usize::try_from(len).unwrap_or(0));
            }
        }
        let mut body = resp.body;
        let broke = loop {
            match body.try_next().await {
                Ok(Some(chunk)) => {
                    bytes.extend_from_slice(&chunk);
                    check_len(bytes.len() as u64, max_bytes)?;
                }
                Ok(None) => break None,
                Err(e) => break Some(err_chain(&e)),
            }
        };
        match broke {
            None => return Ok(bytes),
            Some(_) if resumes < RESUMES => {
                resumes += 1;
                tokio::time::sleep(backoff(resumes)).await;
            }
            Some(reason) => {
                return Err(FetchError::Transient(format!(
                    "download broke off {resumes} times, last at byte {}: {reason}",
                    bytes.len()
                )));
            }
        }
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

/// Sorts an SDK error into transient or permanent, keeping the service's code and message.
pub fn classify_sdk_error<E>(err: SdkError<E, HttpResponse>) -> FetchError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().unwrap_or("unknown");
            let message = service.err().message().unwrap_or("");
            let text = format!("S3 answered {status} {code}: {message}");
            match status {
                400..=499 if status != 408 && status != 429 => FetchError::Permanent(text),
                _ => FetchError::Transient(text),
            }
        }
        SdkError::TimeoutError(_) => FetchError::Transient("request timed out".into()),
        SdkError::DispatchFailure(_) => {
            FetchError::Transient(format!("request failed: {}", err_chain(&err)))
        }
        SdkError::ResponseError(_) => FetchError::Transient("unreadable response".into()),
        SdkError::ConstructionFailure(_) => {
            FetchError::Permanent(format!("request could not be built: {}", err_chain(&err)))
        }
        _ => FetchError::Transient(err_chain(&err)),
    }
}

/// An error and its sources on one line.
pub fn err_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out
}
