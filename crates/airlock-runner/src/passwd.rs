//! Minimal `/etc/passwd` and `/etc/group` handling.
//!
//! The runner is a static binary: glibc's NSS (`getpwnam`) must not be used, so
//! the account databases are parsed and edited here directly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One `/etc/passwd` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// Password field (usually `x`).
    pub passwd: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// GECOS field.
    pub gecos: String,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
}

impl PasswdEntry {
    /// Parse one line; `None` for comments and malformed lines.
    pub fn parse(line: &str) -> Option<Self> {
        if line.starts_with('#') || line.trim().is_empty() {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        if f.len() != 7 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0].to_string(),
            passwd: f[1].to_string(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            gecos: f[4].to_string(),
            home: f[5].to_string(),
            shell: f[6].to_string(),
        })
    }

    /// Format as a passwd line (without newline).
    pub fn to_line(&self) -> String {
        format!(
            "{}:{}:{}:{}:{}:{}:{}",
            self.name, self.passwd, self.uid, self.gid, self.gecos, self.home, self.shell
        )
    }
}

/// One `/etc/group` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Password field.
    pub passwd: String,
    /// Group id.
    pub gid: u32,
    /// Member list (comma separated, unparsed).
    pub members: String,
}

impl GroupEntry {
    /// Parse one line; `None` for comments and malformed lines.
    pub fn parse(line: &str) -> Option<Self> {
        if line.starts_with('#') || line.trim().is_empty() {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        if f.len() != 4 {
            return None;
        }
        Some(GroupEntry {
            name: f[0].to_string(),
            passwd: f[1].to_string(),
            gid: f[2].parse().ok()?,
            members: f[3].to_string(),
        })
    }

    /// Format as a group line (without newline).
    pub fn to_line(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.name, self.passwd, self.gid, self.members
        )
    }
}

/// Path of `etc/passwd` under `root`.
pub fn passwd_path(root: &Path) -> PathBuf {
    root.join("etc/passwd")
}

/// Path of `etc/group` under `root`.
pub fn group_path(root: &Path) -> PathBuf {
    root.join("etc/group")
}

/// Read all parseable entries of a passwd file (missing file: empty).
pub fn read_passwd(path: &Path) -> Result<Vec<PasswdEntry>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s.lines().filter_map(PasswdEntry::parse).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::path("read", path, e)),
    }
}

/// Read all parseable entries of a group file (missing file: empty).
pub fn read_group(path: &Path) -> Result<Vec<GroupEntry>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s.lines().filter_map(GroupEntry::parse).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::path("read", path, e)),
    }
}

/// Look a user up by name in `/etc/passwd` (no NSS).
pub fn user_by_name(name: &str) -> Option<PasswdEntry> {
    read_passwd(Path::new("/etc/passwd"))
        .ok()?
        .into_iter()
        .find(|e| e.name == name)
}

/// Look a user up by uid in `/etc/passwd` (no NSS).
pub fn user_by_uid(uid: u32) -> Option<PasswdEntry> {
    read_passwd(Path::new("/etc/passwd"))
        .ok()?
        .into_iter()
        .find(|e| e.uid == uid)
}

/// uid -> name and gid -> name maps (for `ls -l` style listings).
#[derive(Debug, Default, Clone)]
pub struct NameMaps {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl NameMaps {
    /// Load from `/etc/passwd` and `/etc/group`; missing files give numeric names.
    pub fn load() -> Self {
        let mut m = NameMaps::default();
        for e in read_passwd(Path::new("/etc/passwd")).unwrap_or_default() {
            m.users.entry(e.uid).or_insert(e.name);
        }
        for g in read_group(Path::new("/etc/group")).unwrap_or_default() {
            m.groups.entry(g.gid).or_insert(g.name);
        }
        m
    }

    /// User name for a uid (numeric if unknown).
    pub fn user(&self, uid: u32) -> String {
        self.users
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }

    /// Group name for a gid (numeric if unknown).
    pub fn group(&self, gid: u32) -> String {
        self.groups
            .get(&gid)
            .cloned()
            .unwrap_or_else(|| gid.to_string())
    }
}

/// The shell to use for an account: the passwd shell if it exists, else
/// `/bin/bash` or `/bin/sh` under `root`.
pub fn usable_shell(root: &Path, preferred: Option<&str>) -> String {
    if let Some(p) = preferred
        && !p.is_empty()
        && exists_under(root, p)
        && !p.ends_with("nologin")
        && !p.ends_with("/false")
    {
        return p.to_string();
    }
    if exists_under(root, "/bin/bash") {
        "/bin/bash".to_string()
    } else {
        "/bin/sh".to_string()
    }
}

/// Whether absolute path `p` exists under `root`.
pub fn exists_under(root: &Path, p: &str) -> bool {
    root.join(p.trim_start_matches('/')).exists()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn passwd_roundtrip() {
        let l = "work:x:1000:1000:Work User:/home/work:/bin/bash";
        let e = PasswdEntry::parse(l).unwrap();
        assert_eq!(e.uid, 1000);
        assert_eq!(e.to_line(), l);
        assert!(PasswdEntry::parse("# comment").is_none());
        assert!(PasswdEntry::parse("bad:line").is_none());
    }

    #[test]
    fn group_roundtrip() {
        let l = "work:x:1000:a,b";
        let g = GroupEntry::parse(l).unwrap();
        assert_eq!(g.gid, 1000);
        assert_eq!(g.to_line(), l);
    }
}
