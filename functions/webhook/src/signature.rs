//! GitHub's webhook signature: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`,
//! keyed with the webhook's secret, checked in constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The webhook secret. Its `Debug` never shows it, so it cannot reach a log by accident.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self(secret.into())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// Why a delivery's signature was refused. The messages name the problem, never the secret or
/// the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the X-Hub-Signature-256 header is missing")]
    Missing,
    #[error(
        "only the SHA-1 X-Hub-Signature header was sent; Penstock requires X-Hub-Signature-256"
    )]
    Sha1Only,
    #[error("the X-Hub-Signature-256 header is not sha256= followed by 64 hex digits")]
    Malformed,
    #[error("the X-Hub-Signature-256 signature does not match the body")]
    Mismatch,
}

/// Check `header` (the `X-Hub-Signature-256` value, if sent) against `body`. `sha1_header` is
/// whether the legacy `X-Hub-Signature` was sent, to say why a delivery without the SHA-256
/// header is refused.
pub fn verify(
    secret: &WebhookSecret,
    body: &[u8],
    header: Option<&str>,
    sha1_header: bool,
) -> Result<(), SignatureError> {
    let Some(header) = header else {
        return Err(if sha1_header {
            SignatureError::Sha1Only
        } else {
            SignatureError::Missing
        });
    };
    let hex_digits = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    if hex_digits.len() != 64 {
        return Err(SignatureError::Malformed);
    }
    let expected = hex::decode(hex_digits).map_err(|_| SignatureError::Malformed)?;
    // An empty secret would let anyone sign; the router refuses to start with one, and this
    // refuses too in case a caller skipped that.
    if secret.is_empty() {
        return Err(SignatureError::Mismatch);
    }
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&secret.0).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// The `X-Hub-Signature-256` value GitHub would send for `body` (for tests and tools that
/// deliver signed events themselves).
pub fn sign(secret: &WebhookSecret, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(&secret.0) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's documented test vector ("Validating webhook deliveries").
    #[test]
    fn githubs_test_vector_verifies() {
        let secret = WebhookSecret::new("It's a Secret to Everybody");
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            verify(&secret, b"Hello, World!", Some(header), false),
            Ok(())
        );
        assert_eq!(sign(&secret, b"Hello, World!"), header);
    }

    #[test]
    fn refusals() {
        let secret = WebhookSecret::new("It's a Secret to Everybody");
        let body = b"Hello, World!";
        let good = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let cases: Vec<(Option<String>, bool, SignatureError)> = vec![
            (None, false, SignatureError::Missing),
            (None, true, SignatureError::Sha1Only),
            (Some(good.to_string()), false, SignatureError::Malformed),
            (
                Some(format!("sha1={good}")),
                false,
                SignatureError::Malformed,
            ),
            (
                Some(format!("sha256={}", &good[..63])),
                false,
                SignatureError::Malformed,
            ),
            (
                Some(format!("sha256={}zz", &good[..62])),
                false,
                SignatureError::Malformed,
            ),
            (
                Some(format!("sha256={}0", &good[..63])),
                false,
                SignatureError::Mismatch,
            ),
            (
                Some("sha256=".to_string() + &"0".repeat(64)),
                false,
                SignatureError::Mismatch,
            ),
        ];
        for (header, sha1, expected) in cases {
            assert_eq!(
                verify(&secret, body, header.as_deref(), sha1),
                Err(expected.clone()),
                "{header:?}"
            );
        }
        // The right signature over another body.
        assert_eq!(
            verify(
                &secret,
                b"Hello, World?",
                Some(&format!("sha256={good}")),
                false
            ),
            Err(SignatureError::Mismatch)
        );
        // The right body signed with another secret.
        assert_eq!(
            verify(
                &WebhookSecret::new("another"),
                body,
                Some(&format!("sha256={good}")),
                false
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                &WebhookSecret::new(""),
                body,
                Some(&format!("sha256={good}")),
                false
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_secret_never_shows_in_debug_output() {
        let secret = WebhookSecret::new("hunter2-secret");
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
