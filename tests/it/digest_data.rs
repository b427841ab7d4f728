//! CloudTrail digests built the way CloudTrail builds them, for the tests: signed with a
//! generated RSA key (the signature in the object's metadata, as CloudTrail stores it), and
//! a stand-in for CloudTrail's `ListPublicKeys` on loopback (the test server does not
//! implement it). Shared by the `it` and `real` tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use cloudtrail_s3::digest::{hex, sha256, sign::fingerprint};

use crate::data;
use crate::server::{self, block_on};

pub const ACCOUNT: &str = "218007301253";
/// The bundled objects' day.
pub const DAY: &str = "2023-07-10";

/// Answers every request with CloudTrail's `ListPublicKeys` answer naming `der`.
pub fn key_server(ders: Vec<Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let keys: Vec<String> = ders
        .iter()
        .map(|der| {
            format!(
                r#"{{"Value":"{}","ValidityStartTime":1.0E9,"ValidityEndTime":4.0E9,"Fingerprint":"{}"}}"#,
                aws_smithy_types::base64::encode(der),
                fingerprint(der)
            )
        })
        .collect();
    let body = format!(r#"{{"PublicKeyList":[{}]}}"#, keys.join(","));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut request = vec![0; length];
            let _ = reader.read_exact(&mut request);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    data::gzip(bytes)
}

/// The time in a CloudTrail log key (`…_20230710T1145Z_…`), as minutes of the day.
fn minute_of(key: &str) -> u32 {
    let at = key.find("_CloudTrail_us-east-1_").unwrap() + 22 + 9;
    key[at..at + 2].parse::<u32>().unwrap() * 60 + key[at + 2..at + 4].parse::<u32>().unwrap()
}

/// A digest chain being written: the last digest's location, hash and signature.
pub struct Writer<'a> {
    pub bucket: &'a str,
    /// The digests' day, `YYYY-MM-DD`.
    pub day: &'a str,
    pub trail: &'a str,
    pub key: &'a KeyPair,
    pub previous: Option<(String, [u8; 32], String)>,
}

impl Writer<'_> {
    pub fn key_of(&self, end_hour: u32) -> String {
        format!(
            "AWSLogs/{ACCOUNT}/CloudTrail-Digest/us-east-1/{}/{ACCOUNT}_CloudTrail-Digest_us-east-1_{}_us-east-1_{}T{end_hour:02}0000Z.json.gz",
            self.day.replace('-', "/"),
            self.trail,
            self.day.replace('-', "")
        )
    }

    /// Writes the digest for the hour ending at `end_hour`, listing `logs` (key, gzip
    /// bytes), signed by `signer` (the chain's key unless given), at `key` (its own place
    /// unless given). Returns its key.
    pub fn write(
        &mut self,
        end_hour: u32,
        logs: &[(String, Vec<u8>)],
        signer: Option<&KeyPair>,
        stored_at: Option<&str>,
    ) -> String {
        let key = self.key_of(end_hour);
        let files: Vec<serde_json::Value> = logs
            .iter()
            .map(|(k, gz)| {
                let mut raw = Vec::new();
                flate2::read::GzDecoder::new(gz.as_slice())
                    .read_to_end(&mut raw)
                    .unwrap();
                serde_json::json!({
                    "s3Bucket": self.bucket, "s3Object": k,
                    "hashValue": hex::encode(&sha256(&raw)), "hashAlgorithm": "SHA-256",
                    "newestEventTime": "2023-07-10T11:00:00Z", "oldestEventTime": "2023-07-10T11:00:00Z"
                })
            })
            .collect();
        let (pb, pk, ph, pa, ps) = match &self.previous {
            Some((k, h, s)) => (
                serde_json::json!(self.bucket),
                serde_json::json!(k),
                serde_json::json!(hex::encode(h)),
                serde_json::json!("SHA-256"),
                serde_json::json!(s),
            ),
            None => Default::default(),
        };
        let end = format!("{}T{end_hour:02}:00:00Z", self.day);
        let body = serde_json::json!({
            "awsAccountId": ACCOUNT,
            "digestStartTime": format!("{}T{:02}:00:00Z", self.day, end_hour - 1),
            "digestEndTime": end,
            "digestS3Bucket": self.bucket,
            "digestS3Object": key,
            "digestPublicKeyFingerprint": fingerprint(self.key.public_key().as_ref()),
            "digestSignatureAlgorithm": "SHA256withRSA",
            "newestEventTime": null, "oldestEventTime": null,
            "previousDigestS3Bucket": pb, "previousDigestS3Object": pk,
            "previousDigestHashValue": ph, "previousDigestHashAlgorithm": pa,
            "previousDigestSignature": ps,
            "logFiles": files,
        });
        let bytes = serde_json::to_vec(&body).unwrap();
        let hash = sha256(&bytes);
        let signing = format!(
            "{end}\n{}/{key}\n{}\n{}",
            self.bucket,
            hex::encode(&hash),
            self.previous.as_ref().map_or("null", |p| p.2.as_str())
        );
        let signer = signer.unwrap_or(self.key);
        let mut sig = vec![0; signer.public_modulus_len()];
        signer
            .sign(
                &RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                signing.as_bytes(),
                &mut sig,
            )
            .unwrap();
        let sig = hex::encode(&sig);
        block_on(
            server::client()
                .put_object()
                .bucket(self.bucket)
                .key(stored_at.unwrap_or(&key))
                .body(gzip(&bytes).into())
                .metadata("signature", &sig)
                .metadata("signature-algorithm", "SHA256withRSA")
                .send(),
        )
        .unwrap();
        self.previous = Some((key.clone(), hash, sig));
        key
    }
}

/// Log files: key and gzip bytes.
pub type Logs = Vec<(String, Vec<u8>)>;

/// The bundled objects in `bucket`, split by hour (11:xx and 12:xx).
pub fn upload_logs(bucket: &str) -> (Logs, Logs) {
    upload_logs_on(bucket, DAY)
}

/// A bundled object's key moved to `day` (`YYYY-MM-DD`).
pub fn key_on(key: &str, day: &str) -> String {
    key.replace("2023/07/10", &day.replace('-', "/"))
        .replace("20230710T", &format!("{}T", day.replace('-', "")))
}

/// The same, their keys moved to `day`.
pub fn upload_logs_on(bucket: &str, day: &str) -> (Logs, Logs) {
    let all: Logs = data::objects()
        .into_iter()
        .map(|o| {
            let key = key_on(&o.key, day);
            server::put(bucket, &key, o.gz.clone());
            (key, o.gz)
        })
        .collect();
    all.into_iter().partition(|(k, _)| minute_of(k) < 12 * 60)
}
