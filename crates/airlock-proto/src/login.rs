//! The login body of Backend.AI's web server protocol.
//!
//! Over plain http the official client does not send the password in clear
//! JSON: it sends `X-BackendAI-Encoded: true` and a body
//! `IV ":" base64(AES-256-CBC(PKCS7(json)))`, where IV is 16 random
//! alphanumeric characters used raw as the CBC IV and the key is the first 32
//! bytes of `base64(endpoint) + IV + IV`. The endpoint string is the URL the
//! client was configured with (`http://host:port`, no trailing slash unless the
//! user wrote one). This is obfuscation, not security: use https.

use aes::Aes256;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use rand::RngExt;
use serde::{Deserialize, Serialize};

/// Header that marks an encrypted body.
pub const ENCODED_HEADER: &str = "X-BackendAI-Encoded";

const IV_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Why an encrypted body could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoginBodyError {
    /// The body is not `IV:base64`.
    #[error("the encrypted body must be IV:BASE64 with a 16-character IV")]
    Shape,
    /// The base64 part does not decode.
    #[error("the encrypted body is not valid base64")]
    Base64,
    /// Decryption failed (wrong endpoint string or corrupt body).
    #[error("the encrypted body could not be decrypted")]
    Decrypt,
}

/// The JSON the client logs in with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRequest {
    /// Email address (Backend.AI's guide calls it "User ID").
    pub username: String,
    /// The password.
    pub password: String,
    /// One-time password, when asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otp: Option<String>,
}

fn key_for(endpoint: &str, iv: &[u8]) -> Vec<u8> {
    let mut key = STANDARD.encode(endpoint.as_bytes()).into_bytes();
    key.extend_from_slice(iv);
    key.extend_from_slice(iv);
    key.truncate(32);
    key
}

/// Encrypts `body` for `endpoint` the way the official client does.
pub fn encrypt(endpoint: &str, body: &[u8]) -> String {
    let mut rng = rand::rng();
    let iv: Vec<u8> = (0..16)
        .map(|_| IV_ALPHABET[rng.random_range(0..IV_ALPHABET.len())])
        .collect();
    encrypt_with_iv(endpoint, body, &iv)
}

fn encrypt_with_iv(endpoint: &str, body: &[u8], iv: &[u8]) -> String {
    let key = key_for(endpoint, iv);
    let Ok(cipher) = cbc::Encryptor::<Aes256>::new_from_slices(&key, iv) else {
        // Unreachable: the key is always 32 bytes (base64 of a URL plus 32 IV
        // bytes is longer than 32) and the IV 16.
        return String::new();
    };
    let ct = cipher.encrypt_padded_vec::<Pkcs7>(body);
    format!("{}:{}", String::from_utf8_lossy(iv), STANDARD.encode(ct))
}

/// Decrypts a body encrypted for `endpoint`.
pub fn decrypt(endpoint: &str, payload: &[u8]) -> Result<Vec<u8>, LoginBodyError> {
    let payload = trim_ascii(payload);
    let pos = payload
        .iter()
        .position(|b| *b == b':')
        .ok_or(LoginBodyError::Shape)?;
    let (iv, rest) = payload.split_at(pos);
    let data = rest.get(1..).ok_or(LoginBodyError::Shape)?;
    if iv.len() != 16 {
        return Err(LoginBodyError::Shape);
    }
    let ct = STANDARD.decode(data).map_err(|_| LoginBodyError::Base64)?;
    let key = key_for(endpoint, iv);
    let cipher =
        cbc::Decryptor::<Aes256>::new_from_slices(&key, iv).map_err(|_| LoginBodyError::Decrypt)?;
    cipher
        .decrypt_padded_vec::<Pkcs7>(&ct)
        .map_err(|_| LoginBodyError::Decrypt)
}

/// Decrypts trying several spellings of the endpoint (with and without a
/// trailing slash, http and https) and returns the first that yields a JSON
/// login request. The official web server only tries `scheme://host`, so a
/// client configured with `http://host/` could never log in there.
pub fn decrypt_login(
    candidates: &[String],
    payload: &[u8],
) -> Result<LoginRequest, LoginBodyError> {
    for endpoint in candidates {
        if let Ok(plain) = decrypt(endpoint, payload)
            && let Ok(req) = serde_json::from_slice::<LoginRequest>(&plain)
        {
            return Ok(req);
        }
    }
    Err(LoginBodyError::Decrypt)
}

/// Candidate endpoint strings for a request that arrived with this Host
/// header, preferred scheme first.
pub fn endpoint_candidates(scheme: &str, host: &str) -> Vec<String> {
    let other = if scheme == "https" { "http" } else { "https" };
    let mut out = Vec::with_capacity(4);
    for s in [scheme, other] {
        out.push(format!("{s}://{host}"));
        out.push(format!("{s}://{host}/"));
    }
    out
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    b.get(start..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Produced with the client's algorithm (Python + openssl).
    const VECTOR: &str = "ABCDEFGHabcdefgh:MBQmwACFZrkiJPM/hNW+CfOFn4VEi4lfmlZFm75WxbuTzINxLdQSg+qNzwJUC3H1JtaZ0Qs9oz4UcyPoPZsE6Q==";
    const BODY: &str = r#"{"username": "admin@airlock.local", "password": "pw"}"#;

    #[test]
    fn matches_reference_vector() {
        assert_eq!(
            encrypt_with_iv(
                "http://127.0.0.1:8090",
                BODY.as_bytes(),
                b"ABCDEFGHabcdefgh"
            ),
            VECTOR
        );
        let plain = decrypt("http://127.0.0.1:8090", VECTOR.as_bytes()).unwrap();
        assert_eq!(plain, BODY.as_bytes());
    }

    #[test]
    fn round_trip_random_iv() {
        let enc = encrypt("http://h:1/", b"hello");
        assert_eq!(decrypt("http://h:1/", enc.as_bytes()).unwrap(), b"hello");
    }

    #[test]
    fn candidates_cover_trailing_slash() {
        let enc = encrypt("http://127.0.0.1:8090/", BODY.as_bytes());
        let req = decrypt_login(
            &endpoint_candidates("http", "127.0.0.1:8090"),
            enc.as_bytes(),
        )
        .unwrap();
        assert_eq!(req.username, "admin@airlock.local");
        assert_eq!(req.password, "pw");
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(decrypt("http://h", b"nocolon"), Err(LoginBodyError::Shape));
        assert_eq!(
            decrypt("http://h", b"short:AAAA"),
            Err(LoginBodyError::Shape)
        );
        assert_eq!(
            decrypt("http://h", b"ABCDEFGHabcdefgh:%%%"),
            Err(LoginBodyError::Base64)
        );
        assert!(
            decrypt_login(
                &["http://h".into()],
                b"ABCDEFGHabcdefgh:AAAAAAAAAAAAAAAAAAAAAA=="
            )
            .is_err()
        );
    }
}
