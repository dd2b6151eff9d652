//! PuTTY private key files (PPK v3, unencrypted), so that PuTTY, FileZilla and
//! WinSCP users can use a session key without converting it in PuTTYgen.
//!
//! The ssh-key crate reads PPK but cannot write it, and the format is small:
//! header lines, the public blob and the private blob in base64 (64 columns),
//! and `Private-MAC`, an HMAC-SHA-256 with an empty key (no passphrase) over
//! the SSH-string encodings of algorithm, encryption, comment, public blob and
//! private blob.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use ssh_key::PrivateKey;
use ssh_key::private::KeypairData;

/// Why a key cannot be written as PPK.
#[derive(Debug, thiserror::Error)]
pub enum PpkError {
    /// The OpenSSH private key could not be parsed.
    #[error("not an OpenSSH private key: {0}")]
    Parse(String),
    /// The key is protected by a passphrase.
    #[error("the key is encrypted; decrypt it first")]
    Encrypted,
    /// Not an ed25519, ECDSA or RSA key.
    #[error("unsupported key type {0} for PPK export")]
    Unsupported(String),
}

fn put_string(out: &mut Vec<u8>, data: &[u8]) {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
}

fn lines(data: &[u8]) -> Vec<String> {
    let b64 = STANDARD.encode(data);
    b64.as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

/// Converts an OpenSSH private key (PEM text) into PPK v3 text. `comment`
/// overrides the key's own comment when given.
pub fn openssh_to_ppk(openssh: &str, comment: Option<&str>) -> Result<String, PpkError> {
    let key = PrivateKey::from_openssh(openssh).map_err(|e| PpkError::Parse(e.to_string()))?;
    if key.is_encrypted() {
        return Err(PpkError::Encrypted);
    }
    let algorithm = key.algorithm().as_str().to_owned();
    let public_blob = key
        .public_key()
        .to_bytes()
        .map_err(|e| PpkError::Parse(e.to_string()))?;
    let mut private_blob = Vec::new();
    match key.key_data() {
        KeypairData::Ed25519(kp) => put_string(&mut private_blob, &kp.private.to_bytes()),
        KeypairData::Rsa(kp) => {
            let p = kp.private();
            for m in [p.d(), p.p(), p.q(), p.iqmp()] {
                put_string(&mut private_blob, m.as_bytes());
            }
        }
        KeypairData::Ecdsa(kp) => {
            let scalar = kp.private_key_bytes();
            // An mpint: big-endian, with a leading zero when the top bit is set.
            let mut m = Vec::with_capacity(scalar.len() + 1);
            if scalar.first().is_some_and(|b| b & 0x80 != 0) {
                m.push(0);
            }
            m.extend_from_slice(scalar);
            put_string(&mut private_blob, &m);
        }
        _ => return Err(PpkError::Unsupported(algorithm)),
    }
    let own_comment: &str = key.comment().as_ref();
    let comment = comment.unwrap_or(own_comment);
    let encryption = "none";

    let mut mac_input = Vec::new();
    put_string(&mut mac_input, algorithm.as_bytes());
    put_string(&mut mac_input, encryption.as_bytes());
    put_string(&mut mac_input, comment.as_bytes());
    put_string(&mut mac_input, &public_blob);
    put_string(&mut mac_input, &private_blob);
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&[]) else {
        return Err(PpkError::Unsupported(algorithm));
    };
    mac.update(&mac_input);
    let mac = hex::encode(mac.finalize().into_bytes());

    let public_lines = lines(&public_blob);
    let private_lines = lines(&private_blob);
    let mut out = String::new();
    out.push_str(&format!("PuTTY-User-Key-File-3: {algorithm}\n"));
    out.push_str(&format!("Encryption: {encryption}\n"));
    out.push_str(&format!("Comment: {comment}\n"));
    out.push_str(&format!("Public-Lines: {}\n", public_lines.len()));
    for l in &public_lines {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str(&format!("Private-Lines: {}\n", private_lines.len()));
    for l in &private_lines {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str(&format!("Private-MAC: {mac}\n"));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated with `ssh-keygen -t ed25519 -N '' -C test` and converted with
    // `puttygen KEY -O private -o KEY.ppk` (PuTTY 0.78): the expected output.
    const OPENSSH: &str = include_str!("../testdata/ed25519");
    const PUTTYGEN: &str = include_str!("../testdata/ed25519.ppk");

    #[test]
    fn matches_puttygen_byte_for_byte() {
        let ppk = openssh_to_ppk(OPENSSH, None).unwrap();
        assert_eq!(ppk.replace("\r\n", "\n"), PUTTYGEN.replace("\r\n", "\n"));
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            openssh_to_ppk("nope", None),
            Err(PpkError::Parse(_))
        ));
    }
}
