//! One digest file: its bytes, its fields, and where its signature is.
//!
//! The format is AWS's "CloudTrail digest file structure": a gzipped JSON object naming the
//! hour's log files with the SHA-256 of each one's uncompressed bytes, linked to the
//! previous digest by its location, hash and signature. The signature is not in the file;
//! it is the object's S3 metadata (`x-amz-meta-signature`, hex, and
//! `x-amz-meta-signature-algorithm`).

use std::io::Read;

use serde::Deserialize;

use super::hex;
use crate::timestamp::EventTime;

/// Uncompressed digests larger than this are refused (an hour of one region's log files is
/// a few hundred kilobytes at most).
pub const MAX_DIGEST_BYTES: u64 = 64 << 20;

/// Why a digest file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("not a gzip stream: {0}")]
    Gzip(String),
    /// Bytes after the end of the gzip member: not what CloudTrail writes (aws-cli calls
    /// such a file invalid too), and what a tampered file would hide behind.
    #[error("unexpected data after the end of the compressed digest ({0} bytes)")]
    TrailingData(usize),
    #[error("larger than {MAX_DIGEST_BYTES} bytes uncompressed")]
    TooLarge,
    #[error("not a CloudTrail digest: {0}")]
    Json(String),
    #[error("field {field}: {reason}")]
    Field { field: &'static str, reason: String },
}

/// An S3 object's place.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    pub bucket: String,
    pub key: String,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// The previous digest, as a digest names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    pub location: Location,
    /// SHA-256 of the previous digest's uncompressed bytes.
    pub hash: [u8; 32],
    /// The previous digest's signature, as hex text exactly as written (it is part of this
    /// digest's signing string).
    pub signature: String,
}

/// One log file a digest lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    pub location: Location,
    /// SHA-256 of the log file's uncompressed bytes.
    pub hash: [u8; 32],
}

/// A digest file, read and checked for form (not yet for signature or chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub account: String,
    pub start: EventTime,
    pub end: EventTime,
    /// `digestEndTime` exactly as written: the signing string uses it verbatim.
    pub end_text: String,
    /// Where the digest says it is (`digestS3Bucket`, `digestS3Object`).
    pub location: Location,
    /// The signing key's fingerprint (hex).
    pub fingerprint: String,
    /// `None` on a starting digest (the first after logging or validation was turned on).
    pub previous: Option<Previous>,
    pub logs: Vec<LogFile>,
    /// SHA-256 of this digest's uncompressed bytes (the next digest names it).
    pub hash: [u8; 32],
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    aws_account_id: String,
    digest_start_time: String,
    digest_end_time: String,
    digest_s3_bucket: String,
    digest_s3_object: String,
    digest_public_key_fingerprint: String,
    digest_signature_algorithm: String,
    previous_digest_s3_bucket: Option<String>,
    previous_digest_s3_object: Option<String>,
    previous_digest_hash_value: Option<String>,
    previous_digest_hash_algorithm: Option<String>,
    previous_digest_signature: Option<String>,
    log_files: Vec<RawLog>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLog {
    s3_bucket: String,
    s3_object: String,
    hash_value: String,
    hash_algorithm: String,
}

/// The uncompressed bytes of a gzipped digest: exactly one gzip member, nothing after it.
pub fn inflate(gz: &[u8]) -> Result<Vec<u8>, DigestError> {
    let mut decoder = flate2::bufread::GzDecoder::new(gz);
    let mut out = Vec::new();
    (&mut decoder)
        .take(MAX_DIGEST_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| DigestError::Gzip(e.to_string()))?;
    if out.len() as u64 > MAX_DIGEST_BYTES {
        return Err(DigestError::TooLarge);
    }
    let rest = decoder.into_inner();
    if !rest.is_empty() {
        return Err(DigestError::TrailingData(rest.len()));
    }
    Ok(out)
}

fn sha256_of(
    field: &'static str,
    algorithm: &str,
    hex_text: &str,
) -> Result<[u8; 32], DigestError> {
    if algorithm != "SHA-256" {
        return Err(DigestError::Field {
            field,
            reason: format!("hash algorithm {algorithm:?}, not \"SHA-256\""),
        });
    }
    hex::decode_32(hex_text).ok_or_else(|| DigestError::Field {
        field,
        reason: format!("{hex_text:?} is not a hex SHA-256"),
    })
}

fn time(field: &'static str, text: &str) -> Result<EventTime, DigestError> {
    EventTime::parse_rfc3339(text).ok_or_else(|| DigestError::Field {
        field,
        reason: format!("{text:?} is not a time"),
    })
}

impl Digest {
    /// Reads a digest from its uncompressed bytes.
    pub fn parse(bytes: &[u8]) -> Result<Digest, DigestError> {
        let raw: Raw =
            serde_json::from_slice(bytes).map_err(|e| DigestError::Json(e.to_string()))?;
        if raw.digest_signature_algorithm != "SHA256withRSA" {
            return Err(DigestError::Field {
                field: "digestSignatureAlgorithm",
                reason: format!(
                    "{:?}, not \"SHA256withRSA\"",
                    raw.digest_signature_algorithm
                ),
            });
        }
        let previous = match (
            raw.previous_digest_s3_bucket,
            raw.previous_digest_s3_object,
            raw.previous_digest_hash_value,
            raw.previous_digest_signature,
        ) {
            (None, None, None, None) => None,
            (Some(bucket), Some(key), Some(hash), Some(signature)) => Some(Previous {
                location: Location { bucket, key },
                hash: sha256_of(
                    "previousDigestHashValue",
                    raw.previous_digest_hash_algorithm.as_deref().unwrap_or(""),
                    &hash,
                )?,
                signature,
            }),
            _ => {
                return Err(DigestError::Field {
                    field: "previousDigest*",
                    reason: "some of the previous digest's fields are set and some are null".into(),
                });
            }
        };
        let logs = raw
            .log_files
            .into_iter()
            .map(|l| {
                Ok(LogFile {
                    hash: sha256_of("logFiles.hashValue", &l.hash_algorithm, &l.hash_value)?,
                    location: Location {
                        bucket: l.s3_bucket,
                        key: l.s3_object,
                    },
                })
            })
            .collect::<Result<_, DigestError>>()?;
        Ok(Digest {
            account: raw.aws_account_id,
            start: time("digestStartTime", &raw.digest_start_time)?,
            end: time("digestEndTime", &raw.digest_end_time)?,
            end_text: raw.digest_end_time,
            location: Location {
                bucket: raw.digest_s3_bucket,
                key: raw.digest_s3_object,
            },
            fingerprint: raw.digest_public_key_fingerprint,
            previous,
            logs,
            hash: super::sha256(bytes),
        })
    }

    /// The data signing string AWS signs: the end time as written, the digest's own
    /// `bucket/key`, the hex SHA-256 of its uncompressed bytes, and the previous digest's
    /// signature (or `null` on a starting digest), joined by newlines.
    pub fn signing_string(&self) -> String {
        format!(
            "{}\n{}/{}\n{}\n{}",
            self.end_text,
            self.location.bucket,
            self.location.key,
            hex::encode(&self.hash),
            self.previous
                .as_ref()
                .map_or("null", |p| p.signature.as_str())
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// AWS's documented example ("CloudTrail digest file structure"), its hashes and
    /// signatures shortened to hex of the right length.
    pub(crate) fn example(previous: bool) -> String {
        let prev = if previous {
            format!(
                r#""previousDigestS3Bucket": "amzn-s3-demo-bucket",
  "previousDigestS3Object": "AWSLogs/111122223333/CloudTrail-Digest/us-east-2/2015/08/17/111122223333_CloudTrail-Digest_us-east-2_your-trail-name_us-east-2_20150817T140131Z.json.gz",
  "previousDigestHashValue": "{}",
  "previousDigestHashAlgorithm": "SHA-256",
  "previousDigestSignature": "50887ccffad4c002b97caa37cb9fb5f8fab82a75e4fd02af0dc66b1d51c36e50","#,
                "97".repeat(32)
            )
        } else {
            r#""previousDigestS3Bucket": null,
  "previousDigestS3Object": null,
  "previousDigestHashValue": null,
  "previousDigestHashAlgorithm": null,
  "previousDigestSignature": null,"#
                .to_string()
        };
        format!(
            r#"{{
  "awsAccountId": "111122223333",
  "digestStartTime": "2015-08-17T14:01:31Z",
  "digestEndTime": "2015-08-17T15:01:31Z",
  "digestS3Bucket": "amzn-s3-demo-bucket",
  "digestS3Object": "AWSLogs/111122223333/CloudTrail-Digest/us-east-2/2015/08/17/111122223333_CloudTrail-Digest_us-east-2_your-trail-name_us-east-2_20150817T150131Z.json.gz",
  "digestPublicKeyFingerprint": "31e8b5433410dfb61a9dc45cc65b22ff",
  "digestSignatureAlgorithm": "SHA256withRSA",
  "newestEventTime": "2015-08-17T14:52:27Z",
  "oldestEventTime": "2015-08-17T14:42:27Z",
  {prev}
  "logFiles": [
    {{
      "s3Bucket": "amzn-s3-demo-bucket",
      "s3Object": "AWSLogs/111122223333/CloudTrail/us-east-2/2015/08/17/111122223333_CloudTrail_us-east-2_20150817T1445Z_9nYN7gp2eWAJHIfT.json.gz",
      "hashValue": "{}",
      "hashAlgorithm": "SHA-256",
      "newestEventTime": "2015-08-17T14:52:27Z",
      "oldestEventTime": "2015-08-17T14:42:27Z"
    }}
  ]
}}"#,
            "9b".repeat(32)
        )
    }

    #[test]
    fn the_documented_example_reads_and_signs_as_aws_describes() {
        let text = example(true);
        let d = Digest::parse(text.as_bytes()).unwrap();
        assert_eq!(d.account, "111122223333");
        assert_eq!(d.end_text, "2015-08-17T15:01:31Z");
        assert_eq!(d.end.secs(), 1_439_823_691);
        assert_eq!(d.logs.len(), 1);
        assert_eq!(d.logs[0].hash, [0x9b; 32]);
        let prev = d.previous.as_ref().unwrap();
        assert_eq!(prev.hash, [0x97; 32]);
        let signing = d.signing_string();
        let lines: Vec<&str> = signing.split('\n').collect();
        assert_eq!(lines.len(), 4, "{signing}");
        assert_eq!(lines[0], "2015-08-17T15:01:31Z");
        assert_eq!(
            lines[1],
            "amzn-s3-demo-bucket/AWSLogs/111122223333/CloudTrail-Digest/us-east-2/2015/08/17/111122223333_CloudTrail-Digest_us-east-2_your-trail-name_us-east-2_20150817T150131Z.json.gz"
        );
        assert_eq!(
            lines[2],
            hex::encode(&super::super::sha256(text.as_bytes()))
        );
        assert_eq!(lines[3], prev.signature);
    }

    #[test]
    fn a_starting_digest_signs_null_for_the_previous_signature() {
        let d = Digest::parse(example(false).as_bytes()).unwrap();
        assert!(d.previous.is_none());
        assert!(d.signing_string().ends_with("\nnull"));
    }

    #[test]
    fn bad_forms_are_named() {
        let gz = |b: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, b).unwrap();
            e.finish().unwrap()
        };
        let mut trailing = gz(b"{}");
        trailing.extend_from_slice(&gz(b"{}"));
        assert!(matches!(
            inflate(&trailing),
            Err(DigestError::TrailingData(_))
        ));
        assert!(matches!(inflate(b"plain"), Err(DigestError::Gzip(_))));
        assert_eq!(inflate(&gz(b"{\"a\":1}")).unwrap(), b"{\"a\":1}");
        let wrong_alg = example(true).replace("SHA256withRSA", "SHA1withRSA");
        assert!(matches!(
            Digest::parse(wrong_alg.as_bytes()),
            Err(DigestError::Field {
                field: "digestSignatureAlgorithm",
                ..
            })
        ));
        let half = example(true).replace(
            r#""previousDigestHashValue": "9797"#,
            r#""previousDigestHashValue": null, "x": "9797"#,
        );
        assert!(matches!(
            Digest::parse(half.as_bytes()),
            Err(DigestError::Field {
                field: "previousDigest*",
                ..
            })
        ));
        let short = example(true).replace(&"9b".repeat(32), "9b9b");
        assert!(matches!(
            Digest::parse(short.as_bytes()),
            Err(DigestError::Field {
                field: "logFiles.hashValue",
                ..
            })
        ));
        assert!(matches!(
            Digest::parse(b"{\"Records\":[]}"),
            Err(DigestError::Json(_))
        ));
    }
}
