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

/// Parses a memory size: a plain number of bytes or a number with a binary
/// suffix (`512m`, `1g`, `1.5G`, `2GiB`, `1024k`).
pub fn parse_size(raw: &str) -> Result<u64, Invalid> {
    let hint = "use a size like 512m, 1g or 2GiB";
    let s = raw.trim().to_ascii_lowercase();
    let s = s.trim_end_matches("ib").trim_end_matches('b');
    let (num, mult): (&str, f64) = match s.char_indices().last() {
        Some((i, 'k')) => (&s[..i], 1024.0),
        Some((i, 'm')) => (&s[..i], 1024.0 * 1024.0),
        Some((i, 'g')) => (&s[..i], 1024.0 * 1024.0 * 1024.0),
        Some((i, 't')) => (&s[..i], 1024.0 * 1024.0 * 1024.0 * 1024.0),
        _ => (s, 1.0),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| Invalid::new(format!("{raw:?} is not a size"), hint))?;
    if !n.is_finite() || n <= 0.0 {
        return Err(Invalid::new(
            format!("{raw:?} must be a positive size"),
            hint,
        ));
    }
    let bytes = n * mult;
    if bytes < 64.0 * 1024.0 * 1024.0 {
        return Err(Invalid::new(
            format!("{raw:?} is too little memory for a session (minimum 64 MiB)"),
            hint,
        ));
    }
    Ok(bytes as u64)
}

/// Parses a CPU count (`1`, `0.5`, `"2"`) into millicores.
pub fn parse_cpu(raw: &str) -> Result<i64, Invalid> {
    let hint = "use a number of cores like 1, 2 or 0.5";
    let n: f64 = raw
        .trim()
        .parse()
        .map_err(|_| Invalid::new(format!("CPU {raw:?} is not a number"), hint))?;
    if !n.is_finite() || !(0.1..=1024.0).contains(&n) {
        return Err(Invalid::new(
            format!("CPU {raw:?} must be between 0.1 and 1024 cores"),
            hint,
        ));
    }
    Ok((n * 1000.0).round() as i64)
}

/// Variables airlock itself sets in every session container.
pub fn is_airlock_env(name: &str) -> bool {
    name.starts_with("AIRLOCK_")
        || matches!(
            name,
            "LOCAL_USER_ID" | "LOCAL_GROUP_ID" | "HOME" | "USER" | "PATH"
        )
}

/// Variables the SSH server sets for each login.
pub fn is_login_env(name: &str) -> bool {
    name.starts_with("SSH_")
        || matches!(
            name,
            "LOGNAME" | "SHELL" | "TERM" | "PWD" | "OLDPWD" | "SHLVL" | "MAIL"
        )
}

/// A session environment variable: a portable name, not one airlock sets
/// itself, and a value without NUL.
pub fn check_env_var(name: &str, value: &str) -> Result<(), Invalid> {
    let hint =
        "use NAME=value with letters, digits and '_' in the name (not starting with a digit)";
    let valid_name = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return Err(Invalid::new(
            format!("{name:?} is not a valid variable name"),
            hint,
        ));
    }
    if is_airlock_env(name) {
        return Err(Invalid::new(
            format!("{name} is set by airlock and cannot be changed"),
            "pick another name",
        ));
    }
    if is_login_env(name) {
        return Err(Invalid::new(
            format!("{name} is set for each login and cannot be changed here"),
            "set it in ~/.bashrc in the session instead, or pick another name",
        ));
    }
    if value.contains('\0') {
        return Err(Invalid::new(
            format!("the value of {name} contains a NUL byte"),
            hint,
        ));
    }
    Ok(())
}

/// A `NAME=VALUE` assignment (the CLI's `--env`, a line of the web form),
/// checked with [`check_env_var`].
pub fn parse_env_assignment(raw: &str) -> Result<(String, String), Invalid> {
    let Some((name, value)) = raw.split_once('=') else {
        return Err(Invalid::new(
            format!("{raw:?} has no '='"),
            "write NAME=VALUE, e.g. HF_HOME=/home/work/data/hf",
        ));
    };
    check_env_var(name, value)?;
    Ok((name.to_owned(), value.to_owned()))
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
    fn sizes_and_cpus() {
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("1073741824").unwrap(), 1 << 30);
        assert!(parse_size("1k").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1g").is_err());
        assert_eq!(parse_cpu("1").unwrap(), 1000);
        assert_eq!(parse_cpu("0.5").unwrap(), 500);
        assert!(parse_cpu("0").is_err());
        assert!(parse_cpu("x").is_err());
    }

    #[test]
    fn emails() {
        assert!(check_email("admin@airlock.local").is_ok());
        assert!(check_email("nope").is_err());
        assert!(check_email("a b@c").is_err());
    }

    #[test]
    fn env_vars() {
        assert!(check_env_var("MY_VAR", "hello world").is_ok());
        assert!(check_env_var("_x1", "").is_ok());
        for bad in [
            "",
            "1X",
            "A-B",
            "A B",
            "PATH",
            "HOME",
            "AIRLOCK_TOKEN",
            "LOCAL_USER_ID",
            "SHELL",
            "SSH_AUTH_SOCK",
        ] {
            assert!(check_env_var(bad, "v").is_err(), "{bad:?} accepted");
        }
        assert!(check_env_var("OK", "a\0b").is_err());
        assert_eq!(
            parse_env_assignment("A=b=c"),
            Ok(("A".to_owned(), "b=c".to_owned()))
        );
        assert!(parse_env_assignment("NOEQUALS").is_err());
    }
}

/// `ls -l` style permission string for an `st_mode`.
pub fn mode_string(mode: u32) -> String {
    let kind = match mode & 0o170_000 {
        0o040_000 => 'd',
        0o120_000 => 'l',
        0o020_000 => 'c',
        0o060_000 => 'b',
        0o010_000 => 'p',
        0o140_000 => 's',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, ch)) in bits.iter().enumerate() {
        let set = mode & bit != 0;
        let c = match i {
            2 if mode & 0o4000 != 0 => {
                if set {
                    's'
                } else {
                    'S'
                }
            }
            5 if mode & 0o2000 != 0 => {
                if set {
                    's'
                } else {
                    'S'
                }
            }
            8 if mode & 0o1000 != 0 => {
                if set {
                    't'
                } else {
                    'T'
                }
            }
            _ if set => *ch,
            _ => '-',
        };
        s.push(c);
    }
    s
}

#[cfg(test)]
mod mode_tests {
    use super::mode_string;

    #[test]
    fn modes() {
        assert_eq!(mode_string(0o100_600), "-rw-------");
        assert_eq!(mode_string(0o040_755), "drwxr-xr-x");
        assert_eq!(mode_string(0o120_777), "lrwxrwxrwx");
        assert_eq!(mode_string(0o041_777), "drwxrwxrwt");
    }
}
