//! From one batch taken from the engine to the request bodies that carry it.
//!
//! A batch is JSON lines of several objects. When a header names the account or region
//! (`X-Sumo-Fields: account={account}`), the lines are grouped so that each request holds
//! one account and region; each group is then cut at line ends into bodies of at most
//! `max_body_bytes` (a single longer line goes alone). The batch is acknowledged when every
//! one of its bodies is, so how it is cut changes nothing in what is committed.

use std::io::Write;

use crate::engine::handoff::Batch;
use crate::layout::account_region;

/// Account and region of lines whose key has no CloudTrail layout (a folder of other
/// files).
pub const UNKNOWN: &str = "unknown";

/// One request's body before compression, with the account and region its lines share
/// (when the output groups by them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub lines: Vec<u8>,
    pub account: String,
    pub region: String,
}

/// Cuts a batch into bodies: grouped by account and region when `grouped`, each at most
/// `max_bytes` unless one line is longer.
pub fn bodies(batch: &Batch, grouped: bool, max_bytes: usize) -> Vec<Body> {
    let mut groups: Vec<Body> = Vec::new();
    let mut start = 0;
    for (mark, &end) in batch.marks.iter().zip(&batch.ends) {
        let bytes = &batch.bytes[start..end];
        start = end;
        if bytes.is_empty() {
            continue;
        }
        let (account, region) = if grouped {
            account_region(&mark.id).unwrap_or((UNKNOWN, UNKNOWN))
        } else {
            ("", "")
        };
        match groups
            .iter_mut()
            .find(|g| g.account == account && g.region == region)
        {
            Some(g) => g.lines.extend_from_slice(bytes),
            None => groups.push(Body {
                lines: bytes.to_vec(),
                account: account.to_string(),
                region: region.to_string(),
            }),
        }
    }
    // Bytes after the last mark's end cannot happen (every chunk has a mark), but a batch
    // built by hand in a test could carry them: they still go out.
    if start < batch.bytes.len() {
        groups.push(Body {
            lines: batch.bytes[start..].to_vec(),
            account: String::new(),
            region: String::new(),
        });
    }
    groups.into_iter().flat_map(|g| cut(g, max_bytes)).collect()
}

/// Cuts one group at line ends into bodies of at most `max_bytes` (a longer line alone).
fn cut(group: Body, max_bytes: usize) -> Vec<Body> {
    if group.lines.len() <= max_bytes {
        return vec![group];
    }
    let mut out = Vec::new();
    let mut rest: &[u8] = &group.lines;
    while !rest.is_empty() {
        let take = if rest.len() <= max_bytes {
            rest.len()
        } else {
            // The last line end within the limit, else the end of the first line.
            match memchr::memrchr(b'\n', &rest[..max_bytes]) {
                Some(nl) => nl + 1,
                None => memchr::memchr(b'\n', rest).map_or(rest.len(), |nl| nl + 1),
            }
        };
        out.push(Body {
            lines: rest[..take].to_vec(),
            account: group.account.clone(),
            region: group.region.clone(),
        });
        rest = &rest[take..];
    }
    out
}

/// Gzip at the fastest level: JSON lines compress about eight to one even so, and the
/// output must keep up with the engine (about 1 MB per request, on the output's threads).
pub fn gzip(lines: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(lines.len() / 6 + 64),
        flate2::Compression::fast(),
    );
    // Into memory: the only failure is running out of it, which aborts anyway.
    enc.write_all(lines)
        .and_then(|()| enc.try_finish())
        .expect("gzip into memory");
    enc.finish().expect("gzip into memory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::handoff::Mark;
    use std::io::Read;

    fn batch(parts: &[(&str, &str)]) -> Batch {
        let mut b = Batch::default();
        for (id, text) in parts {
            b.bytes.extend_from_slice(text.as_bytes());
            b.ends.push(b.bytes.len());
            b.marks.push(Mark {
                id: (*id).into(),
                ..Mark::default()
            });
        }
        b
    }

    const A: &str = "s3://b/AWSLogs/111122223333/CloudTrail/eu-west-1/2023/07/10/a.json.gz";
    const B: &str = "s3://b/AWSLogs/o-x/444455556666/CloudTrail/us-east-1/2023/07/10/b.json.gz";

    #[test]
    fn grouped_by_account_and_region_in_order() {
        let b = batch(&[
            (A, "a1\na2\n"),
            (B, "b1\n"),
            (A, "a3\n"),
            ("dir:x.json", "x\n"),
        ]);
        let got = bodies(&b, true, 1 << 20);
        let texts: Vec<_> = got
            .iter()
            .map(|g| {
                (
                    String::from_utf8(g.lines.clone()).unwrap(),
                    g.account.as_str(),
                    g.region.as_str(),
                )
            })
            .collect();
        assert_eq!(
            texts,
            [
                ("a1\na2\na3\n".to_string(), "111122223333", "eu-west-1"),
                ("b1\n".to_string(), "444455556666", "us-east-1"),
                ("x\n".to_string(), UNKNOWN, UNKNOWN),
            ]
        );
        // Not grouped: one body, the batch as it is.
        let one = bodies(&b, false, 1 << 20);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].lines, b.bytes);
    }

    #[test]
    fn cut_at_line_ends_within_the_limit() {
        let b = batch(&[(A, "aaaa\nbbbb\ncc\nlonglonglong\nd\n")]);
        let got: Vec<String> = bodies(&b, false, 10)
            .into_iter()
            .map(|g| String::from_utf8(g.lines).unwrap())
            .collect();
        assert_eq!(got, ["aaaa\nbbbb\n", "cc\n", "longlonglong\n", "d\n"]);
        assert_eq!(got.concat(), String::from_utf8(b.bytes).unwrap());
    }

    #[test]
    fn gzip_round_trip() {
        let lines = b"{\"a\":1}\n".repeat(1000);
        let gz = gzip(&lines);
        assert!(gz.len() < lines.len() / 10);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, lines);
    }
}
