//! Error bodies in the problem+json shape the Backend.AI client expects.
//!
//! The official CLI indexes `title` and `type` directly, so both are always
//! present; `msg` carries the human explanation and `hint` (our addition) what
//! to do about it.

use serde::{Deserialize, Serialize};

/// Prefix of every problem `type` URI (kept identical to Backend.AI's so that
/// the official client's special cases keep working).
pub const PROBLEM_BASE: &str = "https://api.backend.ai/probs/";

/// A JSON problem body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `https://api.backend.ai/probs/<slug>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short, fixed summary of the problem class.
    pub title: String,
    /// What exactly went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    /// What the user can do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Extra machine-readable data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Problem {
    /// A problem of class `slug` with a title.
    pub fn new(slug: &str, title: impl Into<String>) -> Self {
        Self {
            kind: format!("{PROBLEM_BASE}{slug}"),
            title: title.into(),
            msg: None,
            hint: None,
            data: None,
        }
    }

    /// Adds the detailed message.
    pub fn msg(mut self, msg: impl Into<String>) -> Self {
        self.msg = Some(msg.into());
        self
    }

    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds machine-readable data.
    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(data);
        self
    }

    /// The slug after [`PROBLEM_BASE`] (`auth-failed`, …).
    pub fn slug(&self) -> &str {
        self.kind.strip_prefix(PROBLEM_BASE).unwrap_or(&self.kind)
    }

    /// The best one-line description: `msg` if present, else `title`.
    pub fn message(&self) -> &str {
        self.msg.as_deref().unwrap_or(&self.title)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_type_and_title() {
        let p = Problem::new("auth-failed", "Unauthorized access").msg("bad cookie");
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "https://api.backend.ai/probs/auth-failed");
        assert_eq!(v["title"], "Unauthorized access");
        assert_eq!(v["msg"], "bad cookie");
        assert!(v.get("hint").is_none());
        assert_eq!(p.slug(), "auth-failed");
    }
}
