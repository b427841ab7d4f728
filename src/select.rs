//! Which keys to ship: `path_expression`, applied to the folder of each kind `event_kinds`
//! chose.
//!
//! The expression is written for the trail's layout with its `CloudTrail` level
//! (`*AWSLogs/*/CloudTrail/*` by default), and a user who turns on Insights events should
//! not have to write a second expression for `CloudTrail-Insight/`: a key in a chosen
//! kind's folder matches when the expression matches it as it is, or with its kind folder
//! read as `CloudTrail`. A key in a kind's folder that was not chosen never matches. Keys in
//! no kind's folder (outside the layout, or under `CloudTrail-Digest/`) are matched as they
//! are. So that no expression ships less than it did before kinds existed, an unset
//! `event_kinds` chooses, besides management and data events, every kind whose files the
//! expression matches as written (`AWSLogs/*` keeps shipping Insight files; the default
//! expression matches none).

use std::borrow::Cow;

use crate::layout::{Kind, Kinds, kind_level};
use crate::pathexpr::PathExpression;

/// A validated `path_expression` and `event_kinds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    expr: PathExpression,
    kinds: Kinds,
}

impl Selection {
    pub fn new(expr: PathExpression, kinds: Kinds) -> Self {
        Self { expr, kinds }
    }

    /// Management and data events under `expr`: what the default `event_kinds` selects.
    pub fn events(expr: PathExpression) -> Self {
        Self::new(expr, Kinds::EVENTS)
    }

    pub fn expr(&self) -> &PathExpression {
        &self.expr
    }

    pub fn kinds(&self) -> Kinds {
        self.kinds
    }

    /// The expression's text, for logs and status.
    pub fn as_str(&self) -> &str {
        self.expr.as_str()
    }

    /// Whether `key` is one to ship.
    pub fn matches(&self, key: &str) -> bool {
        self.test(key, PathExpression::matches)
    }

    /// Whether some key starting with `prefix` could be one to ship (so discovery skips
    /// accounts, kinds and regions that cannot hold one).
    pub fn may_match_below(&self, prefix: &str) -> bool {
        self.test(prefix, PathExpression::may_match_below)
    }

    /// The kind of `key` when it lies in a kind's folder that `event_kinds` left out: the
    /// reason it does not match, for a log line.
    pub fn left_out_kind(&self, key: &str) -> Option<Kind> {
        kind_level(key)
            .map(|(kind, _)| kind)
            .filter(|kind| !self.kinds.contains(*kind))
    }

    fn test(&self, text: &str, test: fn(&PathExpression, &str) -> bool) -> bool {
        match kind_level(text) {
            Some((kind, folder)) => {
                self.kinds.contains(kind)
                    && (test(&self.expr, text) || test(&self.expr, &as_events(text, folder, kind)))
            }
            None => test(&self.expr, text),
        }
    }
}

/// `text` with its kind folder read as `CloudTrail`.
fn as_events(text: &str, folder: std::ops::Range<usize>, kind: Kind) -> Cow<'_, str> {
    if kind == Kind::Events {
        return Cow::Borrowed(text);
    }
    Cow::Owned(format!(
        "{}{}{}",
        &text[..folder.start],
        Kind::Events.folder(),
        &text[folder.end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(expr: &str, kinds: &[Kind]) -> Selection {
        Selection::new(
            PathExpression::new(expr).unwrap(),
            Kinds::of(kinds.iter().copied()),
        )
    }

    const EVENTS: &str = "p/AWSLogs/1/CloudTrail/us-east-1/2023/07/10/e.json.gz";
    const INSIGHT: &str = "p/AWSLogs/1/CloudTrail-Insight/us-east-1/2023/07/10/i.json.gz";
    const AGGREGATED: &str = "p/AWSLogs/o-x/1/CloudTrail-Aggregated/us-east-1/2023/07/10/a.json.gz";
    const DIGEST: &str = "p/AWSLogs/1/CloudTrail-Digest/us-east-1/2023/07/10/d.json.gz";

    #[test]
    fn the_default_selects_management_and_data_events_only() {
        let s = Selection::events(PathExpression::new("*AWSLogs/*/CloudTrail/*").unwrap());
        assert!(s.matches(EVENTS));
        for other in [INSIGHT, AGGREGATED, DIGEST] {
            assert!(!s.matches(other), "{other}");
        }
        assert!(!s.may_match_below("p/AWSLogs/1/CloudTrail-Insight/"));
        assert!(s.may_match_below("p/AWSLogs/1/"));
        assert_eq!(s.left_out_kind(INSIGHT), Some(Kind::Insights));
        assert_eq!(s.left_out_kind(EVENTS), None);
        assert_eq!(s.left_out_kind(DIGEST), None);
    }

    #[test]
    fn a_chosen_kind_is_matched_as_if_its_folder_were_cloudtrail() {
        let s = sel(
            "*AWSLogs/*/CloudTrail/us-east-1/*",
            &[Kind::Events, Kind::Insights, Kind::Aggregated],
        );
        assert!(s.matches(EVENTS) && s.matches(INSIGHT) && s.matches(AGGREGATED));
        assert!(!s.matches(DIGEST));
        assert!(!s.matches("p/AWSLogs/1/CloudTrail-Insight/eu-west-1/2023/07/10/i.json.gz"));
        assert!(s.may_match_below("p/AWSLogs/1/CloudTrail-Insight/us-east-1/"));
        // (With a leading `*`, which matches `/`, a deeper key could still match below any
        // prefix: only literal levels rule one out.)
        let literal = sel(
            "AWSLogs/1/CloudTrail/us-east-1/*",
            &[Kind::Events, Kind::Insights],
        );
        assert!(literal.may_match_below("AWSLogs/1/CloudTrail-Insight/us-east-1/"));
        assert!(!literal.may_match_below("AWSLogs/1/CloudTrail-Insight/eu-west-1/"));
        assert!(!literal.may_match_below("AWSLogs/1/CloudTrail-Aggregated/"));
        // A kind left out is never matched, even by an expression that would.
        let insights_only = sel("*AWSLogs/*", &[Kind::Insights]);
        assert!(insights_only.matches(INSIGHT));
        assert!(!insights_only.matches(EVENTS));
        assert!(!insights_only.may_match_below("p/AWSLogs/1/CloudTrail/"));
    }

    #[test]
    fn an_expression_naming_a_kind_folder_matches_it_as_written() {
        let s = sel("AWSLogs/*/CloudTrail-Insight/*", &[Kind::Insights]);
        assert!(s.matches("AWSLogs/1/CloudTrail-Insight/r/2023/07/10/i.json.gz"));
        assert!(!s.matches("AWSLogs/1/CloudTrail/r/2023/07/10/e.json.gz"));
    }

    #[test]
    fn keys_outside_the_layout_are_matched_as_they_are() {
        let s = sel("logs/*.json.gz", &[Kind::Events]);
        assert!(s.matches("logs/2023/x.json.gz"));
        assert!(!s.matches("logs/2023/x.json"));
    }
}
