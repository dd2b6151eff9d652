//! Status lines on stderr (`✓`, `✗`, `∙`), data on stdout.

use std::io::IsTerminal;

fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

fn paint(code: &str, s: &str) -> String {
    if color() {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_owned()
    }
}

/// `✓ message` (green).
pub fn success(msg: &str) {
    eprintln!("{} {msg}", paint("32", "✓"));
}

/// `✗ message` (red).
pub fn failure(msg: &str) {
    eprintln!("{} {msg}", paint("31", "✗"));
}

/// `∙ message`.
pub fn info(msg: &str) {
    eprintln!("{} {msg}", paint("36", "∙"));
}

/// `warning: message` (yellow).
pub fn warning(msg: &str) {
    eprintln!("{} {msg}", paint("33", "warning:"));
}

/// Prints a value as pretty JSON on stdout.
pub fn json<T: serde::Serialize>(value: &T) -> crate::error::CliResult<()> {
    let s = serde_json::to_string_pretty(value)
        .map_err(|e| crate::error::CliError::new(format!("cannot encode JSON: {e}")))?;
    println!("{s}");
    Ok(())
}
