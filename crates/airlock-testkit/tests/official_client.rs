//! The official Backend.AI client (`backend.ai`, PyPI backend.ai-client)
//! against airlock: Backend.AI's guide's command sequence, typed as written,
//! with the latest client (26.9, Python 3.13) and the series of Backend.AI's guide (22.09,
//! Python 3.10), in session (cookie) and api (keypair) mode. The clients
//! come from `scripts/client-venvs` (run by scripts/test).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use airlock_testkit::ssh::{random_file, sha256};
use airlock_testkit::{Airlockd, Background, Cli, Output, run};

/// Backend.AI's guide's commands use port 9922: one test at a time.
static SEED_PORT: Mutex<()> = Mutex::new(());

const LONG: Duration = Duration::from_secs(300);

fn venv(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .unwrap();
    let dir = target.join("venvs").join(name);
    assert!(
        dir.join("bin/backend.ai").is_file(),
        "{} is missing: run scripts/client-venvs (scripts/test does)",
        dir.display()
    );
    dir
}

/// A user's terminal with the official client's virtualenv activated.
struct Client {
    venv: PathBuf,
    dir: tempfile::TempDir,
}

impl Client {
    fn new(venv_name: &str, env: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home/.ssh")).unwrap();
        std::fs::write(dir.path().join(".env"), env).unwrap();
        Client {
            venv: venv(venv_name),
            dir,
        }
    }

    fn cwd(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("setsid");
        let path = format!(
            "{}:{}",
            self.venv.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.arg(program)
            .args(args)
            .current_dir(self.cwd())
            .env("PATH", path)
            .env("HOME", self.dir.path().join("home"))
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env("NO_COLOR", "1")
            .env("PYTHONWARNINGS", "ignore");
        for (k, _) in std::env::vars() {
            if k.starts_with("BACKEND_") || k.starts_with("AIRLOCK_") {
                c.env_remove(k);
            }
        }
        c
    }

    fn ba(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run(
            &mut self.command("backend.ai", args),
            stdin.map(str::as_bytes),
            LONG,
        )
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.ba(args, None);
        assert_eq!(
            out.code,
            Some(0),
            "backend.ai {args:?} failed:\n{}\n{}",
            out.stdout,
            out.stderr
        );
        assert!(!out.stderr.contains("Traceback"), "{}", out.stderr);
        out
    }
}

/// `backend.ai ssh …`: its exit code and merged output.
///
/// The client sends SIGINT to its `backend.ai app` helper the moment ssh
/// exits. When the signal lands while the helper's event loop is closing
/// that connection, Python raises the KeyboardInterrupt inside a
/// finaliser (`StreamWriter.__del__`), reports it as "ignored", and the
/// helper — and the client waiting for it — never exit. This is a race
/// between the client's own two processes (seen in one run in four to ten
/// against airlock, whatever the server's timing); a user would press
/// Ctrl-C. The test does the same for the helper only, which leaves the
/// client's exit code (ssh's) to be checked.
fn ba_ssh(c: &Client, args: &[&str]) -> (Option<i32>, String) {
    let mut p = Background::spawn(&mut c.command("backend.ai", args));
    let root = p.pid();
    let start = std::time::Instant::now();
    let mut stuck_since: Option<std::time::Instant> = None;
    loop {
        if let Some(code) = p.try_wait() {
            return (code, p.output());
        }
        let tree = descendants(root);
        assert!(
            start.elapsed() < LONG,
            "backend.ai {args:?} did not finish; its processes: {tree:?}\n{}",
            p.output()
        );
        // The stuck state: ssh is gone, the helper (a child or a deeper
        // descendant, however the client version starts it) still runs.
        let helper: Vec<u32> = tree
            .iter()
            .filter(|(_, cmd)| cmd.contains("ai.backend.cli") && cmd.contains(" app "))
            .map(|(pid, _)| *pid)
            .collect();
        let ssh_alive = tree.iter().any(|(_, cmd)| {
            cmd.split_whitespace()
                .next()
                .is_some_and(|prog| prog.rsplit('/').next() == Some("ssh"))
        });
        if !helper.is_empty() && !ssh_alive {
            let since = *stuck_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() > Duration::from_secs(15) {
                eprintln!(
                    "backend.ai's app helper ignored its SIGINT (client race); sending another to {helper:?} of {tree:?}"
                );
                for h in &helper {
                    let _ = Command::new("kill").args(["-INT", &h.to_string()]).status();
                }
                stuck_since = None;
            }
        } else {
            stuck_since = None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every descendant of `root` (pid, command line), from /proc.
fn descendants(root: u32) -> Vec<(u32, String)> {
    let mut procs: Vec<(u32, u32, String)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The parent is the second field after the parenthesised name.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok())
        else {
            continue;
        };
        let cmd = std::fs::read(entry.path().join("cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .replace('\0', " ")
                    .trim()
                    .to_owned()
            })
            .unwrap_or_default();
        procs.push((pid, ppid, cmd));
    }
    let mut out: Vec<(u32, String)> = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (pid, ppid, cmd) in &procs {
            if *ppid == parent {
                out.push((*pid, cmd.clone()));
                frontier.push(*pid);
            }
        }
    }
    out
}

fn no_traceback(out: &Output) {
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(!all.contains("Traceback"), "{all}");
}

/// Backend.AI's guide's `ssh … -i ./id_container -p 9922 work@127.0.0.1`, verbatim.
fn seed_ssh(c: &Client, cmd: &str) -> Output {
    let mut s = c.command(
        "ssh",
        &[
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-i",
            "./id_container",
            "-p",
            "9922",
            "work@127.0.0.1",
            cmd,
        ],
    );
    run(&mut s, None, LONG)
}

fn seed_flow(venv_name: &str, session: &str) {
    let _port = SEED_PORT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = Airlockd::start();
    let c = Client::new(
        venv_name,
        &format!(
            "BACKEND_ENDPOINT_TYPE=session\nBACKEND_ENDPOINT={}\n",
            d.url
        ),
    );

    // $ backend.ai login  (User ID: / Password: answered on stdin)
    let out = c.ba(
        &["login"],
        Some(&format!("{}\n{}\n", d.admin_email, d.admin_password)),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("User ID:") || out.stdout.contains("User ID:"),
        "{out:?}"
    );
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("✓ Login succeeded."),
        "{out:?}"
    );

    // Folders: the user's own key in .ssh/authorized_keys, and a data folder.
    let own_key = c.cwd().join("mykey");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&own_key)
            .status()
            .unwrap()
            .success()
    );
    std::fs::copy(
        own_key.with_extension("pub"),
        c.cwd().join("authorized_keys"),
    )
    .unwrap();
    let out = c.ok(&["vfolder", "create", ".ssh"]);
    assert!(
        out.stdout.contains("Virtual folder \".ssh\" is created."),
        "{out:?}"
    );
    c.ok(&["vfolder", "upload", ".ssh", "authorized_keys"]);
    c.ok(&["vfolder", "create", "myfolder"]);
    let out = c.ok(&["vfolder", "list"]);
    assert!(
        out.stdout.contains(".ssh") && out.stdout.contains("myfolder"),
        "{}",
        out.stdout
    );

    // A session with the folder mounted.
    let out = c.ok(&[
        "session",
        "create",
        "-t",
        session,
        "-m",
        "myfolder",
        "airlock/base:bookworm",
    ]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("is created and ready"), "{all}");
    assert!(all.contains("sshd"), "{all}");
    let out = c.ok(&["ps"]);
    assert!(
        out.stdout.contains(session) && out.stdout.contains("RUNNING"),
        "{}",
        out.stdout
    );
    let id = out
        .stdout
        .split_whitespace()
        .find(|w| w.len() == 36 && w.matches('-').count() == 4)
        .expect("a session UUID in ps")
        .to_owned();
    let out = c.ok(&["session", "info", &id]);
    assert!(
        out.stdout.contains(session) && out.stdout.contains("RUNNING"),
        "{}",
        out.stdout
    );

    // Files in the session's home (GET /session/<s>/files).
    let out = c.ok(&["session", "ls", session]);
    assert!(out.stdout.contains("id_container"), "{}", out.stdout);

    // $ backend.ai session download SESSION id_container
    let out = c.ok(&["session", "download", session, "id_container"]);
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("Downloaded to"),
        "{out:?}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(c.cwd().join("id_container"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "id_container must arrive 0600");

    // $ backend.ai app SESSION sshd -b 9922
    let mut app =
        Background::spawn(&mut c.command("backend.ai", &["app", session, "sshd", "-b", "9922"]));
    app.wait_for("tcp://127.0.0.1:9922", Duration::from_secs(60));
    let line = app.wait_for(
        "A local proxy to the application \"sshd\"",
        Duration::from_secs(5),
    );
    assert!(line.contains(session), "{line}");

    // $ ssh … -i ./id_container … -p 9922 work@127.0.0.1
    let out = seed_ssh(&c, "whoami; echo $HOME");
    out.expect_code(0);
    assert_eq!(out.stdout.trim(), "work\n/home/work");
    // The user's own key from the .ssh folder works too.
    let mut s = c.command(
        "ssh",
        &[
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-i",
            "./mykey",
            "-p",
            "9922",
            "work@127.0.0.1",
            "true",
        ],
    );
    run(&mut s, None, LONG).expect_code(0);

    // $ scp … -P 9922 test_file work@127.0.0.1:/home/work/myfolder/  (100 MiB)
    let file = c.cwd().join("test_file.bin");
    random_file(&file, 100);
    let sum = sha256(&file);
    let mut scp = c.command(
        "scp",
        &[
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-i",
            "./id_container",
            "-P",
            "9922",
            "test_file.bin",
            "work@127.0.0.1:/home/work/myfolder/",
        ],
    );
    run(&mut scp, None, LONG).expect_code(0);
    let out = seed_ssh(&c, "sha256sum /home/work/myfolder/test_file.bin");
    assert!(out.stdout.starts_with(&sum), "{out:?}");

    // Ctrl-C on the first terminal, once the user has read the output: a
    // SIGINT within a millisecond of a connection's end can be lost in the
    // client (see `ba_ssh`).
    std::thread::sleep(Duration::from_secs(1));
    app.signal("INT", Duration::from_secs(20));
    assert!(app.output().contains("has terminated"), "{}", app.output());

    // $ backend.ai ssh SESSION  (a command instead of a shell)
    let (code, out) = ba_ssh(
        &c,
        &[
            "ssh",
            session,
            "-o",
            "BatchMode=yes",
            "echo",
            "hello-from-backend.ai-ssh",
        ],
    );
    assert!(!out.contains("Traceback"), "{out}");
    assert!(out.contains("hello-from-backend.ai-ssh"), "{out}");
    assert_eq!(code, Some(0), "{out}");

    // Destroy; the file stays in the folder (read back with airlock's CLI).
    let out = c.ok(&["session", "destroy", session]);
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("Done"),
        "{out:?}"
    );
    let cli = Cli::new(&d.url);
    cli.run(
        &["login"],
        Some(&format!("{}\n{}\n", d.admin_email, d.admin_password)),
    )
    .expect_code(0);
    let back = cli.dir.path().join("back");
    cli.run(
        &[
            "vfolder",
            "download",
            "myfolder",
            "test_file.bin",
            "--dest",
            back.to_str().unwrap(),
        ],
        None,
    )
    .expect_code(0);
    assert_eq!(sha256(&back.join("test_file.bin")), sum);

    // $ backend.ai logout, then bad credentials fail politely.
    let out = c.ok(&["logout"]);
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("Logout done"),
        "{out:?}"
    );
    let out = c.ba(
        &["login"],
        Some(&format!("{}\nwrong-password\n", d.admin_email)),
    );
    no_traceback(&out);
    assert_ne!(out.code, Some(0));
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("Login failed"),
        "{out:?}"
    );
}

fn api_mode(venv_name: &str, session: &str) {
    let _port = SEED_PORT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = Airlockd::start();
    let (access_key, secret_key) = d.add_user_with_keys("api@example.com", "api-user-password");
    let c = Client::new(
        venv_name,
        &format!(
            "BACKEND_ENDPOINT_TYPE=api\nBACKEND_ENDPOINT={}\nBACKEND_ACCESS_KEY={}\nBACKEND_SECRET_KEY={}\n",
            d.url, access_key, secret_key
        ),
    );
    // `-e` reaches SSH logins (config.environ).
    let out = c.ok(&[
        "session",
        "create",
        "-t",
        session,
        "-e",
        "FROM_CLIENT=set by backend.ai",
        "airlock/base:bookworm",
    ]);
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("is created and ready"),
        "{out:?}"
    );
    let out = c.ok(&["ps"]);
    assert!(out.stdout.contains(session), "{}", out.stdout);
    c.ok(&["session", "download", session, "id_container"]);
    let mut app =
        Background::spawn(&mut c.command("backend.ai", &["app", session, "sshd", "-b", "9922"]));
    app.wait_for("tcp://127.0.0.1:9922", Duration::from_secs(60));
    let out = seed_ssh(&c, "echo \"[$FROM_CLIENT]\"");
    assert_eq!(out.stdout, "[set by backend.ai]\n", "{out:?}");
    std::thread::sleep(Duration::from_secs(1)); // as above: not mid-teardown
    app.signal("INT", Duration::from_secs(20));
    // A wrong secret gets the client's normal error, not a traceback.
    std::fs::write(
        c.cwd().join(".env"),
        format!(
            "BACKEND_ENDPOINT_TYPE=api\nBACKEND_ENDPOINT={}\nBACKEND_ACCESS_KEY={}\nBACKEND_SECRET_KEY={}\n",
            d.url,
            access_key,
            "x".repeat(40)
        ),
    )
    .unwrap();
    let out = c.ba(&["ps"], None);
    assert_ne!(out.code, Some(0));
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("401") || all.contains("Unauthorized"), "{all}");
}

#[test]
fn seed_flow_with_client_26_9() {
    seed_flow("backendai-26.9", "ibnFmWim-session");
}

#[test]
fn seed_flow_with_client_22_9() {
    seed_flow("backendai-22.9", "ibnFmWim-session");
}

#[test]
fn api_mode_with_client_26_9() {
    api_mode("backendai-26.9", "api-session");
}

#[test]
fn api_mode_with_client_22_9() {
    api_mode("backendai-22.9", "api-session");
}
