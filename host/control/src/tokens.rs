//! Credentials callers present: API keys for a customer's backend, and the
//! short-lived signed session tokens (JWT) embed users carry.
//!
//! API keys are 256 random bits, shown once and stored as a SHA-256 digest:
//! with that much entropy a slow hash adds nothing. Session tokens are
//! signed with one algorithm the deployment pins (EdDSA by default); a
//! token naming any other algorithm, `none` included, is refused before its
//! signature is looked at.
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use silo_core::error::{Error, Result};

/// Prefix of every API key, so leaked keys are easy to scan for.
const API_KEY_PREFIX: &str = "silo_";

/// A new API key: its id (stored, shown in lists) and the whole token
/// (shown once, never stored).
pub struct NewApiKey {
    /// The record id, `key_…`.
    pub id: String,
    /// `silo_<id>.<secret>`: what the caller sends as a bearer token.
    pub token: Zeroizing<String>,
    /// What the store keeps: the secret's SHA-256, hex.
    pub digest: String,
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

pub use silo_core::ids::new_id;

/// Mints an API key.
pub fn new_api_key() -> Result<NewApiKey> {
    let id = new_id("key")?;
    let mut secret = Zeroizing::new([0u8; 32]);
    getrandom::fill(secret.as_mut()).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    let secret = Zeroizing::new(URL_SAFE_NO_PAD.encode(secret.as_ref()));
    Ok(NewApiKey {
        token: Zeroizing::new(format!("{API_KEY_PREFIX}{id}.{}", secret.as_str())),
        digest: digest(&secret),
        id,
    })
}

fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Splits a presented API key into its id and secret, or `None` when it is
/// not shaped like one.
pub fn parse_api_key(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(API_KEY_PREFIX)?;
    let (id, secret) = rest.split_once('.')?;
    (id.starts_with("key_") && !secret.is_empty()).then_some((id, secret))
}

/// Whether `secret` hashes to the stored `digest`, in constant time.
pub fn api_key_matches(secret: &str, stored_digest: &str) -> bool {
    digest(secret)
        .as_bytes()
        .ct_eq(stored_digest.as_bytes())
        .into()
}

/// The signing algorithm a deployment pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TokenAlg {
    /// Ed25519 signatures (default): verifiers need only the public key.
    #[default]
    EdDsa,
    /// HMAC-SHA256 with a shared secret.
    Hs256,
}

impl TokenAlg {
    fn algorithm(self) -> Algorithm {
        match self {
            TokenAlg::EdDsa => Algorithm::EdDSA,
            TokenAlg::Hs256 => Algorithm::HS256,
        }
    }

    /// The name stored with a key.
    pub fn name(self) -> &'static str {
        match self {
            TokenAlg::EdDsa => "EdDSA",
            TokenAlg::Hs256 => "HS256",
        }
    }

    /// Fresh key material: a PKCS#8 Ed25519 key pair, or a 256-bit secret.
    pub fn generate(self) -> Result<Zeroizing<Vec<u8>>> {
        match self {
            TokenAlg::EdDsa => {
                let rng = ring::rand::SystemRandom::new();
                ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                    .map(|d| Zeroizing::new(d.as_ref().to_vec()))
                    .map_err(|_| Error::Internal("generating an Ed25519 key failed".into()))
            }
            TokenAlg::Hs256 => {
                let mut secret = Zeroizing::new(vec![0u8; 32]);
                getrandom::fill(&mut secret)
                    .map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
                Ok(secret)
            }
        }
    }
}

/// What a session token says. The organization is taken from here and
/// nowhere else, and only after the signature and claims are verified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The session id.
    pub sub: String,
    /// The session's organization.
    pub org: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expiry (Unix seconds).
    pub exp: i64,
    /// `<session id>.<generation>`: which of the session's tokens this is.
    /// Absent only in tokens minted before generations existed (valid for
    /// generation 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl Claims {
    /// Whether this token is of `session`'s current generation.
    pub fn current_for(&self, session: &str, generation: i64) -> bool {
        match &self.jti {
            Some(jti) => *jti == format!("{session}.{generation}"),
            None => generation == 0,
        }
    }
}

/// Signs and verifies session tokens with the deployment's one key.
pub struct Signer {
    alg: TokenAlg,
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public: Option<Vec<u8>>,
    validation: Validation,
    issuer: String,
    audience: String,
    /// Tokens whose signature checked out, by their SHA-256: the same bytes
    /// under the same key verify the same way, so a session's later
    /// requests cost a hash instead of a signature check. Expiry is
    /// checked on every use.
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 32], Claims>>,
}

/// Verified tokens remembered at once; past it the memory starts over.
const VERIFIED_TOKENS: usize = 10_000;

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer over `material` (from [`TokenAlg::generate`]).
    pub fn new(
        alg: TokenAlg,
        kid: String,
        material: &[u8],
        issuer: String,
        audience: String,
    ) -> Result<Signer> {
        let (encoding, decoding, public) = match alg {
            TokenAlg::EdDsa => {
                use ring::signature::KeyPair as _;
                let pair = ring::signature::Ed25519KeyPair::from_pkcs8(material)
                    .map_err(|_| Error::Internal("the stored Ed25519 key is invalid".into()))?;
                let public = pair.public_key().as_ref().to_vec();
                (
                    EncodingKey::from_ed_der(material),
                    DecodingKey::from_ed_der(&public),
                    Some(public),
                )
            }
            TokenAlg::Hs256 => (
                EncodingKey::from_secret(material),
                DecodingKey::from_secret(material),
                None,
            ),
        };
        let mut validation = Validation::new(alg.algorithm());
        validation.algorithms = vec![alg.algorithm()];
        validation.set_issuer(&[&issuer]);
        validation.set_audience(&[&audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Session expiry is exact: a revoked or expired session ends now.
        validation.leeway = 0;
        Ok(Signer {
            alg,
            kid,
            encoding,
            decoding,
            public,
            validation,
            issuer,
            audience,
            verified: std::sync::Mutex::default(),
        })
    }

    /// The pinned algorithm.
    pub fn alg(&self) -> TokenAlg {
        self.alg
    }

    /// The Ed25519 public key (raw 32 bytes), for verifiers elsewhere.
    pub fn public_key(&self) -> Option<&[u8]> {
        self.public.as_deref()
    }

    /// Claims for generation `generation` of a session of `org`, expiring
    /// at `exp`.
    pub fn claims(&self, org: &str, session: &str, generation: i64, iat: i64, exp: i64) -> Claims {
        Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: session.to_owned(),
            org: org.to_owned(),
            iat,
            exp,
            jti: Some(format!("{session}.{generation}")),
        }
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String> {
        let mut header = Header::new(self.alg.algorithm());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| Error::Internal(format!("signing a session token: {e}")))
    }

    /// Signs `claims` under a header of the caller's choosing: for tests
    /// that need a validly signed token the host must still refuse (a
    /// `crit` member). Anyone who can call this holds the key anyway.
    #[doc(hidden)]
    pub fn sign_with_header(&self, header: &serde_json::Value, claims: &Claims) -> Result<String> {
        use base64::Engine as _;
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let failed = |e: &dyn std::fmt::Display| Error::Internal(format!("signing a token: {e}"));
        let header = serde_json::to_vec(header).map_err(|e| failed(&e))?;
        let claims = serde_json::to_vec(claims).map_err(|e| failed(&e))?;
        let message = format!("{}.{}", b64(&header), b64(&claims));
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, self.alg.algorithm())
                .map_err(|e| failed(&e))?;
        Ok(format!("{message}.{signature}"))
    }

    /// Verifies signature, algorithm, issuer, audience and expiry. Every
    /// failure is the same [`Error::Unauthorized`]; the reason is logged.
    pub fn verify(&self, token: &str) -> Result<Claims> {
        if has_crit(token) {
            // RFC 7515 §4.1.11: a `crit` naming extensions the verifier does
            // not understand must be refused; this one understands none.
            tracing::debug!("session token refused: a `crit` header");
            return Err(Error::Unauthorized("the session token is not valid".into()));
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let known = self
            .verified
            .lock()
            .ok()
            .and_then(|m| m.get(&digest).cloned());
        if let Some(claims) = known {
            if claims.exp < now {
                tracing::debug!("session token refused: expired");
                return Err(Error::Unauthorized("the session token is not valid".into()));
            }
            return Ok(claims);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| {
                tracing::debug!(reason = %e, "session token refused");
                Error::Unauthorized("the session token is not valid".into())
            })?;
        if let Ok(mut m) = self.verified.lock() {
            if m.len() >= VERIFIED_TOKENS {
                m.clear();
            }
            m.insert(digest, claims.clone());
        }
        Ok(claims)
    }
}

/// Whether a token's header has a `crit` member (or cannot be read, which
/// the signature check refuses anyway).
fn has_crit(token: &str) -> bool {
    use base64::Engine as _;
    let Some(header) = token.split('.').next() else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes)
        .is_ok_and(|h| h.contains_key("crit"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(alg: TokenAlg) -> Signer {
        let material = alg.generate().unwrap();
        Signer::new(alg, "k1".into(), &material, "silo".into(), "embed".into()).unwrap()
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[test]
    fn api_keys_parse_and_match() {
        let key = new_api_key().unwrap();
        let (id, secret) = parse_api_key(&key.token).unwrap();
        assert_eq!(id, key.id);
        assert!(api_key_matches(secret, &key.digest));
        assert!(!api_key_matches("guess", &key.digest));
        assert!(!key.token.contains(&key.digest));
        assert!(parse_api_key("Bearer x").is_none());
        assert!(!format!("{key:?}").contains(secret));
    }

    #[test]
    fn tokens_round_trip_for_both_algorithms() {
        for alg in [TokenAlg::EdDsa, TokenAlg::Hs256] {
            let s = signer(alg);
            let claims = s.claims("org_a", "ses_1", 0, now(), now() + 60);
            assert_eq!(s.verify(&s.sign(&claims).unwrap()).unwrap(), claims);
            // Another deployment's key of the same algorithm: refused.
            assert!(signer(alg).verify(&s.sign(&claims).unwrap()).is_err());
        }
    }

    /// A verified token is remembered byte for byte, and its expiry is
    /// still checked on every use.
    #[test]
    fn a_remembered_token_still_expires_and_a_changed_one_is_checked() {
        let s = signer(TokenAlg::EdDsa);
        let claims = s.claims("org_a", "ses_1", 0, now(), now() + 1);
        let token = s.sign(&claims).unwrap();
        assert_eq!(s.verify(&token).unwrap(), claims);
        assert_eq!(s.verify(&token).unwrap(), claims);
        // One signature byte changed (not the last character, whose low
        // bits are padding).
        let mut bytes = token.clone().into_bytes();
        let at = bytes.len() - 10;
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(bytes).unwrap();
        assert!(s.verify(&forged).is_err());
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert!(s.verify(&token).is_err());
    }

    #[test]
    fn expired_and_wrong_audience_are_refused() {
        let s = signer(TokenAlg::EdDsa);
        let expired = s.claims("org_a", "ses_1", 0, now() - 100, now() - 1);
        assert!(s.verify(&s.sign(&expired).unwrap()).is_err());
        let mut aud = s.claims("org_a", "ses_1", 0, now(), now() + 60);
        aud.aud = "other".into();
        assert!(s.verify(&s.sign(&aud).unwrap()).is_err());
    }

    #[test]
    fn a_crit_header_is_refused_and_generations_are_told_apart() {
        let s = signer(TokenAlg::EdDsa);
        let claims = s.claims("org_a", "ses_1", 2, now(), now() + 60);
        assert!(claims.current_for("ses_1", 2));
        assert!(!claims.current_for("ses_1", 3));
        assert!(!claims.current_for("ses_2", 2));
        // Validly signed, with a `crit` extension: refused.
        let plain = serde_json::json!({"alg": "EdDSA", "kid": "k1"});
        assert!(
            s.verify(&s.sign_with_header(&plain, &claims).unwrap())
                .is_ok()
        );
        let crit =
            serde_json::json!({"alg": "EdDSA", "kid": "k1", "crit": ["exp-ext"], "exp-ext": 1});
        assert!(
            s.verify(&s.sign_with_header(&crit, &claims).unwrap())
                .is_err()
        );
    }
}
