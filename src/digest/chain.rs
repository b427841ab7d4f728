//! The digest chain, walked forwards: each digest names the previous one by location, hash
//! and signature, so each new digest is checked against the last one seen in its stream.
//! A deleted digest shows at the next one (it names a digest that was never seen, and the
//! hours between are reported as one gap, however many digests are missing in a row).

use std::collections::HashMap;

use super::{Digest, Location, hex};
use crate::timestamp::EventTime;

/// One trail's digests for one account and region: what a chain links.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stream {
    /// The bucket and the key up to the region's folder: `s3://B/…/CloudTrail-Digest/REGION/`.
    pub folder: String,
    pub account: String,
    /// The region that delivered the digests.
    pub region: String,
    pub trail: String,
    /// The trail's home region.
    pub home: String,
}

/// The stream of a digest key and the end time its name carries, or `None` for a key that
/// is not a digest's
/// (`…/ACCOUNT_CloudTrail-Digest_REGION_TRAIL_HOME_YYYYMMDDTHHMMSSZ[_backfill].json.gz`).
/// Trail names may hold `_`, regions may not: the name is read from both ends.
pub fn stream_of(bucket: &str, key: &str) -> Option<(Stream, EventTime)> {
    let (folder, name) = key.rsplit_once('/')?;
    // `…/REGION` then the date folders `/YYYY/MM/DD`.
    let split = folder.len().checked_sub(11)?;
    crate::layout::key_day(&format!("{}/", folder.get(split + 1..)?))?;
    let folder = folder.get(..split)?;
    let name = name.strip_suffix(".json.gz")?;
    let name = name.strip_suffix("_backfill").unwrap_or(name);
    let (account, rest) = name.split_once("_CloudTrail-Digest_")?;
    let (region, rest) = rest.split_once('_')?;
    let (rest, stamp) = rest.rsplit_once('_')?;
    let (trail, home) = rest.rsplit_once('_')?;
    let b = stamp.as_bytes();
    if !stamp.is_ascii() || b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let text = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    );
    let end = EventTime::parse_rfc3339(&text)?;
    Some((
        Stream {
            folder: format!("s3://{bucket}/{folder}/"),
            account: account.to_string(),
            region: region.to_string(),
            trail: trail.to_string(),
            home: home.to_string(),
        },
        end,
    ))
}

/// What the chain says of a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// It names the last digest seen, with that digest's hash and signature.
    Follows,
    /// The first digest seen in its stream: nothing to compare with.
    First,
    /// A starting digest (no previous) after others: CloudTrail starts a new chain when
    /// logging or validation was turned off and on again; no digest covers the hours
    /// between.
    Restarted { after: Location, from: EventTime },
    /// It names a previous digest that is not the last one seen: the digests after
    /// `last_seen` up to the one named were deleted or never delivered (one or several in a
    /// row: `from` is where the last seen one ended).
    Gap {
        names: Location,
        last_seen: Location,
        from: EventTime,
    },
    /// It names the last digest seen, but with another hash or signature: that digest was
    /// altered after this one was signed (or this one names a forged predecessor).
    Altered {
        previous: Location,
        what: &'static str,
    },
}

struct Seen {
    location: Location,
    end: EventTime,
    hash: [u8; 32],
    signature: Option<String>,
}

/// The last digest seen in each stream.
#[derive(Default)]
pub struct Chains {
    last: HashMap<Stream, Seen>,
}

impl Chains {
    /// Checks `digest` (stored at `at`, signed `signature`) against the last digest seen in
    /// `stream`, then makes it the last. Digests of a stream are to be given in time order.
    pub fn follow(
        &mut self,
        stream: &Stream,
        at: &Location,
        digest: &Digest,
        signature: Option<&str>,
    ) -> Link {
        let link = match (self.last.get(stream), &digest.previous) {
            (None, _) => Link::First,
            (Some(last), None) => Link::Restarted {
                after: last.location.clone(),
                from: last.end,
            },
            (Some(last), Some(p)) if p.location != last.location => Link::Gap {
                names: p.location.clone(),
                last_seen: last.location.clone(),
                from: last.end,
            },
            (Some(last), Some(p)) if p.hash != last.hash => Link::Altered {
                previous: last.location.clone(),
                what: "hash",
            },
            (Some(last), Some(p))
                if last.signature.as_deref().and_then(hex::decode) != hex::decode(&p.signature) =>
            {
                Link::Altered {
                    previous: last.location.clone(),
                    what: "signature",
                }
            }
            _ => Link::Follows,
        };
        self.last.insert(
            stream.clone(),
            Seen {
                location: at.clone(),
                end: digest.end,
                hash: digest.hash,
                signature: signature.map(String::from),
            },
        );
        link
    }

    /// Whether reading `digest` now keeps `stream`'s digests in time order: it names the
    /// last one seen. A digest announced by a notification that does not waits for the one
    /// it names, or for a listing pass, which reads a stream's digests in order: its
    /// predecessor's notification is late or lost, it is the stream's first since the
    /// start, or it starts a chain (earlier digests of the stream may still be unread).
    pub fn continues(&self, stream: &Stream, digest: &Digest) -> bool {
        match (self.last.get(stream), &digest.previous) {
            (Some(last), Some(p)) => p.location == last.location,
            _ => false,
        }
    }

    /// The last digest seen in `stream`.
    pub fn last(&self, stream: &Stream) -> Option<(&Location, EventTime)> {
        self.last.get(stream).map(|s| (&s.location, s.end))
    }

    /// The end of the last digest seen in each stream.
    pub fn ends(&self) -> impl Iterator<Item = (&Stream, EventTime, &Location)> {
        self.last
            .iter()
            .map(|(s, seen)| (s, seen.end, &seen.location))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::file::Previous;

    const KEY: &str = "AWSLogs/o-abc/111122223333/CloudTrail-Digest/us-east-2/2015/08/17/111122223333_CloudTrail-Digest_us-east-2_my_trail_us-east-1_20150817T150131Z.json.gz";

    #[test]
    fn digest_keys_name_their_stream_and_end() {
        let (s, end) = stream_of("b", KEY).unwrap();
        assert_eq!(
            (
                s.account.as_str(),
                s.region.as_str(),
                s.trail.as_str(),
                s.home.as_str()
            ),
            ("111122223333", "us-east-2", "my_trail", "us-east-1")
        );
        assert_eq!(
            s.folder,
            "s3://b/AWSLogs/o-abc/111122223333/CloudTrail-Digest/us-east-2/"
        );
        assert_eq!(end.to_rfc3339(), "2015-08-17T15:01:31Z");
        let backfill = KEY.replace(".json.gz", "_backfill.json.gz");
        assert_eq!(stream_of("b", &backfill).unwrap().0, s);
        assert!(stream_of("b", "AWSLogs/1/CloudTrail/us-east-1/2015/08/17/x.json.gz").is_none());
        // A name that is not ASCII where the time is: refused, not sliced mid-character.
        let odd = KEY.replace("20150817T150131Z", "2015€8T150131Z");
        assert!(stream_of("b", &odd).is_none());
    }

    fn digest(n: u8, previous: Option<(u8, [u8; 32], &str)>) -> (Location, Digest) {
        let at = Location {
            bucket: "b".into(),
            key: format!("d{n}"),
        };
        let d = Digest {
            account: "1".into(),
            start: EventTime::new(i64::from(n) * 3600, 0).unwrap(),
            end: EventTime::new(i64::from(n + 1) * 3600, 0).unwrap(),
            end_text: String::new(),
            location: at.clone(),
            fingerprint: String::new(),
            previous: previous.map(|(p, hash, signature)| Previous {
                location: Location {
                    bucket: "b".into(),
                    key: format!("d{p}"),
                },
                hash,
                signature: signature.into(),
            }),
            logs: Vec::new(),
            hash: [n; 32],
        };
        (at, d)
    }

    #[test]
    fn an_announced_digest_is_read_only_after_the_one_it_names() {
        let s = stream_of("b", KEY).unwrap().0;
        let mut c = Chains::default();
        let (a1, d1) = digest(1, None);
        let (_, d2) = digest(2, Some((1, [1; 32], "aa")));
        let (_, d3) = digest(3, Some((2, [2; 32], "bb")));
        // A stream's first digest since the start names one a listing may still find.
        assert!(!c.continues(&s, &d2));
        // A digest that starts a chain: earlier ones may still be unread.
        assert!(!c.continues(&s, &d1));
        c.follow(&s, &a1, &d1, Some("aa"));
        assert!(!c.continues(&s, &d1));
        assert!(c.continues(&s, &d2));
        // Announced before the one it names.
        assert!(!c.continues(&s, &d3));
        assert_eq!(c.last(&s).map(|(l, _)| l), Some(&a1));
    }

    #[test]
    fn forwards_a_deleted_digest_shows_at_the_next_one_and_two_in_a_row_as_one_gap() {
        let s = stream_of("b", KEY).unwrap().0;
        let mut c = Chains::default();
        let (a1, d1) = digest(1, None);
        assert_eq!(c.follow(&s, &a1, &d1, Some("aa")), Link::First);
        let (a2, d2) = digest(2, Some((1, [1; 32], "AA")));
        assert_eq!(
            c.follow(&s, &a2, &d2, Some("bb")),
            Link::Follows,
            "hex case ignored"
        );
        // d3 and d4 deleted: d5 names d4, the last seen is d2.
        let (a5, d5) = digest(5, Some((4, [4; 32], "dd")));
        assert_eq!(
            c.follow(&s, &a5, &d5, Some("ee")),
            Link::Gap {
                names: Location {
                    bucket: "b".into(),
                    key: "d4".into()
                },
                last_seen: a2.clone(),
                from: d2.end,
            }
        );
        let (a6, d6) = digest(6, Some((5, [9; 32], "ee")));
        assert_eq!(
            c.follow(&s, &a6, &d6, Some("ff")),
            Link::Altered {
                previous: a5.clone(),
                what: "hash"
            }
        );
        let (a7, d7) = digest(7, Some((6, [6; 32], "00")));
        assert_eq!(
            c.follow(&s, &a7, &d7, None),
            Link::Altered {
                previous: a6.clone(),
                what: "signature"
            }
        );
        let (a8, d8) = digest(8, None);
        assert_eq!(
            c.follow(&s, &a8, &d8, None),
            Link::Restarted {
                after: a7,
                from: d7.end
            }
        );
    }
}
