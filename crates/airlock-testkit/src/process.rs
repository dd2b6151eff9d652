//! Built binaries as child processes, with deadlines.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Path of a workspace binary (`airlock`, `airlockd`, `airlock-runner`) next
/// to the running test executable (`target/<profile>/deps/..`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built; run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// A finished process.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with both streams unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `cmd` with `stdin` fed in, killing it after `deadline`.
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>, deadline: Duration) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let out = reader(child.stdout.take().unwrap());
    let err = reader(child.stderr.take().unwrap());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > deadline {
            kill_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {deadline:?}\n--- stdout\n{}\n--- stderr\n{}",
                out.recv_timeout(Duration::from_secs(1)).unwrap_or_default(),
                err.recv_timeout(Duration::from_secs(1)).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        code: status.code(),
        stdout: out
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_default(),
        stderr: err
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_default(),
    }
}

fn reader<R: Read + Send + 'static>(mut r: R) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// A running `airlockd up` on 127.0.0.1:0 with its own data directory.
/// Every session container it starts is labelled `airlock.test=1` and
/// `airlock.test.run=<unique>`, and removed when this handle drops.
pub struct Airlockd {
    child: Child,
    /// The per-instance container label (`airlock.test.run=…`).
    pub run_label: String,
    pub url: String,
    pub admin_email: String,
    pub admin_password: String,
    pub data: tempfile::TempDir,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Airlockd {
    /// Starts `airlockd up` and waits until it prints its address.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Like [`Airlockd::start`] with extra arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        let data = tempfile::tempdir().unwrap();
        let run_label = format!(
            "airlock.test.run={}",
            data.path().file_name().unwrap().to_string_lossy()
        );
        Self::spawn(data, run_label, extra)
    }

    /// Stops this instance (SIGKILL, like a crash) and starts a new one on
    /// the same data directory; containers are left running.
    pub fn restart(mut self) -> Self {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let data = std::mem::replace(&mut self.data, tempfile::tempdir().unwrap());
        let label = std::mem::take(&mut self.run_label);
        // `self` drops here without touching the containers (empty label).
        drop(self);
        Self::spawn(data, label, &[])
    }

    fn spawn(data: tempfile::TempDir, run_label: String, extra: &[&str]) -> Self {
        let admin_password = "admin-password-for-tests".to_owned();
        let mut child = Command::new(bin("airlockd"))
            .args([
                "up",
                "--listen",
                "127.0.0.1:0",
                "--no-build-image",
                "--data",
            ])
            .arg(data.path().join("state"))
            .args([
                "--container-label",
                "airlock.test=1",
                "--container-label",
                &run_label,
            ])
            .args(extra)
            .env("AIRLOCK_ADMIN_PASSWORD", &admin_password)
            .env("AIRLOCK_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start airlockd");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log2.lock().unwrap().push_str(&line);
                log2.lock().unwrap().push('\n');
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && let Some(url) = line.strip_prefix("airlock is running at ") {
                    let _ = tx.send(url.trim().to_owned());
                    sent = true;
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("airlockd did not start:\n{}", log.lock().unwrap());
            }
        };
        Airlockd {
            child,
            run_label,
            url,
            admin_email: "admin@airlock.local".into(),
            admin_password,
            data,
            log,
        }
    }

    /// Everything airlockd logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Runs `airlockd` with these arguments against the same data directory.
    pub fn admin_command(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        run(
            Command::new(bin("airlockd"))
                .args(args)
                .arg("--data")
                .arg(self.data.path().join("state")),
            stdin,
            Duration::from_secs(60),
        )
    }

    /// `airlockd user add EMAIL` with `password`; returns the new user's
    /// access and secret keys as printed.
    pub fn add_user_with_keys(&self, email: &str, password: &str) -> (String, String) {
        let out = self.admin_command(
            &["user", "add", email],
            Some(format!("{password}\n").as_bytes()),
        );
        out.expect_code(0);
        let key = |label: &str| {
            out.stdout
                .lines()
                .find_map(|l| l.trim().strip_prefix(label))
                .unwrap_or_else(|| panic!("no {label:?} in {out:?}"))
                .trim()
                .to_owned()
        };
        (key("access key:"), key("secret key:"))
    }
}

impl Drop for Airlockd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.run_label.is_empty() {
            crate::docker::remove_labelled(&self.run_label);
        }
    }
}

/// Prints airlockd's log when the test fails (declare it after the
/// `Airlockd`, so that it runs first).
pub struct LogOnPanic<'a>(pub &'a Airlockd);

impl Drop for LogOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- airlockd log\n{}", self.0.log());
        }
    }
}

/// A user's machine for the CLI: a working directory with a `.env`, a
/// private HOME and state directory.
pub struct Cli {
    pub dir: tempfile::TempDir,
}

impl Cli {
    /// A working directory whose `.env` points at `url` in `session` mode.
    pub fn new(url: &str) -> Self {
        let cli = Self::empty();
        cli.write_env(&format!(
            "BACKEND_ENDPOINT={url}\nBACKEND_ENDPOINT_TYPE=session\n"
        ));
        cli
    }

    /// A working directory without `.env`.
    pub fn empty() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home/.ssh")).unwrap();
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        Cli { dir }
    }

    /// Replaces the `.env` file.
    pub fn write_env(&self, content: &str) {
        std::fs::write(self.cwd().join(".env"), content).unwrap();
    }

    /// The working directory.
    pub fn cwd(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// The fake HOME.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// A `Command` for `airlock` in this environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("airlock"));
        c.args(args)
            .current_dir(self.cwd())
            .env("HOME", self.home())
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env("NO_COLOR", "1")
            .env_remove("AIRLOCK_STATE_DIR");
        for (k, _) in std::env::vars() {
            if k.starts_with("BACKEND_") || k.starts_with("AIRLOCK_") {
                c.env_remove(k);
            }
        }
        c
    }

    /// Runs `airlock ARGS` with optional stdin (deadline 60 s).
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run(
            &mut self.command(args),
            stdin.map(str::as_bytes),
            Duration::from_secs(60),
        )
    }
}

/// A long-running process (e.g. `airlock app`) whose output lines are
/// collected; killed when dropped.
pub struct Background {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Spawns `cmd` with stdout and stderr captured (stdin closed).
    pub fn spawn(cmd: &mut Command) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
        ] {
            let lines = lines.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            }));
        }
        Self {
            child,
            lines,
            readers,
        }
    }

    /// After the exit: waits (briefly) until the last lines are collected.
    fn drain(&self) {
        let start = Instant::now();
        while !self.readers.iter().all(|r| r.is_finished())
            && start.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until a line contains `needle`; returns that line.
    pub fn wait_for(&self, needle: &str, deadline: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            assert!(
                start.elapsed() < deadline,
                "no line containing {needle:?} within {deadline:?}; output so far:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (e.g. "INT", "KILL") and waits for the exit code.
    pub fn signal(&mut self, sig: &str, deadline: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.drain();
                return s.code();
            }
            if start.elapsed() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the process did not exit after SIG{sig}:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it has exited (and its code).
    pub fn try_wait(&mut self) -> Option<Option<i32>> {
        let code = self.child.try_wait().ok().flatten().map(|s| s.code());
        if code.is_some() {
            self.drain();
        }
        code
    }
}

/// Kills the process group led by `pid`, if there is one (commands run
/// through `setsid` lead their own), so helpers they started do not outlive
/// a failed test. Nothing happens for a process that leads no group.
fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            kill_group(self.child.id());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address that refuses connections: its port is bound (so
/// nothing else can take it while the returned socket lives) but nobody
/// listens. For "nothing is there" tests, instead of guessing a free port.
pub fn refusing_addr() -> std::io::Result<(tokio::net::TcpSocket, std::net::SocketAddr)> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind((std::net::Ipv4Addr::LOCALHOST, 0).into())?;
    let addr = s.local_addr()?;
    Ok((s, addr))
}

/// A free loopback TCP port, for the few programs that must be told one
/// (`app -b PORT` of Backend.AI's guide, `--local-port`, a preferred SSH port, nginx,
/// chromedriver). Everything that can bind port 0 and say which port it got
/// does that instead.
///
/// The port is picked at random *below* the kernel's ephemeral range, so
/// no outgoing connection can take it between this check and its use; only
/// another test calling this could, one chance in thousands.
pub fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = if low > 12_000 {
        (10_000, low)
    } else {
        (40_000, 60_000)
    };
    for _ in 0..1000 {
        let port = from + (rand_u16() % (to - from));
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {from} and {to}");
}

/// A random number from the standard library's per-process hasher keys.
fn rand_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() % 65_536) as u16
}

impl Cli {
    /// The login cookie saved by `airlock login`.
    pub fn cookie(&self) -> String {
        let path = self.dir.path().join("state/airlock/login.json");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        v["cookie"].as_str().unwrap().to_owned()
    }

    /// GET `url` with the login cookie (via curl), as JSON.
    pub fn get_json(&self, url: &str) -> serde_json::Value {
        let out = run(
            Command::new("curl").args([
                "-sS",
                "--max-time",
                "20",
                "-H",
                &format!("Cookie: AIOHTTP_SESSION={}", self.cookie()),
                url,
            ]),
            None,
            Duration::from_secs(30),
        );
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{url}: {e}: {out:?}"))
    }
}
