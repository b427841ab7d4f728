//! `verify`: proves, for a time range, that every log file CloudTrail wrote into a bucket
//! is there and unaltered, from CloudTrail's signed digests.
//!
//! For each digest in the range, in time order per trail, account and region: its form
//! (one gzip member, the documented fields), its place (where it says it is), its signature
//! (CloudTrail's public key matched by fingerprint), its link to the previous digest (walked
//! forwards, so two deleted digests in a row are one gap reported at the next digest, where
//! aws-cli's backwards walk reports only the first), and each log file it lists: present,
//! and with the SHA-256 it names over its uncompressed bytes. A stream whose last digest is
//! more than two hours older than the end of the range is reported silent.
//!
//! With the shipper's ledger, a listed file is checked against what was shipped: the
//! engine keeps the SHA-256 of every file it shipped, so a file shipped since hashes are
//! kept costs no download, and a file CloudTrail wrote that the shipper never shipped (a
//! notification lost, an object deleted before it was read) is reported as not shipped.

use std::collections::BTreeMap;

use futures_util::{StreamExt, stream};
use serde::Serialize;

use crate::digest::chain::{Chains, Link, Stream, stream_of};
use crate::digest::keys::{KeyRing, KeySource};
use crate::digest::{Digest, Location, LogFile, Sha256, file::inflate, hex, sign};
use crate::discover::listing::{Listed, Lister};
use crate::layout::{self, Base, SEARCH_DEPTH, day_path};
use crate::ledger::{Ledger, Status};
use crate::object::s3_id;
use crate::timestamp::EventTime;

/// Log files fetched at once while their hashes are checked.
const FETCHES: usize = 8;

/// A stream with no digest for this long before the range's end is reported silent:
/// CloudTrail delivers a digest every hour, and takes up to an hour to.
const SILENT_AFTER: u32 = 2 * 3600;

/// Log files larger than this uncompressed are reported, not hashed.
const MAX_LOG_BYTES: u64 = 1 << 30;

/// One digest's hour, as found.
#[derive(Debug, Clone, Serialize)]
pub struct HourReport {
    pub account: String,
    pub region: String,
    pub trail: String,
    /// The digest's end time (the hour it covers ends here).
    pub end: String,
    pub digest: String,
    pub complete: bool,
    pub logs: usize,
    /// Listed files the ledger says were shipped with the digest's hash (with a ledger).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipped: Option<usize>,
    /// What is wrong, one line each (missing and altered log files with their keys).
    pub problems: Vec<String>,
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub bucket: String,
    pub from: String,
    pub to: String,
    pub hours: Vec<HourReport>,
    /// Findings of the chain and of streams, not of one hour's files: gaps, restarts,
    /// silent streams.
    pub chain: Vec<String>,
    /// Requests that failed (listings, reads): what could not be checked.
    pub errors: Vec<String>,
}

impl VerifyReport {
    /// Every hour complete, the chain unbroken and everything readable.
    pub fn all_verified(&self) -> bool {
        self.hours.iter().all(|h| h.complete) && self.chain.is_empty() && self.errors.is_empty()
    }

    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let complete = self.hours.iter().filter(|h| h.complete).count();
        let logs: usize = self.hours.iter().map(|h| h.logs).sum();
        let _ = writeln!(
            out,
            "s3://{} from {} to {}: {} digests ({} complete, {} incomplete), {} log files listed",
            self.bucket,
            self.from,
            self.to,
            self.hours.len(),
            complete,
            self.hours.len() - complete,
            logs
        );
        for h in &self.hours {
            let _ = writeln!(
                out,
                "  {} {} {} {}: {} ({} log files)",
                h.account,
                h.region,
                h.trail,
                h.end,
                if h.complete { "complete" } else { "INCOMPLETE" },
                h.logs
            );
            for p in &h.problems {
                let _ = writeln!(out, "    {p}");
            }
        }
        for c in &self.chain {
            let _ = writeln!(out, "  chain: {c}");
        }
        for e in &self.errors {
            let _ = writeln!(out, "  could not check: {e}");
        }
        out
    }
}

/// What a read of an object gave.
pub enum Fetched {
    Found {
        bytes: Vec<u8>,
        metadata: BTreeMap<String, String>,
    },
    Missing,
}

/// Reading single objects (the listings go through [`Lister`]).
pub trait Reader: Send + Sync {
    fn get(
        &self,
        location: &Location,
    ) -> impl std::future::Future<Output = Result<Fetched, String>> + Send;
}

/// Reads through the AWS SDK.
pub struct S3Reader(pub aws_sdk_s3::Client);

impl Reader for S3Reader {
    async fn get(&self, l: &Location) -> Result<Fetched, String> {
        let out = self
            .0
            .get_object()
            .bucket(&l.bucket)
            .key(&l.key)
            .send()
            .await;
        let out = match out {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Ok(Fetched::Missing);
            }
            Err(e) => {
                return Err(format!(
                    "{l}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                ));
            }
        };
        let metadata = out
            .metadata()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| format!("{l}: reading: {e}"))?
            .into_bytes()
            .to_vec();
        Ok(Fetched::Found { bytes, metadata })
    }
}

/// SHA-256 of a gzipped log file's uncompressed bytes: one gzip member, nothing after it
/// (as aws-cli requires since it found files with bytes appended).
fn log_hash(gz: &[u8]) -> Result<[u8; 32], String> {
    let mut decoder = flate2::bufread::GzDecoder::new(gz);
    let mut hash = Sha256::default();
    let n = std::io::copy(
        &mut std::io::Read::take(&mut decoder, MAX_LOG_BYTES + 1),
        &mut hash,
    )
    .map_err(|e| format!("not a gzip stream: {e}"))?;
    if n > MAX_LOG_BYTES {
        return Err(format!("larger than {MAX_LOG_BYTES} bytes uncompressed"));
    }
    let rest = decoder.into_inner();
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes after the end of the compressed data",
            rest.len()
        ));
    }
    Ok(hash.finish())
}

/// Verifies the digests of `lister`'s bucket that cover `from`..`to`, under the
/// CloudTrail layout `base` (a literal `…/AWSLogs/` folder, or searched when `None`).
pub async fn verify<L: Lister, R: Reader, K: KeySource>(
    lister: &L,
    reader: &R,
    keys: &mut KeyRing<K>,
    ledger: Option<&Ledger>,
    base: Option<&str>,
    from: EventTime,
    to: EventTime,
) -> VerifyReport {
    let bucket = lister.bucket().to_string();
    let mut report = VerifyReport {
        bucket: bucket.clone(),
        from: from.to_rfc3339(),
        to: to.to_rfc3339(),
        hours: Vec::new(),
        chain: Vec::new(),
        errors: Vec::new(),
    };
    let folders = digest_folders(lister, base, &mut report.errors).await;
    // A digest ending at E covers the hour before E: those ending after `from` and no
    // later than an hour after `to` cover the range.
    let (lo, hi) = (from.secs(), to.secs().saturating_add(3600));
    let mut streams: BTreeMap<Stream, Vec<(EventTime, String)>> = BTreeMap::new();
    for folder in folders {
        let start = format!("{folder}{}", day_path(i64::from(lo) / 86_400 - 1));
        let listed = match lister.list_objects(&folder, Some(&start)).await {
            Ok(l) => l,
            Err(e) => {
                report.errors.push(e.to_string());
                continue;
            }
        };
        for Listed { key, .. } in listed {
            if let Some((stream, end)) = stream_of(&bucket, &key)
                && end.secs() > lo
                && end.secs() <= hi
            {
                streams.entry(stream).or_default().push((end, key));
            }
        }
    }
    let mut chains = Chains::default();
    for (stream, mut digests) in streams {
        digests.sort();
        for (_, key) in digests {
            let at = Location {
                bucket: bucket.clone(),
                key,
            };
            match check_digest(reader, keys, ledger, &mut chains, &stream, &at).await {
                Ok((hour, link)) => {
                    if let Some(l) = link {
                        report.chain.push(format!(
                            "{} {} {}: {l}",
                            stream.account, stream.region, stream.trail
                        ));
                    }
                    report.hours.push(hour);
                }
                Err(e) => report.errors.push(e),
            }
        }
    }
    for (stream, end, at) in chains.ends() {
        if to.secs().saturating_sub(end.secs()) > SILENT_AFTER {
            report.chain.push(format!(
                "{} {} {}: no digest after {} (the last is {at}): digests deleted, or logging stopped",
                stream.account,
                stream.region,
                stream.trail,
                end.to_rfc3339()
            ));
        }
    }
    report.chain.sort();
    report
}

/// Reads, checks and links one digest, then checks the log files it lists. Returns its
/// hour, and what its link to the previous digest says of the hours before it, when that
/// is not "nothing missing".
async fn check_digest<R: Reader, K: KeySource>(
    reader: &R,
    keys: &mut KeyRing<K>,
    ledger: Option<&Ledger>,
    chains: &mut Chains,
    stream: &Stream,
    at: &Location,
) -> Result<(HourReport, Option<String>), String> {
    let (gz, metadata) = match reader.get(at).await? {
        Fetched::Found { bytes, metadata } => (bytes, metadata),
        Fetched::Missing => return Err(format!("{at}: listed, then gone")),
    };
    let mut hour = HourReport {
        account: stream.account.clone(),
        region: stream.region.clone(),
        trail: stream.trail.clone(),
        end: String::new(),
        digest: at.to_string(),
        complete: false,
        logs: 0,
        shipped: ledger.map(|_| 0),
        problems: Vec::new(),
    };
    let digest = match inflate(&gz).and_then(|b| Digest::parse(&b)) {
        Ok(d) => d,
        Err(e) => {
            hour.problems.push(format!("the digest is unreadable: {e}"));
            return Ok((hour, None));
        }
    };
    hour.end = digest.end_text.clone();
    hour.logs = digest.logs.len();
    if digest.location != *at {
        hour.problems.push(format!(
            "the digest says it is {}, not where it was found: moved",
            digest.location
        ));
    }
    let signature = metadata.get("signature").map(String::as_str);
    let algorithm = metadata.get("signature-algorithm").map(String::as_str);
    let checked = match keys
        .find(
            &stream.region,
            &digest.fingerprint,
            i64::from(digest.end.secs()),
        )
        .await?
    {
        Some(key) => sign::verify(&digest, signature, algorithm, &key.der),
        None => Err(sign::SignatureError::UnknownKey(digest.fingerprint.clone())),
    };
    if let Err(e) = checked {
        hour.problems.push(format!("signature: {e}"));
    }
    let link = match chains.follow(stream, at, &digest, signature) {
        Link::Follows | Link::First => None,
        Link::Restarted { after, from } => Some(format!(
            "{at} starts a new chain after {after}: no digest covers {} to {} (logging or validation was off)",
            from.to_rfc3339(),
            digest.start.to_rfc3339()
        )),
        Link::Gap {
            names,
            last_seen,
            from,
        } => Some(format!(
            "digests missing from {} to {}: {at} names {names} as the one before it, and the last one found is {last_seen}",
            from.to_rfc3339(),
            digest.start.to_rfc3339()
        )),
        Link::Altered { previous, what } => Some(format!(
            "{previous} has another {what} than {at} names for it: altered after {at} was signed"
        )),
    };
    let checks = stream::iter(digest.logs.iter())
        .map(|log| check_log(reader, ledger, log))
        .buffered(FETCHES)
        .collect::<Vec<_>>()
        .await;
    for (problem, shipped) in checks {
        hour.problems.extend(problem);
        if let (Some(n), true) = (hour.shipped.as_mut(), shipped) {
            *n += 1;
        }
    }
    hour.complete = hour.problems.is_empty();
    Ok((hour, link))
}

/// What is wrong with one listed log file, if anything, and whether the ledger says it
/// was shipped with the digest's hash.
async fn check_log<R: Reader>(
    reader: &R,
    ledger: Option<&Ledger>,
    log: &LogFile,
) -> (Option<String>, bool) {
    let id = s3_id(&log.location.bucket, &log.location.key);
    let entry = match ledger.map(|l| l.entry(&id)) {
        None => None,
        Some(Ok(e)) => Some(e),
        Some(Err(e)) => return (Some(format!("could not read the ledger: {e}")), false),
    };
    let l = &log.location;
    match entry
        .as_ref()
        .map(|e| e.as_ref().map(|e| (e.status, e.sha256)))
    {
        Some(Some((Status::Done, Some(h)))) if h == log.hash => return (None, true),
        Some(Some((Status::Done, Some(h)))) => {
            return (
                Some(format!(
                    "altered: {l} was shipped with SHA-256 {}, the digest names {}",
                    hex::encode(&h),
                    hex::encode(&log.hash)
                )),
                false,
            );
        }
        Some(Some((Status::Open, _))) => {
            let why = entry.flatten().map(|e| e.reason).unwrap_or_default();
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(" (last error: {why})")
            };
            return (
                Some(format!("not shipped yet: {l} is open in the ledger{why}")),
                false,
            );
        }
        Some(Some((Status::Failed, _))) => {
            let why = entry.flatten().map(|e| e.reason).unwrap_or_default();
            return (Some(format!("not shipped: {l} failed: {why}")), false);
        }
        // Shipped before hashes were kept, unknown to the ledger, or no ledger: the bucket.
        _ => {}
    }
    let done = matches!(entry, Some(Some(ref e)) if e.status == Status::Done);
    let problem = match reader.get(l).await {
        Ok(Fetched::Missing) => Some(format!("missing: {l}")),
        Err(e) => Some(format!("could not read: {e}")),
        Ok(Fetched::Found { bytes, .. }) => match log_hash(&bytes) {
            Ok(h) if h == log.hash => None,
            Ok(h) => Some(format!(
                "altered: {l} (SHA-256 {}, the digest names {})",
                hex::encode(&h),
                hex::encode(&log.hash)
            )),
            Err(e) => Some(format!("altered: {l}: {e}")),
        },
    };
    match (problem, entry) {
        (Some(p), _) => (Some(p), false),
        // In the bucket and intact, but the ledger does not know it: never shipped (no
        // notification or listing found it), or forgotten (older than the lookback).
        (None, Some(None)) => (
            Some(format!(
                "not shipped: {l} is in the bucket, unaltered, and not in the ledger (never found, or forgotten after the lookback)"
            )),
            false,
        ),
        (None, _) => (None, done),
    }
}

/// The `…/CloudTrail-Digest/REGION/` folders of every account under the layout's base.
async fn digest_folders<L: Lister>(
    lister: &L,
    base: Option<&str>,
    errors: &mut Vec<String>,
) -> Vec<String> {
    let mut list = async |prefix: &str| match lister.list_dirs(prefix).await {
        Ok(d) => d,
        Err(e) => {
            errors.push(e.to_string());
            Vec::new()
        }
    };
    let bases = match base {
        Some(b) => vec![b.to_string()],
        None => {
            let mut bases = Vec::new();
            let mut level = vec![String::new()];
            for depth in 0..=SEARCH_DEPTH {
                let mut next = Vec::new();
                for prefix in &level {
                    for dir in list(prefix).await {
                        if dir[prefix.len()..] == *"AWSLogs/" {
                            bases.push(dir);
                        } else if depth < SEARCH_DEPTH {
                            next.push(dir);
                        }
                    }
                }
                level = next;
            }
            bases
        }
    };
    let mut accounts = Vec::new();
    for base in bases {
        for dir in list(&base).await {
            let name = dir[base.len()..].trim_end_matches('/');
            if layout::is_account(name) {
                accounts.push(dir);
            } else if name.starts_with("o-") {
                for child in list(&dir).await {
                    if layout::is_account(child[dir.len()..].trim_end_matches('/')) {
                        accounts.push(child);
                    }
                }
            }
        }
    }
    let mut folders = Vec::new();
    for account in accounts {
        folders.extend(list(&format!("{account}CloudTrail-Digest/")).await);
    }
    folders
}

/// The layout's literal base folder for `verify`, from a `path_expression`.
pub fn base_of(expr: &crate::pathexpr::PathExpression) -> Option<String> {
    match layout::base(expr) {
        Some(Base::Literal(s)) => Some(s.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_hashes_refuse_bytes_after_the_gzip_member() {
        let gz = |b: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, b).unwrap();
            e.finish().unwrap()
        };
        let one = gz(b"{\"Records\":[]}");
        assert_eq!(
            super::log_hash(&one).unwrap(),
            crate::digest::sha256(b"{\"Records\":[]}")
        );
        let mut two = one.clone();
        two.extend_from_slice(&one);
        assert!(super::log_hash(&two).unwrap_err().contains("after the end"));
    }
}
