//! TLS to databases, one policy for Postgres, MySQL and MongoDB: `disable`,
//! `require` (encrypted, any certificate) or `verify-full` (the certificate
//! chains to a trusted root and names the server). `verify-full` is the
//! default for every host but loopback, and a password is never sent in
//! clear: each driver refuses cleartext password authentication unless the
//! connection is encrypted.
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};

use silo_core::error::{Error, Result};

/// Largest CA bundle a datasource may carry (an org supplies it).
pub const MAX_CA_PEM_BYTES: usize = 64 << 10;
/// Longest server name a datasource may give.
pub const MAX_SERVER_NAME: usize = 253;

/// How a database connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// No TLS (loopback's default). A server asking for the password in
    /// clear is refused.
    Disable,
    /// TLS, with any certificate: protects against listeners, not against
    /// a server impersonating the database.
    Require,
    /// TLS, with a certificate that chains to a trusted root (the given CA,
    /// else the public web roots) and names the server (the default for
    /// every host but loopback).
    VerifyFull,
}

/// `tls` in a database datasource's settings. `true`/`false` are accepted
/// for `verify-full`/`disable`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The mode (default: `verify-full`, or `disable` for a loopback host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TlsMode>,
    /// PEM certificates trusted as roots for this server (instead of the
    /// public web roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// A file of such certificates (`silo.toml` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The name the certificate must carry (default: the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// Deserializes `tls` from a boolean or a table.
pub fn settings<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TlsSettings, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Flag(bool),
        Table(TlsSettings),
    }
    Ok(match Either::deserialize(d)? {
        Either::Flag(on) => TlsSettings {
            mode: Some(if on {
                TlsMode::VerifyFull
            } else {
                TlsMode::Disable
            }),
            ..TlsSettings::default()
        },
        Either::Table(t) => t,
    })
}

/// Whether `host` names this machine: the only place TLS is off by default.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl TlsSettings {
    /// Whether nothing was set (every default).
    pub fn is_unset(&self) -> bool {
        *self == TlsSettings::default()
    }

    /// The mode in force for `host`.
    pub fn mode_for(&self, host: &str) -> TlsMode {
        self.mode.unwrap_or(if is_loopback(host) {
            TlsMode::Disable
        } else {
            TlsMode::VerifyFull
        })
    }

    /// Checks what an org supplied: no host files, bounded sizes, a valid
    /// name and parseable certificates.
    pub fn check_api(&self) -> Result<()> {
        if self.ca_file.is_some() {
            return Err(Error::Config(
                "settings: tls.ca_file is for silo.toml; give the CA as tls.ca_pem".into(),
            ));
        }
        self.check()
    }

    fn check(&self) -> Result<()> {
        if let Some(pem) = &self.ca_pem {
            if pem.len() > MAX_CA_PEM_BYTES {
                return Err(Error::Limit(format!(
                    "settings: `tls.ca_pem` must be at most {MAX_CA_PEM_BYTES} bytes"
                )));
            }
            certificates(pem.as_bytes())?;
        }
        if let Some(name) = &self.server_name
            && (name.len() > MAX_SERVER_NAME || ServerName::try_from(name.as_str()).is_err())
        {
            return Err(Error::Config(
                "settings: `tls.server_name` is not a valid host name".into(),
            ));
        }
        Ok(())
    }

    /// The client side of TLS to `host`, or `None` when TLS is off.
    pub fn client(&self, host: &str) -> Result<Option<TlsClient>> {
        let mode = self.mode_for(host);
        if mode == TlsMode::Disable {
            return Ok(None);
        }
        self.check()?;
        let name = self.server_name.as_deref().unwrap_or(host);
        let name = name.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(name.to_owned()).map_err(|_| {
            Error::Config(format!(
                "tls: `{}` is not a name a certificate can carry",
                silo_core::text::bounded_text(name, 80)
            ))
        })?;
        let pem = self.ca_pem()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Internal(format!("tls: {e}")))?;
        let config = match mode {
            TlsMode::VerifyFull => {
                let mut roots = rustls::RootCertStore::empty();
                match &pem {
                    Some(pem) => {
                        for cert in certificates(pem)? {
                            roots.add(cert).map_err(|e| {
                                Error::Config(format!("tls: a CA certificate is unusable: {e}"))
                            })?;
                        }
                    }
                    None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            TlsMode::Require | TlsMode::Disable => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth(),
        };
        Ok(Some(TlsClient {
            mode,
            config: Arc::new(config),
            server_name,
            ca_pem: pem,
        }))
    }

    fn ca_pem(&self) -> Result<Option<Vec<u8>>> {
        if let Some(pem) = &self.ca_pem {
            return Ok(Some(pem.as_bytes().to_vec()));
        }
        match &self.ca_file {
            Some(file) => {
                let pem = std::fs::read(file)
                    .map_err(|e| Error::Config(format!("tls.ca_file {}: {e}", file.display())))?;
                certificates(&pem)?;
                Ok(Some(pem))
            }
            None => Ok(None),
        }
    }
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| Error::Config("settings: `tls.ca_pem` is not PEM certificates".into()))?;
    if certs.is_empty() {
        return Err(Error::Config(
            "settings: `tls.ca_pem` holds no certificate".into(),
        ));
    }
    Ok(certs)
}

/// TLS to one server, ready to connect.
#[derive(Clone)]
pub struct TlsClient {
    /// `require` or `verify-full`.
    pub mode: TlsMode,
    /// The rustls client configuration.
    pub config: Arc<rustls::ClientConfig>,
    /// The name the certificate is checked against.
    pub server_name: ServerName<'static>,
    /// The trusted CA bundle, when one was given (drivers that take PEM).
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("mode", &self.mode)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Upgrades `stream` to TLS.
    pub async fn connect<S>(&self, stream: S) -> std::io::Result<tokio_rustls::client::TlsStream<S>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.server_name.clone(), stream)
            .await
    }
}

/// `require`: any certificate, but the handshake's signatures still checked
/// (the session is encrypted to whoever holds the certificate's key).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_full_is_the_default_off_loopback() {
        let t = TlsSettings::default();
        assert_eq!(t.mode_for("db.example.com"), TlsMode::VerifyFull);
        assert_eq!(t.mode_for("10.0.0.5"), TlsMode::VerifyFull);
        assert_eq!(t.mode_for("127.0.0.1"), TlsMode::Disable);
        assert_eq!(t.mode_for("localhost"), TlsMode::Disable);
        assert_eq!(t.mode_for("[::1]"), TlsMode::Disable);
        let required = TlsSettings {
            mode: Some(TlsMode::Require),
            ..TlsSettings::default()
        };
        assert_eq!(required.mode_for("127.0.0.1"), TlsMode::Require);
    }

    #[test]
    fn booleans_and_tables_both_read() {
        #[derive(Deserialize)]
        struct C {
            #[serde(deserialize_with = "settings")]
            tls: TlsSettings,
        }
        let on: C = serde_json::from_str(r#"{"tls": true}"#).unwrap();
        assert_eq!(on.tls.mode, Some(TlsMode::VerifyFull));
        let off: C = serde_json::from_str(r#"{"tls": false}"#).unwrap();
        assert_eq!(off.tls.mode, Some(TlsMode::Disable));
        let t: C =
            serde_json::from_str(r#"{"tls": {"mode": "require", "server_name": "db"}}"#).unwrap();
        assert_eq!(t.tls.mode, Some(TlsMode::Require));
        assert!(serde_json::from_str::<C>(r#"{"tls": {"mode": "prefer"}}"#).is_err());
        assert!(serde_json::from_str::<C>(r#"{"tls": {"ca": "x"}}"#).is_err());
    }

    #[test]
    fn org_settings_are_checked() {
        let file = TlsSettings {
            ca_file: Some("/etc/shadow".into()),
            ..TlsSettings::default()
        };
        assert!(file.check_api().is_err());
        let huge = TlsSettings {
            ca_pem: Some("x".repeat(MAX_CA_PEM_BYTES + 1)),
            ..TlsSettings::default()
        };
        assert!(matches!(huge.check_api(), Err(Error::Limit(_))));
        let junk = TlsSettings {
            ca_pem: Some("not a certificate".into()),
            ..TlsSettings::default()
        };
        assert!(junk.check_api().is_err());
        let name = TlsSettings {
            server_name: Some("bad name/".into()),
            ..TlsSettings::default()
        };
        assert!(name.check_api().is_err());
    }
}
