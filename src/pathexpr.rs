//! `path_expression`: which object keys are CloudTrail logs, in Sumo Logic's syntax.
//!
//! `*` matches any run of characters, `/` included, and every other character matches
//! itself. Besides matching whole keys, discovery asks two questions of an expression: the
//! longest literal prefix (where listing can start) and whether any key below a given
//! "directory" could match at all (so whole accounts or regions are never listed in vain).

use std::fmt;

/// A parsed `path_expression`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathExpression {
    text: String,
}

impl PathExpression {
    /// Accepts any non-empty expression that does not start with `/` (S3 keys never do).
    pub fn new(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        if text.starts_with('/') {
            return Err("must not start with '/': S3 keys have no leading slash".into());
        }
        Ok(Self { text: text.into() })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The part before the first `*`: every matching key starts with it.
    pub fn literal_prefix(&self) -> &str {
        self.text.split('*').next().unwrap_or("")
    }

    /// Whether `key` matches the whole expression.
    pub fn matches(&self, key: &str) -> bool {
        glob_match(self.text.as_bytes(), key.as_bytes(), false)
    }

    /// Whether some key starting with `prefix` could match.
    pub fn may_match_below(&self, prefix: &str) -> bool {
        glob_match(self.text.as_bytes(), prefix.as_bytes(), true)
    }
}

impl fmt::Display for PathExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Iterative wildcard match with single-star backtracking (linear in practice, never
/// exponential). With `prefix_only`, running out of text counts as a match: the rest of the
/// pattern could still be satisfied by characters that follow.
fn glob_match(pat: &[u8], text: &[u8], prefix_only: bool) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pat.len() && pat[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    if prefix_only {
        return true;
    }
    pat[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pe(s: &str) -> PathExpression {
        PathExpression::new(s).unwrap()
    }

    #[test]
    fn default_expression_skips_digests_and_insights() {
        let e = pe("AWSLogs/*/CloudTrail/*");
        assert!(e.matches("AWSLogs/1234/CloudTrail/us-east-1/2023/07/10/x.json.gz"));
        assert!(e.matches("AWSLogs/o-abc/1234/CloudTrail/eu-west-1/2023/07/10/x.json.gz"));
        assert!(!e.matches("AWSLogs/1234/CloudTrail-Digest/us-east-1/2023/07/10/x.json.gz"));
        assert!(!e.matches("AWSLogs/1234/CloudTrail-Insight/us-east-1/2023/07/10/x.json.gz"));
        assert!(!e.matches("other/AWSLogs/1234/CloudTrail/x"));
        assert_eq!(e.literal_prefix(), "AWSLogs/");
    }

    #[test]
    fn star_crosses_slashes_and_may_be_empty() {
        let e = pe("logs/*.json.gz");
        assert!(e.matches("logs/a/b/c.json.gz"));
        assert!(e.matches("logs/.json.gz"));
        assert!(!e.matches("logs/a.json"));
        assert!(pe("exact/key").matches("exact/key"));
        assert!(!pe("exact/key").matches("exact/key2"));
    }

    #[test]
    fn prefix_pruning() {
        let e = pe("AWSLogs/111/CloudTrail/us-east-1/*");
        assert!(e.may_match_below("AWSLogs/"));
        assert!(e.may_match_below("AWSLogs/111/CloudTrail/"));
        assert!(!e.may_match_below("AWSLogs/222/"));
        assert!(!e.may_match_below("AWSLogs/111/CloudTrail/eu-west-1/"));
        let d = pe("AWSLogs/*/CloudTrail/*");
        assert!(d.may_match_below("AWSLogs/o-x/222/CloudTrail-Digest/"));
        assert!(!d.may_match_below("Other/"));
    }

    #[test]
    fn rejects_empty_and_leading_slash() {
        assert!(PathExpression::new("").is_err());
        assert!(PathExpression::new("/AWSLogs/*").is_err());
    }
}
