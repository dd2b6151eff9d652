//! Built-in `airlock-speedtest` (for `airlock speedtest`): a bounded byte
//! source or sink on stdin/stdout, run like any other command of the
//! session (the runner invoked with argv[0] `airlock-speedtest`), so the
//! measurement crosses exactly the path a user's transfer takes.
//!
//! Only someone who can log in to the session can run it, and it can do
//! nothing a shell cannot (`head -c` / `cat > /dev/null`); it is bounded in
//! time ([`MAX_SECS`]) so a lost client cannot leave it running.
//!
//! - `airlock-speedtest down SECS`: writes filler to stdout for SECS seconds.
//! - `airlock-speedtest up SECS`: reads stdin until EOF (or SECS + grace),
//!   discarding it, then prints `{"bytes":N,"secs":S}` measured from the
//!   first byte to EOF.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// The name the command is run under.
pub const NAME: &str = "airlock-speedtest";
/// Longest test, in seconds.
pub const MAX_SECS: u64 = 60;
/// How long `up` waits past SECS for the client's EOF.
const GRACE: Duration = Duration::from_secs(30);
const BLOCK: usize = 256 * 1024;

/// Parsed arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Send for this long.
    Down(Duration),
    /// Receive for at most this long (plus a grace period).
    Up(Duration),
}

/// Parse `up|down SECS` (SECS in 1..=MAX_SECS).
pub fn parse_args(args: &[String]) -> Result<Mode, String> {
    let [dir, secs] = args else {
        return Err(format!("usage: {NAME} up|down SECS"));
    };
    let secs: u64 = secs
        .parse()
        .ok()
        .filter(|s| (1..=MAX_SECS).contains(s))
        .ok_or_else(|| format!("SECS must be a whole number from 1 to {MAX_SECS}"))?;
    let d = Duration::from_secs(secs);
    match dir.as_str() {
        "down" => Ok(Mode::Down(d)),
        "up" => Ok(Mode::Up(d)),
        other => Err(format!("unknown direction {other:?} (up or down)")),
    }
}

/// Filler that no link compresses away (a fixed xorshift sequence).
fn filler() -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..BLOCK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Run on stdin/stdout; returns the exit code.
pub fn run(args: &[String]) -> i32 {
    let mode = match parse_args(args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            return 2;
        }
    };
    let r = match mode {
        Mode::Down(d) => down(d, &mut std::io::stdout().lock()),
        Mode::Up(d) => up(d, &mut std::io::stdin().lock()).and_then(|(bytes, secs)| {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{{\"bytes\":{bytes},\"secs\":{secs:.6}}}")?;
            out.flush()
        }),
    };
    match r {
        Ok(()) => 0,
        // The client stopped reading: that is how a test may end.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            1
        }
    }
}

/// Write filler for `d`.
pub fn down<W: Write>(d: Duration, out: &mut W) -> std::io::Result<()> {
    let block = filler();
    let end = Instant::now() + d;
    while Instant::now() < end {
        out.write_all(&block)?;
    }
    out.flush()
}

/// Read until EOF or `d` + grace; returns bytes and seconds from the first
/// byte to the end.
pub fn up<R: Read>(d: Duration, input: &mut R) -> std::io::Result<(u64, f64)> {
    let deadline = Instant::now() + d + GRACE;
    let mut buf = vec![0u8; BLOCK];
    let mut bytes = 0u64;
    let mut first: Option<Instant> = None;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        bytes += n as u64;
        if Instant::now() > deadline {
            break;
        }
    }
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    Ok((bytes, secs))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn args_are_bounded() {
        assert_eq!(
            parse_args(&s(&["down", "3"])),
            Ok(Mode::Down(Duration::from_secs(3)))
        );
        assert_eq!(
            parse_args(&s(&["up", "60"])),
            Ok(Mode::Up(Duration::from_secs(60)))
        );
        assert!(parse_args(&s(&["up", "61"])).is_err());
        assert!(parse_args(&s(&["up", "0"])).is_err());
        assert!(parse_args(&s(&["sideways", "1"])).is_err());
        assert!(parse_args(&s(&["down"])).is_err());
    }

    #[test]
    fn up_counts_and_down_fills() {
        let data = vec![7u8; 1_000_000];
        let (bytes, _) = up(Duration::from_secs(1), &mut &data[..]).unwrap();
        assert_eq!(bytes, 1_000_000);
        let mut out = Vec::new();
        down(Duration::from_millis(10), &mut out).unwrap();
        assert!(out.len() >= BLOCK);
        assert!(out.iter().any(|b| *b != out[0]));
    }
}
