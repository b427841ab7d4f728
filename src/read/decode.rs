//! Decompression, in one place and always with a size cap.
//!
//! CloudTrail delivers gzip, but copies made by hand are often plain JSON, so the format is
//! chosen by the magic bytes rather than the key's suffix. Concatenated gzip members (what
//! `cat a.gz b.gz` produces) are read as one stream. The cap makes a decompression bomb or
//! an unexpectedly huge object an error with a name instead of an out-of-memory kill.

use std::io::{self, BufReader, Read};

use flate2::read::MultiGzDecoder;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The error a capped reader returns once more than the limit has been produced; it travels
/// inside `io::Error` so that any reader-based parser passes it through untouched.
#[derive(Debug, thiserror::Error)]
#[error("decompressed size exceeds max_object_bytes ({limit} bytes)")]
pub struct LimitExceeded {
    pub limit: u64,
}

/// Whether `bytes` start like a gzip stream.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// A reader over the decompressed content of `bytes` (gzip or plain), failing with
/// [`LimitExceeded`] past `max_bytes`.
pub fn open(bytes: &[u8], max_bytes: u64) -> Capped<Box<dyn Read + Send + '_>> {
    open_stream(bytes, max_bytes)
}

/// The same over a stream (a file, a download in progress): the format is chosen from its
/// first two bytes, and nothing is held beyond the decompressor's buffers.
pub fn open_stream<'a, R: Read + Send + 'a>(
    mut reader: R,
    max_bytes: u64,
) -> Capped<Box<dyn Read + Send + 'a>> {
    // Peek at two bytes (reads may come back one byte at a time) and put them back in front.
    let mut head = [0u8; 2];
    let mut n = 0;
    let mut early_error = None;
    while n < 2 {
        match reader.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                early_error = Some(e);
                break;
            }
        }
    }
    let gzip = is_gzip(&head[..n]);
    let stream = io::Cursor::new(head)
        .take(n as u64)
        .chain(ErrorFirst(early_error, reader));
    let inner: Box<dyn Read + Send + 'a> = if gzip {
        Box::new(MultiGzDecoder::new(BufReader::with_capacity(
            64 << 10,
            stream,
        )))
    } else {
        Box::new(stream)
    };
    Capped {
        inner,
        remaining: max_bytes,
        limit: max_bytes,
    }
}

/// Returns a stored error before reading on.
struct ErrorFirst<R>(Option<io::Error>, R);

impl<R: Read> Read for ErrorFirst<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.take() {
            Some(e) => Err(e),
            None => self.1.read(buf),
        }
    }
}

/// Reads at most `limit` bytes and reports the overflow as an error rather than a silent
/// truncation, which would look like truncated JSON.
pub struct Capped<R> {
    inner: R,
    remaining: u64,
    limit: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(LimitExceeded { limit: self.limit })),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn read_all(bytes: &[u8], max: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        open(bytes, max).read_to_end(&mut out).map(|_| out)
    }

    #[test]
    fn plain_and_gzip_and_concatenated_members() {
        assert_eq!(read_all(b"{\"a\":1}", 100).unwrap(), b"{\"a\":1}");
        assert_eq!(read_all(&gz(b"hello"), 100).unwrap(), b"hello");
        let mut two = gz(b"one ");
        two.extend(gz(b"two"));
        assert_eq!(read_all(&two, 100).unwrap(), b"one two");
    }

    #[test]
    fn exact_limit_passes_one_more_byte_fails() {
        assert_eq!(read_all(&gz(b"12345"), 5).unwrap(), b"12345");
        let err = read_all(&gz(b"123456"), 5).unwrap_err();
        assert!(err.get_ref().unwrap().is::<LimitExceeded>(), "{err}");
    }

    #[test]
    fn streams_read_one_byte_at_a_time_are_still_recognised() {
        struct OneByte(Vec<u8>, usize);
        impl Read for OneByte {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.1 == self.0.len() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0[self.1];
                self.1 += 1;
                Ok(1)
            }
        }
        let mut out = Vec::new();
        open_stream(OneByte(gz(b"streamed"), 0), 100)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"streamed");
        let mut out = Vec::new();
        open_stream(OneByte(b"x".to_vec(), 0), 100)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"x");
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let mut bad = gz(b"some content that is long enough");
        let n = bad.len();
        bad[n / 2] ^= 0xff;
        bad[n - 5] ^= 0xff;
        assert!(read_all(&bad, 1000).is_err());
        let truncated = &gz(b"some content")[..12];
        assert!(read_all(truncated, 1000).is_err());
    }
}
