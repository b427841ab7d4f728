//! CloudTrail's signed digests: the proof that every log file CloudTrail wrote is there,
//! unaltered.
//!
//! With log file validation on, CloudTrail writes a digest per account, region and hour
//! under `AWSLogs/[o-ID/]ACCOUNT/CloudTrail-Digest/REGION/YYYY/MM/DD/`. It names each log
//! file delivered in the hour with the SHA-256 of its uncompressed bytes, is signed with
//! CloudTrail's RSA key (the signature in the object's metadata), and names the previous
//! digest by location, hash and signature. This module reads them ([`file`]), checks
//! signatures against CloudTrail's public keys ([`sign`], [`keys`]), and walks the chain
//! forwards ([`chain`]), so a deleted digest is seen when the next one arrives, two in a row
//! included (aws-cli walks it backwards and reports only the first of two, aws/aws-cli#7054).

pub mod audit;
pub mod chain;
pub mod fetch;
pub mod file;
pub mod integrity;
pub mod keys;
pub mod report;
pub mod sign;

pub use file::{Digest, DigestError, Location, LogFile, Previous};

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256 over a stream of chunks (a log file as it is decompressed).
pub struct Sha256(aws_lc_rs::digest::Context);

impl Default for Sha256 {
    fn default() -> Self {
        Self(aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256))
    }
}

impl Sha256 {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> [u8; 32] {
        let d = self.0.finish();
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }
}

impl std::io::Write for Sha256 {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Lower-case hex, as AWS writes hashes and signatures.
pub mod hex {
    pub fn encode(bytes: &[u8]) -> String {
        use std::fmt::Write;
        let mut s = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// The bytes of a hex text (either case), or `None` when it is not hex.
    pub fn decode(text: &str) -> Option<Vec<u8>> {
        let t = text.as_bytes();
        if !t.len().is_multiple_of(2) {
            return None;
        }
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        t.chunks(2)
            .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
            .collect()
    }

    pub fn decode_32(text: &str) -> Option<[u8; 32]> {
        decode(text)?.try_into().ok()
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn round_trips_and_refuses_what_is_not_hex() {
            assert_eq!(super::encode(&[0, 0xab, 0x10]), "00ab10");
            assert_eq!(super::decode("00AB10"), Some(vec![0, 0xab, 0x10]));
            assert_eq!(super::decode("0g"), None);
            assert_eq!(super::decode("abc"), None);
            assert_eq!(super::decode_32(&"ff".repeat(31)), None);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sha256_matches_the_known_vector_whole_and_streamed() {
        // FIPS 180-2's "abc".
        let want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(super::hex::encode(&super::sha256(b"abc")), want);
        let mut s = super::Sha256::default();
        s.update(b"a");
        s.update(b"bc");
        assert_eq!(super::hex::encode(&s.finish()), want);
    }
}
