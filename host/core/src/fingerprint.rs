//! Keyed fingerprints for the audit: HMAC-SHA-256 under a key derived from
//! the master key. A record names a value (the same value, the same
//! fingerprint, on every host sharing the key) without revealing it: a
//! reader of the log who does not hold the key cannot test guesses (tenant
//! ids are a small dictionary, and a plain hash of one is not a secret).
use std::sync::Arc;

use ring::hmac;

/// What a fingerprint key is derived under, from the master key.
const LABEL: &[u8] = b"silo/audit-fingerprint/v1";

/// The key; never printed.
#[derive(Clone)]
pub struct FingerprintKey(Arc<hmac::Key>);

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintKey([redacted])")
    }
}

impl FingerprintKey {
    /// The key derived from `secret` (the master key's bytes).
    pub fn derive(secret: &[u8]) -> FingerprintKey {
        let outer = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let derived = hmac::sign(&outer, LABEL);
        FingerprintKey(Arc::new(hmac::Key::new(
            hmac::HMAC_SHA256,
            derived.as_ref(),
        )))
    }

    /// The fingerprint of `value`, in hex.
    pub fn of(&self, value: &[u8]) -> String {
        hex::encode(hmac::sign(&self.0, value).as_ref())
    }
}

/// A key of this process alone (no master key: a `silo.toml` host), so its
/// fingerprints still reveal nothing.
impl Default for FingerprintKey {
    fn default() -> FingerprintKey {
        let mut secret = [0u8; 32];
        if getrandom::fill(&mut secret).is_err() {
            // No randomness at all: still keyed, by something not in the log.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            secret[..16].copy_from_slice(&now.to_le_bytes());
            secret[16..20].copy_from_slice(&std::process::id().to_le_bytes());
        }
        FingerprintKey::derive(&secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_depend_on_the_key_and_the_value() {
        let a = FingerprintKey::derive(&[1; 32]);
        let b = FingerprintKey::derive(&[2; 32]);
        assert_eq!(a.of(b"acme"), FingerprintKey::derive(&[1; 32]).of(b"acme"));
        assert_ne!(a.of(b"acme"), b.of(b"acme"));
        assert_ne!(a.of(b"acme"), a.of(b"globex"));
        // Not the plain hash a dictionary would find.
        use sha2::Digest;
        assert_ne!(a.of(b"acme"), hex::encode(sha2::Sha256::digest(b"acme")));
        assert_eq!(format!("{a:?}"), "FingerprintKey([redacted])");
    }
}
