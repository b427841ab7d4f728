//! The table of every key, its kind, default and help text (Fluent Bit 5.1.1+ shows it as
//! the plugin's `config_map`), and the defaults the validation uses.

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
        "event_kinds",
        Str,
        Some("events"),
        "what to ship: events (management and data), insights, network_activity, aggregated, or all",
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
        "list_concurrency",
        Int,
        Some("16"),
        "S3 listings in flight at once during a scan (1-256)",
    ),
    key(
        "scan_claims",
        Int,
        Some("100000"),
        "objects one scan claims, shared among the region prefixes (at least 25 each); the rest wait for the next scan",
    ),
    key(
        "metrics.listen",
        Str,
        None,
        "address for /metrics (Prometheus) and /health, e.g. 127.0.0.1:2021",
    ),
    key(
        "metrics.per_region",
        Str,
        Some("silent"),
        "per account/region series on /metrics: silent (only silent ones), all, or none",
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
        "bytes handed to Fluent Bit per collect when caught up (64K-512M)",
    ),
    key(
        "batch_bytes_max",
        Size,
        Some("10M"),
        "most bytes per collect while a backlog waits (batches grow up to it; = batch_bytes: fixed)",
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
        Some("8"),
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
        Some("1000"),
        "messages held at once",
    ),
    key(
        "sqs.receivers",
        Int,
        Some("4"),
        "long polls in flight at once (1-16)",
    ),
    key(
        "ledger.dynamodb_table",
        Str,
        None,
        "DynamoDB table shared by the shippers on one queue, in place of 'db' (created when missing)",
    ),
    key(
        "ledger.dynamodb_endpoint",
        Str,
        None,
        "custom DynamoDB endpoint URL (default: the S3 settings' region)",
    ),
    key(
        "ledger.lease_time",
        Time,
        Some("60"),
        "how long a shipper's lease stands still before another takes the object over (5-3600)",
    ),
    key(
        "digest.validate",
        Bool,
        Some("false"),
        "check CloudTrail's signed digests while shipping, and ship the files they list that nothing else found",
    ),
    key(
        "digest.bucket",
        Str,
        None,
        "bucket whose digests are checked (default: 'bucket'; needed with 'sqs.queue_url' alone)",
    ),
    key(
        "digest.every",
        Time,
        Some("600"),
        "time between two passes over the digests (1s-1d)",
    ),
    key(
        "digest.grace",
        Time,
        Some("3600"),
        "time after a digest is read for notifications or listings to ship a file it lists, before it is shipped from the digest (0-1d)",
    ),
    key(
        "digest.ship_missing",
        Bool,
        None,
        "ship the files digests list that nothing else found (default: on with 'bucket' or a shared ledger, off with 'sqs.queue_url' alone and a ledger of this shipper's own)",
    ),
    key(
        "digest.findings_as_records",
        Bool,
        Some("false"),
        "also send each finding as a record on the output, beside the events (at least once)",
    ),
    key(
        "digest.cloudtrail_endpoint",
        Str,
        None,
        "custom CloudTrail endpoint URL for ListPublicKeys (VPC endpoint, tests)",
    ),
];

/// Default `path_expression`: CloudTrail logs of any account (organization trails included)
/// and region. Other kinds' folders (`CloudTrail-Insight/`, …) are read through it when
/// `event_kinds` turns them on; `CloudTrail-Digest/` never is.
/// The leading `*` lets trails written under an S3 key prefix (`myorg/AWSLogs/…`) work
/// unconfigured.
pub const DEFAULT_PATH_EXPRESSION: &str = "*AWSLogs/*/CloudTrail/*";
/// Two days: CloudTrail delivers most files within 15 minutes but guarantees no bound, and
/// a replicated bucket can lag by hours; a late file lands in its own day's folder, up to a
/// day behind the newest (`docs/delivery.md`).
pub(super) const DEFAULT_LOOKBACK_SECS: u64 = 48 * 3600;
/// An hour: CloudTrail writes a file per account and region about every 5 minutes while
/// there is activity, so an hour is a dozen missed deliveries, while a region that is quiet
/// for minutes at a time does not raise it.
pub(super) const DEFAULT_SILENCE_ALARM_SECS: u64 = 3600;
pub(super) const DEFAULT_SCAN_INTERVAL_SECS: u64 = 60;
pub(super) const DEFAULT_BATCH_BYTES: u64 = 4 << 20;
/// Measured through the real Fluent Bit 5.1.1 with its `http` output (`scripts/bench
/// fb-backlog`, 580,000 events): the host's resident set peaks at several times the bytes
/// per collect plus its base (fixed 4M: 86 MB; growing to 10M: 136 MB, to 12M: 152 MB,
/// to 16M: 171-204 MB; fixed 32M: 245 MB), since the queue, the batch, the host's chunk,
/// its JSON and its gzip buffers are alive at once, two chunks at a time with the output's
/// two workers. 10M moves about 8,900 events a second, 2.5 times the steady 4M (3,600),
/// within issue 20's 150 MB.
pub(super) const DEFAULT_BATCH_BYTES_MAX: u64 = 10 << 20;
pub(super) const DEFAULT_WORKERS: usize = 8;
/// Listings in flight during a scan. A scan lists every region prefix, and each LIST is a
/// round trip of tens of milliseconds to S3: one at a time, 1,700 prefixes took 99 s with
/// 30 ms per request (issue 20). Sixteen divides the round trips' wait by up to sixteen
/// and stays far below S3's 5,500 GET/LIST requests a second per prefix.
pub(super) const DEFAULT_LIST_CONCURRENCY: u64 = 16;
/// Objects one scan claims by default (`scan_claims`; why in `discover::bucket`).
pub const DEFAULT_SCAN_CLAIMS: usize = 100_000;
/// SQS messages held at once. A message is held from its receive until the host has
/// committed its objects and the delete is sent: about two of Fluent Bit's one-second
/// collects. Holding 100 capped one shipper at about 50 objects a second (`scripts/bench
/// sqs-pace`); 1,000 lets it take several hundred, and costs a few hundred bytes each.
pub(super) const DEFAULT_SQS_IN_FLIGHT: u64 = 1000;
/// Long polls in flight at once: one receive returns at most 10 messages per round trip,
/// so one at a time stops near 10 / round trip (about 190 a second at 30 ms added).
pub(super) const DEFAULT_SQS_RECEIVERS: u64 = 4;
pub(super) const DEFAULT_LEASE_SECS: u64 = 60;
/// Ten minutes between digest passes: a pass lists each digest folder once (one LIST per
/// account and region) and reads the digests it has not read; CloudTrail writes one an hour.
pub(super) const DEFAULT_DIGEST_EVERY_SECS: u64 = 600;
/// An hour after a digest's end before a file it lists that nothing shipped is shipped from
/// the digest: notifications arrive within minutes, listings within `scan_interval`.
pub(super) const DEFAULT_DIGEST_GRACE_SECS: u64 = 3600;
pub(super) const DEFAULT_MAX_OBJECT_BYTES: u64 = 1 << 30;
/// CloudTrail caps an event at 256 KB; the default leaves room for other producers.
pub(super) const DEFAULT_MAX_EVENT_BYTES: u64 = 16 << 20;
/// How far back the first run reaches when `start_time` is not set.
pub(super) const DEFAULT_START_LOOKBACK_SECS: u64 = 24 * 3600;
