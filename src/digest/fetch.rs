//! Reading a digest's objects: one object at a time from S3, and the SHA-256 a digest
//! names for a log file (of its one gzip member's uncompressed bytes).

use std::collections::BTreeMap;

use super::{Location, Sha256};

/// Log files larger than this uncompressed are reported, not hashed.
const MAX_LOG_BYTES: u64 = 1 << 30;

/// What a read of an object gave.
pub enum Fetched {
    Found {
        bytes: Vec<u8>,
        metadata: BTreeMap<String, String>,
    },
    Missing,
}

/// Reading single objects (the listings go through [`Lister`]).
pub trait Reader: Send + Sync {
    fn get(
        &self,
        location: &Location,
    ) -> impl std::future::Future<Output = Result<Fetched, String>> + Send;
}

/// Reads through the AWS SDK.
pub struct S3Reader(pub aws_sdk_s3::Client);

impl Reader for S3Reader {
    async fn get(&self, l: &Location) -> Result<Fetched, String> {
        let out = self
            .0
            .get_object()
            .bucket(&l.bucket)
            .key(&l.key)
            .send()
            .await;
        let out = match out {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Ok(Fetched::Missing);
            }
            Err(e) => {
                return Err(format!(
                    "{l}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                ));
            }
        };
        let metadata = out
            .metadata()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| format!("{l}: reading: {e}"))?
            .into_bytes()
            .to_vec();
        Ok(Fetched::Found { bytes, metadata })
    }
}

/// SHA-256 of a gzipped log file's uncompressed bytes: one gzip member, nothing after it
/// (as aws-cli requires since it found files with bytes appended).
pub fn log_hash(gz: &[u8]) -> Result<[u8; 32], String> {
    let mut decoder = flate2::bufread::GzDecoder::new(gz);
    let mut hash = Sha256::default();
    let n = std::io::copy(
        &mut std::io::Read::take(&mut decoder, MAX_LOG_BYTES + 1),
        &mut hash,
    )
    .map_err(|e| format!("not a gzip stream: {e}"))?;
    if n > MAX_LOG_BYTES {
        return Err(format!("larger than {MAX_LOG_BYTES} bytes uncompressed"));
    }
    let rest = decoder.into_inner();
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes after the end of the compressed data",
            rest.len()
        ));
    }
    Ok(hash.finish())
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_hashes_refuse_bytes_after_the_gzip_member() {
        let gz = |b: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, b).unwrap();
            e.finish().unwrap()
        };
        let one = gz(b"{\"Records\":[]}");
        assert_eq!(
            super::log_hash(&one).unwrap(),
            crate::digest::sha256(b"{\"Records\":[]}")
        );
        let mut two = one.clone();
        two.extend_from_slice(&one);
        assert!(super::log_hash(&two).unwrap_err().contains("after the end"));
    }
}
