//! CloudTrail's public keys, from `ListPublicKeys` in the region that delivered a digest,
//! matched by fingerprint and kept for the run.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use super::sign::fingerprint;

/// One of CloudTrail's signing keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// DER bytes as CloudTrail returns them (PKCS#1 or SPKI).
    pub der: Vec<u8>,
    /// Hex MD5 of `der`: what digests name.
    pub fingerprint: String,
}

impl PublicKey {
    pub fn new(der: Vec<u8>) -> Self {
        Self {
            fingerprint: fingerprint(&der),
            der,
        }
    }
}

/// Where keys come from: CloudTrail's `ListPublicKeys`, or a stand-in in tests.
pub trait KeySource: Send + Sync {
    /// The keys valid at some point between `start` and `end` (Unix seconds) in `region`.
    fn list(
        &self,
        region: &str,
        start: i64,
        end: i64,
    ) -> impl Future<Output = Result<Vec<PublicKey>, String>> + Send;
}

/// `ListPublicKeys` through the AWS SDK, one client per region.
pub struct CloudTrailKeys {
    config: aws_config::SdkConfig,
    endpoint: Option<String>,
}

impl CloudTrailKeys {
    /// `endpoint` replaces CloudTrail's (a test stand-in, or a VPC endpoint).
    pub fn new(config: aws_config::SdkConfig, endpoint: Option<String>) -> Self {
        Self { config, endpoint }
    }
}

impl KeySource for CloudTrailKeys {
    async fn list(&self, region: &str, start: i64, end: i64) -> Result<Vec<PublicKey>, String> {
        let mut conf = aws_sdk_cloudtrail::config::Builder::from(&self.config)
            .region(aws_sdk_cloudtrail::config::Region::new(region.to_string()));
        if let Some(e) = &self.endpoint {
            conf = conf.endpoint_url(e);
        }
        let client = aws_sdk_cloudtrail::Client::from_conf(conf.build());
        let out = client
            .list_public_keys()
            .start_time(aws_smithy_types::DateTime::from_secs(start))
            .end_time(aws_smithy_types::DateTime::from_secs(end))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "CloudTrail ListPublicKeys in {region}: {}",
                    aws_sdk_cloudtrail::error::DisplayErrorContext(e)
                )
            })?;
        Ok(out
            .public_key_list()
            .iter()
            .filter_map(|k| k.value())
            .map(|v| PublicKey::new(v.as_ref().to_vec()))
            .collect())
    }
}

/// The keys asked for so far, by region and fingerprint.
pub struct KeyRing<S> {
    source: S,
    keys: HashMap<(String, String), PublicKey>,
    /// Regions and hours already asked about: a fingerprint not found after asking is
    /// unknown, and is not asked again for the same hour.
    asked: HashSet<(String, i64)>,
}

impl<S: KeySource> KeyRing<S> {
    pub fn new(source: S) -> Self {
        Self {
            source,
            keys: HashMap::new(),
            asked: HashSet::new(),
        }
    }

    /// The key `fingerprint` for a digest that `region` delivered and that ends at `end`
    /// (Unix seconds). Keys are asked for from an hour before the end to two hours after it,
    /// as aws-cli does since its key-rotation fix (a digest near a rotation is signed by a
    /// key whose validity starts after the digest's end time).
    pub async fn find(
        &mut self,
        region: &str,
        fingerprint: &str,
        end: i64,
    ) -> Result<Option<&PublicKey>, String> {
        let id = (region.to_string(), fingerprint.to_string());
        let hour = (region.to_string(), end / 3600);
        if !self.keys.contains_key(&id) && !self.asked.contains(&hour) {
            // Noted as asked only once answered: a failed call is asked again.
            for k in self.source.list(region, end - 3600, end + 2 * 3600).await? {
                self.keys
                    .insert((region.to_string(), k.fingerprint.clone()), k);
            }
            self.asked.insert(hour);
        }
        Ok(self.keys.get(&id))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    struct Fixed(Vec<u8>, Mutex<usize>);

    impl KeySource for Fixed {
        async fn list(&self, _: &str, _: i64, _: i64) -> Result<Vec<PublicKey>, String> {
            *self.1.lock().unwrap() += 1;
            Ok(vec![PublicKey::new(self.0.clone())])
        }
    }

    /// Fails its first call, then answers.
    struct Flaky(Vec<u8>, Mutex<usize>);

    impl KeySource for Flaky {
        async fn list(&self, _: &str, _: i64, _: i64) -> Result<Vec<PublicKey>, String> {
            let mut n = self.1.lock().unwrap();
            *n += 1;
            if *n == 1 {
                return Err("throttled".into());
            }
            Ok(vec![PublicKey::new(self.0.clone())])
        }
    }

    #[tokio::test]
    async fn a_failed_call_is_asked_again() {
        let mut ring = KeyRing::new(Flaky(b"der".to_vec(), Mutex::new(0)));
        let fp = fingerprint(b"der");
        assert!(ring.find("us-east-1", &fp, 7200).await.is_err());
        assert!(ring.find("us-east-1", &fp, 7200).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn keys_are_found_by_fingerprint_and_asked_for_once_an_hour() {
        let mut ring = KeyRing::new(Fixed(b"der".to_vec(), Mutex::new(0)));
        let fp = fingerprint(b"der");
        assert!(ring.find("us-east-1", &fp, 7200).await.unwrap().is_some());
        assert!(ring.find("us-east-1", &fp, 7300).await.unwrap().is_some());
        assert!(
            ring.find("us-east-1", "0000", 7300)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            ring.find("us-east-1", "0000", 7400)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(*ring.source.1.lock().unwrap(), 1, "one call for the hour");
        assert!(ring.find("eu-west-1", &fp, 7200).await.unwrap().is_some());
        assert_eq!(*ring.source.1.lock().unwrap(), 2, "keys are per region");
    }
}
