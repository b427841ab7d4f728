//! The structural scan: where a JSON string or value ends, found without parsing it
//! (strings skipped eight bytes at a time, brackets counted), so each event's bytes can be
//! handed on exactly as they are.

pub(super) enum Scan<T> {
    /// The value and how many bytes it used.
    Done(T, usize),
    /// The input ends inside the token.
    More,
    Bad(&'static str),
}

pub(super) fn skip_ws(b: &[u8]) -> usize {
    b.iter()
        .position(|c| !matches!(c, b' ' | b'\n' | b'\r' | b'\t'))
        .unwrap_or(b.len())
}

/// After optional white space, one of `expected`: returns which byte it was.
pub(super) fn punct(
    expected: &'static [u8],
    what: &'static str,
) -> impl Fn(&[u8], bool) -> Scan<u8> {
    move |b, _eof| {
        let i = skip_ws(b);
        match b.get(i) {
            None => Scan::More,
            Some(c) if expected.contains(c) => Scan::Done(*c, i + 1),
            Some(_) => Scan::Bad(what),
        }
    }
}

/// The end of a string that starts at `b[0] == '"'`: the index after the closing quote.
#[inline]
pub(super) fn string_end(b: &[u8]) -> Option<usize> {
    // Most strings in CloudTrail events are short: eight bytes at a time (a word-wide test
    // for '"' or '\\') finds their end before a vectorized search would have been set up;
    // longer ones and escapes go to `memchr2`.
    let mut i = 1;
    while i + 8 <= b.len().min(65) {
        let word = u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let hits = has_byte(word, b'"') | has_byte(word, b'\\');
        if hits != 0 {
            let at = i + (hits.trailing_zeros() / 8) as usize;
            return if b[at] == b'"' {
                Some(at + 1)
            } else {
                string_end_long(b, at)
            };
        }
        i += 8;
    }
    string_end_long(b, i)
}

/// High bit set in each byte of `word` equal to `byte`; the lowest set bit is exact.
#[inline]
fn has_byte(word: u64, byte: u8) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let x = word ^ (LO * u64::from(byte));
    x.wrapping_sub(LO) & !x & HI
}

fn string_end_long(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        let j = memchr::memchr2(b'"', b'\\', &b[i..])?;
        if b[i + j] == b'"' {
            return Some(i + j + 1);
        }
        i += j + 2;
        if i > b.len() {
            return None;
        }
    }
}

/// The length of the JSON value at `b[0]` (not white space), by structure.
pub(super) fn value_len(b: &[u8], eof: bool) -> Scan<usize> {
    match b.first() {
        None => Scan::More,
        Some(b'"') => match string_end(b) {
            Some(n) => Scan::Done(n, n),
            None => Scan::More,
        },
        Some(b'{' | b'[') => {
            // One bit per open bracket (1 = object), so a `]` cannot close a `{`: 128
            // levels, as deep as the encoders' parser goes anyway.
            let mut kinds: u128 = 0;
            let mut depth = 0u32;
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'"' => match string_end(&b[i..]) {
                        Some(n) => {
                            i += n;
                            continue;
                        }
                        None => return Scan::More,
                    },
                    open @ (b'{' | b'[') => {
                        if depth == 128 {
                            return Scan::Bad("nested deeper than 128 levels");
                        }
                        kinds = (kinds << 1) | u128::from(open == b'{');
                        depth += 1;
                    }
                    close @ (b'}' | b']') => {
                        if (kinds & 1 == 1) != (close == b'}') {
                            return Scan::Bad("mismatched brackets");
                        }
                        kinds >>= 1;
                        depth -= 1;
                        if depth == 0 {
                            return Scan::Done(i + 1, i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            Scan::More
        }
        Some(c) if c.is_ascii_digit() || matches!(c, b'-' | b't' | b'f' | b'n') => {
            match b
                .iter()
                .position(|c| matches!(c, b',' | b']' | b'}' | b' ' | b'\n' | b'\r' | b'\t'))
            {
                Some(n) => Scan::Done(n, n),
                None if eof => Scan::Done(b.len(), b.len()),
                None => Scan::More,
            }
        }
        Some(_) => Scan::Bad("expected a value"),
    }
}

/// After optional white space, a whole value: `(start, len)` relative to the scan input.
pub(super) fn ws_value(b: &[u8], eof: bool) -> Scan<(usize, usize)> {
    let i = skip_ws(b);
    if i == b.len() {
        return Scan::More;
    }
    match value_len(&b[i..], eof) {
        Scan::Done(n, _) => Scan::Done((i, n), i + n),
        Scan::More => Scan::More,
        Scan::Bad(w) => Scan::Bad(w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_ends_at_every_length_and_escape_position() {
        for len in 0usize..80 {
            for esc in [None, Some(0), Some(len / 2), Some(len.saturating_sub(1))] {
                let mut body: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                if let Some(at) = esc.filter(|_| len > 0) {
                    body.splice(at..at, *b"\\\"");
                }
                let mut text = vec![b'"'];
                text.extend_from_slice(&body);
                text.extend_from_slice(b"\",\"next\"");
                assert_eq!(
                    string_end(&text),
                    Some(body.len() + 2),
                    "{}",
                    String::from_utf8_lossy(&text)
                );
                // Cut anywhere before the closing quote: not found yet.
                for cut in 1..body.len() + 1 {
                    assert_eq!(string_end(&text[..cut]), None);
                }
            }
        }
    }
}
