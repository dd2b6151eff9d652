//! JSON shapes of the gateway API that airlock's own CLI and web UI use.
//! (Backend.AI-compatible shapes that only the official client needs live in
//! the gateway, next to the handlers that produce them.)

use serde::{Deserialize, Serialize};

/// `GET /` and `GET /func/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// API version (`v9.20250722`).
    pub version: String,
    /// Server name and version (`airlock 0.1.0`).
    pub manager: String,
}

/// Account data returned by a successful login and by `login-check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountInfo {
    /// Login email.
    pub email: String,
    /// `admin` or `user`.
    pub role: String,
    /// `active` or `inactive`.
    pub status: String,
    /// The user's API access key.
    pub access_key: String,
    /// Same as `role == "admin"`.
    pub is_admin: bool,
}

/// `POST /server/login` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    /// Whether the credentials were accepted.
    pub authenticated: bool,
    /// [`AccountInfo`] on success, `{type,title,details}` on failure.
    pub data: serde_json::Value,
}

/// `GET /server/login-check` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginCheck {
    /// Whether the cookie belongs to a live session.
    pub authenticated: bool,
    /// [`AccountInfo`] when authenticated, `{}` otherwise.
    pub data: serde_json::Value,
    /// The web session id when authenticated.
    pub session_id: Option<String>,
}

/// A user's settings (`GET /user/settings`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSettings {
    /// Preferred local port for SSH/SFTP proxies, if set.
    pub ssh_port: Option<u16>,
}

/// `PATCH /user/settings` body. `ssh_port` may be a number, a numeric string,
/// `0`, `""` or `null` (the last three clear it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserSettingsUpdate {
    /// New preferred port; absent leaves it unchanged, `null` clears it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub ssh_port: Option<serde_json::Value>,
}

/// Maps a present field (even `null`) to `Some`, so that absent and `null`
/// differ.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// `PATCH /user/settings` response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSettingsSaved {
    /// The settings now in effect.
    pub settings: UserSettings,
    /// Advice about the accepted values (e.g. a port outside the recommended range).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// An SSH public key registered on an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshKeyInfo {
    /// Stable id (UUID).
    pub id: String,
    /// User-chosen name.
    pub name: String,
    /// Key algorithm.
    pub algorithm: String,
    /// `SHA256:…`.
    pub fingerprint: String,
    /// The public key line.
    pub public_key: String,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// `POST /user/ssh-keys` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddSshKey {
    /// A name for the key (defaults to its comment).
    #[serde(default)]
    pub name: Option<String>,
    /// The public key line.
    pub public_key: String,
}
