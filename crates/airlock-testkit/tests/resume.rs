//! Resumable tunnels: the connection between the CLI and
//! the gateway breaks (a fault-injecting TCP proxy drops it, or a split
//! `airlockd gateway` is killed and restarted) while ssh/rsync run through
//! `airlock proxy`; the SSH connection on top never notices. Plus the
//! refusals: a tunnel id only resumes through its own session.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use airlock_testkit::docker;
use airlock_testkit::ssh::{random_file, sha256};
use airlock_testkit::{Airlockd, Background, Cli, Output, bin, run};
use airlock_tunnel::resume::{self, Decoder, Frame};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, http};

const LONG: Duration = Duration::from_secs(300);

/// The two 1 GiB tests run one after the other: together they overload
/// the 2-core CI machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A TCP forwarder between the CLI and the gateway that can drop all its
/// connections: on command, or each time `cut_every` bytes went through.
struct FaultProxy {
    port: u16,
    generation: tokio::sync::watch::Sender<u64>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    /// Bytes forwarded (both ways) so far.
    bytes: Arc<AtomicU64>,
    _rt: tokio::runtime::Runtime,
}

impl FaultProxy {
    fn start(target: u16) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let accepted = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (g, a, b) = (generation.clone(), accepted.clone(), bytes.clone());
        rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::Relaxed);
                let mut cut = g.subscribe();
                let b = b.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let pump = |mut r: tokio::net::tcp::OwnedReadHalf,
                                mut w: tokio::net::tcp::OwnedWriteHalf,
                                b: Arc<AtomicU64>| async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match r.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if w.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            b.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        let _ = w.shutdown().await;
                    };
                    let up = pump(cr, sw, b.clone());
                    let down = pump(sr, cw, b);
                    tokio::select! {
                        _ = async { tokio::join!(up, down) } => {}
                        // Dropping both sockets mid-stream: the CLI sees its
                        // connection die, as on a network change.
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            port,
            generation,
            accepted,
            bytes,
            _rt: rt,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Drops every current connection.
    fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

fn login(cli: &Cli, email: &str, password: &str) {
    cli.run(&["login"], Some(&format!("{email}\n{password}\n")))
        .expect_code(0);
}

fn create(cli: &Cli, name: &str) -> String {
    let args = [
        "session", "create", "--name", name, "--cpu", "1", "--mem", "1g", "--json",
    ];
    let start = Instant::now();
    let mut out = cli.run(&args, None);
    // The node registers a moment after the gateway starts.
    while out.stderr.contains("no node is online") && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(500));
        out = cli.run(&args, None);
    }
    out.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["status"], "RUNNING", "{v}");
    v["id"].as_str().unwrap().to_owned()
}

/// `ssh`-family commands through `airlock proxy` (config-ssh's ProxyCommand).
struct Ssh {
    config: PathBuf,
    home: PathBuf,
    state: PathBuf,
}

impl Ssh {
    fn new(cli: &Cli) -> Self {
        cli.run(&["config-ssh"], None).expect_code(0);
        Ssh {
            config: cli.home().join(".ssh/config"),
            home: cli.home(),
            state: cli.dir.path().join("state"),
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("HOME", &self.home)
            .env("XDG_STATE_HOME", &self.state)
            .env("NO_COLOR", "1");
        c
    }

    fn ssh(&self, host: &str, cmd: &str) -> Output {
        let mut c = self.command("ssh");
        c.arg("-F")
            .arg(&self.config)
            .args(["-o", "BatchMode=yes", host, cmd]);
        run(&mut c, None, LONG)
    }

    /// Starts `rsync` of `src` to `host:dest`.
    fn rsync(&self, src: &std::path::Path, host: &str, dest: &str) -> std::process::Child {
        let mut c = self.command("rsync");
        c.args([
            "-a",
            "--whole-file",
            "-e",
            &format!("ssh -F {} -o BatchMode=yes", self.config.display()),
        ])
        .arg(src)
        .arg(format!("{host}:{dest}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        c.spawn().unwrap()
    }
}

/// Waits for `child` with a deadline, calling `tick` every 20 ms meanwhile;
/// returns its output.
fn wait_with(mut child: std::process::Child, limit: Duration, mut tick: impl FnMut()) -> Output {
    let start = Instant::now();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "timed out after {limit:?}; stderr: {}",
                err_t.join().unwrap()
            );
        }
        tick();
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        code: status.code(),
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

/// Size of the rsync transfers, in MiB (the 1 GiB).
const RSYNC_MIB: u64 = 1024;

/// rsync through ProxyCommand while `break_link` is called every `every`
/// bytes through `proxy`: the file arrives intact and ssh never notices.
fn rsync_through_breaks(
    cli: &Cli,
    ssh: &Ssh,
    proxy: &FaultProxy,
    every: u64,
    mut break_link: impl FnMut(),
) -> usize {
    let big = cli.cwd().join("big.bin");
    random_file(&big, RSYNC_MIB);
    let sum = sha256(&big);
    let child = ssh.rsync(&big, "airlock-demo", "big.bin");
    let mut breaks = 0;
    let mut next = every;
    let out = wait_with(child, LONG, || {
        if proxy.bytes.load(Ordering::Relaxed) >= next {
            break_link();
            breaks += 1;
            next = proxy.bytes.load(Ordering::Relaxed) + every;
        }
    });
    assert_eq!(
        out.code,
        Some(0),
        "rsync failed after {breaks} breaks: {out:?}"
    );
    assert!(breaks >= 3, "only {breaks} breaks happened");
    assert!(
        out.stderr.contains("reconnecting"),
        "the proxy reports each break on stderr: {}",
        out.stderr
    );
    let remote = ssh.ssh("airlock-demo", "sha256sum big.bin");
    remote.expect_code(0);
    assert!(
        remote.stdout.starts_with(&sum),
        "checksum differs: {} vs {sum}",
        remote.stdout
    );
    breaks
}

#[test]
fn ssh_and_rsync_survive_cut_connections() {
    let _serial = serial();
    let d = Airlockd::start_with(&["--tunnel-grace", "60s"]);
    let gw_port: u16 = d.url.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = FaultProxy::start(gw_port);
    let cli = Cli::new(&proxy.url());
    login(&cli, &d.admin_email, &d.admin_password);
    let demo = create(&cli, "demo");
    let ssh = Ssh::new(&cli);

    // An interactive session (stdin fed over time) survives cuts.
    let mut c = ssh.command("ssh");
    c.arg("-F").arg(&ssh.config).args([
        "-o",
        "BatchMode=yes",
        "airlock-demo",
        "while read l; do echo got:$l; done; echo bye",
    ]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let before = proxy.accepted.load(Ordering::Relaxed);
    for word in ["one", "two", "three"] {
        writeln!(stdin, "{word}").unwrap();
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(line, format!("got:{word}"));
        proxy.cut();
    }
    writeln!(stdin, "four").unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(60)).unwrap(),
        "got:four"
    );
    drop(stdin);
    assert_eq!(rx.recv_timeout(Duration::from_secs(60)).unwrap(), "bye");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "ssh hangs");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status:?}: {err}");
    assert_eq!(
        err.matches("reconnecting").count(),
        3,
        "one line per break: {err}"
    );
    assert!(
        proxy.accepted.load(Ordering::Relaxed) >= before + 4,
        "the CLI reconnected"
    );

    // Bulk: rsync through ProxyCommand, cut every 32 MiB.
    let breaks = rsync_through_breaks(&cli, &ssh, &proxy, 128 << 20, || proxy.cut());
    eprintln!("rsync of {RSYNC_MIB} MiB survived {breaks} cuts");

    // Refusals, straight to the gateway with the resumable subprotocol: a
    // tunnel id does not resume through another session, and unknown ids
    // are refused.
    create(&cli, "other");
    let ws = format!("ws://127.0.0.1:{gw_port}");
    let cookie = cli.cookie();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (id, banner) = match hello(&ws, &cookie, &demo, [0; 16]).await {
            Answer::Hello(id, first) => (id, first),
            other => panic!("{other:?}"),
        };
        assert_ne!(id, [0; 16]);
        assert!(banner.starts_with(b"SSH-2.0-"), "{banner:?}");
        match hello(&ws, &cookie, "other", id).await {
            Answer::Error(code, reason) => {
                assert_eq!(code, resume::ERR_UNKNOWN, "{reason}");
            }
            other => panic!("another session's tunnel must be refused: {other:?}"),
        }
        match hello(&ws, &cookie, &demo, [9; 16]).await {
            Answer::Error(code, _) => assert_eq!(code, resume::ERR_UNKNOWN),
            other => panic!("an unknown id must be refused: {other:?}"),
        }
        // Its own session resumes it (the first attachment was dropped).
        match hello(&ws, &cookie, &demo, id).await {
            Answer::Hello(again, _) => assert_eq!(again, id),
            other => panic!("{other:?}"),
        }
    });
    assert!(
        d.log().contains("tunnel resumed"),
        "the agent logged the resumes"
    );
}

#[derive(Debug)]
enum Answer {
    Hello([u8; 16], Vec<u8>),
    Error(u16, String),
    #[allow(dead_code)] // read in failure messages
    Closed(Option<(u16, String)>),
}

/// Opens a resumable tunnel WebSocket by hand and sends HELLO for `id`;
/// returns the answer (for a HELLO, with the first DATA bytes).
async fn hello(ws_base: &str, cookie: &str, session: &str, id: [u8; 16]) -> Answer {
    let url = format!("{ws_base}/func/stream/session/{session}/tcpproxy?app=sshd");
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        http::header::COOKIE,
        format!("AIOHTTP_SESSION={cookie}").parse().unwrap(),
    );
    req.headers_mut().insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        resume::SUBPROTOCOL.parse().unwrap(),
    );
    let (mut ws, resp) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        resp.headers()
            .get(http::header::SEC_WEBSOCKET_PROTOCOL)
            .unwrap(),
        resume::SUBPROTOCOL
    );
    let frame = Frame::Hello {
        id,
        received: 0,
        fin: false,
        grace_ms: 0,
    };
    ws.send(Message::Binary(frame.to_bytes())).await.unwrap();
    let mut dec = Decoder::default();
    let mut got: Option<[u8; 16]> = None;
    // DATA comes out in the pieces it arrived in: gather the first line.
    let mut first = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        while let Some(f) = dec.next_frame().unwrap() {
            match f {
                Frame::Hello { id, .. } => got = Some(id),
                Frame::Data(d) => {
                    first.extend_from_slice(&d);
                    if let Some(id) = got
                        && first.contains(&b'\n')
                    {
                        return Answer::Hello(id, first);
                    }
                }
                Frame::Error { code, reason } => return Answer::Error(code, reason),
                other => panic!("unexpected {other:?}"),
            }
        }
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => dec.push(b),
            Ok(Some(Ok(Message::Close(f)))) => {
                return Answer::Closed(f.map(|f| (u16::from(f.code), f.reason.to_string())));
            }
            Ok(Some(Ok(_))) => {}
            Ok(None) | Ok(Some(Err(_))) => return Answer::Closed(None),
            Err(_) => {
                // A resumed tunnel whose peer has nothing new to say.
                if let Some(id) = got {
                    return Answer::Hello(id, first);
                }
                panic!("no answer");
            }
        }
    }
}

const TOKEN: &str = "resume-test-agent-token-0123456789";

/// `airlockd gateway` + `airlockd agent`; the gateway can be killed and
/// started again on the same port and data.
struct Split {
    data: tempfile::TempDir,
    label: String,
    port: u16,
    gateway: Option<Background>,
    agent: Option<Background>,
}

impl Split {
    fn start() -> Self {
        let data = tempfile::tempdir().unwrap();
        let label = format!(
            "airlock.test.run={}",
            data.path().file_name().unwrap().to_string_lossy()
        );
        let mut s = Split {
            data,
            label,
            port: 0,
            gateway: None,
            agent: None,
        };
        s.start_gateway();
        let mut a = Command::new(bin("airlockd"));
        a.args([
            "agent",
            "--gateway",
            &s.url(),
            "--token",
            TOKEN,
            "--listen",
            "127.0.0.2:0",
            "--tunnel-grace",
            "60s",
        ])
        .args(["--id", "node-a", "--data"])
        .arg(s.data.path().join("agent"))
        .args([
            "--container-label",
            "airlock.test=1",
            "--container-label",
            &s.label,
        ]);
        let agent = Background::spawn(&mut a);
        agent.wait_for("registered with the gateway", Duration::from_secs(60));
        s.agent = Some(agent);
        s
    }

    fn start_gateway(&mut self) {
        let mut g = Command::new(bin("airlockd"));
        g.args([
            "gateway",
            "--listen",
            &format!("127.0.0.1:{}", self.port),
            "--data",
        ])
        .arg(self.data.path().join("gw"))
        .args(["--agent-token", TOKEN])
        .env("AIRLOCK_ADMIN_PASSWORD", "admin-password-for-tests");
        let gateway = Background::spawn(&mut g);
        let line = gateway.wait_for("airlock gateway is running at ", Duration::from_secs(60));
        let url = line.rsplit(' ').next().unwrap().trim().to_owned();
        let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
        assert!(self.port == 0 || self.port == port);
        self.port = port;
        self.gateway = Some(gateway);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the gateway (like a crash) and starts it again.
    fn restart_gateway(&mut self) {
        if let Some(mut g) = self.gateway.take() {
            g.signal("KILL", Duration::from_secs(10));
        }
        self.start_gateway();
    }
}

impl Drop for Split {
    fn drop(&mut self) {
        self.gateway.take();
        self.agent.take();
        docker::remove_labelled(&self.label);
    }
}

#[test]
fn rsync_survives_split_gateway_restarts() {
    let _serial = serial();
    let mut nodes = Split::start();
    // The fault proxy only counts bytes here (to restart mid-transfer).
    let proxy = FaultProxy::start(nodes.port);
    let cli = Cli::new(&proxy.url());
    login(&cli, "admin@airlock.local", "admin-password-for-tests");
    create(&cli, "demo");
    let ssh = Ssh::new(&cli);
    ssh.ssh("airlock-demo", "true").expect_code(0);
    let restarts = rsync_through_breaks(&cli, &ssh, &proxy, 200 << 20, || {
        nodes.restart_gateway();
    });
    eprintln!("rsync of {RSYNC_MIB} MiB survived {restarts} gateway restarts");
    let agent = nodes.agent.as_ref().unwrap().output();
    assert!(agent.contains("tunnel resumed"), "{agent}");
}
