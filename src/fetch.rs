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
            let resp = client
                .get_object()
                .bucket(bucket.as_ref())
                .key(key)
                .send()
                .await
                .map_err(classify_sdk_error)?;
            if let Some(len) = resp.content_length() {
                check_len(u64::try_from(len).unwrap_or(0), max_bytes)?;
            }
            let body = resp
                .body
                .collect()
                .await
                .map_err(|e| FetchError::Transient(format!("download broke off: {e}")))?;
            let bytes = body.to_vec();
            check_len(bytes.len() as u64, max_bytes)?;
            Ok(bytes)
        }
    }
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
