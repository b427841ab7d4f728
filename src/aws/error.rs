//! Sorting AWS errors by what to do about them, shared by every caller of S3 and SQS.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::read::fetch::FetchError;

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
