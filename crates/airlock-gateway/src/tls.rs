//! HTTPS: the gateway's rustls server configuration, loaded once at start-up
//! from a PEM certificate chain and a PEM private key (`--tls-cert`,
//! `--tls-key`). The accept loop ([`crate::listener`]) does the handshake
//! inside its header-read timeout and connection caps.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the TLS {what} {}: {source}", path.display())]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The reason.
        source: std::io::Error,
    },
    /// The certificate file is not PEM certificates.
    #[error("{} holds no valid PEM certificate: {detail}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The key file is not a PEM private key.
    #[error("{} holds no valid PEM private key: {detail}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// rustls refused the pair (key does not match, unsupported key type…).
    #[error("cannot use the TLS certificate and key: {0}")]
    Config(String),
}

impl TlsError {
    /// Advice for the operator.
    pub fn hint(&self) -> &'static str {
        match self {
            TlsError::Read { .. } => {
                "check the path and that airlockd may read the file (the key should be mode 0600)"
            }
            TlsError::Certificate { .. } => {
                "--tls-cert takes the PEM certificate chain (-----BEGIN CERTIFICATE-----, the server's own first)"
            }
            TlsError::Key { .. } => {
                "--tls-key takes the PEM private key (-----BEGIN PRIVATE KEY-----, RSA or EC PRIVATE KEY) of the certificate"
            }
            TlsError::Config(_) => {
                "give the private key that belongs to the first certificate in --tls-cert"
            }
        }
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn pem_detail(e: &pem::Error) -> String {
    match e {
        pem::Error::NoItemsFound => "no PEM section of the right kind found".to_owned(),
        other => other.to_string(),
    }
}

/// Loads the certificate chain and private key and builds the server
/// configuration (TLS 1.2 and 1.3, HTTP/1.1 by ALPN).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_pem = read("certificate", cert)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate {
            path: cert.to_owned(),
            detail: pem_detail(&e),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Certificate {
            path: cert.to_owned(),
            detail: "no PEM section of the right kind found".to_owned(),
        });
    }
    let key_pem = read("key", key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        detail: pem_detail(&e),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    // The gateway speaks HTTP/1.1 only (WebSocket upgrades for tunnels).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = server_config(&missing, &missing).unwrap_err();
        assert!(
            matches!(
                e,
                TlsError::Read {
                    what: "certificate",
                    ..
                }
            ),
            "{e}"
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem at all\n").unwrap();
        let e = server_config(&junk, &junk).unwrap_err();
        assert!(matches!(e, TlsError::Certificate { .. }), "{e}");
        assert!(e.to_string().contains("junk.pem"), "{e}");
        assert!(!e.hint().is_empty());
        // A certificate where the key should be.
        let cert = dir.path().join("cert.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = server_config(&cert, &cert).unwrap_err();
        assert!(matches!(e, TlsError::Key { .. }), "{e}");
    }
}
