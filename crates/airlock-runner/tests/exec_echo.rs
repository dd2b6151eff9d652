//! Channels whose consumer echoes: a command (`cat`, `gzip -c`, any
//! filter) fed far more than one window, `ssh host cat < 512MiB > out`, and
//! a forward (`ssh -W`, a direct-tcpip channel) to a target that echoes.
//! Both used to stall for good: the channel reader awaited room
//! in a bounded queue, which stopped russh's session loop and with it the
//! window adjusts the echoed output waited for (src/queue.rs explains the
//! design that replaced it). The consumers start late, so the client always
//! gets far ahead; deadlines turn a stall into a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

#[test]
fn cat_echoes_512m_through_exec() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    let out = dir.path().join("out.bin");
    random_file(&big, 512 << 20);
    let o = ssh_with_files(&s, "", "'sleep 2; cat'", &big, &out);
    assert_ok(&o, "ssh cat", &s);
    assert!(same_file(&big, &out), "echoed bytes differ");
    assert_throttled(&s);
}

/// `ssh OPTIONS DEST COMMAND < input > output`, with a deadline.
fn ssh_with_files(s: &Server, options: &str, command: &str, input: &Path, output: &Path) -> Output {
    let ssh = s.ssh();
    let words: Vec<String> = std::iter::once(ssh.get_program())
        .chain(ssh.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    run_timeout(
        Command::new("sh").arg("-c").arg(format!(
            "{} {options} {} {command} < {} > {}",
            words.join(" "),
            s.dest(),
            input.display(),
            output.display()
        )),
        Duration::from_secs(120),
    )
}

/// The consumer started late, so the client got far ahead: the runner must
/// have throttled the window (and not stopped its session loop).
fn assert_throttled(s: &Server) {
    let log = s.log_text();
    assert!(
        log.contains("behind: token window") && log.contains("caught up"),
        "expected the connection to be throttled and to recover; server log tail:\n{}",
        tail(&log, 30)
    );
}

#[test]
fn echoing_forward_target_gets_256m_back() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    let out = dir.path().join("out.bin");
    random_file(&big, 256 << 20);
    // A target that reads a chunk and writes it back before it reads more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_port = listener.local_addr().unwrap().port();
    let echo = std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        let (mut sock, _) = listener.accept().unwrap();
        // Start late, so that the client gets far ahead.
        std::thread::sleep(Duration::from_secs(2));
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = sock.read(&mut buf).unwrap_or(0);
            if n == 0 || sock.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let o = ssh_with_files(&s, &format!("-W 127.0.0.1:{echo_port}"), "", &big, &out);
    assert_ok(&o, "ssh -W to an echo target", &s);
    assert!(same_file(&big, &out), "echoed bytes differ");
    echo.join().unwrap();
    assert_throttled(&s);
}
