//! The Backend.AI keypair request signature (`Authorization: BackendAI
//! signMethod=HMAC-SHA256, credential=AK:SIG`).
//!
//! The string to sign is, newline-joined: method, raw request target (path and
//! query exactly as sent), the `Date` header verbatim, `host:<Host header>`,
//! `content-type:<lower-cased mime without parameters>`,
//! `x-backendai-version:<version>`, and the hex SHA-256 of the empty string
//! (bodies are not hashed since v4.20181215). The key is derived as
//! `HMAC(HMAC(secret, YYYYMMDD of the date), host)`.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// How far a request's date may be from the server clock.
pub const MAX_CLOCK_SKEW_SECS: i64 = 15 * 60;

/// Errors in the `Authorization` header or the signed request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    /// The header does not start with `BackendAI` or `Sorna`.
    #[error("the Authorization header must use the BackendAI scheme")]
    Scheme,
    /// `signMethod` or `credential` is missing or malformed.
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    /// Only HMAC-SHA256 is implemented.
    #[error("unsupported signature method {0:?} (use HMAC-SHA256)")]
    Method(String),
    /// The `Date` header is missing or cannot be parsed.
    #[error("missing or unparsable Date header")]
    Date,
}

/// A parsed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The access key that claims to have signed.
    pub access_key: String,
    /// Hex signature as sent.
    pub signature: String,
}

/// Everything the signature covers.
#[derive(Debug, Clone, Copy)]
pub struct SignedParts<'a> {
    /// HTTP method (any case).
    pub method: &'a str,
    /// Raw request target: path plus `?query` when there is one.
    pub target: &'a str,
    /// The date header value, verbatim.
    pub date: &'a str,
    /// `host[:port]` as in the Host header.
    pub host: &'a str,
    /// The Content-Type header value (parameters are dropped here).
    pub content_type: &'a str,
    /// `X-BackendAI-Version` value.
    pub api_version: &'a str,
}

impl SignedParts<'_> {
    /// The exact string that is signed.
    pub fn string_to_sign(&self) -> String {
        let mime = self
            .content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let mime = if mime.is_empty() {
            "application/octet-stream".to_owned()
        } else {
            mime
        };
        let body_hash = hex::encode(Sha256::digest(b""));
        format!(
            "{}\n{}\n{}\nhost:{}\ncontent-type:{}\nx-backendai-version:{}\n{}",
            self.method.to_ascii_uppercase(),
            self.target,
            self.date,
            self.host,
            mime,
            self.api_version,
            body_hash
        )
    }

    /// Hex HMAC-SHA256 signature with `secret_key`.
    pub fn sign(&self, secret_key: &str) -> Result<String, SignError> {
        let date = parse_date(self.date)?;
        let day = date.format("%Y%m%d").to_string();
        let k1 = hmac(secret_key.as_bytes(), day.as_bytes());
        let k2 = hmac(&k1, self.host.as_bytes());
        Ok(hex::encode(hmac(&k2, self.string_to_sign().as_bytes())))
    }

    /// Whether `signature` (hex) is the right one for `secret_key`, compared
    /// in constant time.
    pub fn verify(&self, secret_key: &str, signature: &str) -> bool {
        match self.sign(secret_key) {
            Ok(expected) => {
                let expected = expected.as_bytes();
                let given = signature.trim().to_ascii_lowercase();
                expected.len() == given.len() && bool::from(expected.ct_eq(given.as_bytes()))
            }
            Err(_) => false,
        }
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The `Authorization` header value for a signature.
pub fn authorization_header(access_key: &str, signature: &str) -> String {
    format!("BackendAI signMethod=HMAC-SHA256, credential={access_key}:{signature}")
}

/// Parses `BackendAI signMethod=HMAC-SHA256, credential=AK:SIG` (the legacy
/// `Sorna` scheme is accepted too).
pub fn parse_authorization(value: &str) -> Result<Credential, SignError> {
    let value = value.trim();
    let (scheme, params) = value.split_once(' ').ok_or(SignError::Scheme)?;
    if scheme != "BackendAI" && scheme != "Sorna" {
        return Err(SignError::Scheme);
    }
    let mut method = None;
    let mut credential = None;
    for param in params.split(',') {
        let Some((k, v)) = param.split_once('=') else {
            return Err(SignError::Malformed("parameters must be key=value"));
        };
        match k.trim() {
            "signMethod" => method = Some(v.trim()),
            "credential" => credential = Some(v.trim()),
            _ => {}
        }
    }
    let method = method.ok_or(SignError::Malformed("signMethod is missing"))?;
    if !method.eq_ignore_ascii_case("HMAC-SHA256") {
        return Err(SignError::Method(method.to_owned()));
    }
    let credential = credential.ok_or(SignError::Malformed("credential is missing"))?;
    let (ak, sig) = credential.split_once(':').ok_or(SignError::Malformed(
        "credential must be ACCESS_KEY:SIGNATURE",
    ))?;
    if ak.is_empty() || sig.is_empty() {
        return Err(SignError::Malformed(
            "credential must be ACCESS_KEY:SIGNATURE",
        ));
    }
    Ok(Credential {
        access_key: ak.to_owned(),
        signature: sig.to_owned(),
    })
}

/// Parses a request date the way the Backend.AI manager does (dateutil):
/// ISO 8601 with or without offset (naive means UTC), or an RFC 2822/HTTP date.
pub fn parse_date(value: &str) -> Result<DateTime<FixedOffset>, SignError> {
    let value = value.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(value) {
        return Ok(d);
    }
    if let Ok(d) = DateTime::parse_from_rfc2822(value) {
        return Ok(d);
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(value, fmt) {
            return Ok(Utc.from_utc_datetime(&n).fixed_offset());
        }
    }
    if let Ok(d) = DateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Ok(d);
    }
    Err(SignError::Date)
}

/// Whether `date` is within [`MAX_CLOCK_SKEW_SECS`] of `now`.
pub fn date_in_window(date: &DateTime<FixedOffset>, now: DateTime<Utc>) -> bool {
    (now.timestamp() - date.timestamp()).abs() <= MAX_CLOCK_SKEW_SECS
}

/// Today's date header in the client's format (ISO 8601, microseconds, UTC).
pub fn format_date(now: DateTime<Utc>) -> String {
    now.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>(date: &'a str, target: &'a str) -> SignedParts<'a> {
        SignedParts {
            method: "get",
            target,
            date,
            host: "127.0.0.1:8090",
            content_type: "application/json; charset=utf-8",
            api_version: "v9.20250722",
        }
    }

    #[test]
    fn string_to_sign_layout() {
        let s = parts("2026-11-29T22:50:54.421485+00:00", "/session?x=1").string_to_sign();
        assert_eq!(
            s,
            "GET\n/session?x=1\n2026-11-29T22:50:54.421485+00:00\nhost:127.0.0.1:8090\n\
             content-type:application/json\nx-backendai-version:v9.20250722\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    /// Reference value computed with Backend.AI's own Python algorithm
    /// (`ai.backend.common.auth.utils.generate_signature`).
    #[test]
    fn matches_python_reference() {
        let p = SignedParts {
            method: "GET",
            target: "/func/session",
            date: "2026-11-29T22:50:54.421485+00:00",
            host: "127.0.0.1:8090",
            content_type: "text/plain",
            api_version: "v9.20250722",
        };
        let sig = p.sign("abcdefghijklmnopqrstuvwxyz0123456789ABCD").unwrap();
        assert_eq!(
            sig,
            "054303a87e773a93453c18434f54964a9ad985b69fd8f9456fd7e66e3adc7d1e"
        );
        assert_eq!(sig.len(), 64);
        assert!(p.verify("abcdefghijklmnopqrstuvwxyz0123456789ABCD", &sig));
        assert!(!p.verify("wrong-secret", &sig));
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let date = "2026-11-29T22:50:54.421485+00:00";
        let sig = parts(date, "/session").sign("s3cret").unwrap();
        assert!(parts(date, "/session").verify("s3cret", &sig));
        assert!(!parts(date, "/session/other").verify("s3cret", &sig));
        assert!(!parts("2026-11-29T22:50:55.421485+00:00", "/session").verify("s3cret", &sig));
    }

    #[test]
    fn parses_headers() {
        let c = parse_authorization(
            "BackendAI signMethod=HMAC-SHA256, credential=AKIAEXAMPLE:deadbeef",
        )
        .unwrap();
        assert_eq!(c.access_key, "AKIAEXAMPLE");
        assert_eq!(c.signature, "deadbeef");
        assert_eq!(parse_authorization("Bearer x"), Err(SignError::Scheme));
        assert!(matches!(
            parse_authorization("BackendAI signMethod=HMAC-MD5, credential=a:b"),
            Err(SignError::Method(_))
        ));
        assert!(parse_authorization("BackendAI signMethod=HMAC-SHA256").is_err());
    }

    #[test]
    fn parses_dates() {
        assert!(parse_date("2026-11-29T22:50:54.421485+00:00").is_ok());
        assert!(parse_date("2026-11-29T22:50:54").is_ok());
        assert!(parse_date("Sun, 29 Nov 2026 22:50:54 GMT").is_ok());
        assert!(parse_date("yesterday").is_err());
        let now = Utc::now();
        let d = parse_date(&format_date(now)).unwrap();
        assert!(date_in_window(&d, now));
        let old = now - chrono::Duration::minutes(16);
        assert!(!date_in_window(
            &parse_date(&format_date(old)).unwrap(),
            now
        ));
    }
}
