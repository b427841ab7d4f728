//! Configuration: one set of keys for every front end.
//!
//! Fluent Bit hands the plugin strings (`scan_interval 60`, `batch_bytes 4M`); the CLI reads
//! a TOML file with typed values. Both go through the same serde struct, whose field
//! deserializers accept a number or its string form, so a key means the same thing
//! everywhere. [`Settings`] is the raw, user-facing shape; [`Settings::validate`] turns it
//! into a [`Config`] whose types rule out the invalid combinations, with an error that names
//! the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::ledger::Backoff;
use crate::pathexpr::PathExpression;
use crate::timestamp::EventTime;

/// What kind of value a key takes: Fluent Bit 5.1.1+ shows it in its help output (the
/// plugin registers the table as its `config_map`); the values themselves are parsed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Str,
    Int,
    Bool,
    /// Bytes, with `K`, `M`, `G`.
    Size,
    /// Seconds, with `s`, `m`, `h`, `d`.
    Time,
}

/// One setting: its name, kind, default as text (what the help shows) and a one-line doc.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    pub kind: KeyKind,
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

const fn key(
    name: &'static str,
    kind: KeyKind,
    default: Option<&'static str>,
    doc: &'static str,
) -> Key {
    Key {
        name,
        kind,
        default,
        doc,
    }
}

use KeyKind::{Bool, Int, Size, Str, Time};

/// Every key a user can set, in the order the README documents them. The Fluent Bit plugin
/// asks the host for exactly these and registers them as its `config_map`, so this list and
/// [`Settings`] must agree (a test walks both). Defaults are written so that Fluent Bit's
/// own parsers accept them (`false`, plain numbers, `4M`), or it refuses to start.
pub const KEYS: &[Key] = &[
    key(
        "bucket",
        Str,
        None,
        "S3 bucket the trail writes to (or 'dir', or 'sqs.queue_url')",
    ),
    key(
        "dir",
        Str,
        None,
        "local folder laid out like the bucket, read instead of S3",
    ),
    key(
        "path_expression",
        Str,
        Some(DEFAULT_PATH_EXPRESSION),
        "keys to ship; '*' matches any run of characters including '/'",
    ),
    key(
        "region",
        Str,
        None,
        "AWS region of the bucket (default: the SDK chain)",
    ),
    key("endpoint", Str, None, "custom S3 endpoint URL"),
    key(
        "force_path_style",
        Bool,
        Some("false"),
        "path-style S3 addressing (most S3-compatible stores)",
    ),
    key(
        "profile",
        Str,
        None,
        "shared-config profile for credentials and region",
    ),
    key(
        "role_arn",
        Str,
        None,
        "role to assume through STS before reading",
    ),
    key(
        "external_id",
        Str,
        None,
        "external ID for role_arn (never logged)",
    ),
    key(
        "sts_endpoint",
        Str,
        None,
        "custom STS endpoint URL for role_arn",
    ),
    key(
        "access_key_id",
        Str,
        None,
        "static credentials (default: the SDK chain)",
    ),
    key(
        "secret_access_key",
        Str,
        None,
        "static credentials (never logged)",
    ),
    key(
        "session_token",
        Str,
        None,
        "static credentials (never logged)",
    ),
    key(
        "scan_interval",
        Time,
        Some("60"),
        "seconds between listings (s, m, h, d)",
    ),
    key(
        "lookback",
        Time,
        Some("172800"),
        "seconds (or m, h, d) behind its position each listing looks for late objects",
    ),
    key(
        "metrics.listen",
        Str,
        None,
        "address for /metrics (Prometheus) and /health, e.g. 127.0.0.1:2021",
    ),
    key(
        "silence_alarm",
        Time,
        Some("3600"),
        "seconds without a new object before an account/region counts as silent (0: never)",
    ),
    key(
        "retry_backoff",
        Time,
        Some("5"),
        "first wait before an object that failed transiently is tried again (doubles, to 15 min)",
    ),
    key(
        "denied_backoff",
        Time,
        Some("300"),
        "first wait before a denied object is tried again (doubles, to 1 h)",
    ),
    key(
        "request_timeout",
        Time,
        Some("60"),
        "seconds a request may wait before it is retried",
    ),
    key(
        "start_time",
        Str,
        Some("-24h"),
        "skip objects delivered before this: RFC 3339, or -24h, -7d from the first start",
    ),
    key(
        "db",
        Str,
        None,
        "state file (what was shipped); in memory only when unset",
    ),
    key(
        "batch_bytes",
        Size,
        Some("4M"),
        "most bytes handed to Fluent Bit per collect (64K-512M)",
    ),
    key(
        "buffer_bytes",
        Size,
        None,
        "encoded records held ready (default: 2 x batch_bytes)",
    ),
    key(
        "workers",
        Int,
        Some("4"),
        "objects downloaded and split in parallel (1-64)",
    ),
    key(
        "max_object_bytes",
        Size,
        Some("1G"),
        "largest object accepted, after decompression",
    ),
    key("max_event_bytes", Size, Some("16M"), "largest single event"),
    key(
        "metadata_key",
        Str,
        None,
        "when set, each record gets {bucket, key} of its object under this key",
    ),
    key(
        "sqs.queue_url",
        Str,
        None,
        "SQS queue with the bucket's object notifications",
    ),
    key(
        "sqs.endpoint",
        Str,
        None,
        "custom SQS endpoint URL (default: the queue URL's host when it is not AWS)",
    ),
    key(
        "sqs.wait_time_secs",
        Int,
        Some("20"),
        "long-poll wait per receive (0-20)",
    ),
    key(
        "sqs.visibility_timeout_secs",
        Int,
        Some("300"),
        "visibility timeout asked for on receive, renewed while held",
    ),
    key(
        "sqs.max_receive_count",
        Int,
        Some("5"),
        "receives after which a failing message is quarantined",
    ),
    key(
        "sqs.delete_quarantined",
        Bool,
        Some("false"),
        "delete quarantined messages instead of leaving them to the redrive policy",
    ),
    key(
        "sqs.max_messages_in_flight",
        Int,
        Some("100"),
        "messages held at once",
    ),
];

/// Default `path_expression`: CloudTrail logs of any account (organization trails included)
/// and region, but not `CloudTrail-Digest/` or `CloudTrail-Insight/`.
/// The leading `*` lets trails written under an S3 key prefix (`myorg/AWSLogs/…`) work
/// unconfigured.
pub const DEFAULT_PATH_EXPRESSION: &str = "*AWSLogs/*/CloudTrail/*";
/// Two days: CloudTrail delivers most files within 15 minutes but guarantees no bound, and
/// a replicated bucket can lag by hours; a late file lands in its own day's folder, up to a
/// day behind the newest (`docs/delivery.md`).
const DEFAULT_LOOKBACK_SECS: u64 = 48 * 3600;
/// An hour: CloudTrail writes a file per account and region about every 5 minutes while
/// there is activity, so an hour is a dozen missed deliveries, while a region that is quiet
/// for minutes at a time does not raise it.
const DEFAULT_SILENCE_ALARM_SECS: u64 = 3600;
const DEFAULT_SCAN_INTERVAL_SECS: u64 = 60;
const DEFAULT_BATCH_BYTES: u64 = 4 << 20;
const DEFAULT_WORKERS: usize = 4;
const DEFAULT_MAX_OBJECT_BYTES: u64 = 1 << 30;
/// CloudTrail caps an event at 256 KB; the default leaves room for other producers.
const DEFAULT_MAX_EVENT_BYTES: u64 = 16 << 20;
/// How far back the first run reaches when `start_time` is not set.
const DEFAULT_START_LOOKBACK_SECS: u64 = 24 * 3600;

/// A value that must never be printed: its `Debug` is a placeholder, and a value of the
/// wrong type is refused without being echoed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Secret;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret(v))
            }
            // serde's own message would quote the value.
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(not_text())
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(not_text())
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(not_text())
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(not_text())
            }
            fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<Secret, E> {
                Err(not_text())
            }
        }
        fn not_text<E: serde::de::Error>() -> E {
            E::custom("must be a string (the value is not shown)")
        }
        // `any`: some formats (YAML) refuse a non-string themselves, quoting it.
        d.deserialize_any(Text)
    }
}

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

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

/// Why a settings file was refused: the file, where in it, and what is wrong. Never any of
/// the file's text, since the line at fault may hold a secret (TOML and YAML parsers quote
/// it in their own messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", path.display(), at.map_or(String::new(), |(l, c)| format!(", line {l}, column {c}")))]
pub struct FileError {
    pub path: PathBuf,
    /// Line and column, counting from 1, when the parser knows them.
    pub at: Option<(usize, usize)>,
    pub message: String,
}

/// Reads a settings file: YAML by extension (`.yaml`, `.yml`), TOML otherwise. A nested
/// `sqs` table (`[sqs]` / `sqs:`) is the same as the dotted keys (`"sqs.queue_url"`).
pub fn load_file(path: &Path) -> Result<Settings, FileError> {
    load_file_with::<serde::de::IgnoredAny>(path, None).map(|(settings, _)| settings)
}

/// As [`load_file`], with one table that belongs to a front end rather than the engine
/// (the command's `[http]` output): taken out before the engine's keys are read, and
/// parsed into the front end's own type. Errors in it are prefixed with its name.
pub fn load_file_with<T: serde::de::DeserializeOwned>(
    path: &Path,
    table: Option<&str>,
) -> Result<(Settings, Option<T>), FileError> {
    let fail = |at, message| FileError {
        path: path.to_path_buf(),
        at,
        message,
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| fail(None, format!("cannot read: {e}")))?;
    let yaml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    let parsed = if yaml {
        settings_from_yaml(&text, table)
    } else {
        settings_from_toml(&text, table)
    };
    parsed.map_err(|(at, message)| fail(at, message))
}

type FileProblem = (Option<(usize, usize)>, String);

/// Key groups a settings file may write as a table (`[sqs]` then `queue_url = …`).
const TABLES: [&str; 2] = ["sqs", "metrics"];

fn settings_from_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    extra: Option<&str>,
) -> Result<(Settings, Option<T>), FileProblem> {
    let problem = |mut e: toml::de::Error| {
        let at = e.span().map(|span| line_column(text, span.start));
        // Without its input, the error's text is the message (and the key path), not the
        // line it came from.
        e.set_input(None);
        let message = e.to_string().trim().replace('\n', " ");
        (at, message)
    };
    let mut t: toml::Table = toml::from_str(text).map_err(problem)?;
    let extra = match extra.and_then(|name| t.remove(name).map(|v| (name, v))) {
        None => None,
        Some((name, value)) => Some(
            T::deserialize(value)
                .map_err(problem)
                .map_err(|(at, m)| (at, format!("in [{name}]: {m}")))?,
        ),
    };
    for table in TABLES {
        if let Some(toml::Value::Table(inner)) = t.remove(table) {
            for (k, val) in inner {
                t.insert(format!("{table}.{k}"), val);
            }
        }
    }
    let settings = Settings::deserialize(toml::Value::Table(t)).map_err(problem)?;
    Ok((settings, extra))
}

fn settings_from_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    extra: Option<&str>,
) -> Result<(Settings, Option<T>), FileProblem> {
    let problem = |e: serde_yaml_ng::Error| {
        let at = e.location().map(|l| (l.line(), l.column()));
        (at, without_positions(&e.to_string()))
    };
    let mut v: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(problem)?;
    let taken = match (extra, v.as_mapping_mut()) {
        (Some(name), Some(map)) => map.remove(name).map(|value| (name, value)),
        _ => None,
    };
    let extra = match taken {
        None => None,
        Some((name, value)) => Some(
            serde_yaml_ng::from_value::<T>(value)
                .map_err(problem)
                .map_err(|(at, m)| (at, format!("in {name}: {m}")))?,
        ),
    };
    for table in TABLES {
        if let Some(map) = v.as_mapping_mut()
            && let Some(serde_yaml_ng::Value::Mapping(inner)) = map.remove(table)
        {
            for (k, val) in inner {
                let key = format!("{table}.{}", k.as_str().unwrap_or_default());
                map.insert(serde_yaml_ng::Value::String(key), val);
            }
        }
    }
    let settings = serde_yaml_ng::from_value(v).map_err(problem)?;
    Ok((settings, extra))
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// A YAML error's text without its first ` at line N column M` (the error's own position,
/// reported separately); a context's position (`while scanning ... at line 2 column 20`)
/// stays.
fn without_positions(text: &str) -> String {
    let mut from = 0;
    while let Some(at) = text[from..].find(" at ").map(|i| from + i) {
        let skip = position_len(&text[at + 4..]);
        if skip > 0 {
            return format!("{}{}", &text[..at], &text[at + 4 + skip..]);
        }
        from = at + 4;
    }
    text.to_string()
}

/// Length of a leading `line N column M` or `position N`, else 0.
fn position_len(s: &str) -> usize {
    let number = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    if let Some(r) = s.strip_prefix("line ") {
        let n = number(r);
        if n > 0
            && let Some(r2) = r[n..].strip_prefix(" column ")
        {
            let m = number(r2);
            if m > 0 {
                return s.len() - r2.len() + m;
            }
        }
    } else if let Some(r) = s.strip_prefix("position ") {
        let n = number(r);
        if n > 0 {
            return "position ".len() + n;
        }
    }
    0
}

/// Field deserializers that take a typed value (TOML) or its string form (Fluent Bit).
/// Front ends with settings of their own (the command's `[http]`) use them too.
pub(crate) mod de {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(u64),
        Str(String),
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum BoolOrStr {
        Bool(bool),
        Str(String),
    }

    fn with<'de, D, T>(
        d: D,
        what: &str,
        parse: fn(&str) -> Option<u64>,
    ) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
    {
        let v = match Option::<NumOrStr>::deserialize(d)? {
            None => return Ok(None),
            Some(NumOrStr::Num(n)) => n,
            Some(NumOrStr::Str(s)) => parse(s.trim())
                .ok_or_else(|| serde::de::Error::custom(format!("'{s}' is not {what}")))?,
        };
        T::try_from(v)
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{v} is out of range")))
    }

    pub fn opt_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        with(
            d,
            "a size (a number of bytes, or with K, M or G)",
            parse_bytes,
        )
    }

    pub fn opt_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        with(
            d,
            "a duration (seconds, or with s, m, h or d)",
            parse_duration_secs,
        )
    }

    pub fn opt_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        with(d, "a whole number", |s| s.parse().ok())
    }

    pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        match Option::<BoolOrStr>::deserialize(d)? {
            None => Ok(None),
            Some(BoolOrStr::Bool(b)) => Ok(Some(b)),
            Some(BoolOrStr::Str(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "on" | "yes" | "1" => Ok(Some(true)),
                "false" | "off" | "no" | "0" => Ok(Some(false)),
                _ => Err(serde::de::Error::custom(format!(
                    "'{s}' is not a boolean (true/false, on/off, yes/no)"
                ))),
            },
        }
    }

    pub fn parse_bytes(s: &str) -> Option<u64> {
        let s = s.trim();
        let (num, unit) = split_unit(s);
        let mult: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            _ => return None,
        };
        num.parse::<u64>().ok()?.checked_mul(mult)
    }

    pub fn parse_duration_secs(s: &str) -> Option<u64> {
        let (num, unit) = split_unit(s.trim());
        let mult: u64 = match unit {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return None,
        };
        num.parse::<u64>().ok()?.checked_mul(mult)
    }

    fn split_unit(s: &str) -> (&str, &str) {
        let at = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        (&s[..at], s[at..].trim())
    }
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

    fn load(name: &str, text: &str) -> (PathBuf, Result<Settings, FileError>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let got = load_file(&path);
        (path, got, dir)
    }

    #[test]
    fn settings_file_errors_name_file_line_and_column_but_never_echo_the_text() {
        const SECRET: &str = "wJalrXUtnFEMI/K7MDENG";
        let cases = [
            (
                "s.toml",
                format!(
                    "bucket = \"trail\"\naccess_key_id = \"AKIAEXAMPLE\"\nsecret_access_key = \"{SECRET}\n"
                ),
                3,
            ),
            (
                "s.toml",
                format!("bucket = \"trail\"\nsecret_access_key = \"{SECRET}\" oops\n"),
                2,
            ),
            (
                // Reported where the text ends, with where the string began.
                "s.yaml",
                format!("bucket: trail\nsecret_access_key: \"{SECRET}\n"),
                3,
            ),
            (
                "s.yml",
                format!("bucket: trail\nsecret_access_key: {SECRET}: x\n"),
                2,
            ),
        ];
        for (name, text, line) in cases {
            let (path, got, _dir) = load(name, &text);
            let err = got.unwrap_err();
            let shown = err.to_string();
            assert!(!shown.contains("wJalr"), "{shown}");
            assert!(!shown.contains("AKIA"), "{shown}");
            assert!(shown.starts_with(&path.display().to_string()), "{shown}");
            assert_eq!(err.at.map(|a| a.0), Some(line), "{shown}");
            assert!(
                shown.contains(&format!(", line {line}, column ")),
                "{shown}"
            );
            assert!(!err.message.is_empty(), "{shown}");
        }
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_not_echoed() {
        for (name, text) in [
            ("s.toml", "bucket = \"b\"\nsecret_access_key = 987654321\n"),
            ("s.yaml", "bucket: b\nsecret_access_key: 987654321\n"),
            ("s.yaml", "bucket: b\nsession_token: true\n"),
        ] {
            let (_, got, _dir) = load(name, text);
            let shown = got.unwrap_err().to_string();
            assert!(!shown.contains("987654321"), "{shown}");
            assert!(shown.contains("not shown"), "{shown}");
        }
        let (_, got, _dir) = load(
            "s.toml",
            "bucket = \"b\"\n[sqs]\nqueue_url = \"https://sqs.us-east-1.amazonaws.com/1/q\"\n",
        );
        assert!(got.unwrap().sqs_queue_url.is_some());
        let (_, got, _dir) = load("s.toml", "bucket = \"b\"\nscan_intervall = 5\n");
        assert!(got.unwrap_err().message.contains("scan_intervall"));
    }

    #[test]
    fn yaml_positions_are_taken_out_of_the_message() {
        assert_eq!(
            without_positions(
                "did not find key at line 2 column 5, while parsing at line 1 column 1"
            ),
            "did not find key, while parsing at line 1 column 1"
        );
        assert_eq!(without_positions("stop at once"), "stop at once");
        assert_eq!(line_column("ab\ncdé\nx", 7), (2, 4));
        assert_eq!(line_column("ab", 0), (1, 1));
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
