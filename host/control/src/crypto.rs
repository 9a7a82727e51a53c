//! Secrets at rest: XChaCha20-Poly1305 under the operator's master key.
//!
//! Every sealed value names what it is for in its associated data
//! (`credential/<org>/<datasource>`), so a ciphertext copied to another
//! record, datasource or organization no longer opens. The store keeps one
//! sealed check value: a wrong master key is refused before anything else
//! is read or written.
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use silo_core::error::{Error, Result};

/// Environment variable the master key is read from (base64, 32 bytes).
pub const MASTER_KEY_ENV: &str = "SILO_MASTER_KEY";

/// Version tag in front of every sealed value, so the format can change.
const SEALED_PREFIX: &str = "v1.";

/// What the key check value seals; opening it proves the key is the store's.
const KEY_CHECK: &[u8] = b"silo master key check";

/// The associated data of the key check value.
pub const KEY_CHECK_AAD: &str = "silo/key-check";

/// Associated data binding a datasource credential to its org and datasource.
pub fn credential_aad(org: &str, datasource: &str) -> String {
    format!("silo/credential/{org}/{datasource}")
}

/// Associated data of a token signing key.
pub fn signing_key_aad(kid: &str) -> String {
    format!("silo/signing-key/{kid}")
}

/// The 256-bit key everything at rest is sealed under. Zeroized on drop and
/// never printed.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// A fresh random key.
    pub fn generate() -> Result<MasterKey> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut())
            .map_err(|e| Error::Internal(format!("no randomness for a master key: {e}")))?;
        Ok(MasterKey(key))
    }

    /// Parses the base64 form (what [`MasterKey::encode`] writes).
    pub fn parse(text: &str) -> Result<MasterKey> {
        let bytes = Zeroizing::new(STANDARD.decode(text.trim()).map_err(|_| bad_key())?);
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| bad_key())?;
        Ok(MasterKey(Zeroizing::new(key)))
    }

    /// The base64 form, for a key file.
    pub fn encode(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_ref()))
    }

    /// The key from `file` if given, else from [`MASTER_KEY_ENV`], else `None`.
    pub fn from_env_or_file(file: Option<&Path>) -> Result<Option<MasterKey>> {
        if let Some(path) = file {
            let text =
                Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                    Error::Config(format!("master key file {}: {e}", path.display()))
                })?);
            return MasterKey::parse(&text).map(Some);
        }
        match std::env::var(MASTER_KEY_ENV) {
            Ok(v) => MasterKey::parse(&Zeroizing::new(v)).map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Writes the key to a new owner-only file; refuses to overwrite one.
    pub fn write_new_file(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options
            .open(path)
            .map_err(|e| Error::Config(format!("master key file {}: {e}", path.display())))?;
        f.write_all(self.encode().as_bytes())
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::Internal(format!("writing {}: {e}", path.display())))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.0.as_ref().into())
    }

    /// Seals `plaintext` for the purpose `aad` names.
    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> Result<String> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce)
            .map_err(|e| Error::Internal(format!("no randomness for a nonce: {e}")))?;
        let sealed = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| Error::Internal("sealing failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(out)))
    }

    /// Opens what [`MasterKey::seal`] sealed for the same `aad`. A wrong key,
    /// a changed ciphertext or a value sealed for another record all fail.
    pub fn open(&self, aad: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>> {
        let undecodable = || Error::Internal(format!("sealed value for {aad} is malformed"));
        let bytes = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .ok_or_else(undecodable)?;
        if bytes.len() < 24 {
            return Err(undecodable());
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        self.cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| {
                Error::Internal(format!(
                    "the sealed value for {aad} does not open with this master key"
                ))
            })
    }

    /// The key audit fingerprints are made under.
    pub fn fingerprint_key(&self) -> silo_core::fingerprint::FingerprintKey {
        silo_core::fingerprint::FingerprintKey::derive(self.0.as_ref())
    }

    /// The store's check value for this key.
    pub fn check_value(&self) -> Result<String> {
        self.seal(KEY_CHECK_AAD, KEY_CHECK)
    }

    /// Whether `check` was sealed by this key.
    pub fn matches(&self, check: &str) -> bool {
        self.open(KEY_CHECK_AAD, check)
            .is_ok_and(|v| v.as_slice() == KEY_CHECK)
    }
}

fn bad_key() -> Error {
    Error::Config(format!(
        "the master key must be 32 bytes in base64 (`silo keys generate` makes one; \
         give it in {MASTER_KEY_ENV} or a key file)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_opens_only_with_same_key_and_purpose() {
        let key = MasterKey::generate().unwrap();
        let sealed = key
            .seal(&credential_aad("org_a", "ds_1"), b"hunter2")
            .unwrap();
        assert!(!sealed.contains("hunter2"));
        let opened = key.open(&credential_aad("org_a", "ds_1"), &sealed).unwrap();
        assert_eq!(opened.as_slice(), b"hunter2");
        // Replayed into another org or datasource: refused.
        assert!(key.open(&credential_aad("org_b", "ds_1"), &sealed).is_err());
        assert!(key.open(&credential_aad("org_a", "ds_2"), &sealed).is_err());
        // Another key: refused.
        let other = MasterKey::generate().unwrap();
        assert!(
            other
                .open(&credential_aad("org_a", "ds_1"), &sealed)
                .is_err()
        );
        // One flipped bit: refused.
        let mut bytes = STANDARD.decode(&sealed[3..]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = format!("v1.{}", STANDARD.encode(bytes));
        assert!(
            key.open(&credential_aad("org_a", "ds_1"), &tampered)
                .is_err()
        );
    }

    #[test]
    fn key_round_trips_and_checks() {
        let key = MasterKey::generate().unwrap();
        let again = MasterKey::parse(&key.encode()).unwrap();
        let check = key.check_value().unwrap();
        assert!(again.matches(&check));
        assert!(!MasterKey::generate().unwrap().matches(&check));
        assert!(MasterKey::parse("c2hvcnQ=").is_err());
        assert_eq!(format!("{key:?}"), "MasterKey([redacted])");
    }
}
