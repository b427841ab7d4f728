//! From what the user wrote to what the engine runs on: [`Settings::validate`] checks every
//! key and its combinations and builds a [`Config`], with an error that names the key.

use std::time::Duration;

use super::Backoff;
use super::digest_keys::{DigestKeys, digest_config};
use super::keys::{
    DEFAULT_BATCH_BYTES, DEFAULT_BATCH_BYTES_MAX, DEFAULT_LEASE_SECS, DEFAULT_LIST_CONCURRENCY,
    DEFAULT_LOOKBACK_SECS, DEFAULT_MAX_EVENT_BYTES, DEFAULT_MAX_OBJECT_BYTES,
    DEFAULT_PATH_EXPRESSION, DEFAULT_SCAN_CLAIMS, DEFAULT_SCAN_INTERVAL_SECS,
    DEFAULT_SILENCE_ALARM_SECS, DEFAULT_SQS_IN_FLIGHT, DEFAULT_SQS_RECEIVERS,
    DEFAULT_START_LOOKBACK_SECS, DEFAULT_WORKERS, KEYS,
};
use super::{
    AssumeRole, Config, ConfigError, S3Source, Settings, SharedLedgerConfig, Source, SqsConfig,
    StartTime, StaticCredentials, de,
};
use crate::layout::{Kind, Kinds};
use crate::pathexpr::PathExpression;
use crate::select::Selection;
use crate::timestamp::EventTime;

pub(super) fn bad(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key,
        reason: reason.into(),
    }
}

impl Settings {
    /// Builds settings from string properties (Fluent Bit's form): `lookup` is asked for
    /// each of [`KEYS`]. A value that does not parse is reported with its key.
    pub fn from_properties(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let pairs: Vec<(&'static str, String)> = KEYS
            .iter()
            .filter_map(|k| lookup(k.name).map(|v| (k.name, v)))
            .collect();
        let as_settings = |pairs: &[(&'static str, String)]| {
            let map = pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), serde_json::Value::String(v.clone())))
                .collect();
            serde_json::from_value::<Settings>(serde_json::Value::Object(map))
        };
        as_settings(&pairs).map_err(|e| {
            // serde_json does not say which field failed; find it by trying each alone.
            let key = pairs
                .iter()
                .find(|p| as_settings(std::slice::from_ref(p)).is_err())
                .map_or("?", |p| p.0);
            bad(key, e.to_string())
        })
    }

    /// Checks every value and resolves defaults.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let request_timeout = self.request_timeout.unwrap_or(60);
        if !(1..=3600).contains(&request_timeout) {
            return Err(bad(
                "request_timeout",
                "must be between 1 second and 1 hour",
            ));
        }
        let request_timeout = Duration::from_secs(request_timeout);
        let sqs = match self.sqs_queue_url {
            None => None,
            Some(queue_url) => {
                validate_url("sqs.queue_url", &queue_url)?;
                if let Some(e) = &self.sqs_endpoint {
                    validate_url("sqs.endpoint", e)?;
                }
                let wait = self.sqs_wait_time_secs.unwrap_or(20);
                if wait > 20 {
                    return Err(bad("sqs.wait_time_secs", "must be between 0 and 20"));
                }
                let visibility = self.sqs_visibility_timeout_secs.unwrap_or(300);
                if !(2..=43_200).contains(&visibility) {
                    return Err(bad(
                        "sqs.visibility_timeout_secs",
                        "must be between 2 and 43200 (12 hours)",
                    ));
                }
                let max_receive = self.sqs_max_receive_count.unwrap_or(5);
                if !(1..=1000).contains(&max_receive) {
                    return Err(bad("sqs.max_receive_count", "must be between 1 and 1000"));
                }
                let in_flight = self
                    .sqs_max_messages_in_flight
                    .unwrap_or(DEFAULT_SQS_IN_FLIGHT);
                if !(1..=10_000).contains(&in_flight) {
                    return Err(bad(
                        "sqs.max_messages_in_flight",
                        "must be between 1 and 10000",
                    ));
                }
                let receivers = self.sqs_receivers.unwrap_or(DEFAULT_SQS_RECEIVERS);
                if !(1..=16).contains(&receivers) {
                    return Err(bad("sqs.receivers", "must be between 1 and 16"));
                }
                if request_timeout.as_secs() <= wait {
                    return Err(bad(
                        "request_timeout",
                        format!(
                            "must be longer than sqs.wait_time_secs ({wait}): every long poll would time out"
                        ),
                    ));
                }
                let endpoint = self.sqs_endpoint.or_else(|| queue_url_endpoint(&queue_url));
                Some(SqsConfig {
                    queue_url,
                    endpoint,
                    wait_time: Duration::from_secs(wait),
                    visibility_timeout: Duration::from_secs(visibility),
                    max_receive_count: max_receive as u32,
                    delete_quarantined: self.sqs_delete_quarantined.unwrap_or(false),
                    max_messages_in_flight: in_flight as usize,
                    receivers: receivers as usize,
                })
            }
        };
        let source = match (self.bucket, self.dir) {
            (Some(_), Some(_)) => {
                return Err(bad("bucket", "set either 'bucket' or 'dir', not both"));
            }
            (None, None) if sqs.is_none() => {
                return Err(bad(
                    "bucket",
                    "not set: one of 'bucket' (an S3 bucket), 'sqs.queue_url' or 'dir' (a local folder) is needed",
                ));
            }
            (None, Some(_)) if sqs.is_some() => {
                return Err(bad("sqs.queue_url", "cannot be used with 'dir'"));
            }
            (None, Some(dir)) => {
                if dir.as_os_str().is_empty() {
                    return Err(bad("dir", "must not be empty"));
                }
                if !dir.is_dir() {
                    return Err(bad(
                        "dir",
                        format!("'{}' is not a folder (does it exist?)", dir.display()),
                    ));
                }
                Source::Dir(dir)
            }
            (bucket, None) => {
                if let Some(bucket) = &bucket {
                    validate_bucket(bucket)?;
                }
                for (key, url) in [
                    ("endpoint", &self.endpoint),
                    ("sts_endpoint", &self.sts_endpoint),
                ] {
                    if let Some(url) = url {
                        validate_url(key, url)?;
                    }
                }
                let static_credentials = match (self.access_key_id, self.secret_access_key) {
                    (Some(access_key_id), Some(secret_access_key)) => Some(StaticCredentials {
                        access_key_id,
                        secret_access_key,
                        session_token: self.session_token,
                    }),
                    (None, None) if self.session_token.is_none() => None,
                    (None, None) => {
                        return Err(bad(
                            "session_token",
                            "needs 'access_key_id' and 'secret_access_key'",
                        ));
                    }
                    (Some(_), None) => {
                        return Err(bad("secret_access_key", "missing: 'access_key_id' is set"));
                    }
                    (None, Some(_)) => {
                        return Err(bad("access_key_id", "missing: 'secret_access_key' is set"));
                    }
                };
                let assume_role = match self.role_arn {
                    Some(role_arn) => {
                        if !role_arn.starts_with("arn:") {
                            return Err(bad(
                                "role_arn",
                                "must be an ARN (arn:aws:iam::ACCOUNT:role/NAME)",
                            ));
                        }
                        Some(AssumeRole {
                            role_arn,
                            external_id: self.external_id,
                            sts_endpoint: self.sts_endpoint,
                        })
                    }
                    None if self.external_id.is_some() => {
                        return Err(bad("external_id", "only used with 'role_arn'"));
                    }
                    None => None,
                };
                Source::S3(Box::new(S3Source {
                    bucket,
                    sqs,
                    region: self.region,
                    endpoint: self.endpoint,
                    force_path_style: self.force_path_style.unwrap_or(false),
                    request_timeout,
                    profile: self.profile,
                    assume_role,
                    static_credentials,
                }))
            }
        };

        let path_expression = PathExpression::new(
            self.path_expression
                .as_deref()
                .unwrap_or(DEFAULT_PATH_EXPRESSION),
        )
        .map_err(|r| bad("path_expression", r))?;
        let kinds = match &self.event_kinds {
            // Unset: management and data events, and every other kind the expression
            // matches as written. A broad expression (`AWSLogs/*`, `*.json.gz`) shipped
            // Insight files before kinds existed; it keeps shipping them rather than skip
            // them in silence (or delete their notifications unshipped).
            None => Kinds::of(
                Kind::ALL
                    .into_iter()
                    .filter(|k| *k == Kind::Events || matches_as_written(&path_expression, *k)),
            ),
            Some(names) => event_kinds(names)?,
        };
        // An expression written for another kind's folder ships nothing unless that kind is
        // on. (`CloudTrail` is every kind's level in the default expression.)
        let left_out = Kind::ALL
            .into_iter()
            .filter(|k| *k != Kind::Events && !kinds.contains(*k));
        for kind in left_out {
            if path_expression
                .as_str()
                .split('/')
                .any(|level| level == kind.folder())
            {
                return Err(bad(
                    "event_kinds",
                    format!(
                        "path_expression names {}/ folders, which event_kinds ({kinds}) leaves out: add '{}'",
                        kind.folder(),
                        kind.name()
                    ),
                ));
            }
        }
        let selection = Selection::new(path_expression, kinds);

        let scan_interval = self.scan_interval.unwrap_or(DEFAULT_SCAN_INTERVAL_SECS);
        if !(1..=86_400).contains(&scan_interval) {
            return Err(bad(
                "scan_interval",
                "must be between 1 second and 24 hours",
            ));
        }

        let lookback = self.lookback.unwrap_or(DEFAULT_LOOKBACK_SECS);
        if !(3600..=30 * 86_400).contains(&lookback) {
            return Err(bad("lookback", "must be between 1 hour and 30 days"));
        }

        let list_concurrency = self.list_concurrency.unwrap_or(DEFAULT_LIST_CONCURRENCY);
        if !(1..=256).contains(&list_concurrency) {
            return Err(bad("list_concurrency", "must be between 1 and 256"));
        }

        let scan_claims = self
            .scan_claims
            .map_or(Some(DEFAULT_SCAN_CLAIMS), |n| usize::try_from(n).ok())
            .and_then(std::num::NonZeroUsize::new)
            .filter(|n| n.get() <= 10_000_000)
            .ok_or_else(|| bad("scan_claims", "must be between 1 and 10000000"))?;

        let backoff = |key: &'static str, value: Option<u64>, default: Backoff| {
            let first = value.unwrap_or(u64::from(default.first));
            if !(1..=3600).contains(&first) {
                return Err(bad(key, "must be between 1 second and 1 hour"));
            }
            let first = first as u32;
            Ok(Backoff {
                first,
                cap: default.cap.max(first),
            })
        };
        let retry_backoff = backoff("retry_backoff", self.retry_backoff, Backoff::TRANSIENT)?;
        let silence_alarm = self.silence_alarm.unwrap_or(DEFAULT_SILENCE_ALARM_SECS);
        if silence_alarm > 30 * 86_400 {
            return Err(bad(
                "silence_alarm",
                "must be at most 30 days (0 turns it off)",
            ));
        }
        let per_region = match self.metrics_per_region.as_deref() {
            None | Some("silent") => super::PerRegion::Silent,
            Some("all") => super::PerRegion::All,
            Some("none") => super::PerRegion::None,
            Some(other) => {
                return Err(bad(
                    "metrics.per_region",
                    format!("'{other}' is none of silent, all, none"),
                ));
            }
        };
        if let Some(addr) = &self.metrics_listen
            && addr.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(bad(
                "metrics.listen",
                format!("'{addr}' is not an address and port (e.g. 127.0.0.1:2021)"),
            ));
        }
        let denied_backoff = backoff("denied_backoff", self.denied_backoff, Backoff::DENIED)?;

        let start_time = match self.start_time.as_deref() {
            None => StartTime::Before(Duration::from_secs(DEFAULT_START_LOOKBACK_SECS)),
            Some(text) => parse_start_time(text).ok_or_else(|| {
                bad(
                    "start_time",
                    format!("'{text}' is neither RFC 3339 (2024-01-31T00:00:00Z) nor relative (-24h, -7d, -30m)"),
                )
            })?,
        };

        let batch_bytes = self.batch_bytes.unwrap_or(DEFAULT_BATCH_BYTES);
        if !(64 << 10..=512 << 20).contains(&batch_bytes) {
            return Err(bad("batch_bytes", "must be between 64K and 512M"));
        }
        // A `batch_bytes` set with no ceiling is a fixed size, as before the ceiling existed:
        // it may have been chosen for what a receiver accepts per request (Fluent Bit's
        // `http` output sends a collect as one request), so it must not grow unasked.
        let batch_bytes_max = match (self.batch_bytes_max, self.batch_bytes) {
            (Some(max), _) => max,
            (None, Some(set)) => set,
            (None, None) => DEFAULT_BATCH_BYTES_MAX,
        };
        if batch_bytes_max < batch_bytes || batch_bytes_max > 512 << 20 {
            return Err(bad(
                "batch_bytes_max",
                "must be at least 'batch_bytes' and at most 512M",
            ));
        }
        let buffer_bytes = self.buffer_bytes.unwrap_or(2 * batch_bytes);
        if buffer_bytes < batch_bytes || buffer_bytes > 4 << 30 {
            return Err(bad(
                "buffer_bytes",
                "must be at least 'batch_bytes' and at most 4G",
            ));
        }
        let workers = self.workers.unwrap_or(DEFAULT_WORKERS as u64);
        if !(1..=64).contains(&workers) {
            return Err(bad("workers", "must be between 1 and 64"));
        }
        let max_object_bytes = self.max_object_bytes.unwrap_or(DEFAULT_MAX_OBJECT_BYTES);
        if max_object_bytes < 1024 {
            return Err(bad("max_object_bytes", "must be at least 1K"));
        }
        let max_event_bytes = self.max_event_bytes.unwrap_or(DEFAULT_MAX_EVENT_BYTES);
        if !(1024..=1 << 30).contains(&max_event_bytes) {
            return Err(bad("max_event_bytes", "must be between 1K and 1G"));
        }
        if let Some(k) = &self.metadata_key
            && k.is_empty()
        {
            return Err(bad("metadata_key", "must not be empty"));
        }
        if let Some(db) = &self.db
            && db.as_os_str().is_empty()
        {
            return Err(bad("db", "must not be empty"));
        }
        let shared_ledger = match self.ledger_dynamodb_table {
            None => None,
            Some(table) => {
                if !(3..=255).contains(&table.len())
                    || !table
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                {
                    return Err(bad(
                        "ledger.dynamodb_table",
                        "must be a DynamoDB table name: 3 to 255 of a-z, A-Z, 0-9, '_', '-', '.'",
                    ));
                }
                if self.db.is_some() {
                    return Err(bad(
                        "ledger.dynamodb_table",
                        "set either 'db' (this shipper's own ledger) or 'ledger.dynamodb_table' (one shared by every shipper), not both",
                    ));
                }
                match &source {
                    Source::S3(s3) if s3.bucket.is_none() => {}
                    // Listings split the CloudTrail layout's region prefixes among the
                    // shippers; a flat listing has no prefixes to split.
                    Source::S3(_) if crate::layout::base(selection.expr()).is_some() => {}
                    Source::S3(_) => {
                        return Err(bad(
                            "ledger.dynamodb_table",
                            "listing a bucket with a shared ledger needs a 'path_expression' in CloudTrail's layout (…/AWSLogs/…/CloudTrail/…): shippers split its account and region prefixes",
                        ));
                    }
                    Source::Dir(_) => {
                        return Err(bad(
                            "ledger.dynamodb_table",
                            "works with S3 ('bucket', 'sqs.queue_url'), not 'dir': a folder is one machine's",
                        ));
                    }
                }
                let lease = self.ledger_lease_time.unwrap_or(DEFAULT_LEASE_SECS);
                if !(5..=3600).contains(&lease) {
                    return Err(bad(
                        "ledger.lease_time",
                        "must be between 5 seconds and 1 hour",
                    ));
                }
                Some(SharedLedgerConfig {
                    table,
                    endpoint: self.ledger_dynamodb_endpoint.clone(),
                    lease_time: Duration::from_secs(lease),
                })
            }
        };
        let digest = digest_config(
            DigestKeys {
                validate: self.digest_validate.unwrap_or(false),
                bucket: self.digest_bucket,
                every: self.digest_every,
                grace: self.digest_grace,
                endpoint: self.digest_cloudtrail_endpoint,
                ship_missing: self.digest_ship_missing,
                findings_as_records: self.digest_findings_as_records,
            },
            &source,
            shared_ledger.is_some(),
            lookback,
        )?;
        if shared_ledger.is_none() {
            if self.ledger_dynamodb_endpoint.is_some() {
                return Err(bad(
                    "ledger.dynamodb_endpoint",
                    "needs 'ledger.dynamodb_table'",
                ));
            }
            if self.ledger_lease_time.is_some() {
                return Err(bad("ledger.lease_time", "needs 'ledger.dynamodb_table'"));
            }
        }

        Ok(Config {
            source,
            selection,
            scan_interval: Duration::from_secs(scan_interval),
            lookback: Duration::from_secs(lookback),
            list_concurrency: list_concurrency as usize,
            scan_claims,
            retry_backoff,
            denied_backoff,
            metrics_listen: self.metrics_listen,
            silence_alarm: Duration::from_secs(silence_alarm),
            per_region,
            start_time,
            db: self.db,
            shared_ledger,
            digest,
            batch_bytes: batch_bytes as usize,
            batch_bytes_max: batch_bytes_max as usize,
            buffer_bytes: buffer_bytes as usize,
            workers: workers as usize,
            max_object_bytes,
            max_event_bytes: max_event_bytes as usize,
            metadata_key: self.metadata_key,
        })
    }
}

/// Whether `expr`, as written, matches a file in `kind`'s folder (with and without an
/// organization level, under the expression's own key prefix).
fn matches_as_written(expr: &PathExpression, kind: Kind) -> bool {
    // Every `*` before `AWSLogs/` may stand for a folder name.
    let head = expr
        .as_str()
        .find("AWSLogs/")
        .map_or(String::new(), |at| expr.as_str()[..at].replace('*', "x"));
    let folder = kind.folder();
    ["", "o-abcd1234ef/"].iter().any(|org| {
        expr.matches(&format!(
            "{head}AWSLogs/{org}111122223333/{folder}/us-east-1/2023/07/10/111122223333_{folder}_us-east-1_20230710T0000Z_abcdefgh12345678.json.gz"
        ))
    })
}

/// `event_kinds`: kind names, or `all`. Every name is checked, `all` among them or not.
fn event_kinds(names: &[String]) -> Result<Kinds, ConfigError> {
    let mut kinds = Vec::new();
    let mut all = false;
    for name in names.iter().filter(|n| !n.is_empty()) {
        if name == "all" {
            all = true;
            continue;
        }
        kinds.push(Kind::from_name(name).ok_or_else(|| {
            bad(
                "event_kinds",
                format!(
                    "'{name}' is not a kind: use events, insights, network_activity, aggregated, all"
                ),
            )
        })?);
    }
    if all {
        return Ok(Kinds::ALL);
    }
    let kinds = Kinds::of(kinds);
    if kinds.is_empty() {
        return Err(bad(
            "event_kinds",
            "names no kind (the default is 'events')",
        ));
    }
    Ok(kinds)
}

pub(super) fn validate_bucket(bucket: &str) -> Result<(), ConfigError> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'.' | b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(bad(
            "bucket",
            format!(
                "'{bucket}' is not a bucket name (3-63 lower-case letters, digits, '-', '.'); give the name, not an s3:// URL"
            ),
        ))
    }
}

pub(super) fn validate_url(key: &'static str, url: &str) -> Result<(), ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| bad(key, format!("'{url}' must start with http:// or https://")))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad(key, format!("'{url}' has no host")));
    }
    Ok(())
}

/// The endpoint a queue URL names when its host is not an AWS SQS host (a local or
/// S3-compatible stack): users expect the queue URL to say where the queue is. AWS hosts
/// are left to the SDK, which picks the region's endpoint (FIPS, dual-stack) itself.
fn queue_url_endpoint(queue_url: &str) -> Option<String> {
    let (scheme, rest) = queue_url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .split(':')
        .next()?
        .to_ascii_lowercase();
    let aws = ["amazonaws.com", "amazonaws.com.cn", "api.aws"]
        .iter()
        .any(|d| host == *d || host.ends_with(&format!(".{d}")));
    (!aws).then(|| format!("{scheme}://{authority}"))
}

/// RFC 3339, or `-N` followed by `s`, `m`, `h` or `d` (relative to the first start).
fn parse_start_time(text: &str) -> Option<StartTime> {
    if let Some(rel) = text.strip_prefix('-') {
        return de::parse_duration_secs(rel).map(|s| StartTime::Before(Duration::from_secs(s)));
    }
    EventTime::parse_rfc3339(text).map(StartTime::At)
}
