//! Meta's webhook signature: `X-Hub-Signature-256: sha256=<hex>`, an HMAC-SHA256 of the raw
//! request bytes keyed with the app secret.
//!
//! The check runs on the bytes exactly as received, before any JSON parsing (re-serialising
//! changes emoji and non-ASCII escapes and breaks the signature), and compares in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header Meta signs webhooks with.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` header.
    #[error("the X-Hub-Signature-256 header is missing")]
    Missing,
    /// The header is not `sha256=` followed by 64 hex digits.
    #[error("the X-Hub-Signature-256 header is not `sha256=<64 hex digits>`")]
    Malformed,
    /// The signature does not match the body and the app secret.
    #[error("the X-Hub-Signature-256 signature does not match the body")]
    Mismatch,
}

impl SignatureError {
    /// A short label for metrics.
    pub fn as_label(self) -> &'static str {
        match self {
            SignatureError::Missing => "missing",
            SignatureError::Malformed => "malformed",
            SignatureError::Mismatch => "mismatch",
        }
    }
}

/// Checks `header` (the raw header value, if any) against `body` and `app_secret`.
pub fn verify(app_secret: &[u8], header: Option<&[u8]>, body: &[u8]) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_digest = header
        .strip_prefix(b"sha256=")
        .ok_or(SignatureError::Malformed)?;
    if hex_digest.len() != 64 {
        return Err(SignatureError::Malformed);
    }
    let mut expected = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut expected).map_err(|_| SignatureError::Malformed)?;
    let mut mac = mac(app_secret);
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// Signs `body` the way Meta does: the full header value, `sha256=<hex>`.
///
/// Used by the CLI's tooling, the benchmark's request generator and the tests' fake Meta.
pub fn sign(app_secret: &[u8], body: &[u8]) -> String {
    let mut mac = mac(app_secret);
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn mac(app_secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    match HmacSha256::new_from_slice(app_secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"app-secret";

    #[test]
    fn a_body_signed_with_the_secret_verifies() {
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let header = sign(SECRET, body);
        assert_eq!(verify(SECRET, Some(header.as_bytes()), body), Ok(()));
    }

    #[test]
    fn known_vector_matches_meta_format() {
        // HMAC-SHA256(key="key", "The quick brown fox jumps over the lazy dog"), RFC 4231 style
        // vector from Wikipedia's HMAC article.
        let header = sign(b"key", b"The quick brown fox jumps over the lazy dog");
        assert_eq!(
            header,
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn missing_malformed_and_wrong_signatures_are_told_apart() {
        let body = b"{}";
        assert_eq!(verify(SECRET, None, body), Err(SignatureError::Missing));
        assert_eq!(
            verify(SECRET, Some(b"abc"), body),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(
                SECRET,
                Some(b"sha1=0000000000000000000000000000000000000000"),
                body
            ),
            Err(SignatureError::Malformed)
        );
        let other = sign(b"other-secret", body);
        assert_eq!(
            verify(SECRET, Some(other.as_bytes()), body),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_signature_covers_the_raw_bytes_not_the_json_value() {
        // Same JSON value, different bytes (escaped vs literal emoji): only the signed bytes pass.
        let literal = "{\"text\":\"hi 👋\"}".as_bytes();
        let escaped = br#"{"text":"hi \ud83d\udc4b"}"#;
        let header = sign(SECRET, literal);
        assert_eq!(verify(SECRET, Some(header.as_bytes()), literal), Ok(()));
        assert_eq!(
            verify(SECRET, Some(header.as_bytes()), escaped),
            Err(SignatureError::Mismatch)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_headers_and_bodies_never_panic(
            header in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..100)),
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let _ = verify(SECRET, header.as_deref(), &body);
        }

        #[test]
        fn any_change_to_the_body_breaks_the_signature(
            body in proptest::collection::vec(any::<u8>(), 1..512),
            index in any::<proptest::sample::Index>(),
            bit in 0u8..8,
        ) {
            let header = sign(SECRET, &body);
            let mut tampered = body.clone();
            let i = index.index(tampered.len());
            tampered[i] ^= 1 << bit;
            prop_assert_eq!(verify(SECRET, Some(header.as_bytes()), &body), Ok(()));
            prop_assert_eq!(
                verify(SECRET, Some(header.as_bytes()), &tampered),
                Err(SignatureError::Mismatch)
            );
        }
    }
}
