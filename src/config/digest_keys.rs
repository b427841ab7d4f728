//! The `digest.*` keys: checked together, into the engine's [`DigestConfig`].

use std::time::Duration;

use super::keys::{DEFAULT_DIGEST_EVERY_SECS, DEFAULT_DIGEST_GRACE_SECS};
use super::validate::{bad, validate_bucket, validate_url};
use super::{ConfigError, DigestConfig, Source};

/// The shortest `lookback` digests are checked with.
const DIGEST_MIN_LOOKBACK_SECS: u64 = 27 * 3600;

/// The `digest.*` keys as written.
pub(super) struct DigestKeys {
    pub(super) validate: bool,
    pub(super) bucket: Option<String>,
    pub(super) every: Option<u64>,
    pub(super) grace: Option<u64>,
    pub(super) endpoint: Option<String>,
    pub(super) ship_missing: Option<bool>,
    pub(super) findings_as_records: Option<bool>,
}

/// `digest.validate` and its keys: the bucket is `digest.bucket`, else `bucket`; the other
/// keys are refused without `digest.validate`, so a typo does not pass for a check.
pub(super) fn digest_config(
    k: DigestKeys,
    source: &Source,
    shared_ledger: bool,
    lookback: u64,
) -> Result<Option<DigestConfig>, ConfigError> {
    if !k.validate {
        let set = [
            ("digest.bucket", k.bucket.is_some()),
            ("digest.every", k.every.is_some()),
            ("digest.grace", k.grace.is_some()),
            ("digest.cloudtrail_endpoint", k.endpoint.is_some()),
            ("digest.ship_missing", k.ship_missing.is_some()),
            (
                "digest.findings_as_records",
                k.findings_as_records.is_some(),
            ),
        ];
        if let Some((name, _)) = set.iter().find(|(_, on)| *on) {
            return Err(bad(name, "needs 'digest.validate true'"));
        }
        return Ok(None);
    }
    let Source::S3(s3) = source else {
        return Err(bad(
            "digest.validate",
            "checks an S3 bucket's digests: not with 'dir'",
        ));
    };
    let bucket = match (k.bucket, &s3.bucket) {
        (Some(b), _) => {
            validate_bucket(&b).map_err(|_| bad("digest.bucket", "is not a bucket name"))?;
            b
        }
        (None, Some(b)) => b.clone(),
        (None, None) => {
            return Err(bad(
                "digest.validate",
                "needs the bucket whose digests to check: set 'digest.bucket' (with 'sqs.queue_url' alone there is no 'bucket')",
            ));
        }
    };
    let secs = |name: &'static str,
                v: Option<u64>,
                default: u64,
                range: std::ops::RangeInclusive<u64>,
                says: &'static str| {
        let v = v.unwrap_or(default);
        if range.contains(&v) {
            Ok(Duration::from_secs(v))
        } else {
            Err(bad(name, says))
        }
    };
    if let Some(e) = &k.endpoint {
        validate_url("digest.cloudtrail_endpoint", e)?;
    }
    // A file is judged against the ledger only while the ledger surely remembers it: a
    // lookback less a day and two hours after its digest's end (see `engine::digests`).
    if lookback < DIGEST_MIN_LOOKBACK_SECS {
        return Err(bad(
            "digest.validate",
            "needs 'lookback' of at least 27h: the ledger must remember a shipped file for a while after its digest ends",
        ));
    }
    let ship_missing = k
        .ship_missing
        .unwrap_or(shared_ledger || s3.bucket.is_some());
    Ok(Some(DigestConfig {
        bucket,
        every: secs(
            "digest.every",
            k.every,
            DEFAULT_DIGEST_EVERY_SECS,
            1..=86_400,
            "must be between 1 second and 1 day",
        )?,
        grace: secs(
            "digest.grace",
            k.grace,
            DEFAULT_DIGEST_GRACE_SECS,
            0..=86_400,
            "must be between 0 and 1 day",
        )?,
        cloudtrail_endpoint: k.endpoint,
        ship_missing,
        findings_as_records: k.findings_as_records.unwrap_or(false),
    }))
}
