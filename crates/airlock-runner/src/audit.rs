//! What happens inside SSH connections, for the audit trail: logins (which
//! key), commands, shells, subsystems, forwards, agent forwarding, exit
//! statuses and SFTP file operations.
//!
//! Events go to a queue that a thread writes to stdout in batches, one
//! `AIRLOCK-AUDIT {"events":[…]}` line at a time (at most every 200 ms or
//! ~12 KiB), so a 10,000-file copy costs a queue push per operation. In a
//! container stdout is a pipe to PID 1 (root), which copies it into the
//! container log; the agent follows that log (stdout only) and forwards
//! the events to the gateway. The session's processes cannot write there
//! (see docs/security.md): the server makes itself non-dumpable at start,
//! so processes of the same uid can neither ptrace it nor open its
//! `/proc/PID/fd`.
//!
//! Off unless [`enable`] was called (the standalone server and tests).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The line prefix the agent looks for.
pub use airlock_proto::recipes::readiness::AUDIT_PREFIX as PREFIX;

/// Longest time an event waits in the queue.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// A batch line stays below Docker's 16 KiB log message size.
const MAX_LINE: usize = 12 * 1024;

static SINK: OnceLock<std::sync::Mutex<Sender<Value>>> = OnceLock::new();

/// Starts the writer thread; later calls do nothing.
pub fn enable() {
    let (tx, rx) = channel();
    if SINK.set(std::sync::Mutex::new(tx)).is_ok() {
        std::thread::spawn(move || writer(&rx));
    }
}

/// Whether events are recorded.
pub fn enabled() -> bool {
    SINK.get().is_some()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0)
}

/// Records an event of the connection from `peer` (the agent's end of the
/// TCP connection, which the gateway knows too and uses to tie these events
/// to its tunnel).
pub fn emit(peer: SocketAddr, kind: &str, detail: Value) {
    let Some(sink) = SINK.get() else { return };
    let event = json!({
        "at": now_ms(),
        "kind": kind,
        "peer": peer.to_string(),
        "detail": detail,
    });
    if let Ok(tx) = sink.lock() {
        let _ = tx.send(event);
    }
}

fn writer(rx: &Receiver<Value>) {
    use std::io::Write as _;
    let mut batch: Vec<String> = Vec::new();
    let mut size = 0usize;
    let mut first: Option<Instant> = None;
    loop {
        let wait = first.map_or(Duration::from_secs(3600), |t| {
            FLUSH_EVERY.saturating_sub(t.elapsed())
        });
        let closed = match rx.recv_timeout(wait) {
            Ok(e) => {
                let s = e.to_string();
                if size + s.len() > MAX_LINE && !batch.is_empty() {
                    flush(&mut batch, &mut size);
                    first = None;
                }
                size += s.len() + 1;
                batch.push(s);
                first.get_or_insert_with(Instant::now);
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        if first.is_some_and(|t| t.elapsed() >= FLUSH_EVERY) || closed {
            flush(&mut batch, &mut size);
            first = None;
        }
        if closed {
            let _ = std::io::stdout().lock().flush();
            return;
        }
    }
}

fn flush(batch: &mut Vec<String>, size: &mut usize) {
    use std::io::Write as _;
    if batch.is_empty() {
        return;
    }
    let line = format!("{PREFIX}{{\"events\":[{}]}}\n", batch.join(","));
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
    batch.clear();
    *size = 0;
}
