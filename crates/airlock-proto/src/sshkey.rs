//! SSH public keys as users paste them (account keys, `.ssh/authorized_keys`).

use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey};

/// A validated public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    /// `ssh-ed25519`, `ssh-rsa`, `ecdsa-sha2-nistp256`, …
    pub algorithm: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The comment, if any.
    pub comment: String,
    /// The canonical one-line form `type base64 [comment]`.
    pub line: String,
}

/// Why a pasted key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Nothing was given.
    #[error("the public key is empty")]
    Empty,
    /// A private key was pasted.
    #[error("this is a private key, not a public key")]
    Private,
    /// The line does not parse.
    #[error("not a valid OpenSSH public key: {0}")]
    Malformed(String),
    /// A weak or obsolete key type.
    #[error("{0}")]
    Weak(String),
}

impl KeyError {
    /// What the user should do instead.
    pub fn hint(&self) -> &'static str {
        match self {
            KeyError::Private => {
                "paste the contents of the .pub file (e.g. ~/.ssh/id_ed25519.pub); never share the private key"
            }
            KeyError::Weak(_) => "generate a modern key with: ssh-keygen -t ed25519",
            _ => "paste one line like 'ssh-ed25519 AAAAC3Nza... you@laptop' from your .pub file",
        }
    }
}

/// Whether `input` looks like a private key (OpenSSH/PEM or PuTTY), which
/// must never be stored or echoed back.
pub fn looks_private(input: &str) -> bool {
    input.contains("PRIVATE KEY") || input.contains("PuTTY-User-Key-File")
}

/// Parses one OpenSSH public key line (`type base64 [comment]`).
pub fn parse_public_key(input: &str) -> Result<ParsedKey, KeyError> {
    let line = input.trim();
    if line.is_empty() {
        return Err(KeyError::Empty);
    }
    if looks_private(line) {
        return Err(KeyError::Private);
    }
    if line.lines().count() > 1 {
        return Err(KeyError::Malformed(
            "expected a single line, got several".into(),
        ));
    }
    let key = PublicKey::from_openssh(line).map_err(|e| KeyError::Malformed(e.to_string()))?;
    match key.key_data() {
        KeyData::Dsa(_) => {
            return Err(KeyError::Weak(
                "DSA keys are obsolete and refused by modern OpenSSH".into(),
            ));
        }
        KeyData::Rsa(rsa) if rsa.key_size() < 2048 => {
            return Err(KeyError::Weak(format!(
                "RSA keys must have at least 2048 bits (this one has {})",
                rsa.key_size()
            )));
        }
        _ => {}
    }
    let comment: &str = key.comment().as_ref();
    let comment = comment.to_owned();
    let mut canonical = key.clone();
    canonical.set_comment("");
    let body = canonical
        .to_openssh()
        .map_err(|e| KeyError::Malformed(e.to_string()))?;
    let line = if comment.is_empty() {
        body.trim().to_owned()
    } else {
        format!("{} {comment}", body.trim())
    };
    Ok(ParsedKey {
        algorithm: key.algorithm().as_str().to_owned(),
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        comment,
        line,
    })
}

/// Fingerprint of a public key line, or `None` if it does not parse.
pub fn fingerprint(line: &str) -> Option<String> {
    PublicKey::from_openssh(line.trim())
        .ok()
        .map(|k| k.fingerprint(HashAlg::Sha256).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILGDGCepR3g7zolW5aQ2fg/uizIPWnjMnm53e8FOcNb1 test";

    #[test]
    fn parses_ed25519() {
        let k = parse_public_key(&format!("  {ED}\n")).unwrap();
        assert_eq!(k.algorithm, "ssh-ed25519");
        assert_eq!(k.comment, "test");
        assert_eq!(k.line, ED);
        assert!(k.fingerprint.starts_with("SHA256:"));
        assert_eq!(fingerprint(ED), Some(k.fingerprint));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse_public_key("  "), Err(KeyError::Empty));
        assert_eq!(
            parse_public_key("-----BEGIN OPENSSH PRIVATE KEY-----"),
            Err(KeyError::Private)
        );
        assert!(matches!(
            parse_public_key("ssh-ed25519 notbase64"),
            Err(KeyError::Malformed(_))
        ));
        assert!(matches!(
            parse_public_key("hello world"),
            Err(KeyError::Malformed(_))
        ));
        assert!(matches!(
            parse_public_key(&format!("{ED}\n{ED}")),
            Err(KeyError::Malformed(_))
        ));
    }
}
