//! Whom the CLI trusts for `https://` and `wss://`: the system's roots plus
//! the PEM certificates in `AIRLOCK_CA_FILE`. One rustls configuration
//! serves the REST client and every tunnel WebSocket, so both always agree.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::{CliError, CliResult};

/// Builds the client configuration: certificates are verified against the
/// platform's roots (on Linux the system store, `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` honoured) and the CA certificates in `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> CliResult<rustls::ClientConfig> {
    let extra = match ca_file {
        Some(path) => load_cas(path)?,
        None => Vec::new(),
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = if extra.is_empty() {
        rustls_platform_verifier::Verifier::new(provider.clone())
    } else {
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
    }
    .map_err(|e| {
        CliError::new(format!("cannot set up certificate verification: {e}"))
            .hint("check AIRLOCK_CA_FILE and the system's CA certificates (ca-certificates)")
    })?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CliError::new(format!("cannot set up TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

fn load_cas(path: &Path) -> CliResult<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).map_err(|e| {
        CliError::new(format!(
            "cannot read AIRLOCK_CA_FILE {}: {e}",
            path.display()
        ))
        .hint("set AIRLOCK_CA_FILE to a readable PEM file with the CA certificate(s) the gateway's certificate is issued by")
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            CliError::new(format!(
                "AIRLOCK_CA_FILE {} is not PEM certificates: {e}",
                path.display()
            ))
            .hint("it must hold one or more -----BEGIN CERTIFICATE----- blocks")
        })?;
    if certs.is_empty() {
        return Err(CliError::new(format!(
            "AIRLOCK_CA_FILE {} holds no certificate",
            path.display()
        ))
        .hint("it must hold one or more -----BEGIN CERTIFICATE----- blocks"));
    }
    Ok(certs)
}

/// The TLS failure somewhere in `e`'s chain (also inside an `io::Error`,
/// whose `source()` skips the error it wraps), if any.
pub fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(describe(r));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                return Some(describe(r));
            }
            if let Some(found) = tls_failure(inner) {
                return Some(found);
            }
        }
        cur = err.source();
    }
    None
}

fn describe(e: &rustls::Error) -> String {
    use rustls::{CertificateError, Error};
    match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "its certificate is not issued by a CA this machine trusts".to_owned()
        }
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            "its certificate does not name this host".to_owned()
        }
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "its certificate has expired".to_owned(),
        other => other.to_string(),
    }
}

/// The `error:`/`hint:` for a gateway whose certificate was refused.
pub fn verification_error(endpoint: &str, reason: &str) -> CliError {
    CliError::new(format!(
        "cannot verify the TLS certificate of {endpoint}: {reason}"
    ))
    .hint("if the gateway's certificate comes from a private CA, set AIRLOCK_CA_FILE=/path/to/ca.pem (in the environment or .env); otherwise fix the gateway's certificate")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_problems_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = client_config(Some(&missing)).unwrap_err();
        assert!(e.message.contains("AIRLOCK_CA_FILE"), "{e:?}");
        assert!(e.hint.is_some());
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let e = client_config(Some(&empty)).unwrap_err();
        assert!(e.message.contains("no certificate"), "{e:?}");
    }

    #[test]
    fn finds_rustls_errors_inside_io_errors() {
        let inner = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, inner);
        let found = tls_failure(&io).unwrap();
        assert!(found.contains("not issued by a CA"), "{found}");
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(tls_failure(&plain).is_none());
    }
}
