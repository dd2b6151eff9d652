//! The web terminal in a real headless Chromium: xterm.js ⇄ the
//! gateway's WebSocket ⇄ a kept shell in a real session container, typed
//! into key by key as a user types.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use airlock_testkit::browser::{Browser, WAIT, serve_page};
use airlock_testkit::{Airlockd, Cli, LogOnPanic, docker};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(300);

fn screen(b: &Browser) -> String {
    b.exec("return window.airlockTerminal.text()", vec![])
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The terminal's rows and columns as xterm.js has them.
fn size(b: &Browser) -> (u64, u64) {
    let v = b.exec("return window.airlockTerminal.size()", vec![]);
    (v[0].as_u64().unwrap(), v[1].as_u64().unwrap())
}

fn wait_connected(b: &Browser) {
    b.wait_until("the terminal to connect", WAIT, |b| {
        b.exec(
            "return !!window.airlockTerminal && window.airlockTerminal.connected()",
            vec![],
        ) == json!(true)
    });
}

/// Waits until a line of the screen is exactly `line` (trailing blanks
/// aside).
fn wait_line(b: &Browser, line: &str) {
    let mut last = String::new();
    let start = std::time::Instant::now();
    while start.elapsed() < WAIT {
        last = screen(b);
        if last.lines().any(|l| l.trim_end() == line) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no line {line:?} on the terminal:\n{last}");
}

/// Types `cmd` and Enter, and waits for the line `marker` it prints.
fn run(b: &Browser, cmd: &str, marker: &str) {
    b.type_keys(&format!("{cmd}\n"));
    wait_line(b, marker);
}

fn audit_kinds(d: &Airlockd) -> Vec<Value> {
    let out = d.admin_command(&["audit", "--session", "term", "--json"], None);
    out.expect_code(0);
    out.stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"].as_str().unwrap_or("").starts_with("terminal."))
        .collect()
}

#[test]
fn terminal_types_resizes_interrupts_and_keeps_its_shell() {
    assert!(docker::available(), "this test needs Docker");
    let d = Airlockd::start();
    let _log = LogOnPanic(&d);
    let b = Browser::start("terminal", &d.url, LIMIT);
    b.resize(1200, 800);
    b.login(&d.admin_email, &d.admin_password);
    let id = b.create_session("term", &[], "");

    // The button on the session's row leads to the terminal page.
    let href = b
        .attr("tr[data-session=term] a[href$='/terminal']", "href")
        .unwrap();
    assert!(
        href.ends_with(&format!("/ui/sessions/{id}/terminal")),
        "{href}"
    );
    let page = format!("/ui/sessions/{id}/terminal");
    b.goto(&page);
    wait_connected(&b);
    b.check_accessibility();

    // Typing, arithmetic and the pty's size as the page has it.
    let (rows, cols) = size(&b);
    assert!(cols > 40 && rows > 10, "{rows}x{cols}");
    run(&b, "stty size; echo $((6*7))", "42");
    wait_line(&b, &format!("{rows} {cols}"));

    // A smaller window: xterm.js refits, the pty follows.
    b.resize(700, 450);
    b.wait_until("the terminal to refit", WAIT, |b| size(b) != (rows, cols));
    let (rows2, cols2) = size(&b);
    assert!(cols2 < cols, "{cols2} < {cols}");
    run(&b, "clear; stty size", &format!("{rows2} {cols2}"));

    // UTF-8 and colours arrive intact.
    run(
        &b,
        r"printf '\xe2\x9c\x93 gr\xc3\xbc\xc3\x9fe\n'",
        "✓ grüße",
    );
    run(&b, r"printf '\e[31m%s\e[0m\n' R$((1+1))D", "R2D");
    // Palette colour 1 is red.
    assert_eq!(
        b.exec("return window.airlockTerminal.fgOf('R2D')", vec![]),
        json!(1)
    );

    // Ctrl-C interrupts the foreground job: status 130.
    b.type_keys("sleep 100\n");
    std::thread::sleep(Duration::from_millis(500));
    b.press_ctrl('c');
    run(&b, "echo rc=$?", "rc=130");

    // The shell outlives the tab: close it, open the page again, and the
    // variable set before is still set in the same shell.
    run(
        &b,
        "export KEPT=still-here; echo pid=$$ > /tmp/pid; echo ok",
        "ok",
    );
    b.reopen_in_new_window(&page);
    assert_eq!(
        b.exec("return document.visibilityState", vec![]),
        json!("visible")
    );
    wait_connected(&b);
    run(&b, "echo kept=$KEPT", "kept=still-here");
    let first_pid = docker::exec(&docker::container_of(&id).unwrap(), &["cat", "/tmp/pid"]).stdout;
    run(&b, "echo pid=$$", first_pid.trim());

    // A dropped connection comes back by itself to the same shell.
    b.exec("window.airlockTerminal.drop(); return null", vec![]);
    b.wait_until("the page to notice the drop", WAIT, |b| {
        b.exec("return window.airlockTerminal.connected()", vec![]) == json!(false)
    });
    wait_connected(&b);
    run(&b, "echo again=$KEPT", "again=still-here");

    // `ssh -t S airlock-attach` reaches the same shell; the page says the
    // terminal was opened elsewhere and waits instead of taking it back.
    let cli = Cli::new(&d.url);
    cli.run(
        &["login"],
        Some(&format!("{}\n{}\n", d.admin_email, d.admin_password)),
    )
    .expect_code(0);
    let out = cli.run(
        &["ssh", "term", "-tt", "airlock-attach"],
        Some("echo from-ssh=$KEPT; exit 3\n"),
    );
    assert!(out.stdout.contains("from-ssh=still-here"), "{out:?}");
    assert_eq!(out.code, Some(3), "{out:?}");
    b.wait_until("the page to say the shell is elsewhere", WAIT, |b| {
        b.exec("return window.airlockTerminal.state()", vec![]) == json!("opened elsewhere")
    });
    // That shell has exited (ssh ran `exit 3`): Enter starts a new one.
    b.type_keys("\n");
    wait_connected(&b);
    run(&b, "echo kept=${KEPT:-gone}", "kept=gone");

    // Opening, closing and the bytes are in the audit trail.
    let events = audit_kinds(&d);
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(kinds.contains(&"terminal.opened"), "{kinds:?}");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "terminal.closed"
                && e["detail"]["bytes_up"].as_u64().unwrap_or(0) > 0),
        "{events:#?}"
    );
}

#[test]
fn terminal_is_the_owners_only_and_same_origin_only() {
    assert!(docker::available(), "this test needs Docker");
    let d = Airlockd::start();
    let _log = LogOnPanic(&d);
    d.admin_command(&["user", "add", "bob@example.com"], Some(b"bob-password\n"))
        .expect_code(0);
    let b = Browser::start("terminal-isolation", &d.url, LIMIT);
    b.login(&d.admin_email, &d.admin_password);
    let id = b.create_session("alices", &[], "");
    let ws = format!(
        "{}/ui/sessions/{id}/terminal/ws?t=main&cols=80&rows=24",
        d.url.replacen("http://", "ws://", 1)
    );
    // Control: the owner's page opens it.
    b.goto(&format!("/ui/sessions/{id}/terminal"));
    assert_eq!(b.websocket_from_page(&ws), "open");

    // A bad terminal name is a clear error, not a shell.
    let (status, body) = b.fetch("GET", &format!("/ui/sessions/{id}/terminal?t=../x"), None);
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("Bad terminal name") && body.contains("?t=main"),
        "{body}"
    );

    // The same socket from a page on another origin is refused.
    let evil = serve_page("<!doctype html><title>innocent</title>".to_owned());
    b.goto(&format!("{evil}/"));
    assert_eq!(b.websocket_from_page(&ws), "refused");
    assert!(d.log().contains("refused a cross-site request"));

    // Another user finds neither the page nor the socket.
    b.goto("/ui/sessions");
    b.click("form[action='/ui/logout'] button");
    b.wait_until("the login page", WAIT, |b| {
        b.path().starts_with("/ui/login")
    });
    b.login("bob@example.com", "bob-password");
    for path in [
        format!("/ui/sessions/{id}/terminal"),
        format!("/ui/sessions/{id}/terminal/ws"),
    ] {
        let (status, body) = b.fetch("GET", &path, None);
        assert_eq!(status, 404, "{path}: {}", String::from_utf8_lossy(&body));
    }
    b.goto("/ui/sessions");
    assert_eq!(b.websocket_from_page(&ws), "refused");
}

/// Types `n` lowercase letters into bash one at a time in the open web
/// terminal and returns each key's echo time in ms, measured in the page
/// from sending the key on the WebSocket to its echo arriving (xterm.js's
/// drawing excluded). A Ctrl-U every 50 keys keeps the line short.
fn browser_echo_ms(b: &Browser, n: usize) -> Vec<f64> {
    let v = b.exec_async(
        r#"const [n, done] = arguments;
           const t = window.airlockTerminal;
           const out = [];
           let want = null, t0 = 0, buf = '', i = 0;
           t.onOutput(s => {
             if (want === null) return;
             buf += s;
             if (buf.includes(want)) { out.push(performance.now() - t0); want = null; next(); }
           });
           const letters = 'abcdefghijklmnopqrstuvwxyz';
           function key() { const ch = letters[i % 26]; i++; buf = ''; want = ch; t0 = performance.now(); t.send(ch); }
           function next() {
             if (i === n) { t.send('\x15'); done(out); return; }
             if (i > 0 && i % 50 === 0) { t.send('\x15'); setTimeout(key, 200); return; }
             setTimeout(key, 5);
           }
           next();"#,
        vec![json!(n)],
    );
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The same through `airlock ssh S` on a pty (Python's `pty`, timed at the
/// pty master: what a local terminal emulator would see).
fn airlock_ssh_echo_ms(cli: &Cli, session: &str, n: usize) -> Vec<f64> {
    const SCRIPT: &str = r#"
import json, os, pty, select, sys, time
n = int(sys.argv[1]); argv = sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)
def read_until(want, limit):
    buf = b''; end = time.time() + limit
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], max(0, end - time.time()))
        if r:
            buf += os.read(fd, 65536)
            if want in buf:
                return
    sys.exit('timed out waiting for %r in %r' % (want, buf[-300:]))
def drain():
    while select.select([fd], [], [], 0.1)[0]:
        os.read(fd, 65536)
os.write(fd, b'echo READY$((1+1))\r')
read_until(b'READY2', 60)
time.sleep(0.3); drain()
out = []
letters = b'abcdefghijklmnopqrstuvwxyz'
for i in range(n):
    if i and i % 50 == 0:
        os.write(fd, b'\x15'); time.sleep(0.2); drain()
    ch = letters[i % 26:i % 26 + 1]
    t0 = time.perf_counter(); os.write(fd, ch); read_until(ch, 10)
    out.append((time.perf_counter() - t0) * 1000)
    time.sleep(0.005)
os.write(fd, b'\x15exit\r')
print(json.dumps(out))
"#;
    let airlock = cli.command(&[]);
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", SCRIPT, &n.to_string()])
        .arg(airlock.get_program())
        .args(["ssh", session]);
    for (k, v) in airlock.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    if let Some(dir) = airlock.get_current_dir() {
        cmd.current_dir(dir);
    }
    let out = airlock_testkit::run(&mut cmd, None, Duration::from_secs(300));
    out.expect_code(0);
    serde_json::from_str(out.stdout.trim()).unwrap()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Keystroke echo latency, web terminal next to `airlock ssh`, both typing
/// into bash in the same session. A benchmark (`bench/terminal-latency`),
/// so ignored by the test suite: it only prints.
#[test]
#[ignore = "a benchmark: run by bench/terminal-latency"]
fn echo_latency_web_terminal_vs_airlock_ssh() {
    let n: usize = std::env::var("AIRLOCK_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let d = Airlockd::start();
    let _log = LogOnPanic(&d);
    let b = Browser::start("terminal-latency", &d.url, Duration::from_secs(900));
    b.login(&d.admin_email, &d.admin_password);
    let id = b.create_session("latency", &[], "");
    b.goto(&format!("/ui/sessions/{id}/terminal"));
    wait_connected(&b);
    run(&b, "echo READY$((1+1))", "READY2");
    let cli = Cli::new(&d.url);
    cli.run(
        &["login"],
        Some(&format!("{}\n{}\n", d.admin_email, d.admin_password)),
    )
    .expect_code(0);
    // Alternate the two, twice, so drift on a busy machine hits both.
    let mut web = Vec::new();
    let mut ssh = Vec::new();
    for _ in 0..2 {
        web.extend(browser_echo_ms(&b, n / 2));
        ssh.extend(airlock_ssh_echo_ms(&cli, "latency", n / 2));
    }
    let row = |name: &str, v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(v, 0.5), percentile(v, 0.99));
        println!("{name:<28} {:>6} {p50:>9.2} {p99:>9.2}", v.len());
        (p50, p99)
    };
    println!(
        "\nKeystroke echo into bash, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<28} {:>6} {:>9} {:>9}",
        "path", "keys", "p50 ms", "p99 ms"
    );
    let (w50, w99) = row("web terminal (page ⇄ WS)", &mut web);
    let (s50, s99) = row("airlock ssh (local pty)", &mut ssh);
    println!(
        "ratio web/ssh: p50 {:.2}, p99 {:.2}",
        w50 / s50.max(0.001),
        w99 / s99.max(0.001)
    );
}
