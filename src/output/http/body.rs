//! From one batch taken from the engine to the request bodies that carry it.
//!
//! A batch is JSON lines of several objects. When a header names the account or region
//! (`X-Sumo-Fields: account={account}`), the lines are grouped so that each request holds
//! one account and region; each group is then cut at line ends into bodies of at most
//! `max_body_bytes` (a single longer line goes alone). The batch is committed when every
//! one of its bodies is acknowledged; each body names the chunks it carries, so a stop can
//! tell which chunks of a batch left half answered were delivered.

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
    /// Indexes in the batch's marks of the chunks whose lines this body carries, whole or
    /// in part: a chunk is delivered once every body carrying it is.
    pub chunks: Vec<usize>,
}

/// A group's lines, and where each chunk lies in them.
struct Group {
    lines: Vec<u8>,
    account: String,
    region: String,
    /// `(chunk, start, end)` in `lines`.
    places: Vec<(usize, usize, usize)>,
}

/// Cuts a batch into bodies: grouped by account and region when `grouped`, each at most
/// `max_bytes` unless one line is longer.
pub fn bodies(batch: &Batch, grouped: bool, max_bytes: usize) -> Vec<Body> {
    let mut groups: Vec<Group> = Vec::new();
    let mut start = 0;
    for (i, (mark, &end)) in batch.marks.iter().zip(&batch.ends).enumerate() {
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
        let g = match groups
            .iter()
            .position(|g| g.account == account && g.region == region)
        {
            Some(at) => &mut groups[at],
            None => {
                groups.push(Group {
                    lines: Vec::new(),
                    account: account.to_string(),
                    region: region.to_string(),
                    places: Vec::new(),
                });
                groups.last_mut().expect("just pushed")
            }
        };
        let at = g.lines.len();
        g.lines.extend_from_slice(bytes);
        g.places.push((i, at, g.lines.len()));
    }
    // Bytes after the last mark's end cannot happen (every chunk has a mark), but a batch
    // built by hand in a test could carry them: they still go out.
    if start < batch.bytes.len() {
        groups.push(Group {
            lines: batch.bytes[start..].to_vec(),
            account: String::new(),
            region: String::new(),
            places: Vec::new(),
        });
    }
    groups.into_iter().flat_map(|g| cut(g, max_bytes)).collect()
}

/// Cuts one group into bodies of at most `max_bytes`: whole chunks where they fit, so that
/// each chunk is carried by one body; a chunk longer than that alone is cut at line ends
/// (a longer line alone).
fn cut(group: Group, max_bytes: usize) -> Vec<Body> {
    let body = |from: usize, to: usize, chunks: Vec<usize>| Body {
        lines: group.lines[from..to].to_vec(),
        account: group.account.clone(),
        region: group.region.clone(),
        chunks,
    };
    let mut out = Vec::new();
    // The body being filled: where it starts, and its chunks.
    let mut open: Option<(usize, Vec<usize>)> = None;
    let mut places = group.places.clone();
    if places.is_empty() && !group.lines.is_empty() {
        // Bytes without a mark (see `bodies`): one place, no chunk.
        places.push((usize::MAX, 0, group.lines.len()));
    }
    for (i, start, end) in places {
        let chunk: Vec<usize> = if i == usize::MAX { Vec::new() } else { vec![i] };
        if let Some((from, chunks)) = &mut open {
            if end - *from <= max_bytes {
                chunks.extend(chunk);
                continue;
            }
            out.push(body(*from, start, std::mem::take(chunks)));
            open = None;
        }
        if end - start <= max_bytes {
            open = Some((start, chunk));
            continue;
        }
        let mut at = start;
        while at < end {
            let rest = &group.lines[at..end];
            let take = if rest.len() <= max_bytes {
                rest.len()
            } else {
                // The last line end within the limit, else the end of the first line.
                match memchr::memrchr(b'\n', &rest[..max_bytes]) {
                    Some(nl) => nl + 1,
                    None => memchr::memchr(b'\n', rest).map_or(rest.len(), |nl| nl + 1),
                }
            };
            out.push(body(at, at + take, chunk.clone()));
            at += take;
        }
    }
    if let Some((from, chunks)) = open {
        out.push(body(from, group.lines.len(), chunks));
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
        let chunks: Vec<_> = got.iter().map(|g| g.chunks.clone()).collect();
        assert_eq!(chunks, [vec![0, 2], vec![1], vec![3]]);
        // Not grouped: one body, the batch as it is.
        let one = bodies(&b, false, 1 << 20);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].lines, b.bytes);
        assert_eq!(one[0].chunks, [0, 1, 2, 3]);
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
    fn whole_chunks_per_body_and_a_long_one_cut_in_two_is_carried_by_both() {
        let b = batch(&[(A, "aaaa\nbbbb\n"), (A, "cc\n"), (B, "dd\n")]);
        let got: Vec<(String, Vec<usize>)> = bodies(&b, false, 6)
            .into_iter()
            .map(|g| (String::from_utf8(g.lines).unwrap(), g.chunks))
            .collect();
        let want = [
            ("aaaa\n", vec![0]),
            ("bbbb\n", vec![0]),
            ("cc\ndd\n", vec![1, 2]),
        ];
        let want: Vec<(String, Vec<usize>)> = want
            .iter()
            .map(|(t, c)| (t.to_string(), c.clone()))
            .collect();
        assert_eq!(got, want);
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
