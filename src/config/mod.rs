//! Configuration: one set of keys for every front end.
//!
//! Fluent Bit hands the plugin strings (`scan_interval 60`, `batch_bytes 4M`); the CLI reads
//! a TOML file with typed values. Both go through the same serde struct, whose field
//! deserializers accept a number or its string form, so a key means the same thing
//! everywhere. [`Settings`] is the raw, user-facing shape; [`Settings::validate`] turns it
//! into a [`Config`] whose types rule out the invalid combinations, with an error that names
//! the key.
//!
//! `keys.rs` is the table of keys and defaults, `de.rs` the field deserializers, `file.rs`
//! settings files, `secret.rs` values never printed; this file the settings and their
//! validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::ledger::Backoff;
use crate::pathexpr::PathExpression;
use crate::timestamp::EventTime;

pub(crate) mod de;
mod file;
mod keys;
mod secret;

pub use file::{FileError, load_file, load_file_with};
pub use keys::*;
pub use secret::Secret;

/// The keys as a user writes them, before validation. Field docs are the user docs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// S3 bucket that receives the trail's objects. Exactly one of `bucket` and `dir`.
    pub bucket: Option<String>,
    /// Local folder laid out like the bucket (an `aws s3 sync` copy); read instead of S3.
    pub dir: Option<PathBuf>,
    /// Which keys to ship; `*` matches any run of characters including `/`.
    pub path_expression: Option<String>,
    /// AWS region of the bucket; default from the SDK chain (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// Custom S3 endpoint URL (S3-compatible stores, VPC endpoints, tests).
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most S3-compatible stores.
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub force_path_style: Option<bool>,
    /// Shared-config profile for credentials and region.
    pub profile: Option<String>,
    /// Role to assume (through STS) before reading the bucket.
    pub role_arn: Option<String>,
    /// External ID for `role_arn`, when the role's trust policy asks for one.
    pub external_id: Option<Secret>,
    /// Custom STS endpoint URL for `role_arn`.
    pub sts_endpoint: Option<String>,
    /// Static credentials; when unset the SDK's default chain is used.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    /// Seconds between two listings of the bucket (suffixes `s`, `m`, `h` accepted).
    #[serde(default, deserialize_with = "de::opt_secs")]
    pub scan_interval: Option<u64>,
    /// Seconds a request may wait on the server before it is abandoned and retried.
    #[serde(default, deserialize_with = "de::opt_secs")]
    pub request_timeout: Option<u64>,
    /// How far behind the listing position late objects are still found, and how long
    /// finished objects are remembered.
    #[serde(default, deserialize_with = "de::opt_secs")]
    pub lookback: Option<u64>,
    /// First wait before an object that failed transiently is tried again.
    #[serde(default, deserialize_with = "de::opt_secs")]
    pub retry_backoff: Option<u64>,
    /// Where to serve `/metrics` and `/health`.
    #[serde(rename = "metrics.listen")]
    pub metrics_listen: Option<String>,
    /// Seconds without a new object before an account and region counts as silent.
    #[serde(default, deserialize_with = "de::opt_secs")]
    pub silence_alarm: Option<u64>,
    /// First wait before an object whose read was denied is tried again.
    #[serde(default, deserialize_with = "de::opt_secs")]
    pub denied_backoff: Option<u64>,
    /// Skip objects delivered before this time: RFC 3339 or relative (`-24h`, `-7d`).
    pub start_time: Option<String>,
    /// State file (which objects are shipped); in memory only when unset.
    pub db: Option<PathBuf>,
    /// Bytes handed to the host per collect (Fluent Bit calls once a second).
    #[serde(default, deserialize_with = "de::opt_bytes")]
    pub batch_bytes: Option<u64>,
    /// Encoded bytes held ready for the host; downloads wait when it is full.
    #[serde(default, deserialize_with = "de::opt_bytes")]
    pub buffer_bytes: Option<u64>,
    /// Objects downloaded and split in parallel.
    #[serde(default, deserialize_with = "de::opt_count")]
    pub workers: Option<u64>,
    /// Largest object accepted, in bytes after decompression.
    #[serde(default, deserialize_with = "de::opt_bytes")]
    pub max_object_bytes: Option<u64>,
    /// Largest single event, in bytes; a larger one ends its object with that reason.
    #[serde(default, deserialize_with = "de::opt_bytes")]
    pub max_event_bytes: Option<u64>,
    /// When set, each record gets `{"bucket": ..., "key": ...}` of its object under this key.
    pub metadata_key: Option<String>,
    /// SQS queue receiving the bucket's object notifications: event-driven discovery.
    #[serde(rename = "sqs.queue_url")]
    pub sqs_queue_url: Option<String>,
    /// Custom SQS endpoint URL (VPC endpoint, tests).
    #[serde(rename = "sqs.endpoint")]
    pub sqs_endpoint: Option<String>,
    /// Long-poll wait per receive, 0-20 seconds.
    #[serde(
        rename = "sqs.wait_time_secs",
        default,
        deserialize_with = "de::opt_secs"
    )]
    pub sqs_wait_time_secs: Option<u64>,
    /// Visibility timeout asked for on receive and kept up by a heartbeat while a message's
    /// objects are in flight.
    #[serde(
        rename = "sqs.visibility_timeout_secs",
        default,
        deserialize_with = "de::opt_secs"
    )]
    pub sqs_visibility_timeout_secs: Option<u64>,
    /// Receives after which a message whose objects keep failing is quarantined.
    #[serde(
        rename = "sqs.max_receive_count",
        default,
        deserialize_with = "de::opt_count"
    )]
    pub sqs_max_receive_count: Option<u64>,
    /// Delete quarantined messages (default: leave them to the queue's redrive policy).
    #[serde(
        rename = "sqs.delete_quarantined",
        default,
        deserialize_with = "de::opt_bool"
    )]
    pub sqs_delete_quarantined: Option<bool>,
    /// Messages held (received, not yet deleted) at once.
    #[serde(
        rename = "sqs.max_messages_in_flight",
        default,
        deserialize_with = "de::opt_count"
    )]
    pub sqs_max_messages_in_flight: Option<u64>,
}

/// Event-driven discovery through SQS.
#[derive(Debug, Clone)]
pub struct SqsConfig {
    pub queue_url: String,
    pub endpoint: Option<String>,
    pub wait_time: Duration,
    pub visibility_timeout: Duration,
    pub max_receive_count: u32,
    pub delete_quarantined: bool,
    pub max_messages_in_flight: usize,
}

/// Where objects come from.
#[derive(Debug, Clone)]
pub enum Source {
    S3(Box<S3Source>),
    Dir(PathBuf),
}

/// How to reach the bucket.
#[derive(Debug, Clone)]
pub struct S3Source {
    /// The bucket to list; `None` with SQS alone (notifications name their buckets).
    pub bucket: Option<String>,
    pub sqs: Option<SqsConfig>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    pub request_timeout: Duration,
    pub profile: Option<String>,
    pub assume_role: Option<AssumeRole>,
    pub static_credentials: Option<StaticCredentials>,
}

#[derive(Debug, Clone)]
pub struct AssumeRole {
    pub role_arn: String,
    pub external_id: Option<Secret>,
    pub sts_endpoint: Option<String>,
}

#[derive(Debug, Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: Source,
    pub path_expression: PathExpression,
    pub scan_interval: Duration,
    /// Late objects are found this far behind each listing's position (see
    /// `docs/delivery.md`); finished objects are remembered as long.
    pub lookback: Duration,
    /// How objects that failed transiently are retried.
    pub retry_backoff: Backoff,
    /// Where `/metrics` and `/health` are served, if anywhere.
    pub metrics_listen: Option<String>,
    /// Quiet time after which an account and region counts as silent (zero: never).
    pub silence_alarm: Duration,
    /// How objects whose read was denied are retried.
    pub denied_backoff: Backoff,
    /// Objects last modified before this are skipped, unless the state says otherwise.
    pub start_time: StartTime,
    pub db: Option<PathBuf>,
    pub batch_bytes: usize,
    pub buffer_bytes: usize,
    pub workers: usize,
    pub max_object_bytes: u64,
    pub max_event_bytes: usize,
    pub metadata_key: Option<String>,
}

/// `start_time` as given: relative values are resolved against the first start, which the
/// state file remembers, so a restart does not move the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTime {
    At(EventTime),
    Before(Duration),
}

/// A configuration value that cannot be used, with the key it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{key}': {reason}")]
pub struct ConfigError {
    pub key: &'static str,
    pub reason: String,
}

fn bad(key: &'static str, reason: impl Into<String>) -> ConfigError {
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
                let in_flight = self.sqs_max_messages_in_flight.unwrap_or(100);
                if !(1..=10_000).contains(&in_flight) {
                    return Err(bad(
                        "sqs.max_messages_in_flight",
                        "must be between 1 and 10000",
                    ));
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

        Ok(Config {
            source,
            path_expression,
            scan_interval: Duration::from_secs(scan_interval),
            lookback: Duration::from_secs(lookback),
            retry_backoff,
            denied_backoff,
            metrics_listen: self.metrics_listen,
            silence_alarm: Duration::from_secs(silence_alarm),
            start_time,
            db: self.db,
            batch_bytes: batch_bytes as usize,
            buffer_bytes: buffer_bytes as usize,
            workers: workers as usize,
            max_object_bytes,
            max_event_bytes: max_event_bytes as usize,
            metadata_key: self.metadata_key,
        })
    }
}

fn validate_bucket(bucket: &str) -> Result<(), ConfigError> {
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

fn validate_url(key: &'static str, url: &str) -> Result<(), ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Result<Config, String> {
        let s = Settings::from_properties(|k| {
            pairs
                .iter()
                .find(|(pk, _)| *pk == k)
                .map(|(_, v)| v.to_string())
        })
        .map_err(|e| e.to_string())?;
        s.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = props(&[("bucket", "my-trail")]).unwrap();
        assert_eq!(c.path_expression.as_str(), DEFAULT_PATH_EXPRESSION);
        assert_eq!(c.scan_interval, Duration::from_secs(60));
        assert_eq!(c.batch_bytes, 4 << 20);
        assert_eq!(c.buffer_bytes, 8 << 20);
        assert_eq!(c.workers, 4);
        assert_eq!(c.start_time, StartTime::Before(Duration::from_secs(86_400)));
    }

    #[test]
    fn strings_with_units() {
        let c = props(&[
            ("bucket", "b-1"),
            ("scan_interval", "5m"),
            ("batch_bytes", "16M"),
            ("workers", "8"),
            ("force_path_style", "On"),
            ("start_time", "-7d"),
        ])
        .unwrap();
        assert_eq!(c.scan_interval, Duration::from_secs(300));
        assert_eq!(c.batch_bytes, 16 << 20);
        assert_eq!(c.workers, 8);
        assert_eq!(
            c.start_time,
            StartTime::Before(Duration::from_secs(7 * 86_400))
        );
        let Source::S3(s3) = c.source else { panic!() };
        assert!(s3.force_path_style);
    }

    #[test]
    fn errors_name_the_key() {
        for (pairs, key) in [
            (&[][..], "'bucket'"),
            (&[("bucket", "s3://x")][..], "'bucket'"),
            (&[("bucket", "abc"), ("dir", "/x")][..], "'bucket'"),
            (&[("bucket", "abc"), ("workers", "0")][..], "'workers'"),
            (&[("bucket", "abc"), ("workers", "many")][..], "'workers'"),
            (
                &[("bucket", "abc"), ("batch_bytes", "1")][..],
                "'batch_bytes'",
            ),
            (
                &[("bucket", "abc"), ("start_time", "yesterday")][..],
                "'start_time'",
            ),
            (
                &[("bucket", "abc"), ("endpoint", "localhost:9000")][..],
                "'endpoint'",
            ),
            (
                &[("bucket", "abc"), ("access_key_id", "AKIA")][..],
                "'secret_access_key'",
            ),
            (
                &[("bucket", "abc"), ("role_arn", "admin")][..],
                "'role_arn'",
            ),
            (
                &[("bucket", "abc"), ("force_path_style", "maybe")][..],
                "'force_path_style'",
            ),
        ] {
            let err = props(pairs).unwrap_err();
            assert!(err.contains(key), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn the_defaults_shown_in_the_key_table_are_the_defaults() {
        let base = [
            ("bucket", "my-trail"),
            ("sqs.queue_url", "https://sqs.us-east-1.amazonaws.com/1/q"),
        ];
        let implicit = format!("{:?}", props(&base).unwrap());
        let mut explicit: Vec<(&str, &str)> = base.to_vec();
        explicit.extend(KEYS.iter().filter_map(|k| Some((k.name, k.default?))));
        assert_eq!(format!("{:?}", props(&explicit).unwrap()), implicit);
        for k in KEYS {
            let Some(d) = k.default else { continue };
            let parses = match k.kind {
                KeyKind::Bool => ["true", "false", "on", "off"].contains(&d),
                KeyKind::Int => d.parse::<u64>().is_ok(),
                KeyKind::Size => de::parse_bytes(d).is_some(),
                KeyKind::Time => d.parse::<u64>().is_ok(),
                KeyKind::Str => true,
            };
            assert!(
                parses,
                "{}: default {d} is not a plain {:?}",
                k.name, k.kind
            );
        }
    }

    #[test]
    fn a_non_aws_queue_url_names_the_sqs_endpoint() {
        let sqs = |pairs: &[(&str, &str)]| {
            let Source::S3(s3) = props(pairs).unwrap().source else {
                panic!()
            };
            s3.sqs.unwrap().endpoint
        };
        let q = "http://127.0.0.1:4566/000000000000/q";
        assert_eq!(
            sqs(&[("sqs.queue_url", q)]).as_deref(),
            Some("http://127.0.0.1:4566")
        );
        assert_eq!(
            sqs(&[
                ("sqs.queue_url", q),
                ("sqs.endpoint", "http://localhost:9324")
            ])
            .as_deref(),
            Some("http://localhost:9324"),
            "an explicit sqs.endpoint wins"
        );
        for aws in [
            "https://sqs.us-east-1.amazonaws.com/123456789012/q",
            "https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q",
            "https://queue.amazonaws.com/123456789012/q",
        ] {
            assert_eq!(sqs(&[("sqs.queue_url", aws)]), None, "{aws}");
        }
    }

    #[test]
    fn a_missing_dir_and_a_poll_longer_than_the_timeout_are_refused() {
        let err = props(&[("dir", "/nonexistent/cloudtrail-s3-test")]).unwrap_err();
        assert!(
            err.contains("'dir'") && err.contains("does it exist"),
            "{err}"
        );
        let err = props(&[
            ("sqs.queue_url", "https://sqs.us-east-1.amazonaws.com/1/q"),
            ("request_timeout", "20"),
        ])
        .unwrap_err();
        assert!(err.contains("'request_timeout'"), "{err}");
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let c = props(&[
            ("bucket", "abc"),
            ("access_key_id", "AKIAEXAMPLE"),
            ("secret_access_key", "wJalrXUtnFEMI/K7MDENG"),
        ])
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("wJalrXUtnFEMI"), "{dbg}");
    }

    #[test]
    fn keys_list_matches_settings_fields() {
        // Every listed key is accepted...
        let toml: String = KEYS
            .iter()
            .map(|k| format!("\"{}\" = \"1\"\n", k.name))
            .collect();
        let parsed: Result<Settings, _> = toml::from_str(&toml);
        assert!(parsed.is_ok(), "{parsed:?}");
        // ...and a key that is not listed is refused by name.
        let err = toml::from_str::<Settings>("bucket = \"b\"\nscan_intervall = 5\n").unwrap_err();
        assert!(err.to_string().contains("scan_intervall"), "{err}");
        // ...and every field of the struct is listed.
        let mut fields = struct_fields::<Settings>();
        fields.sort_unstable();
        let mut keys: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        keys.sort_unstable();
        assert_eq!(fields, keys);
    }

    /// The field names serde's derive gives a struct, read by asking it to deserialize.
    fn struct_fields<'de, T: Deserialize<'de>>() -> Vec<&'static str> {
        struct Probe<'a>(&'a mut Vec<&'static str>);
        #[derive(Debug)]
        struct Stop;
        impl std::fmt::Display for Stop {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("stop")
            }
        }
        impl std::error::Error for Stop {}
        impl serde::de::Error for Stop {
            fn custom<M: std::fmt::Display>(_: M) -> Self {
                Stop
            }
        }
        impl<'de> Deserializer<'de> for Probe<'_> {
            type Error = Stop;
            fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
                Err(Stop)
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Stop> {
                self.0.extend_from_slice(fields);
                Err(Stop)
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
                identifier ignored_any
            }
        }
        let mut out = Vec::new();
        let _ = T::deserialize(Probe(&mut out));
        out
    }
}
