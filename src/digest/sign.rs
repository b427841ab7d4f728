//! A digest's signature: RSA PKCS#1 v1.5 with SHA-256 over its data signing string, by the
//! CloudTrail key whose fingerprint the digest names.

use super::{Digest, hex};

/// Why a digest's signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the object has no signature metadata (x-amz-meta-signature)")]
    Missing,
    #[error("signature algorithm {0:?} in the object's metadata, not \"SHA256withRSA\"")]
    Algorithm(String),
    #[error("the signature metadata is not hex")]
    NotHex,
    #[error("no CloudTrail public key with fingerprint {0} for this digest's time")]
    UnknownKey(String),
    #[error("the signature does not verify with CloudTrail's key {0}")]
    Invalid(String),
}

/// A key's fingerprint as CloudTrail gives it: the hex MD5 of the key's DER bytes (checked
/// against AWS's documented keys, PKCS#1 and SPKI alike).
pub fn fingerprint(der: &[u8]) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(der).as_slice())
}

/// Checks `digest`'s signature (`signature_hex`, with `algorithm` from the object's
/// metadata) with the public key `der` (PKCS#1 `RSAPublicKey` or SPKI, both of which
/// CloudTrail has published).
pub fn verify(
    digest: &Digest,
    signature_hex: Option<&str>,
    algorithm: Option<&str>,
    der: &[u8],
) -> Result<(), SignatureError> {
    let signature_hex = signature_hex.ok_or(SignatureError::Missing)?;
    match algorithm {
        Some("SHA256withRSA") => {}
        Some(other) => return Err(SignatureError::Algorithm(other.to_string())),
        None => return Err(SignatureError::Missing),
    }
    let signature = hex::decode(signature_hex).ok_or(SignatureError::NotHex)?;
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        der,
    )
    .verify(digest.signing_string().as_bytes(), &signature)
    .map_err(|_| SignatureError::Invalid(digest.fingerprint.clone()))
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};

    use super::*;

    fn sign(key: &KeyPair, text: &str) -> String {
        let mut sig = vec![0; key.public_modulus_len()];
        key.sign(
            &RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            text.as_bytes(),
            &mut sig,
        )
        .unwrap();
        hex::encode(&sig)
    }

    #[test]
    fn a_digest_signed_by_the_key_verifies_and_nothing_else_does() {
        let key = KeyPair::generate(KeySize::Rsa2048).unwrap();
        let other = KeyPair::generate(KeySize::Rsa2048).unwrap();
        let der = key.public_key().as_ref().to_vec();
        let text = super::super::file::tests::example(true);
        let d = Digest::parse(text.as_bytes()).unwrap();
        let sig = sign(&key, &d.signing_string());
        let alg = Some("SHA256withRSA");
        assert_eq!(verify(&d, Some(&sig), alg, &der), Ok(()));
        // The SPKI form of the same key, as one of AWS's published keys is.
        use aws_lc_rs::encoding::AsDer;
        let spki = key.public_key().as_der().unwrap();
        assert_eq!(verify(&d, Some(&sig), alg, spki.as_ref()), Ok(()));
        let by_other = sign(&other, &d.signing_string());
        assert!(matches!(
            verify(&d, Some(&by_other), alg, &der),
            Err(SignatureError::Invalid(_))
        ));
        // One byte of the digest changed: its hash, so its signing string, changes.
        let altered = Digest::parse(text.replacen("14:52:27Z", "14:52:28Z", 1).as_bytes()).unwrap();
        assert!(matches!(
            verify(&altered, Some(&sig), alg, &der),
            Err(SignatureError::Invalid(_))
        ));
        assert_eq!(verify(&d, None, alg, &der), Err(SignatureError::Missing));
        assert_eq!(
            verify(&d, Some("zz"), alg, &der),
            Err(SignatureError::NotHex)
        );
        assert_eq!(
            verify(&d, Some(&sig), Some("SHA1withRSA"), &der),
            Err(SignatureError::Algorithm("SHA1withRSA".into()))
        );
    }

    #[test]
    fn fingerprints_are_the_md5_of_the_der_bytes() {
        // RFC 1321's test vector for "abc".
        assert_eq!(fingerprint(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    }
}
