//! Reading digests: each stream's new ones in time order, each checked for form, place,
//! signature and its link to the one before; and the digests SQS notifications announce,
//! read as they come when they continue their stream's chain.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::{Audit, Tracked, WAITING_MAX};
use crate::digest::chain::{Link, Stream, stream_of};
use crate::digest::fetch::{Fetched, Reader};
use crate::digest::file::inflate;
use crate::digest::keys::KeySource;
use crate::digest::report::{HourReport, PassOutcome};
use crate::digest::{Digest, Location, sign};
use crate::discover::listing::Lister;
use crate::ledger::Ledger;
use crate::timestamp::EventTime;

/// How the digests given to a read were found.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    /// By listing their folders: every digest of a stream since the last pass, in order.
    Listed,
    /// By notifications, which may come late, twice, or out of order.
    Announced,
}

/// What an announced digest waits for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Wait {
    /// Not fetched yet.
    Unfetched,
    /// Fetched, and naming this digest as the one before it, not read yet: fetched again
    /// once it is.
    For(Location),
    /// Fetched, and starting a chain: read by the next listing pass, in order.
    Listing,
}

/// A digest a read left unread.
pub(super) enum Unread {
    /// Announced out of order; names the digest before it (none: it starts a chain).
    Deferred(Option<Location>),
    /// Could not be fetched or was gone: read again by a later pass.
    Failed,
}

/// Why [`Audit::read_digest`] did not read a digest.
enum Skip {
    Deferred(Option<Location>),
    Failed(String),
}

impl<L: Lister, R: Reader, K: KeySource> Audit<L, R, K> {
    /// Reads the digests announced by notifications (SQS), as they arrive: no listing. Each
    /// is read only if it continues its stream's chain (it names the last digest read, or
    /// starts a chain); one that does not, and the stream's later ones, wait: for the one
    /// before them to be announced, or for the next listing pass, which reads a stream's
    /// digests in order. Then every tracked digest's unsettled files are checked, as a pass
    /// does.
    pub async fn announced(
        &mut self,
        ledger: Option<&Ledger>,
        keys: &[String],
        from: EventTime,
        to: EventTime,
        now: EventTime,
    ) -> PassOutcome {
        let mut out = PassOutcome::default();
        let bucket = self.lister.bucket().to_string();
        let (lo, hi) = (from.secs(), to.secs().saturating_add(3600));
        for k in keys {
            self.waiting.entry(k.clone()).or_insert(Wait::Unfetched);
        }
        // Dropped: digests read, not digests' keys, out of the range, outside the folders
        // the listing walks, and ones at or before their trail's last digest read (a
        // notification delivered again).
        let (seen, chains, base) = (&self.seen, &self.chains, self.base.as_deref());
        self.waiting.retain(|k, _| {
            !seen.contains(k)
                && base.is_none_or(|b| k.starts_with(b))
                && stream_of(&bucket, k).is_some_and(|(stream, end)| {
                    end.secs() > lo
                        && end.secs() <= hi
                        && chains.last(&stream).is_none_or(|(_, last)| end > last)
                })
        });
        while self.waiting.len() > WAITING_MAX {
            self.waiting.pop_first();
        }
        // Each trail's waiting digests, in time order, unless the first waits for one not
        // read yet (fetched again only once that one is) or for a listing pass.
        let mut streams: BTreeMap<Stream, Vec<(EventTime, String)>> = BTreeMap::new();
        let mut first: BTreeMap<Stream, (EventTime, &Wait)> = BTreeMap::new();
        for (key, wait) in &self.waiting {
            let Some((stream, end)) = stream_of(&bucket, key) else {
                continue;
            };
            let f = first.entry(stream.clone()).or_insert((end, wait));
            if end < f.0 {
                *f = (end, wait);
            }
            streams.entry(stream).or_default().push((end, key.clone()));
        }
        streams.retain(|stream, _| match first.get(stream) {
            Some((_, Wait::Unfetched)) => true,
            Some((_, Wait::For(named))) => self
                .chains
                .last(stream)
                .is_some_and(|(last, _)| last == named),
            _ => false,
        });
        let read = self.counts.digests.load(Ordering::Relaxed);
        let unread = self
            .read_streams(streams, Order::Announced, now, &mut out)
            .await;
        let read = self.counts.digests.load(Ordering::Relaxed) - read;
        self.counts.announced.fetch_add(read, Ordering::Relaxed);
        for (key, why) in unread {
            match why {
                Unread::Deferred(named) => {
                    let wait = named.map_or(Wait::Listing, Wait::For);
                    if self.waiting.insert(key, wait) == Some(Wait::Unfetched) {
                        self.counts.deferred.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // Left to the listing pass (logged as an error of this batch).
                Unread::Failed => {
                    self.waiting.remove(&key);
                }
            }
        }
        let seen = &self.seen;
        self.waiting.retain(|k, _| !seen.contains(k));
        // Files are checked when a digest was read: the listing passes check them too.
        if read > 0 {
            self.check_files(ledger, now, &mut out).await;
        }
        self.counts
            .findings
            .fetch_add(out.findings.len() as u64, Ordering::Relaxed);
        out
    }

    /// Reads each stream's new digests in time order, linking each to the one before.
    /// Returns the digests not read: deferred (announced out of order) or failed.
    pub(super) async fn read_streams(
        &mut self,
        streams: BTreeMap<Stream, Vec<(EventTime, String)>>,
        order: Order,
        now: EventTime,
        out: &mut PassOutcome,
    ) -> Vec<(String, Unread)> {
        let mut unread = Vec::new();
        let bucket = self.lister.bucket().to_string();
        for (stream, mut digests) in streams {
            digests.sort();
            for (end, key) in digests {
                let at = Location {
                    bucket: bucket.clone(),
                    key: key.clone(),
                };
                match self.read_digest(&stream, &at, order).await {
                    // Out of order for a notification: this one and the stream's later
                    // ones wait for a listing pass.
                    Err(Skip::Deferred(named)) => {
                        unread.push((key, Unread::Deferred(named)));
                        break;
                    }
                    Ok((tracked, link)) => {
                        self.seen.insert(key);
                        self.counts.digests.fetch_add(1, Ordering::Relaxed);
                        if let Some(l) = link {
                            let l = format!(
                                "{} {} {}: {l}",
                                stream.account, stream.region, stream.trail
                            );
                            out.chain.push(l.clone());
                            out.findings.push(l);
                        }
                        let t = Tracked {
                            end,
                            read_at: now,
                            ..tracked
                        };
                        out.findings.extend(
                            t.hour
                                .problems
                                .iter()
                                .map(|p| format!("{}: {p}", t.hour.digest)),
                        );
                        self.tracked.push(t);
                    }
                    // The stream's later digests wait for the next pass: read now, they
                    // would be linked past this one and report a gap that is not there.
                    Err(Skip::Failed(e)) => {
                        out.errors.push(e);
                        unread.push((key, Unread::Failed));
                        break;
                    }
                }
            }
        }
        unread
    }

    /// Reads one digest: form, place, signature, link. Announced ([`Order::Announced`])
    /// and not continuing its stream's chain, it is not read now
    /// ([`Skip::Deferred`], with the digest it names).
    async fn read_digest(
        &mut self,
        stream: &Stream,
        at: &Location,
        order: Order,
    ) -> Result<(Tracked, Option<String>), Skip> {
        let (gz, metadata) = match self.reader.get(at).await.map_err(Skip::Failed)? {
            Fetched::Found { bytes, metadata } => (bytes, metadata),
            Fetched::Missing => return Err(Skip::Failed(format!("{at}: listed, then gone"))),
        };
        let mut hour = HourReport {
            account: stream.account.clone(),
            region: stream.region.clone(),
            trail: stream.trail.clone(),
            end: String::new(),
            digest: at.to_string(),
            complete: false,
            logs: 0,
            shipped: None,
            problems: Vec::new(),
            unjudged: 0,
            pending: 0,
        };
        let digest = match inflate(&gz).and_then(|b| Digest::parse(&b)) {
            Ok(d) => d,
            Err(e) => {
                hour.problems.push(format!("the digest is unreadable: {e}"));
                let t = Tracked {
                    end: EventTime::from_parts(0, 0).unwrap_or_else(EventTime::now),
                    read_at: EventTime::from_parts(0, 0).unwrap_or_else(EventTime::now),
                    hour,
                    pending: Vec::new(),
                };
                return Ok((t, None));
            }
        };
        if order == Order::Announced && !self.chains.continues(stream, &digest) {
            return Err(Skip::Deferred(
                digest.previous.as_ref().map(|p| p.location.clone()),
            ));
        }
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
        let checked = match self
            .keys
            .find(
                &stream.region,
                &digest.fingerprint,
                i64::from(digest.end.secs()),
            )
            .await
            .map_err(Skip::Failed)?
        {
            Some(key) => sign::verify(&digest, signature, algorithm, &key.der),
            None => Err(sign::SignatureError::UnknownKey(digest.fingerprint.clone())),
        };
        if let Err(e) = checked {
            hour.problems.push(format!("signature: {e}"));
        }
        let link = match self.chains.follow(stream, at, &digest, signature) {
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
        let t = Tracked {
            end: digest.end,
            read_at: digest.end,
            hour,
            pending: digest.logs,
        };
        Ok((t, link))
    }
}
