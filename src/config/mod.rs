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

use crate::ledger::Backoff;
use crate::select::Selection;
use crate::timestamp::EventTime;

pub(crate) mod de;
mod file;
mod keys;
mod secret;
mod validate;

pub use de::parse_duration_secs;
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
    /// How objects that failed transiently are retried.
    pub retry_backoff: Backoff,
    /// Where `/metrics` and `/health` are served, if anywhere.
    pub metrics_listen: Option<String>,
    /// Quiet time after which an account and region counts as silent (zero: never).
    pub silence_alarm: Duration,
    /// Which accounts and regions get their own series on `/metrics`.
    pub per_region: crate::observe::freshness::PerRegion,
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
        assert_eq!(c.selection.as_str(), DEFAULT_PATH_EXPRESSION);
        assert_eq!(c.selection.kinds(), crate::layout::Kinds::EVENTS);
        assert_eq!(c.scan_interval, Duration::from_secs(60));
        assert_eq!(c.batch_bytes, 4 << 20);
        assert_eq!(c.buffer_bytes, 8 << 20);
        assert_eq!(c.workers, 4);
        assert_eq!(c.list_concurrency, 16);
        assert_eq!(c.start_time, StartTime::Before(Duration::from_secs(86_400)));
    }

    #[test]
    fn event_kinds_as_a_list_or_all() {
        use crate::layout::{Kind, Kinds};
        let c = props(&[("bucket", "bkt"), ("event_kinds", "insights, events")]).unwrap();
        assert_eq!(
            c.selection.kinds(),
            Kinds::of([Kind::Events, Kind::Insights])
        );
        let c = props(&[("bucket", "bkt"), ("event_kinds", "all")]).unwrap();
        assert_eq!(c.selection.kinds(), Kinds::ALL);
        // A typo is caught wherever it stands.
        assert!(props(&[("bucket", "bkt"), ("event_kinds", "all,insight")]).is_err());
        // Unset, kinds the expression matches as written stay shipped, as before kinds
        // existed; the default expression matches management and data events only.
        let c = props(&[("bucket", "bkt"), ("path_expression", "AWSLogs/*")]).unwrap();
        assert_eq!(c.selection.kinds(), Kinds::ALL);
        let c = props(&[("bucket", "bkt"), ("path_expression", "*.json.gz")]).unwrap();
        assert_eq!(c.selection.kinds(), Kinds::ALL);
        let c = props(&[
            ("bucket", "bkt"),
            ("path_expression", "logs/*/AWSLogs/*/CloudTrail-Insight/*"),
        ])
        .unwrap();
        assert_eq!(
            c.selection.kinds(),
            Kinds::of([Kind::Events, Kind::Insights])
        );
        let c = props(&[
            ("bucket", "bkt"),
            ("path_expression", "myorg/AWSLogs/*/CloudTrail/*"),
        ])
        .unwrap();
        assert_eq!(c.selection.kinds(), Kinds::EVENTS);
        // Set, it is what the user chose.
        let c = props(&[
            ("bucket", "bkt"),
            ("path_expression", "AWSLogs/*"),
            ("event_kinds", "events"),
        ])
        .unwrap();
        assert_eq!(c.selection.kinds(), Kinds::EVENTS);
        let e = props(&[("bucket", "bkt"), ("event_kinds", "insight")]).unwrap_err();
        assert!(
            e.contains("events, insights, network_activity, aggregated, all"),
            "{e}"
        );
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
            (
                &[("bucket", "abc"), ("list_concurrency", "0")][..],
                "'list_concurrency'",
            ),
            (
                &[("bucket", "abc"), ("list_concurrency", "257")][..],
                "'list_concurrency'",
            ),
            (&[("bucket", "abc"), ("workers", "many")][..], "'workers'"),
            (
                &[("bucket", "abc"), ("event_kinds", "events,insight")][..],
                "'event_kinds'",
            ),
            (
                &[("bucket", "abc"), ("event_kinds", " , ")][..],
                "'event_kinds'",
            ),
            (
                &[
                    ("bucket", "abc"),
                    ("path_expression", "AWSLogs/*/CloudTrail-Insight/*"),
                    ("event_kinds", "events"),
                ][..],
                "'event_kinds'",
            ),
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
        // The shared ledger's keys go with a table, which this base has none of.
        explicit.extend(
            KEYS.iter()
                .filter(|k| !k.name.starts_with("ledger.") && !k.name.starts_with("digest."))
                .filter_map(|k| Some((k.name, k.default?))),
        );
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
    fn a_shared_ledger_is_for_s3_in_the_cloudtrail_layout_and_in_place_of_db() {
        let q = ("sqs.queue_url", "https://sqs.us-east-1.amazonaws.com/1/q");
        let c = props(&[q, ("ledger.dynamodb_table", "ct-ledger")]).unwrap();
        let shared = c.shared_ledger.expect("shared");
        assert_eq!(
            (shared.table.as_str(), shared.lease_time.as_secs()),
            ("ct-ledger", 60)
        );
        let table = ("ledger.dynamodb_table", "tab");
        for listing in [
            &[("bucket", "my-trail"), table][..],
            &[q, ("bucket", "my-trail"), table][..],
        ] {
            assert!(
                props(listing).unwrap().shared_ledger.is_some(),
                "{listing:?}"
            );
        }
        for (pairs, key, says) in [
            (
                &[
                    table,
                    ("bucket", "my-trail"),
                    ("path_expression", "exports/*"),
                ][..],
                "'ledger.dynamodb_table'",
                "CloudTrail's layout",
            ),
            (
                &[table, ("dir", "/tmp")][..],
                "'ledger.dynamodb_table'",
                "not 'dir'",
            ),
            (
                &[q, ("ledger.dynamodb_table", "tab"), ("db", "/tmp/x")][..],
                "'ledger.dynamodb_table'",
                "not both",
            ),
            (
                &[q, ("ledger.dynamodb_table", "no spaces")][..],
                "'ledger.dynamodb_table'",
                "table name",
            ),
            (
                &[
                    q,
                    ("ledger.dynamodb_table", "tab"),
                    ("ledger.lease_time", "2"),
                ][..],
                "'ledger.lease_time'",
                "between",
            ),
            (
                &[q, ("ledger.dynamodb_endpoint", "http://x")][..],
                "'ledger.dynamodb_endpoint'",
                "needs",
            ),
            (
                &[q, ("ledger.lease_time", "60")][..],
                "'ledger.lease_time'",
                "needs",
            ),
        ] {
            let err = props(pairs).unwrap_err();
            assert!(err.contains(key) && err.contains(says), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn digest_checks_have_their_bucket_lookback_and_a_safe_default_for_shipping() {
        let q = ("sqs.queue_url", "https://sqs.us-east-1.amazonaws.com/1/q");
        let on = ("digest.validate", "true");
        let listing = props(&[("bucket", "trail"), on]).unwrap().digest.unwrap();
        assert_eq!(
            (listing.bucket.as_str(), listing.ship_missing),
            ("trail", true)
        );
        assert_eq!(
            (listing.every.as_secs(), listing.grace.as_secs()),
            (600, 3600)
        );
        // SQS alone with this shipper's own ledger: other shippers on the queue may ship
        // what it never hears of, so it does not ship from digests unless told to.
        let alone = props(&[q, on, ("digest.bucket", "trail")])
            .unwrap()
            .digest
            .unwrap();
        assert!(!alone.ship_missing);
        let told = props(&[
            q,
            on,
            ("digest.bucket", "trail"),
            ("digest.ship_missing", "true"),
        ]);
        assert!(told.unwrap().digest.unwrap().ship_missing);
        let shared = props(&[
            q,
            on,
            ("digest.bucket", "trail"),
            ("ledger.dynamodb_table", "tab"),
        ]);
        assert!(shared.unwrap().digest.unwrap().ship_missing);
        assert!(props(&[("bucket", "trail")]).unwrap().digest.is_none());
        for (pairs, key, says) in [
            (&[q, on][..], "'digest.validate'", "digest.bucket"),
            (
                &[("bucket", "trail"), on, ("lookback", "24h")][..],
                "'digest.validate'",
                "27h",
            ),
            (
                &[("bucket", "trail"), ("digest.grace", "0")][..],
                "'digest.grace'",
                "needs",
            ),
            (
                &[("bucket", "trail"), on, ("digest.every", "0")][..],
                "'digest.every'",
                "between",
            ),
        ] {
            let err = props(pairs).unwrap_err();
            assert!(err.contains(key) && err.contains(says), "{pairs:?}: {err}");
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
