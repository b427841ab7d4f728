//! Sorting AWS errors by what to do about them, shared by every caller of S3 and SQS.
//!
//! The service's error CODE decides, not just the HTTP status: a 403 can be a missing
//! permission (fixed by an administrator while we run), an expired session (fixed by the
//! SDK's next credential refresh), a skewed clock or an archived object (never readable).
//! Each failure falls in one of three classes ([`ErrorClass`]) and carries a text that names
//! the status, the code, the service's message and, for permission and setting problems,
//! what to change.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// What to do about a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Try again soon: throttling, 5xx, timeouts, broken connections, a skewed clock, and
    /// expired session credentials (`ExpiredToken`, `TokenRefreshRequired`: the SDK's
    /// credential cache re-reads credentials from its provider, such as the instance role,
    /// SSO or an assumed role, when they expire, so the next request is signed with fresh
    /// ones; only static `session_token` credentials stay expired until the setting changes).
    Transient,
    /// A permission, key or setting problem (`AccessDenied`, `InvalidAccessKeyId`, KMS
    /// denials, `NoSuchBucket`, a nonexistent queue): try again on a long backoff, since
    /// policies and keys get fixed without a restart.
    Denied,
    /// Retrying cannot help: the object is gone (`NoSuchKey`), archived
    /// (`InvalidObjectState`), too large, or the request could not even be built.
    Permanent,
}

/// The request that failed, with the names a hint needs.
#[derive(Debug, Clone, Copy)]
pub enum Operation<'a> {
    /// GetObject (and its ranged resumes).
    GetObject { bucket: &'a str, key: &'a str },
    /// ListObjectsV2, with or without a delimiter.
    ListObjects { bucket: &'a str },
    /// ReceiveMessage, DeleteMessage or ChangeMessageVisibility on the queue.
    Sqs { queue_url: &'a str },
    /// Some S3 request, when the caller has no more to say.
    S3,
}

impl Operation<'_> {
    fn service(&self) -> &'static str {
        match self {
            Operation::Sqs { .. } => "SQS",
            _ => "S3",
        }
    }
}

/// Sorts an SDK error and describes it: `S3 answered 403 AccessDenied: Access Denied; needs
/// s3:GetObject on arn:aws:s3:::bucket/AWSLogs/* (and kms:Decrypt for SSE-KMS)`.
pub fn describe<E>(op: Operation<'_>, err: &SdkError<E, HttpResponse>) -> (ErrorClass, String)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code();
            let message = service.err().message().unwrap_or("");
            let class = classify(op, status, code);
            let mut text = format!(
                "{} answered {status} {}: {message}",
                op.service(),
                code.unwrap_or("(no error code)")
            );
            if let Some(hint) = hint(op, status, code, message, class) {
                text.push_str("; ");
                text.push_str(&hint);
            }
            (class, text)
        }
        SdkError::TimeoutError(_) => (ErrorClass::Transient, "request timed out".into()),
        SdkError::DispatchFailure(_) => (
            ErrorClass::Transient,
            format!("request failed: {}", err_chain(err)),
        ),
        SdkError::ResponseError(_) => (
            ErrorClass::Transient,
            format!("unreadable response: {}", err_chain(err)),
        ),
        SdkError::ConstructionFailure(_) => (
            ErrorClass::Permanent,
            format!("request could not be built: {}", err_chain(err)),
        ),
        _ => (ErrorClass::Transient, err_chain(err)),
    }
}

/// Error codes whose request may succeed when simply tried again.
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "RequestExpired",
    "ExpiredToken",
    "ExpiredTokenException",
    "TokenRefreshRequired",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "PriorRequestNotComplete",
    "OperationAborted",
    "KMS.ThrottlingException",
    "KMS.KMSInternalException",
    "KMS.DependencyTimeoutException",
    "OverLimit",
];

/// Error codes that an administrator fixes (policy, key, account, setting).
const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
    "AccountProblem",
    "InvalidToken",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "MissingAuthenticationToken",
    "IncompleteSignature",
    "InvalidSecurity",
    "NotSignedUp",
    "OptInRequired",
    "NoSuchBucket",
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
    "IllegalLocationConstraintException",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "AWS.SimpleQueueService.QueueDeletedRecently",
    "InvalidAddress",
];

/// Error codes that no retry can fix.
const PERMANENT_CODES: &[&str] = &[
    "NoSuchKey",
    "NoSuchVersion",
    "InvalidObjectState",
    "InvalidRange",
];

/// The class of a service answer: by its code first, by its status when the code is
/// unknown or missing.
pub fn classify(op: Operation<'_>, status: u16, code: Option<&str>) -> ErrorClass {
    if let Some(code) = code {
        if TRANSIENT_CODES.contains(&code) {
            return ErrorClass::Transient;
        }
        if DENIED_CODES.contains(&code) || code.starts_with("KMS.") {
            return ErrorClass::Denied;
        }
        if PERMANENT_CODES.contains(&code) {
            return ErrorClass::Permanent;
        }
    }
    let object = matches!(op, Operation::GetObject { .. });
    match status {
        408 | 429 | 500..=599 => ErrorClass::Transient,
        300..=399 | 401 | 403 => ErrorClass::Denied,
        // A missing object is gone for good; a missing bucket or queue is a setting.
        404 if object => ErrorClass::Permanent,
        404 => ErrorClass::Denied,
        // Other client errors on an object: something about the object itself (an SSE-C
        // key it needs, say). On a listing or the queue, only a setting can cause them.
        400..=499 if object => ErrorClass::Permanent,
        400..=499 => ErrorClass::Denied,
        _ => ErrorClass::Transient,
    }
}

/// What to change, for permission and setting problems.
fn hint(
    op: Operation<'_>,
    status: u16,
    code: Option<&str>,
    message: &str,
    class: ErrorClass,
) -> Option<String> {
    let code = code.unwrap_or("");
    let kms = code.starts_with("KMS.") || message.contains("KMS") || message.contains("kms:");
    let credentials = matches!(
        code,
        "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "InvalidToken"
            | "InvalidClientTokenId"
            | "UnrecognizedClientException"
            | "MissingAuthenticationToken"
            | "IncompleteSignature"
    );
    if credentials {
        return Some(
            "check the credentials: 'access_key_id'/'secret_access_key'/'session_token', \
             'profile', 'role_arn' or the environment (AWS_ACCESS_KEY_ID ...)"
                .into(),
        );
    }
    if matches!(code, "RequestTimeTooSkewed" | "RequestExpired") {
        return Some("this machine's clock is off; synchronise it (NTP)".into());
    }
    if matches!(code, "AllAccessDisabled" | "AccountProblem" | "NotSignedUp") {
        return Some("the AWS account or the resource is disabled; see AWS Support".into());
    }
    if matches!(
        code,
        "PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException"
    ) || (300..400).contains(&status)
    {
        return Some("check 'region' (and 'endpoint'): the bucket is in another region".into());
    }
    match op {
        Operation::GetObject { bucket, key } => {
            if code == "NoSuchBucket" {
                return Some("check 'bucket' (and 'region'/'endpoint')".into());
            }
            if code.starts_with("KMS.") {
                return Some(format!(
                    "needs kms:Decrypt on the KMS key that encrypts s3://{bucket}/{key}"
                ));
            }
            (class == ErrorClass::Denied && (code.starts_with("AccessDenied") || status == 403))
                .then(|| {
                    format!(
                        "needs s3:GetObject on arn:aws:s3:::{bucket}/{}* (and kms:Decrypt for SSE-KMS)",
                        key_prefix(key),
                    )
                })
        }
        Operation::ListObjects { bucket } => {
            if code == "NoSuchBucket" || status == 404 {
                return Some("check 'bucket' (and 'region'/'endpoint')".into());
            }
            (class == ErrorClass::Denied && (code.starts_with("AccessDenied") || status == 403))
                .then(|| format!("needs s3:ListBucket on arn:aws:s3:::{bucket}"))
        }
        Operation::Sqs { .. } => {
            if matches!(
                code,
                "AWS.SimpleQueueService.NonExistentQueue"
                    | "QueueDoesNotExist"
                    | "AWS.SimpleQueueService.QueueDeletedRecently"
                    | "InvalidAddress"
            ) || status == 404
            {
                return Some("check 'sqs.queue_url'".into());
            }
            if kms {
                return Some("needs kms:Decrypt on the KMS key that encrypts the queue".into());
            }
            (class == ErrorClass::Denied && (code.starts_with("AccessDenied") || status == 403))
                .then(|| {
                    "needs sqs:ReceiveMessage, sqs:DeleteMessage, sqs:ChangeMessageVisibility \
                     on the queue"
                        .into()
                })
        }
        Operation::S3 => None,
    }
}

/// The part of a key a policy grants on: up to and including `AWSLogs/` for the CloudTrail
/// layout, else the key's folder.
fn key_prefix(key: &str) -> &str {
    const LOGS: &str = "AWSLogs/";
    if let Some(at) = key.find(LOGS) {
        return &key[..at + LOGS.len()];
    }
    key.rfind('/').map_or("", |at| &key[..=at])
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

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::error::ErrorMetadata;
    use aws_sdk_s3::operation::get_object::GetObjectError;
    use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error;
    use aws_sdk_sqs::operation::receive_message::ReceiveMessageError;
    use aws_smithy_types::body::SdkBody;

    const GET: Operation<'static> = Operation::GetObject {
        bucket: "trail",
        key: "AWSLogs/111122223333/CloudTrail/us-east-1/2023/07/10/x.json.gz",
    };
    const LIST: Operation<'static> = Operation::ListObjects { bucket: "trail" };
    const SQS: Operation<'static> = Operation::Sqs {
        queue_url: "https://sqs.us-east-1.amazonaws.com/111122223333/q",
    };

    fn raw(status: u16) -> HttpResponse {
        HttpResponse::new(status.try_into().unwrap(), SdkBody::empty())
    }

    fn meta(code: &str, message: &str) -> ErrorMetadata {
        let mut b = ErrorMetadata::builder().message(message);
        if !code.is_empty() {
            b = b.code(code);
        }
        b.build()
    }

    fn get(status: u16, code: &str, message: &str) -> (ErrorClass, String) {
        let err =
            SdkError::service_error(GetObjectError::generic(meta(code, message)), raw(status));
        describe(GET, &err)
    }

    fn list(status: u16, code: &str, message: &str) -> (ErrorClass, String) {
        let err = SdkError::service_error(
            ListObjectsV2Error::generic(meta(code, message)),
            raw(status),
        );
        describe(LIST, &err)
    }

    fn sqs(status: u16, code: &str, message: &str) -> (ErrorClass, String) {
        let err = SdkError::service_error(
            ReceiveMessageError::generic(meta(code, message)),
            raw(status),
        );
        describe(SQS, &err)
    }

    use ErrorClass::{Denied, Permanent, Transient};

    /// One row per code, as S3 answers GetObject.
    #[test]
    fn get_object_errors_are_classified_by_code() {
        let rows: &[(u16, &str, ErrorClass)] = &[
            (503, "SlowDown", Transient),
            (400, "RequestTimeout", Transient),
            (403, "RequestTimeTooSkewed", Transient),
            (400, "ExpiredToken", Transient),
            (400, "TokenRefreshRequired", Transient),
            (500, "InternalError", Transient),
            (503, "ServiceUnavailable", Transient),
            (503, "KMS.ThrottlingException", Transient),
            (403, "AccessDenied", Denied),
            (403, "InvalidAccessKeyId", Denied),
            (403, "SignatureDoesNotMatch", Denied),
            (403, "AllAccessDisabled", Denied),
            (403, "AccountProblem", Denied),
            (400, "InvalidToken", Denied),
            (403, "KMS.AccessDeniedException", Denied),
            (400, "KMS.DisabledException", Denied),
            (400, "KMS.NotFoundException", Denied),
            (404, "NoSuchBucket", Denied),
            (301, "PermanentRedirect", Denied),
            (400, "AuthorizationHeaderMalformed", Denied),
            (404, "NoSuchKey", Permanent),
            (403, "InvalidObjectState", Permanent),
            (416, "InvalidRange", Permanent),
            // Unknown codes (or none): by status.
            (408, "", Transient),
            (429, "", Transient),
            (502, "", Transient),
            (504, "SomethingNew", Transient),
            (403, "", Denied),
            (401, "SomethingNew", Denied),
            (404, "", Permanent),
            (400, "InvalidRequest", Permanent),
        ];
        for &(status, code, want) in rows {
            let (class, text) = get(status, code, "msg");
            assert_eq!(class, want, "{status} {code}: {text}");
            assert!(
                text.starts_with(&format!("S3 answered {status} ")),
                "{text}"
            );
            assert!(text.contains(code), "{text}");
        }
    }

    #[test]
    fn list_and_queue_errors_are_settings_when_not_found() {
        assert_eq!(list(404, "NoSuchBucket", "").0, Denied);
        assert_eq!(list(404, "", "").0, Denied);
        assert_eq!(list(400, "InvalidArgument", "").0, Denied);
        assert_eq!(list(503, "SlowDown", "").0, Transient);
        assert_eq!(list(403, "AccessDenied", "").0, Denied);
        let rows: &[(u16, &str, ErrorClass)] = &[
            (400, "AWS.SimpleQueueService.NonExistentQueue", Denied),
            (400, "QueueDoesNotExist", Denied),
            (403, "AccessDenied", Denied),
            (400, "AccessDeniedException", Denied),
            (400, "KMS.AccessDeniedException", Denied),
            (403, "InvalidClientTokenId", Denied),
            (400, "UnrecognizedClientException", Denied),
            (400, "ExpiredTokenException", Transient),
            (400, "ThrottlingException", Transient),
            (400, "RequestThrottled", Transient),
            (403, "OverLimit", Transient),
            (500, "InternalFailure", Transient),
            (400, "InvalidParameterValue", Denied),
        ];
        for &(status, code, want) in rows {
            let (class, text) = sqs(status, code, "msg");
            assert_eq!(class, want, "{status} {code}: {text}");
            assert!(
                text.starts_with(&format!("SQS answered {status} {code}")),
                "{text}"
            );
        }
    }

    #[test]
    fn denied_and_setting_errors_say_what_to_change() {
        let (_, t) = get(403, "AccessDenied", "Access Denied");
        assert_eq!(
            t,
            "S3 answered 403 AccessDenied: Access Denied; needs s3:GetObject on \
             arn:aws:s3:::trail/AWSLogs/* (and kms:Decrypt for SSE-KMS)"
        );
        let (_, t) = get(403, "KMS.AccessDeniedException", "denied");
        assert!(t.contains("kms:Decrypt"), "{t}");
        let (_, t) = get(404, "NoSuchBucket", "The specified bucket does not exist");
        assert!(
            t.ends_with("; check 'bucket' (and 'region'/'endpoint')"),
            "{t}"
        );
        let (_, t) = list(403, "AccessDenied", "Access Denied");
        assert!(
            t.ends_with("; needs s3:ListBucket on arn:aws:s3:::trail"),
            "{t}"
        );
        let (_, t) = list(404, "NoSuchBucket", "");
        assert!(
            t.ends_with("check 'bucket' (and 'region'/'endpoint')"),
            "{t}"
        );
        let (_, t) = sqs(400, "AWS.SimpleQueueService.NonExistentQueue", "gone");
        assert!(t.ends_with("; check 'sqs.queue_url'"), "{t}");
        let (_, t) = sqs(400, "QueueDoesNotExist", "gone");
        assert!(t.ends_with("; check 'sqs.queue_url'"), "{t}");
        let (_, t) = sqs(403, "AccessDenied", "not authorized");
        assert!(
            t.ends_with(
                "; needs sqs:ReceiveMessage, sqs:DeleteMessage, sqs:ChangeMessageVisibility on the queue"
            ),
            "{t}"
        );
        let (_, t) = get(403, "InvalidAccessKeyId", "no such key id");
        assert!(t.contains("check the credentials"), "{t}");
        let (_, t) = get(301, "PermanentRedirect", "use the right endpoint");
        assert!(t.contains("check 'region'"), "{t}");
        // Transient and permanent answers carry no hint.
        assert_eq!(
            get(503, "SlowDown", "slow").1,
            "S3 answered 503 SlowDown: slow"
        );
        assert_eq!(
            get(404, "NoSuchKey", "gone").1,
            "S3 answered 404 NoSuchKey: gone"
        );
    }

    #[test]
    fn errors_without_an_answer() {
        let timeout: SdkError<GetObjectError, HttpResponse> = SdkError::timeout_error("too slow");
        assert_eq!(describe(GET, &timeout).0, Transient);
        let dispatch: SdkError<GetObjectError, HttpResponse> = SdkError::dispatch_failure(
            aws_sdk_s3::error::ConnectorError::io("connection reset".into()),
        );
        assert_eq!(describe(GET, &dispatch).0, Transient);
        let build: SdkError<GetObjectError, HttpResponse> =
            SdkError::construction_failure("bad input");
        assert_eq!(describe(GET, &build).0, Permanent);
        let denied = SdkError::<GetObjectError, HttpResponse>::service_error(
            GetObjectError::generic(meta("AccessDenied", "x")),
            raw(403),
        );
        assert_eq!(describe(Operation::S3, &denied).0, Denied);
    }
}
