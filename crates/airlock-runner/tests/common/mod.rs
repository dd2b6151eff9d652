//! Test harness: run the built airlock-runner in standalone mode on a loopback
//! port and drive it with the real OpenSSH tools.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_airlock-runner");

/// A child process killed on drop.
pub struct Guard(pub Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The name of the current user (no NSS: `id -un`).
pub fn whoami() -> String {
    let o = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// Run a command to completion with a deadline; kills it and panics on timeout.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if cmd.get_program().is_empty() {
        panic!("empty program");
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t2 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("timed out after {timeout:?}: {desc}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t1.join().unwrap(),
        stderr: t2.join().unwrap(),
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Generate an ed25519 key pair with ssh-keygen.
pub fn keygen(path: &Path) {
    let o = run_timeout(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
            .arg(path)
            .stdin(Stdio::null()),
        Duration::from_secs(20),
    );
    assert!(o.status.success(), "ssh-keygen: {}", text(&o.stderr));
}

/// Options for starting a server.
#[derive(Default, Clone)]
pub struct ServerOpts {
    /// PATH for the server (and so for sessions).
    pub path_env: Option<String>,
    /// AIRLOCK_LOG.
    pub log: Option<String>,
    /// Use these files instead of generated ones.
    pub home: Option<PathBuf>,
    pub authorized_keys: Option<PathBuf>,
    pub host_key: Option<PathBuf>,
    /// Extra sshd args.
    pub extra: Vec<String>,
}

/// A running standalone server plus a client key and pinned known_hosts.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    pub port: u16,
    pub user: String,
    pub log: PathBuf,
    _child: Guard,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(ServerOpts::default())
    }

    pub fn start_with(opts: ServerOpts) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("client_key");
        keygen(&key);
        let home = opts.home.clone().unwrap_or_else(|| {
            let h = dir.path().join("home");
            std::fs::create_dir(&h).unwrap();
            h
        });
        let ak = opts.authorized_keys.clone().unwrap_or_else(|| {
            let p = dir.path().join("authorized_keys");
            std::fs::copy(key.with_extension("pub"), &p).unwrap();
            p
        });
        let hk = opts
            .host_key
            .clone()
            .unwrap_or_else(|| dir.path().join("host_key"));
        let log = dir.path().join("server.log");
        let mut cmd = Command::new(BIN);
        cmd.arg("sshd")
            .args(["--listen", "127.0.0.1:0", "--home"])
            .arg(&home)
            .arg("--authorized-keys")
            .arg(&ak)
            .arg("--host-key")
            .arg(&hk)
            .args(&opts.extra)
            .env(
                "AIRLOCK_LOG",
                opts.log.as_deref().unwrap_or("debug,russh=info"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(p) = &opts.path_env {
            cmd.env("PATH", p);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let guard = Guard(Some(child));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            // keep draining
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server did not report AIRLOCK-LISTENING");
        let addr = line
            .trim()
            .strip_prefix("AIRLOCK-LISTENING ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
        // Pin the host key (public half written next to the private key).
        let host_pub = std::fs::read_to_string(hk.with_extension("pub")).unwrap();
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{port} {}", host_pub.trim()),
        )
        .unwrap();
        Server {
            home: std::fs::canonicalize(&home).unwrap(),
            dir,
            key,
            known_hosts,
            port,
            user: whoami(),
            log,
            _child: guard,
        }
    }

    /// Common -o options (without port), for ssh/scp/sftp/rsync.
    pub fn opts(&self) -> Vec<String> {
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-i".into(),
            self.key.display().to_string(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "ConnectTimeout=20".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ]
    }

    pub fn dest(&self) -> String {
        format!("{}@127.0.0.1", self.user)
    }

    /// `ssh` command with options and port, ready for a remote command.
    pub fn ssh(&self) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.opts())
            .args(["-p", &self.port.to_string()])
            .stdin(Stdio::null());
        c
    }

    /// `ssh` with another identity file.
    pub fn ssh_with_key(&self, key: &Path) -> Command {
        let mut opts = self.opts();
        opts[3] = key.display().to_string();
        let mut c = Command::new("ssh");
        c.args(opts)
            .args(["-p", &self.port.to_string()])
            .stdin(Stdio::null());
        c
    }

    pub fn scp(&self) -> Command {
        let mut c = Command::new("scp");
        c.args(self.opts())
            .args(["-P", &self.port.to_string()])
            .stdin(Stdio::null());
        c
    }

    pub fn sftp(&self) -> Command {
        let mut c = Command::new("sftp");
        c.args(self.opts())
            .args(["-P", &self.port.to_string()])
            .stdin(Stdio::null());
        c
    }

    /// The `-e` argument for rsync.
    pub fn rsync_e(&self) -> String {
        let mut v = vec!["ssh".to_string()];
        v.extend(self.opts());
        v.push("-p".into());
        v.push(self.port.to_string());
        v.join(" ")
    }

    /// Run a remote command; returns the output.
    pub fn exec(&self, cmd: &str) -> Output {
        run_timeout(
            self.ssh().arg(self.dest()).arg(cmd),
            Duration::from_secs(60),
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Write `size` random bytes to `path`.
pub fn random_file(path: &Path, size: usize) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut src = std::fs::File::open("/dev/urandom").unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len());
        src.read_exact(&mut buf[..n]).unwrap();
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
}

/// Whether two files have identical contents.
pub fn same_file(a: &Path, b: &Path) -> bool {
    let o = Command::new("cmp")
        .arg("-s")
        .arg(a)
        .arg(b)
        .status()
        .unwrap();
    o.success()
}

/// Assert an Output succeeded, with diagnostics.
#[track_caller]
pub fn assert_ok(o: &Output, what: &str, server: &Server) {
    assert!(
        o.status.success(),
        "{what} failed: {:?}\nstdout: {}\nstderr: {}\nserver log tail: {}",
        o.status,
        text(&o.stdout),
        text(&o.stderr),
        tail(&server.log_text(), 30)
    );
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
