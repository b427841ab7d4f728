//! The CloudTrail key layout: `[PREFIX/]AWSLogs/[o-ORG/]ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/…`.
//!
//! Listings follow it: accounts and regions are enumerated with delimiter listings, and each
//! `…/CloudTrail/REGION/` prefix is listed by day. These helpers read the layout out of an
//! expression and out of keys. A base module, like `timestamp`: discovery, the ledger's
//! forget lines, freshness, `status` and the HTTP output's fields all read keys this way.

use crate::pathexpr::PathExpression;
use crate::timestamp::{civil_from_days, days_from_civil};

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
/// `CloudTrail/` level. `None` for other expressions, which are listed flat.
pub fn base(expr: &PathExpression) -> Option<Base<'_>> {
    let text = expr.as_str();
    let at = text.find("AWSLogs/")? + "AWSLogs/".len();
    // A `CloudTrail` level itself: `CloudTrail-Insight/` and others are listed flat.
    let mut levels = text[at..].split('/');
    levels.next_back();
    if !levels.any(|level| level == "CloudTrail") {
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

/// The `…/CloudTrail/REGION/` prefix of a key, when it has the layout.
pub fn region_prefix(key: &str) -> Option<&str> {
    let at = key.find("/CloudTrail/")? + "/CloudTrail/".len();
    let slash = key[at..].find('/')?;
    let prefix = &key[..at + slash + 1];
    prefix.contains("AWSLogs/").then_some(prefix)
}

/// The account and region a key's layout names (`…/ACCOUNT/CloudTrail/REGION/…`).
pub fn account_region(key: &str) -> Option<(&str, &str)> {
    let prefix = region_prefix(key)?;
    let mut levels = prefix.trim_end_matches('/').rsplit('/');
    let region = levels.next()?;
    let _cloudtrail = levels.next()?;
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
        assert_eq!(base_of("AWSLogs/*/CloudTrail-Insight/*"), None);
        assert_eq!(base_of("logs/*"), None);
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
        assert!(is_account("123456789012") && !is_account("o-abc") && !is_account(""));
        assert_eq!(
            account_region("p/AWSLogs/o-x/123/CloudTrail/eu-west-1/2023/07/10/a.json.gz"),
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
