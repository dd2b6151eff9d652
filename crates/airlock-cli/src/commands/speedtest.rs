//! `airlock speedtest SESSION [-t 10s] [--direction up|down|both]`:
//! throughput through the whole chain — the system's OpenSSH, a local
//! tunnel, the gateway, the agent, the runner — like `coder speedtest`.
//! The far end is the runner's built-in `airlock-speedtest` command, run
//! over SSH like any other command, so only someone who may log in to the
//! session can run it and it measures exactly what a transfer gets.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::args::{Direction, SpeedtestArgs};
use crate::client::ApiClient;
use crate::commands::ssh::{TempProxy, chatty, prepare};
use crate::error::{CliError, CliResult};
use crate::output;

/// Longest test per direction (the runner enforces the same bound).
pub const MAX_SECS: u64 = 60;
/// Extra time a direction may take past its duration before we give up.
const SLACK: Duration = Duration::from_secs(60);
const BLOCK: usize = 256 * 1024;

/// One direction's result.
#[derive(Debug, Clone, Serialize)]
pub struct Result1 {
    /// `up` (to the session) or `down` (from it).
    pub direction: &'static str,
    /// Bytes moved.
    pub bytes: u64,
    /// Seconds from the first byte to the last.
    pub seconds: f64,
    /// Megabits per second (10^6 bit/s).
    pub mbits_per_sec: f64,
}

/// The whole report (`--json` prints exactly this).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Session name.
    pub session: String,
    /// Requested seconds per direction.
    pub duration_secs: u64,
    /// One entry per direction, in the order run.
    pub results: Vec<Result1>,
}

/// Parses `10s`, `10`, `1m`, `500ms` (whole seconds from 1 to 60).
pub fn parse_duration(s: &str) -> CliResult<u64> {
    let bad = || {
        CliError::new(format!("invalid duration {s:?}")).hint(format!(
            "give whole seconds from 1 to {MAX_SECS}, e.g. `-t 10s`"
        ))
    };
    let t = s.trim();
    let secs = if let Some(v) = t.strip_suffix("ms") {
        v.parse::<u64>().map_err(|_| bad())? / 1000
    } else if let Some(v) = t.strip_suffix('s') {
        v.parse::<u64>().map_err(|_| bad())?
    } else if let Some(v) = t.strip_suffix('m') {
        v.parse::<u64>().map_err(|_| bad())?.saturating_mul(60)
    } else {
        t.parse::<u64>().map_err(|_| bad())?
    };
    if !(1..=MAX_SECS).contains(&secs) {
        return Err(bad());
    }
    Ok(secs)
}

fn mbits(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 * 8.0 / secs / 1e6
    } else {
        0.0
    }
}

fn ssh_command(opts: &[String], port: u16, remote: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("ssh");
    c.args(opts)
        .args(["-T", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"])
        .args(["-p", &port.to_string()])
        .args([&airlock_proto::recipes::local_destination(), remote])
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

async fn finish(mut child: tokio::process::Child, what: &str) -> CliResult<()> {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err).await;
    }
    let status = child.wait().await?;
    if status.success() {
        return Ok(());
    }
    let detail = err.trim();
    Err(CliError::new(format!(
        "the {what} test failed (ssh exited with {status}){}{detail}",
        if detail.is_empty() { "" } else { ": " }
    ))
    .hint("check that the session is RUNNING and `airlock ssh SESSION true` works"))
}

fn spawn_err(e: std::io::Error) -> CliError {
    CliError::new(format!("cannot run ssh: {e}"))
        .hint("install the OpenSSH client (e.g. apt install openssh-client)")
}

async fn down(opts: &[String], port: u16, secs: u64) -> CliResult<Result1> {
    let mut child = ssh_command(opts, port, &format!("airlock-speedtest down {secs}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let mut out = child
        .stdout
        .take()
        .ok_or_else(|| CliError::new("no pipe"))?;
    let mut buf = vec![0u8; BLOCK];
    let mut bytes = 0u64;
    let mut first: Option<Instant> = None;
    loop {
        let n = out.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        bytes += n as u64;
    }
    let seconds = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    finish(child, "download").await?;
    Ok(Result1 {
        direction: "down",
        bytes,
        seconds,
        mbits_per_sec: mbits(bytes, seconds),
    })
}

#[derive(serde::Deserialize)]
struct Counted {
    bytes: u64,
    secs: f64,
}

async fn up(opts: &[String], port: u16, secs: u64) -> CliResult<Result1> {
    let mut child = ssh_command(opts, port, &format!("airlock-speedtest up {secs}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let mut input = child.stdin.take().ok_or_else(|| CliError::new("no pipe"))?;
    let mut out = child
        .stdout
        .take()
        .ok_or_else(|| CliError::new("no pipe"))?;
    // Filler no link compresses away.
    let block: Vec<u8> = (0..BLOCK as u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if input.write_all(&block).await.is_err() {
            break;
        }
    }
    drop(input);
    let mut text = String::new();
    out.read_to_string(&mut text).await?;
    finish(child, "upload").await?;
    let c: Counted = serde_json::from_str(text.trim()).map_err(|_| {
        CliError::new(format!(
            "the session's airlock-speedtest answered {:?}",
            text.trim()
        ))
        .hint("the session may run an older runner; create a new session")
    })?;
    Ok(Result1 {
        direction: "up",
        bytes: c.bytes,
        seconds: c.secs,
        mbits_per_sec: mbits(c.bytes, c.secs),
    })
}

/// `airlock speedtest`.
pub async fn run(client: &ApiClient, args: SpeedtestArgs) -> CliResult<()> {
    let secs = parse_duration(&args.time)?;
    let prepared = prepare(client, &args.session).await?;
    // Its own lines would only interleave with the measurement.
    let quiet = !chatty(args.json);
    let proxy = TempProxy::start(client, &prepared.info.name, Some(0), quiet).await?;
    let opts = prepared.options();
    let dirs: &[Direction] = match args.direction {
        Direction::Both => &[Direction::Down, Direction::Up],
        Direction::Up => &[Direction::Up],
        Direction::Down => &[Direction::Down],
    };
    let mut results = Vec::new();
    let mut failure = None;
    for d in dirs {
        let limit = Duration::from_secs(secs) + SLACK;
        let r = match d {
            Direction::Up => tokio::time::timeout(limit, up(&opts, proxy.port, secs)).await,
            _ => tokio::time::timeout(limit, down(&opts, proxy.port, secs)).await,
        };
        match r {
            Ok(Ok(r)) => {
                if !args.json {
                    println!(
                        "{:<5} {:>10.1} Mbit/s  ({} bytes in {:.2} s)",
                        r.direction, r.mbits_per_sec, r.bytes, r.seconds
                    );
                }
                results.push(r);
            }
            Ok(Err(e)) => {
                failure = Some(e);
                break;
            }
            Err(_) => {
                failure = Some(
                    CliError::new(format!(
                        "the test did not finish within {} s",
                        limit.as_secs()
                    ))
                    .hint("the tunnel may be stalled: try `airlock ping SESSION`"),
                );
                break;
            }
        }
    }
    proxy.stop().await;
    if let Some(e) = failure {
        return Err(e);
    }
    let report = Report {
        session: prepared.info.name.clone(),
        duration_secs: secs,
        results,
    };
    if args.json {
        output::json(&report)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), 10);
        assert_eq!(parse_duration("7").unwrap(), 7);
        assert_eq!(parse_duration("1m").unwrap(), 60);
        assert_eq!(parse_duration("2000ms").unwrap(), 2);
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("2m").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
