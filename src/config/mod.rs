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
//! settings files, `secret.rs` values never printed, `validate.rs` the checks that turn
//! [`Settings`] into a [`Config`]; this file the two shapes.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::select::Selection;
use crate::timestamp::EventTime;

pub(crate) mod de;
mod digest_keys;
mod file;
mod keys;
mod secret;
mod validate;
mod values;

pub use de::parse_duration_secs;
pub use file::{FileError, load_file, load_file_with};
pub use keys::*;
pub use secret::Secret;
pub use values::{Backoff, PerRegion};

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
    /// What the trail wrote to ship: `events` (management and data events, the default),
    /// `insights`, `network_activity`, `aggregated`, or `all`.
    #[serde(default, deserialize_with = "de::opt_list")]
    pub event_kinds: Option<Vec<String>>,
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
    /// S3 listings in flight at once during a scan.
    #[serde(default, deserialize_with = "de::opt_count")]
    pub list_concurrency: Option<u64>,
    /// Objects one scan claims at most.
    #[serde(default, deserialize_with = "de::opt_count")]
    pub scan_claims: Option<u64>,
    /// First wait before an object that failed transiently is tried again.
    #[serde(default, deserialize_with = "de::opt_secs")]
    pub retry_backoff: Option<u64>,
    /// Where to serve `/metrics` and `/health`.
    #[serde(rename = "metrics.listen")]
    pub metrics_listen: Option<String>,
    /// Which accounts and regions get their own series on `/metrics`.
    #[serde(rename = "metrics.per_region")]
    pub metrics_per_region: Option<String>,
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
    /// The most bytes per collect while a backlog waits (batches grow up to it).
    #[serde(default, deserialize_with = "de::opt_bytes")]
    pub batch_bytes_max: Option<u64>,
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
    /// Long polls in flight at once.
    #[serde(rename = "sqs.receivers", default, deserialize_with = "de::opt_count")]
    pub sqs_receivers: Option<u64>,
    /// A DynamoDB table shared by every shipper on the queue (created when missing).
    #[serde(rename = "ledger.dynamodb_table")]
    pub ledger_dynamodb_table: Option<String>,
    /// Custom DynamoDB endpoint URL (VPC endpoint, tests).
    #[serde(rename = "ledger.dynamodb_endpoint")]
    pub ledger_dynamodb_endpoint: Option<String>,
    /// How long another shipper's lease must stand still before it is taken over.
    #[serde(
        rename = "ledger.lease_time",
        default,
        deserialize_with = "de::opt_secs"
    )]
    pub ledger_lease_time: Option<u64>,
    /// Check CloudTrail's signed digests while shipping.
    #[serde(rename = "digest.validate", default, deserialize_with = "de::opt_bool")]
    pub digest_validate: Option<bool>,
    #[serde(rename = "digest.bucket")]
    pub digest_bucket: Option<String>,
    #[serde(rename = "digest.every", default, deserialize_with = "de::opt_secs")]
    pub digest_every: Option<u64>,
    #[serde(rename = "digest.grace", default, deserialize_with = "de::opt_secs")]
    pub digest_grace: Option<u64>,
    #[serde(rename = "digest.cloudtrail_endpoint")]
    pub digest_cloudtrail_endpoint: Option<String>,
    #[serde(
        rename = "digest.ship_missing",
        default,
        deserialize_with = "de::opt_bool"
    )]
    pub digest_ship_missing: Option<bool>,
    #[serde(
        rename = "digest.findings_as_records",
        default,
        deserialize_with = "de::opt_bool"
    )]
    pub digest_findings_as_records: Option<bool>,
}

/// Checking CloudTrail's signed digests while shipping (`digest.validate`).
#[derive(Debug, Clone)]
pub struct DigestConfig {
    /// The bucket whose digests are checked.
    pub bucket: String,
    pub every: Duration,
    pub grace: Duration,
    pub cloudtrail_endpoint: Option<String>,
    /// Files a digest lists that nothing else found are shipped from the digest. Off by
    /// default with SQS alone and a ledger of this shipper's own: other shippers on the
    /// queue ship files this ledger never hears of.
    pub ship_missing: bool,
    /// Each finding is also a record on the output (a marked integrity finding, beside the
    /// events), delivered at least once.
    pub findings_as_records: bool,
}

/// A ledger shared by several shippers in DynamoDB.
#[derive(Debug, Clone)]
pub struct SharedLedgerConfig {
    pub table: String,
    pub endpoint: Option<String>,
    /// A lease whose counter stood still this long (on the observer's clock) is expired.
    pub lease_time: Duration,
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
    /// Long polls in flight at once: each returns at most 10 messages and costs a round
    /// trip, so one at a time caps what a shipper can take from a backlog.
    pub receivers: usize,
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
    /// `path_expression` over the folders of `event_kinds`.
    pub selection: Selection,
    pub scan_interval: Duration,
    /// Late objects are found this far behind each listing's position (see
    /// `docs/delivery.md`); finished objects are remembered as long.
    pub lookback: Duration,
    /// S3 listings a scan keeps in flight at once (region prefixes, accounts).
    pub list_concurrency: usize,
    /// How many objects a scan claims, shared among its region prefixes (at least
    /// `discover::bucket::CLAIMS_PER_PREFIX_MIN` each).
    pub scan_claims: std::num::NonZeroUsize,
    /// How objects that failed transiently are retried.
    pub retry_backoff: Backoff,
    /// Where `/metrics` and `/health` are served, if anywhere.
    pub metrics_listen: Option<String>,
    /// Quiet time after which an account and region counts as silent (zero: never).
    pub silence_alarm: Duration,
    /// Which accounts and regions get their own series on `/metrics`.
    pub per_region: PerRegion,
    /// How objects whose read was denied are retried.
    pub denied_backoff: Backoff,
    /// Objects last modified before this are skipped, unless the state says otherwise.
    pub start_time: StartTime,
    pub db: Option<PathBuf>,
    /// The shared ledger, in place of `db`.
    pub shared_ledger: Option<SharedLedgerConfig>,
    /// Digest checks while shipping (`digest.validate`).
    pub digest: Option<DigestConfig>,
    pub batch_bytes: usize,
    /// The most bytes per collect while a backlog waits; `batch_bytes` when the user set
    /// no ceiling under a larger `batch_bytes`.
    pub batch_bytes_max: usize,
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

#[cfg(test)]
mod tests;
