//! The CloudTrail key layout: `[PREFIX/]AWSLogs/[o-ORG/]ACCOUNT/KIND/REGION/YYYY/MM/DD/…`,
//! where `KIND` is the folder of what the trail wrote ([`Kind`]: `CloudTrail` for management
//! and data events, `CloudTrail-Insight`, `CloudTrail-NetworkActivity`,
//! `CloudTrail-Aggregated`; digests sit beside them in `CloudTrail-Digest`).
//!
//! Listings follow it: accounts and regions are enumerated with delimiter listings, and each
//! `…/KIND/REGION/` prefix is listed by day. These helpers read the layout out of an
//! expression and out of keys. A base module, like `timestamp`: discovery, the ledger's
//! forget lines, freshness, `status` and the HTTP output's fields all read keys this way.

use std::ops::Range;

use crate::pathexpr::PathExpression;
use crate::timestamp::{civil_from_days, days_from_civil};

/// What a trail writes, each kind in a folder of its own under the account. The same
/// `{"Records":[…]}` file shape for all; what differs is where an event's time is
/// (`eventTime`, or an aggregated event's `timeWindow.windowStart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `CloudTrail/`: management and data events (what shippers read by default).
    Events,
    /// `CloudTrail-Insight/`: Insights events (unusual API call or error rates), timed by
    /// their `eventTime` (when the unusual activity started or ended).
    Insights,
    /// `CloudTrail-NetworkActivity/`: network activity events through VPC endpoints, timed by
    /// `eventTime`.
    NetworkActivity,
    /// `CloudTrail-Aggregated/`: 5-minute summaries of data events, with no `eventTime`: timed
    /// by the start of their window, `timeWindow.windowStart`.
    Aggregated,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Events,
        Kind::Insights,
        Kind::NetworkActivity,
        Kind::Aggregated,
    ];

    /// The folder under each account.
    pub fn folder(self) -> &'static str {
        match self {
            Kind::Events => "CloudTrail",
            Kind::Insights => "CloudTrail-Insight",
            Kind::NetworkActivity => "CloudTrail-NetworkActivity",
            Kind::Aggregated => "CloudTrail-Aggregated",
        }
    }

    /// The name `event_kinds` uses.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Events => "events",
            Kind::Insights => "insights",
            Kind::NetworkActivity => "network_activity",
            Kind::Aggregated => "aggregated",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn from_folder(folder: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.folder() == folder)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of kinds (`event_kinds`); never empty once validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds(u8);

impl Kinds {
    /// Management and data events only: what CloudTrail shippers read, and the default.
    pub const EVENTS: Kinds = Kinds(1);
    pub const ALL: Kinds = Kinds(0b1111);

    pub fn of(kinds: impl IntoIterator<Item = Kind>) -> Kinds {
        Kinds(kinds.into_iter().fold(0, |bits, k| bits | k.bit()))
    }

    pub fn contains(self, kind: Kind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().filter(move |k| self.contains(*k))
    }
}

impl std::fmt::Display for Kinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.iter().map(Kind::name).collect();
        f.write_str(&names.join(","))
    }
}

/// The kind folder of a key or prefix (a complete level after `AWSLogs/` and at least one
/// level below it, so after the account) and where its name is in the text.
pub fn kind_level(key: &str) -> Option<(Kind, Range<usize>)> {
    let mut at = key.find("AWSLogs/")? + "AWSLogs/".len();
    let mut levels = key[at..].split_inclusive('/').enumerate();
    levels.find_map(|(i, level)| {
        let start = at;
        at += level.len();
        let name = level.strip_suffix('/')?;
        let kind = Kind::from_folder(name).filter(|_| i >= 1)?;
        Some((kind, start..start + name.len()))
    })
}

/// Where the layout walk starts for an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base<'a> {
    /// The expression is literal up to `…AWSLogs/`: listing starts there.
    Literal(&'a str),
    /// The expression starts with a wildcard before `AWSLogs/` (the default, so that trails
    /// written under an S3 key prefix work unconfigured): the `AWSLogs/` folders are
    /// searched for at the top of the bucket and up to [`SEARCH_DEPTH`] folders below it.
    Search,
}

/// How many folders deep a trail's S3 key prefix may be for the default expression to find
/// it (`myorg/AWSLogs/` is one, `logs/myorg/AWSLogs/` two).
pub const SEARCH_DEPTH: usize = 3;

/// Where the layout walk applies: the expression has an `AWSLogs/` level followed by a
/// kind's level (`CloudTrail/`, `CloudTrail-Insight/`, …). `None` for other expressions,
/// which are listed flat.
pub fn base(expr: &PathExpression) -> Option<Base<'_>> {
    let text = expr.as_str();
    let at = text.find("AWSLogs/")? + "AWSLogs/".len();
    let mut levels = text[at..].split('/');
    levels.next_back();
    if !levels.any(|level| Kind::from_folder(level).is_some()) {
        return None;
    }
    let head = &text[..at];
    if !head.contains('*') {
        Some(Base::Literal(head))
    } else if head == "*AWSLogs/" {
        Some(Base::Search)
    } else {
        None
    }
}

/// `YYYY/MM/DD` of a day number.
pub fn day_path(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}/{m:02}/{d:02}")
}

/// The day number of a `YYYY/MM/DD/…` key part (a key's rest after its region prefix).
pub fn key_day(rest: &str) -> Option<i64> {
    let b = rest.as_bytes();
    if b.len() < 11 || b[4] != b'/' || b[7] != b'/' || b[10] != b'/' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = rest.get(r)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(i64::from(y), m, d))
}

/// The `…/KIND/REGION/` prefix of a key (`…/CloudTrail/REGION/` for management and data
/// events), when it has the layout.
pub fn region_prefix(key: &str) -> Option<&str> {
    let (_, folder) = kind_level(key)?;
    let at = folder.end + 1;
    let slash = key[at..].find('/')?;
    Some(&key[..at + slash + 1])
}

/// The account and region a key's layout names (`…/ACCOUNT/KIND/REGION/…`).
pub fn account_region(key: &str) -> Option<(&str, &str)> {
    let prefix = region_prefix(key)?;
    let mut levels = prefix.trim_end_matches('/').rsplit('/');
    let region = levels.next()?;
    let _kind = levels.next()?;
    let account = levels.next()?;
    Some((account, region))
}

/// The delivery time CloudTrail writes into a log file's name
/// (`ACCOUNT_CloudTrail_REGION_20261124T1455Z_abc.json.gz`), in Unix seconds.
pub fn file_time(key: &str) -> Option<u32> {
    let name = key.rsplit('/').next()?;
    let stamp = name.split('_').find(|p| {
        p.len() == 14
            && p.as_bytes()[8] == b'T'
            && p.ends_with('Z')
            && p[..8]
                .bytes()
                .chain(p[9..13].bytes())
                .all(|c| c.is_ascii_digit())
    })?;
    let num = |r: std::ops::Range<usize>| stamp[r].parse::<u32>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm) = (num(9..11)?, num(11..13)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 {
        return None;
    }
    let days = days_from_civil(i64::from(y), m, d);
    u32::try_from(days * 86_400 + i64::from(hh * 3600 + mm * 60)).ok()
}

/// Whether a folder name is an account (`123456789012`) rather than an organization level.
pub fn is_account(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_of_expressions() {
        let base_of = |s: &str| {
            let e = PathExpression::new(s).unwrap();
            base(&e).map(|b| match b {
                Base::Literal(l) => Base::Literal(l.to_string().leak()),
                Base::Search => Base::Search,
            })
        };
        assert_eq!(
            base_of("AWSLogs/*/CloudTrail/*"),
            Some(Base::Literal("AWSLogs/"))
        );
        assert_eq!(
            base_of("trails/AWSLogs/1/CloudTrail/*"),
            Some(Base::Literal("trails/AWSLogs/"))
        );
        assert_eq!(base_of("*AWSLogs/*/CloudTrail/*"), Some(Base::Search));
        assert_eq!(base_of("*/x/AWSLogs/*/CloudTrail/*"), None);
        assert_eq!(
            base_of("AWSLogs/*/CloudTrail-Insight/*"),
            Some(Base::Literal("AWSLogs/"))
        );
        assert_eq!(base_of("AWSLogs/*/CloudTrail-Digest/*"), None);
        assert_eq!(base_of("logs/*"), None);
    }

    #[test]
    fn kinds_by_folder_and_name() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_folder(kind.folder()), Some(kind));
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(Kind::from_folder("CloudTrail-Digest"), None);
        let k = "p/AWSLogs/1/CloudTrail-NetworkActivity/r/2023/07/10/n.json.gz";
        let (kind, at) = kind_level(k).unwrap();
        assert_eq!(
            (kind, &k[at]),
            (Kind::NetworkActivity, "CloudTrail-NetworkActivity")
        );
        assert_eq!(kind_level("AWSLogs/1/CloudTrail").map(|k| k.0), None);
        assert_eq!(
            kind_level("AWSLogs/1/CloudTrail/").map(|k| k.0),
            Some(Kind::Events)
        );
        let some = Kinds::of([Kind::Insights, Kind::Events]);
        assert!(some.contains(Kind::Events) && !some.contains(Kind::Aggregated));
        assert_eq!(some.to_string(), "events,insights");
        assert_eq!(Kinds::ALL.iter().count(), 4);
        assert!(Kinds::of([]).is_empty());
    }

    #[test]
    fn days_and_prefixes_of_keys() {
        assert_eq!(key_day("2023/07/10/x.json.gz"), Some(19_548));
        assert_eq!(day_path(19_547), "2023/07/09");
        assert_eq!(key_day("2023/7/10/x"), None);
        assert_eq!(key_day("+023/07/10/x"), None);
        assert_eq!(key_day("x"), None);
        assert_eq!(
            region_prefix("p/AWSLogs/1/CloudTrail/us-east-1/2023/07/10/x.json.gz"),
            Some("p/AWSLogs/1/CloudTrail/us-east-1/")
        );
        assert_eq!(region_prefix("AWSLogs/1/CloudTrail/us-east-1"), None);
        assert_eq!(region_prefix("x/CloudTrail/r/k"), None);
        assert_eq!(
            region_prefix("AWSLogs/o-x/1/CloudTrail-Insight/us-east-1/2023/07/10/i.json.gz"),
            Some("AWSLogs/o-x/1/CloudTrail-Insight/us-east-1/")
        );
        assert_eq!(
            region_prefix("AWSLogs/1/CloudTrail-Digest/us-east-1/2023/07/10/d.json.gz"),
            None
        );
        // The kind is a level below the account, never the account's place.
        assert_eq!(region_prefix("AWSLogs/CloudTrail/r/2023/07/10/x"), None);
        assert!(is_account("123456789012") && !is_account("o-abc") && !is_account(""));
        assert_eq!(
            account_region("p/AWSLogs/o-x/123/CloudTrail/eu-west-1/2023/07/10/a.json.gz"),
            Some(("123", "eu-west-1"))
        );
        assert_eq!(
            account_region("AWSLogs/123/CloudTrail-Aggregated/eu-west-1/2023/07/10/a.json.gz"),
            Some(("123", "eu-west-1"))
        );
        assert_eq!(
            file_time("AWSLogs/1/CloudTrail/r/2023/07/10/1_CloudTrail_r_20230710T1155Z_x.json.gz"),
            Some(1_688_990_100)
        );
        assert_eq!(
            file_time("AWSLogs/1/CloudTrail/r/2023/07/10/0001.json.gz"),
            None
        );
    }
}
