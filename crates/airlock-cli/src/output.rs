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

/// Prints rows under a header on stdout, each column as wide as its
/// widest cell (two spaces apart, the last one unpadded); `(none)` when
/// there are no rows.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    print!("{}", render_table(header, &rows));
}

fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<&str> = cells.collect();
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                let pad = widths.get(i).copied().unwrap_or(0);
                out.push_str(&format!("{c:<pad$}  "));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(&mut header.iter().copied());
    if rows.is_empty() {
        out.push_str("(none)\n");
    }
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// A size for people: `512`, `1.5K`, `23M`, `4.0G` (powers of 1024, like
/// `ls -lh`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if bytes < 1024 {
        return bytes.to_string();
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if v < 10.0 {
        format!("{v:.1}{}", UNITS[unit])
    } else {
        format!("{v:.0}{}", UNITS[unit])
    }
}

/// How long ago an RFC 3339 time was, for people: `45s`, `12m`, `3h`, `5d`.
pub fn age(rfc3339: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(rfc3339) else {
        return "?".to_owned();
    };
    let secs = (now - t.with_timezone(&chrono::Utc)).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["a".to_owned(), "longer".to_owned(), "x".to_owned()],
            vec!["bbbb".to_owned(), "c".to_owned(), "".to_owned()],
        ];
        assert_eq!(
            render_table(&["ID", "NAME", "END"], &rows),
            "ID    NAME    END\na     longer  x\nbbbb  c\n"
        );
        assert_eq!(render_table(&["ID"], &[]), "ID\n(none)\n");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(0), "0");
        assert_eq!(human_size(1023), "1023");
        assert_eq!(human_size(1536), "1.5K");
        assert_eq!(human_size(100 << 20), "100M");
        assert_eq!(human_size(3 << 30), "3.0G");
    }

    #[test]
    fn ages() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(age("2026-12-01T09:59:15Z", now), "45s");
        assert_eq!(age("2026-12-01T09:48:00Z", now), "12m");
        assert_eq!(age("2026-12-01T07:00:00Z", now), "3h");
        assert_eq!(age("2026-11-26T10:00:00Z", now), "5d");
        assert_eq!(age("bogus", now), "?");
    }
}
