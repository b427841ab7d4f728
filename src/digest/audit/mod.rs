//! Checking a bucket's digests, pass after pass: each digest is read once (form, place,
//! signature, link to the previous one), and the log files it lists are checked until each
//! is settled: shipped with the digest's hash (per the ledger), or found missing, altered,
//! failed, or not shipped.
//!
//! The `verify` command makes one strict pass over a time range. The engine (with
//! `digest.validate`) keeps one [`Audit`] for its life and makes a pass every
//! `digest.every`: a file the ledger does not know is given `digest.grace` after its
//! digest was read to be found by notifications or listings, then it is fetched and shipped
//! from here ([`PassOutcome::heal`]): the digest heals what discovery missed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::{StreamExt, stream};

mod read;
use read::Order;

use super::chain::{Chains, Stream, stream_of};
use super::fetch::log_hash;
pub use super::fetch::{Fetched, Reader, S3Reader};
use super::keys::{KeyRing, KeySource};
pub use super::report::{Counts, HourReport, PassOutcome};
use super::{LogFile, hex};
use crate::discover::listing::{Listed, Lister};
use crate::layout::{self, SEARCH_DEPTH, day_path};
use crate::ledger::{Ledger, Status};
use crate::object::s3_id;
use crate::timestamp::EventTime;

/// Announced digests kept waiting for their turn, at most.
const WAITING_MAX: usize = 100_000;

/// Log files fetched at once while their hashes are checked.
const FETCHES: usize = 8;

/// A stream with no digest for this long before the end of a pass's range is reported
/// silent: CloudTrail delivers a digest every hour, and takes up to an hour to.
const SILENT_AFTER: u32 = 2 * 3600;

/// A digest read, with the files it lists not settled yet.
struct Tracked {
    end: EventTime,
    /// When this audit read the digest: the grace time counts from here, not from the
    /// digest's end (a backfill reads digests of long ago, whose files the listing is
    /// still on its way to).
    read_at: EventTime,
    hour: HourReport,
    pending: Vec<LogFile>,
}

/// What one listed file came to.
enum FileCheck {
    /// Shipped with the digest's hash, or (without a ledger, or shipped before hashes were
    /// kept) in the bucket with it.
    Verified { shipped: bool },
    /// Settled with a problem.
    Problem(String),
    /// In the bucket and unknown to the ledger: to be shipped (the text says why).
    NotShipped(String, u64),
    /// Not settled yet (open in the ledger, or within the grace time).
    Pending,
    /// Unknown to a ledger that may have forgotten it (its digest is older than the ledger
    /// remembers), or not this shipper's to ship (`path_expression`, `start_time`):
    /// neither verified nor shipped.
    Unjudged,
    /// Could not be read now: checked again next pass.
    Retry(String),
}

/// Digests checked pass after pass.
pub struct Audit<L, R, K> {
    lister: L,
    reader: R,
    keys: KeyRing<K>,
    /// The layout's literal `…/AWSLogs/` folder, or searched when `None`.
    base: Option<String>,
    /// Seconds after a digest is read before a file it lists that the ledger does not know
    /// is a finding.
    grace: u32,
    /// One pass judging everything now (`verify`): an open file is a problem, not pending.
    strict: bool,
    chains: Chains,
    /// Digest keys read (each once), back to a day before each folder's position.
    seen: HashSet<String>,
    /// The day of the newest digest listed in each folder: the next pass lists from the day
    /// before it (a late digest lands in its own day), not from the start again.
    positions: std::collections::HashMap<String, i64>,
    /// Digests whose files are not all settled, in the order read.
    tracked: Vec<Tracked>,
    /// Digests announced by notifications and not read yet (out of order, or not readable
    /// then): tried again with the next ones announced, until a pass reads them.
    waiting: BTreeMap<String, read::Wait>,
    /// Streams reported silent, with the end of their last digest then (reported again
    /// only after a newer digest).
    silent: std::collections::HashMap<Stream, EventTime>,
    pub counts: Arc<Counts>,
    /// How long the ledger is sure to remember a shipped file after its digest's end.
    remembers: Option<u32>,
    /// Which listed files are this shipper's to ship (`path_expression`, `start_time`).
    wanted: Option<Wanted>,
    /// Whether files found through digests are handed back to be shipped ([`PassOutcome::heal`]).
    ship: bool,
}

/// How long after a digest's end a ledger with this `lookback` surely remembers the files
/// it shipped: keys of a day are forgotten once the forget line, a lookback behind the
/// watermark's day (tomorrow at most), passes them, and SQS-found files a lookback after
/// their claim. A day and two hours less than the lookback leaves an hour of margin.
pub fn remembered(lookback: u32) -> u32 {
    lookback.saturating_sub(86_400 + 2 * 3600)
}

/// A filter over log file keys.
pub type Wanted = Box<dyn Fn(&str) -> bool + Send + Sync>;

impl<L: Lister, R: Reader, K: KeySource> Audit<L, R, K> {
    /// The ledger forgets done entries a `lookback` behind (by the listing's forget line,
    /// or by claim time for notifications): a file a digest ending more than `secs` ago
    /// lists that the ledger does not know may have been shipped and forgotten, so it is
    /// not shipped again from the digest.
    pub fn remembering(mut self, secs: u32) -> Self {
        self.remembers = Some(secs);
        self
    }

    /// Judges only the files `wanted` accepts: the others are not this shipper's to ship.
    pub fn wanting(mut self, wanted: Wanted) -> Self {
        self.wanted = Some(wanted);
        self
    }

    /// Reports files found through digests without handing them back to be shipped.
    pub fn not_shipping(mut self) -> Self {
        self.ship = false;
        self
    }

    pub fn new(
        lister: L,
        reader: R,
        keys: KeyRing<K>,
        base: Option<String>,
        grace: u32,
        strict: bool,
    ) -> Self {
        Self {
            lister,
            reader,
            keys,
            base,
            grace,
            strict,
            chains: Chains::default(),
            seen: HashSet::new(),
            positions: std::collections::HashMap::new(),
            tracked: Vec::new(),
            waiting: Default::default(),
            silent: std::collections::HashMap::new(),
            counts: Arc::default(),
            remembers: None,
            wanted: None,
            ship: true,
        }
    }

    /// Reads the digests ending in `from`..`to` (an hour more at the end: a digest covers
    /// the hour before its end) not read before, then checks every tracked digest's
    /// unsettled files.
    pub async fn pass(
        &mut self,
        ledger: Option<&Ledger>,
        from: EventTime,
        to: EventTime,
        now: EventTime,
    ) -> PassOutcome {
        let mut out = PassOutcome::default();
        let bucket = self.lister.bucket().to_string();
        let folders = self.digest_folders(&mut out.errors).await;
        let (lo, hi) = (from.secs(), to.secs().saturating_add(3600));
        let mut streams: BTreeMap<Stream, Vec<(EventTime, String)>> = BTreeMap::new();
        let lo_day = i64::from(lo) / 86_400;
        for folder in folders {
            let from_day = self
                .positions
                .get(&folder)
                .map_or(lo_day, |d| (d - 1).max(lo_day));
            let start = format!("{folder}{}", day_path(from_day - 1));
            let listed = match self.lister.list_objects(&folder, Some(&start)).await {
                Ok(l) => l,
                Err(e) => {
                    out.errors.push(e.to_string());
                    continue;
                }
            };
            for Listed { key, .. } in listed {
                if let Some(day) = key.get(folder.len()..).and_then(layout::key_day) {
                    let p = self.positions.entry(folder.clone()).or_insert(day);
                    *p = (*p).max(day);
                }
                if self.seen.contains(&key) {
                    continue;
                }
                if let Some((stream, end)) = stream_of(&bucket, &key)
                    && end.secs() > lo
                    && end.secs() <= hi
                {
                    streams.entry(stream).or_default().push((end, key));
                }
            }
        }
        self.read_streams(streams, Order::Listed, now, &mut out)
            .await;
        // Whatever was announced before this pass, the listing has seen (or lists again
        // next pass, where its folder's listing failed).
        self.waiting.clear();
        for (stream, end, at) in self.chains.ends() {
            if to.secs().saturating_sub(end.secs()) > SILENT_AFTER {
                let line = format!(
                    "{} {} {}: no digest after {} (the last is {at}): digests deleted, or logging stopped",
                    stream.account,
                    stream.region,
                    stream.trail,
                    end.to_rfc3339()
                );
                if self.silent.insert(stream.clone(), end) != Some(end) {
                    out.findings.push(line.clone());
                }
                out.chain.push(line);
            }
        }
        out.chain.sort();
        // Keys before a folder's listing start are not listed again.
        let positions = &self.positions;
        self.seen.retain(|key| {
            // `FOLDER` + `YYYY/MM/DD/` + the name.
            let Some((dir, _)) = key.rsplit_once('/') else {
                return false;
            };
            let Some(split) = dir.len().checked_sub(10) else {
                return false;
            };
            let (folder, day) = (&dir[..split], layout::key_day(&key[split..]));
            match (positions.get(folder), day) {
                (Some(p), Some(d)) => d >= p - 2,
                _ => true,
            }
        });
        self.check_files(ledger, now, &mut out).await;
        let c = &self.counts;
        c.passes.fetch_add(1, Ordering::Relaxed);
        c.findings
            .fetch_add(out.findings.len() as u64, Ordering::Relaxed);
        out
    }

    /// Checks the unsettled files of every tracked digest; settled digests stop being
    /// tracked (after this pass's report).
    async fn check_files(
        &mut self,
        ledger: Option<&Ledger>,
        now: EventTime,
        out: &mut PassOutcome,
    ) {
        let mut tracked = std::mem::take(&mut self.tracked);
        for t in &mut tracked {
            if ledger.is_some() && t.hour.shipped.is_none() {
                t.hour.shipped = Some(0);
            }
            let past_grace =
                self.strict || now.secs() >= t.read_at.secs().saturating_add(self.grace);
            let maybe_forgotten = self
                .remembers
                .is_some_and(|r| now.secs().saturating_sub(t.end.secs()) > r);
            let pending = std::mem::take(&mut t.pending);
            let checks = stream::iter(pending)
                .map(|log| async {
                    let c = self
                        .check_log(ledger, &log, past_grace, maybe_forgotten)
                        .await;
                    (log, c)
                })
                .buffered(FETCHES)
                .collect::<Vec<_>>()
                .await;
            for (log, check) in checks {
                match check {
                    FileCheck::Verified { shipped } => {
                        self.counts.files_verified.fetch_add(1, Ordering::Relaxed);
                        if let (Some(n), true) = (t.hour.shipped.as_mut(), shipped) {
                            *n += 1;
                        }
                    }
                    FileCheck::Problem(p) => {
                        out.findings.push(format!("{}: {p}", t.hour.digest));
                        t.hour.problems.push(p);
                    }
                    FileCheck::NotShipped(p, size) => {
                        out.findings.push(format!("{}: {p}", t.hour.digest));
                        t.hour.problems.push(p);
                        if self.ship {
                            out.heal.push((log.location.clone(), size));
                        }
                    }
                    FileCheck::Pending => t.pending.push(log),
                    FileCheck::Unjudged => t.hour.unjudged += 1,
                    FileCheck::Retry(e) => {
                        out.errors.push(e);
                        t.pending.push(log);
                    }
                }
            }
            t.hour.pending = t.pending.len();
            t.hour.complete =
                t.pending.is_empty() && t.hour.problems.is_empty() && t.hour.unjudged == 0;
            out.hours.push(t.hour.clone());
        }
        tracked.retain(|t| !t.pending.is_empty());
        self.tracked = tracked;
    }

    /// Reads, checks and links one digest. Returns it tracked with all its files pending,
    /// and what its link to the previous digest says of the hours before it, when that is
    /// not "nothing missing".
    /// What one listed log file comes to now.
    async fn check_log(
        &self,
        ledger: Option<&Ledger>,
        log: &LogFile,
        past_grace: bool,
        maybe_forgotten: bool,
    ) -> FileCheck {
        let l = &log.location;
        if self.wanted.as_ref().is_some_and(|w| !w(&l.key)) {
            return FileCheck::Unjudged;
        }
        let entry = match ledger.map(|led| led.entry(&s3_id(&l.bucket, &l.key))) {
            None => None,
            Some(Ok(e)) => Some(e),
            // Not settled: the next pass reads it again.
            Some(Err(_)) => return FileCheck::Pending,
        };
        if let Some(Some(e)) = &entry {
            match (e.status, e.sha256) {
                (Status::Done, Some(h)) if h == log.hash => {
                    return FileCheck::Verified { shipped: true };
                }
                (Status::Done, Some(h)) => {
                    return FileCheck::Problem(format!(
                        "altered: {l} was shipped with SHA-256 {}, the digest names {}",
                        hex::encode(&h),
                        hex::encode(&log.hash)
                    ));
                }
                (Status::Open, _) if !self.strict => return FileCheck::Pending,
                (Status::Open, _) => {
                    let why = if e.reason.is_empty() {
                        String::new()
                    } else {
                        format!(" (last error: {})", e.reason)
                    };
                    return FileCheck::Problem(format!(
                        "not shipped yet: {l} is open in the ledger{why}"
                    ));
                }
                (Status::Failed, _) => {
                    return FileCheck::Problem(format!("not shipped: {l} failed: {}", e.reason));
                }
                // Done before hashes were kept: the bucket's copy is checked.
                (Status::Done, None) => {}
            }
        }
        let unknown = matches!(entry, Some(None));
        if unknown && maybe_forgotten {
            return FileCheck::Unjudged;
        }
        if unknown && !past_grace {
            return FileCheck::Pending;
        }
        let bytes = match self.reader.get(l).await {
            Ok(Fetched::Missing) => return FileCheck::Problem(format!("missing: {l}")),
            // Read again next pass (one strict pass says so).
            Err(e) if !self.strict => return FileCheck::Retry(e),
            Err(e) => return FileCheck::Problem(format!("could not read: {e}")),
            Ok(Fetched::Found { bytes, .. }) => bytes,
        };
        let altered = match log_hash(&bytes) {
            Ok(h) if h == log.hash => None,
            Ok(h) => Some(format!(
                "altered: {l} (SHA-256 {}, the digest names {})",
                hex::encode(&h),
                hex::encode(&log.hash)
            )),
            Err(e) => Some(format!("altered: {l}: {e}")),
        };
        match (altered, unknown) {
            (Some(p), false) => FileCheck::Problem(p),
            (None, false) => FileCheck::Verified {
                shipped: matches!(entry, Some(Some(_))),
            },
            // In the bucket, unknown to the ledger: no notification or listing found it (or
            // it was forgotten after the lookback). Shipped from here.
            (altered, true) => FileCheck::NotShipped(
                format!(
                    "not shipped: {l} is in the bucket{} and not in the ledger (no notification or listing found it, or it was forgotten after the lookback)",
                    altered.map_or(", unaltered,".to_string(), |a| format!(" ({a})"))
                ),
                bytes.len() as u64,
            ),
        }
    }

    /// The `…/CloudTrail-Digest/REGION/` folders of every account under the layout's base.
    async fn digest_folders(&self, errors: &mut Vec<String>) -> Vec<String> {
        let mut list = async |prefix: &str| match self.lister.list_dirs(prefix).await {
            Ok(d) => d,
            Err(e) => {
                errors.push(e.to_string());
                Vec::new()
            }
        };
        let bases = match &self.base {
            Some(b) => vec![b.clone()],
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
}
