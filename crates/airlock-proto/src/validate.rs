//! Validation rules for user input, shared by the gateway (which enforces
//! them) and the CLI (which checks early to give a faster, local error).

/// Lowest preferred SSH port accepted.
pub const SSH_PORT_MIN: u16 = 1025;
/// Highest preferred SSH port accepted.
pub const SSH_PORT_MAX: u16 = 65534;
/// Recommended range for the preferred SSH port (as the user guide says).
pub const SSH_PORT_RECOMMENDED: (u16, u16) = (10000, 65000);

/// A rejected input: what was wrong and what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    /// What was wrong.
    pub message: String,
    /// What to do instead.
    pub hint: String,
}

impl Invalid {
    fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: hint.into(),
        }
    }
}

/// The outcome of parsing a preferred-port value: `None` clears the setting.
pub type PortSetting = Option<u16>;

/// Parses a preferred SSH port as typed by a user: empty or `0` clears it.
pub fn parse_ssh_port(raw: &str) -> Result<PortSetting, Invalid> {
    let raw = raw.trim();
    if raw.is_empty() || raw == "0" {
        return Ok(None);
    }
    let n: u32 = raw.parse().map_err(|_| {
        Invalid::new(
            format!("preferred SSH port {raw:?} is not a number"),
            port_hint(),
        )
    })?;
    check_ssh_port(n).map(Some)
}

/// Checks a numeric preferred SSH port (`0` is handled by the caller).
pub fn check_ssh_port(n: u32) -> Result<u16, Invalid> {
    match u16::try_from(n) {
        Ok(p) if (SSH_PORT_MIN..=SSH_PORT_MAX).contains(&p) => Ok(p),
        _ => Err(Invalid::new(
            format!(
                "preferred SSH port {n} is out of range: it must be between {SSH_PORT_MIN} and {SSH_PORT_MAX}"
            ),
            port_hint(),
        )),
    }
}

/// A warning for accepted ports outside the recommended range.
pub fn ssh_port_warning(p: u16) -> Option<String> {
    let (lo, hi) = SSH_PORT_RECOMMENDED;
    if p < lo || p > hi {
        Some(format!(
            "port {p} is outside the recommended range {lo}-{hi}; it may collide with other services or with ephemeral ports"
        ))
    } else {
        None
    }
}

fn port_hint() -> String {
    let (lo, hi) = SSH_PORT_RECOMMENDED;
    format!("choose a port between {lo} and {hi} (recommended), or 0 / empty to clear the setting")
}

/// Session names: 4–64 characters of letters, digits, `_`, `.`, `-`, starting
/// and ending with a letter or digit (so they are safe in ssh config `Host`
/// lines and URLs).
pub fn check_session_name(name: &str) -> Result<(), Invalid> {
    let hint =
        "use 4-64 letters, digits, '-', '_' or '.', starting and ending with a letter or digit";
    let len = name.chars().count();
    if !(4..=64).contains(&len) {
        return Err(Invalid::new(
            format!("session name {name:?} must be 4-64 characters long (it has {len})"),
            hint,
        ));
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let first_last_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !name.chars().all(ok_char) || !first_last_ok {
        return Err(Invalid::new(
            format!("session name {name:?} contains characters that are not allowed"),
            hint,
        ));
    }
    Ok(())
}

/// Folder names: 1–64 characters of letters, digits, `_`, `.`, `-`; may start
/// with a dot (`.ssh` is auto-mounted), but may not be `.` or `..`.
pub fn check_folder_name(name: &str) -> Result<(), Invalid> {
    let hint = "use 1-64 letters, digits, '-', '_' or '.', e.g. 'data' or '.ssh'";
    let len = name.chars().count();
    if !(1..=64).contains(&len) || name == "." || name == ".." {
        return Err(Invalid::new(
            format!("folder name {name:?} is not valid"),
            hint,
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Invalid::new(
            format!("folder name {name:?} contains characters that are not allowed"),
            hint,
        ));
    }
    Ok(())
}

/// A plausible email address (the login identifier).
pub fn check_email(email: &str) -> Result<(), Invalid> {
    let hint = "use an address like user@example.com";
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'));
    if valid {
        Ok(())
    } else {
        Err(Invalid::new(
            format!("{email:?} is not a valid email address"),
            hint,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(parse_ssh_port("10022"), Ok(Some(10022)));
        assert_eq!(parse_ssh_port(""), Ok(None));
        assert_eq!(parse_ssh_port("0"), Ok(None));
        assert_eq!(parse_ssh_port(" 1025 "), Ok(Some(1025)));
        assert_eq!(parse_ssh_port("65534"), Ok(Some(65534)));
        let e = parse_ssh_port("80").unwrap_err();
        assert!(e.message.contains("between 1025 and 65534"), "{e:?}");
        assert!(e.hint.contains("10000 and 65000"), "{e:?}");
        assert!(parse_ssh_port("65535").is_err());
        assert!(parse_ssh_port("70000").is_err());
        assert!(
            parse_ssh_port("abc")
                .unwrap_err()
                .message
                .contains("not a number")
        );
        assert!(ssh_port_warning(2000).is_some());
        assert!(ssh_port_warning(10022).is_none());
    }

    #[test]
    fn session_names() {
        assert!(check_session_name("demo").is_ok());
        assert!(check_session_name("ibnFmWim-session").is_ok());
        assert!(check_session_name("abc").is_err());
        assert!(check_session_name(&"a".repeat(65)).is_err());
        assert!(check_session_name("-demo").is_err());
        assert!(check_session_name("de mo").is_err());
        assert!(check_session_name("demo/x").is_err());
    }

    #[test]
    fn folder_names() {
        assert!(check_folder_name(".ssh").is_ok());
        assert!(check_folder_name("data").is_ok());
        assert!(check_folder_name("..").is_err());
        assert!(check_folder_name("a/b").is_err());
        assert!(check_folder_name("").is_err());
    }

    #[test]
    fn emails() {
        assert!(check_email("admin@airlock.local").is_ok());
        assert!(check_email("nope").is_err());
        assert!(check_email("a b@c").is_err());
    }
}
