//! The web UI in a real headless Chromium through chromedriver,
//! against a real airlockd, real Docker containers and real OpenSSH.
//!
//! Every test has a deadline (the `Browser` limit plus per-wait limits) and
//! saves a screenshot and the page source when it fails (see
//! `airlock_testkit::browser`). With `AIRLOCK_SCREENSHOTS=DIR` set, the
//! session test also writes the documentation screenshots into DIR
//! (`AIRLOCK_SCREENSHOTS=docs/screenshots`, relative to the workspace).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use airlock_testkit::browser::{Browser, WAIT};
use airlock_testkit::docker::{self, container_of, ip_of};
use airlock_testkit::ssh::{SshClient, fingerprint, random_file, sha256};
use airlock_testkit::{Airlockd, Background, Cli, free_port};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(300);
const RUNNING: Duration = Duration::from_secs(90);

/// Prints airlockd's log when the test fails (declare it after the
/// `Airlockd`, so it runs first).
struct LogOnPanic<'a>(&'a Airlockd);

impl Drop for LogOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- airlockd log\n{}", self.0.log());
        }
    }
}

fn browser(name: &str, d: &Airlockd) -> Browser {
    assert!(docker::available(), "these tests need Docker");
    Browser::start(name, &d.url, LIMIT)
}

fn add_user(d: &Airlockd, email: &str) -> String {
    let password = format!("{}-password", email.split('@').next().unwrap());
    d.admin_command(
        &["user", "add", email],
        Some(format!("{password}\n").as_bytes()),
    )
    .expect_code(0);
    password
}

/// Where documentation screenshots go, if they are wanted.
fn screenshot_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("AIRLOCK_SCREENSHOTS")?);
    let dir = if dir.is_absolute() {
        dir
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(dir)
    };
    std::fs::create_dir_all(&dir).unwrap();
    Some(dir)
}

fn flash(b: &Browser) -> String {
    b.wait_for(".flash");
    b.text(".flashes")
}

/// The API's view of a session, fetched with the browser's cookie.
fn api_session(b: &Browser, ident: &str) -> Value {
    let (status, body) = b.fetch("GET", &format!("/session/{ident}"), None);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn open_dialog(b: &Browser, name: &str) -> String {
    b.click(&format!("tr[data-session='{name}'] a[data-dialog]"));
    b.wait_for("dialog#modal[open] .fingerprint");
    b.exec(
        "return document.querySelector('dialog#modal').textContent",
        vec![],
    )
    .as_str()
    .unwrap()
    .to_owned()
}

/// The element's box lies within the window's width (not cut off).
fn assert_inside_window(b: &Browser, css: &str, width: u32) {
    let v = b.exec(
        "const e = document.querySelector(arguments[0]); if (!e) return null; \
         const r = e.getBoundingClientRect(); \
         return [r.left, r.right, document.documentElement.clientWidth, r.width];",
        vec![serde_json::json!(css)],
    );
    assert!(!v.is_null(), "no {css} at {width}px");
    let (left, right, client, w) = (
        v[0].as_f64().unwrap(),
        v[1].as_f64().unwrap(),
        v[2].as_f64().unwrap(),
        v[3].as_f64().unwrap(),
    );
    assert!(
        w > 0.0 && left >= 0.0 && right <= client + 0.5,
        "{css} is at {left}..{right} in a {client}px wide page (window {width}px)"
    );
}

fn assert_no_horizontal_scroll(b: &Browser) {
    let v = b.exec(
        "return [document.documentElement.scrollWidth, window.innerWidth]",
        vec![],
    );
    let (content, window) = (v[0].as_u64().unwrap(), v[1].as_u64().unwrap());
    assert!(
        content <= window,
        "{} is {content}px wide in a {window}px window",
        b.path()
    );
    if let Ok(dir) = std::env::var("AIRLOCK_NARROW_SHOTS") {
        let name = b.path().replace(['/', '?', '='], "_");
        let open = if b.exists("dialog#modal[open]") {
            "-dialog"
        } else {
            ""
        };
        b.screenshot(&PathBuf::from(dir).join(format!("narrow{name}{open}.png")));
    }
}

fn close_dialog(b: &Browser) {
    b.click("dialog#modal [data-close]");
    b.wait_until("the dialog to close", WAIT, |b| {
        !b.exists("dialog#modal[open]")
    });
}

#[test]
fn login_logout_errors_csrf_and_accessibility() {
    let d = Airlockd::start();
    let _log = LogOnPanic(&d);
    let b = browser("login", &d);

    // API clients still get the version JSON at / (fetch sends Accept: */*).
    b.goto("/ui/login");
    let (status, body) = b.fetch("GET", "/", None);
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["version"].is_string() && v["manager"].is_string(), "{v}");

    // A browser at / lands on the login page, then back where it wanted to go.
    b.goto("/");
    b.wait_until("the login page", WAIT, |b| {
        b.path().starts_with("/ui/login")
    });
    b.check_accessibility();
    b.fill("#email", &d.admin_email);
    b.fill("#password", "wrong-password");
    b.click("form button[type=submit]");
    b.wait_text(".form-error", "Invalid email or password", WAIT);
    b.check_accessibility();
    b.goto("/ui/settings");
    b.wait_until("the login page", WAIT, |b| {
        b.path().starts_with("/ui/login")
    });
    b.fill("#email", &d.admin_email);
    b.fill("#password", &d.admin_password);
    b.click("form button[type=submit]");
    b.wait_until("settings after login", WAIT, |b| b.path() == "/ui/settings");

    // The login is the same cookie session the API and CLI use.
    let (status, body) = b.fetch("GET", "/server/login-check", None);
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["authenticated"], true, "{v}");

    // Every page: an h1, labelled inputs, alt texts.
    for page in ["/ui/sessions", "/ui/folders", "/ui/settings"] {
        b.goto(page);
        b.wait_for("h1");
        b.check_accessibility();
    }
    b.goto("/ui/folders");
    b.fill("#f-name", "docs");
    b.click("form[action='/ui/folders'] button[type=submit]");
    b.wait_text(".flashes", "Folder docs created", WAIT);
    b.check_accessibility();
    // A bad folder name is explained in the page.
    b.goto("/ui/folders");
    b.fill("#f-name", "bad/name");
    b.click("form[action='/ui/folders'] button[type=submit]");
    b.wait_for(".form-error");
    assert_eq!(
        b.exec("return document.querySelector('#f-name').value", vec![]),
        json!("bad/name")
    );
    b.check_accessibility();

    // So is a bad environment variable on the session form, which keeps
    // what was typed.
    b.goto("/ui/sessions");
    b.fill("#s-env", "GOOD=1\n1BAD=x");
    b.click("#new-session button[type=submit]");
    b.wait_text(".form-error", "not a valid variable name", WAIT);
    assert_eq!(
        b.exec("return document.querySelector('#s-env').value", vec![]),
        json!("GOOD=1\n1BAD=x")
    );
    b.check_accessibility();

    // 404s and unknown sessions are pages, not JSON.
    b.goto("/ui/no/such/page");
    assert_eq!(b.text("h1"), "Page not found");
    b.check_accessibility();
    let (status, body) = b.fetch("GET", "/ui/no/such/page", None);
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("<h1>Page not found</h1>"));
    b.goto("/no-such-thing");
    assert_eq!(b.text("h1"), "Page not found");
    let (status, body) = b.fetch("GET", "/no-such-thing", None);
    assert_eq!(status, 404);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["title"], "Not found",
        "API clients still get problem+json"
    );
    b.goto("/ui/sessions/8b0cd7b4-7c54-4c3b-9d2b-0c3f3c7e6b1a/ssh");
    assert_eq!(b.text("h1"), "Not found");
    assert!(b.body_text().contains("No session"), "{}", b.body_text());

    // A state change without the page's CSRF token is refused.
    let (status, body) = b.fetch("POST", "/ui/settings/port", Some("ssh_port=12345"));
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("This form has expired"));
    let (status, _) = b.fetch(
        "POST",
        "/ui/settings/port",
        Some("ssh_port=12345&csrf=0123456789abcdef0123456789abcdef"),
    );
    assert_eq!(status, 403);
    b.goto("/ui/settings");
    assert_eq!(b.text("#current-port"), "9922");

    // Logout ends the session for the API too.
    b.click("form[action='/ui/logout'] button");
    b.wait_until("the login page", WAIT, |b| {
        b.path().starts_with("/ui/login")
    });
    assert!(flash(&b).contains("You have logged out"));
    let (_, body) = b.fetch("GET", "/server/login-check", None);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["authenticated"], false, "{v}");
    b.goto("/ui/folders");
    b.wait_until("the login page", WAIT, |b| {
        b.path().starts_with("/ui/login")
    });
}

#[test]
fn session_dialog_key_download_and_ssh() {
    let d = Airlockd::start();
    let _log = LogOnPanic(&d);
    let b = browser("session-dialog", &d);
    b.login(&d.admin_email, &d.admin_password);
    b.goto("/ui/folders");
    b.fill("#f-name", "data");
    b.click("form[action='/ui/folders'] button[type=submit]");
    b.wait_text(".flashes", "Folder data created", WAIT);

    let id = b.create_session("demo", &["data"], "WEB_VAR=from the form\nSECOND=2");
    b.check_accessibility();
    assert!(b.text("tr[data-session=demo]").contains("data"));
    // A mounted folder cannot be deleted: the page says so before any
    // confirm (a disabled button with the reason), not after.
    b.goto("/ui/folders");
    assert!(b.exists("tr[data-folder=data] button[disabled]"));
    assert!(!b.exists("tr[data-folder=data] form[data-confirm]"));
    let why = b
        .attr("tr[data-folder=data] button[disabled]", "title")
        .unwrap();
    assert!(why.contains("mounted in demo"), "{why}");
    assert!(b.text("tr[data-folder=data]").contains("In use"));
    b.check_accessibility();
    b.goto("/ui/sessions");
    b.wait_for("tr[data-session=demo]");

    // Status updates arrive without a reload: a session created elsewhere
    // (through the API) appears in the open page.
    b.exec("window.__sameDocument = true; return null", vec![]);
    let created = b.exec_async(
        r#"const done = arguments[0];
           fetch('/session', {method: 'POST', credentials: 'same-origin',
             headers: {'Content-Type': 'application/json'},
             body: JSON.stringify({name: 'second', config: {resources: {cpu: '0.5', mem: '256m'}}})})
           .then(r => done(r.status)).catch(e => done(String(e)));"#,
        vec![],
    );
    assert_eq!(created, json!(201));
    b.wait_until("the second session to appear running", RUNNING, |b| {
        b.exists("tr[data-session=second][data-status=RUNNING]")
    });
    assert_eq!(
        b.exec("return window.__sameDocument === true", vec![]),
        json!(true),
        "the page reloaded"
    );

    if let Some(dir) = screenshot_dir() {
        b.goto("/ui/sessions");
        b.wait_for("tr[data-session=second]");
        b.screenshot(&dir.join("sessions.png"));
    }
    // No sideways scrolling at any width from 360 to 1920 px, and the
    // row actions and "Log out" always inside the window.
    for (w, h) in [
        (360, 740),
        (720, 900),
        (800, 800),
        (1024, 768),
        (1200, 800),
        (1280, 800),
        (1920, 1080),
    ] {
        b.resize(w, h);
        b.goto("/ui/sessions");
        b.wait_for("tr[data-session=second]");
        assert_no_horizontal_scroll(&b);
        assert_inside_window(&b, "tr[data-session=demo] .actions-cell button", w);
        assert_inside_window(&b, "form[action='/ui/logout'] button", w);
        if w == 720 || w == 360 {
            open_dialog(&b, "demo");
            assert_no_horizontal_scroll(&b);
            close_dialog(&b);
        }
    }
    b.resize(1360, 1000);

    // The dialog: commands with the default port, the fingerprint the API
    // reports, the config block.
    let text = open_dialog(&b, "demo");
    b.check_accessibility();
    let api = api_session(&b, "demo");
    let fingerprint = api["host_key_fingerprint"].as_str().unwrap().to_owned();
    let host_key = api["host_key"].as_str().unwrap().to_owned();
    assert_eq!(b.text("#host-fingerprint"), fingerprint);
    for needle in [
        "airlock app demo sshd -b 9922",
        "airlock ssh demo",
        "ssh -i id_container -p 9922 -o HostKeyAlias=airlock-demo -o UserKnownHostsFile=known_hosts work@127.0.0.1",
        "scp -P 9922 -i id_container -o HostKeyAlias=airlock-demo -o UserKnownHostsFile=known_hosts FILE work@127.0.0.1:/home/work/",
        // What `airlock config-ssh` writes, built by the same code.
        "Host airlock-*\n  User work\n  ProxyCommand airlock --env-file ~/.ssh/airlock/airlock.env proxy --ssh-alias %n --known-hosts ~/.ssh/airlock/known_hosts --session-key ~/.ssh/airlock/%n.key\n  IdentityFile ~/.ssh/airlock/%n.key\n  IdentitiesOnly yes\n  UserKnownHostsFile ~/.ssh/airlock/known_hosts\n  StrictHostKeyChecking yes\n  ForwardAgent no",
        "airlock config-ssh --forward-agent",
        "Remote-SSH: Connect to Host",
        "Key file",
        "demo.ppk",
    ] {
        assert!(text.contains(needle), "dialog lacks {needle:?}:\n{text}");
    }
    assert!(text.contains(&format!("airlock-demo {}", host_key.trim())));
    assert!(!text.contains("StrictHostKeyChecking=no"));
    // The tabs switch.
    b.click("[role=tab][aria-controls=tab-windows]");
    assert!(b.text("#tab-windows").contains("Logon Type"));
    b.click("[role=tab][aria-controls=tab-unix]");

    if let Some(dir) = screenshot_dir() {
        b.exec(
            "document.activeElement && document.activeElement.blur(); return null",
            vec![],
        );
        b.screenshot(&dir.join("ssh-dialog.png"));
    }

    // Download id_container through the page's button: the exact bytes of
    // the session's key, and it logs in over SSH with the pinned host key.
    b.click("#dl-key");
    let key = b.wait_download("id_container", WAIT);
    let c = container_of(&id).expect("the session's container");
    let inside = docker::exec(&c, &["cat", "/home/work/id_container"]);
    assert_eq!(std::fs::read_to_string(&key).unwrap(), inside.stdout);
    b.click("#dl-known");
    let known = b.wait_download("known_hosts", WAIT);
    let known = std::fs::read_to_string(known).unwrap();
    assert_eq!(known.trim(), format!("airlock-demo {}", host_key.trim()));
    let ssh = SshClient::with_key(&key);
    // Log in with the downloaded key over the tunnel, as the dialog says:
    // `airlock app demo sshd -b PORT`, then ssh with the pinned host key.
    let cli = Cli::new(&d.url);
    cli.run(
        &["login"],
        Some(&format!("{}\n{}\n", d.admin_email, d.admin_password)),
    )
    .expect_code(0);
    let port = free_port();
    let app =
        Background::spawn(&mut cli.command(&["app", "demo", "sshd", "-b", &port.to_string()]));
    app.wait_for("tcp://", WAIT);
    let known_file = ssh.dir.path().join("known_hosts");
    std::fs::write(&known_file, &known).unwrap();
    let out = airlock_testkit::run(
        Command::new("ssh").args(ssh.options()).args([
            "-o",
            "HostKeyAlias=airlock-demo",
            "-p",
            &port.to_string(),
            "work@127.0.0.1",
            "whoami; test -d ~/data && echo data-mounted; echo \"[$WEB_VAR][$SECOND]\"",
        ]),
        None,
        Duration::from_secs(120),
    );
    out.expect_code(0);
    assert_eq!(out.stdout, "work\ndata-mounted\n[from the form][2]\n");
    drop(app);

    // The PPK is the same key for PuTTY/FileZilla.
    b.click("#dl-ppk");
    let ppk = b.wait_download("demo.ppk", WAIT);
    let ppk_text = std::fs::read_to_string(&ppk).unwrap();
    assert!(
        ppk_text.starts_with("PuTTY-User-Key-File-3: "),
        "{ppk_text}"
    );
    let from_ppk = Command::new("puttygen")
        .arg(&ppk)
        .args(["-O", "public-openssh", "-o", "/dev/stdout"])
        .output()
        .unwrap();
    let from_key = Command::new("ssh-keygen")
        .args(["-y", "-f"])
        .arg(&ssh.key)
        .output()
        .unwrap();
    let blob = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(from_ppk.status.success(), "{from_ppk:?}");
    assert_eq!(blob(&from_ppk), blob(&from_key));

    // Terminate with confirmation.
    close_dialog(&b);
    b.click("tr[data-session=demo] form[data-confirm] button");
    let question = b.accept_confirm();
    assert!(question.contains("Terminate session demo?"), "{question}");
    b.wait_text(".flashes", "Session demo was terminated", WAIT);
    assert!(!b.exists("tr[data-session=demo]"));
    assert!(b.exists("tr[data-session=second]"));
    b.goto("/ui/sessions?all=1");
    b.wait_for("tr[data-session=demo][data-status=TERMINATED]");
}

#[test]
fn preferred_port_and_account_keys() {
    let d = Airlockd::start();
    let _log = LogOnPanic(&d);
    let b = browser("settings", &d);
    b.login(&d.admin_email, &d.admin_password);
    b.goto("/ui/settings");
    b.check_accessibility();
    let save = |value: &str| {
        b.fill("#ssh-port", value);
        b.click("form[action='/ui/settings/port'] button");
    };
    save("80");
    b.wait_text(".form-error", "out of range", WAIT);
    let e = b.text(".form-error");
    assert!(e.contains("between 1025 and 65534"), "{e}");
    assert!(e.contains("10000 and 65000"), "{e}");
    b.check_accessibility();
    save("abc");
    b.wait_text(".form-error", "not a number", WAIT);
    save("1500");
    let f = flash(&b);
    assert!(f.contains("Preferred SSH port set to 1500"), "{f}");
    assert!(
        f.contains("outside the recommended range 10000-65000"),
        "{f}"
    );
    save("12345");
    b.wait_text(".flashes", "set to 12345", WAIT);
    assert_eq!(b.text("#current-port"), "12345");
    // The API sees the same setting.
    let (_, body) = b.fetch("GET", "/user/settings", None);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["ssh_port"], 12345, "{v}");

    // The dialog uses it.
    b.create_session("porty", &[], "");
    let text = open_dialog(&b, "porty");
    assert!(text.contains("airlock app porty sshd -b 12345"), "{text}");
    assert!(text.contains("ssh -i id_container -p 12345 "), "{text}");
    assert!(text.contains("scp -P 12345 "), "{text}");
    assert_eq!(b.text("#dialog-port"), "12345");
    close_dialog(&b);

    // Empty clears it; the dialog falls back to 9922.
    b.goto("/ui/settings");
    save("");
    b.wait_text(".flashes", "cleared", WAIT);
    b.goto("/ui/sessions");
    let text = open_dialog(&b, "porty");
    assert!(text.contains("airlock app porty sshd -b 9922"), "{text}");

    // Account keys: validated, listed with fingerprints, removed.
    b.goto("/ui/settings");
    b.fill("#key-text", "ssh-ed25519 not-a-key");
    b.click("form[action='/ui/settings/keys'] button");
    b.wait_text(".form-error", "Not a valid OpenSSH public key", WAIT);
    assert!(b.text(".form-error").contains("Paste one line like"));
    // A pasted private key is refused and not echoed back into the page.
    let mine = SshClient::new();
    let private = std::fs::read_to_string(&mine.key).unwrap();
    b.fill("#key-text", &private);
    b.click("form[action='/ui/settings/keys'] button");
    b.wait_text(".form-error", "private key", WAIT);
    let echoed = b.exec("return document.querySelector('#key-text').value", vec![]);
    assert_eq!(echoed, "", "the private key was echoed back");
    assert!(!b.body_text().contains("PRIVATE KEY"));
    let fp = fingerprint(&mine.key.with_extension("pub"));
    b.fill("#key-name", "laptop");
    b.fill("#key-text", &mine.public_key());
    b.click("form[action='/ui/settings/keys'] button");
    b.wait_text(".flashes", "Key laptop added", WAIT);
    assert_eq!(b.text("tr[data-key=laptop] code.fp"), fp);
    b.check_accessibility();
    b.click("tr[data-key=laptop] form[data-confirm] button");
    b.accept_confirm();
    b.wait_text(".flashes", "Key laptop", WAIT);
    assert!(flash(&b).contains("removed"));
    assert!(!b.exists("tr[data-key=laptop]"));
}

#[test]
fn dot_ssh_folder_with_a_pasted_key_logs_in() {
    let d = Airlockd::start();
    let _log = LogOnPanic(&d);
    let b = browser("dot-ssh", &d);
    b.login(&d.admin_email, &d.admin_password);
    b.goto("/ui/folders");
    b.click("form[action='/ui/folders'] input[value='.ssh'] ~ button");
    b.wait_text(".flashes", "Folder .ssh created", WAIT);
    b.wait_for("#authorized-keys");
    b.check_accessibility();

    b.fill("#ak-key", "ssh-ed25519 notbase64 me@laptop");
    b.click("#authorized-keys button[type=submit]");
    b.wait_text(".form-error", "Not a valid OpenSSH public key", WAIT);
    assert!(b.text(".form-error").contains("Paste one line like"));
    // The rejected text stays in the box.
    assert_eq!(
        b.exec("return document.querySelector('#ak-key').value", vec![]),
        json!("ssh-ed25519 notbase64 me@laptop")
    );
    let mine = SshClient::new();
    let private = std::fs::read_to_string(&mine.key).unwrap();
    b.fill("#ak-key", &private);
    b.click("#authorized-keys button[type=submit]");
    b.wait_text(".form-error", "private key", WAIT);

    b.fill("#ak-key", &mine.public_key());
    b.click("#authorized-keys button[type=submit]");
    b.wait_text(".flashes", "Added 1 key to authorized_keys", WAIT);
    assert!(b.exists("tr[data-entry=authorized_keys]"));
    let listed = b.text(".keylist");
    assert!(
        listed.contains("SHA256:") && listed.contains("test@airlock"),
        "{listed}"
    );
    // The same key again is not duplicated.
    b.fill("#ak-key", &mine.public_key());
    b.click("#authorized-keys button[type=submit]");
    b.wait_text(".flashes", "already in authorized_keys", WAIT);

    // A new session accepts the key (the .ssh folder is mounted by itself).
    let id = b.create_session("mykey", &[], "");
    let api = api_session(&b, &id);
    let c = container_of(&id).unwrap();
    let ip = ip_of(&c);
    mine.pin(&ip, 2200, api["host_key"].as_str().unwrap());
    let out = mine.ssh(&ip, 2200, "whoami; cat ~/.ssh/authorized_keys");
    out.expect_code(0);
    assert!(out.stdout.starts_with("work\n"), "{}", out.stdout);
    assert!(out.stdout.contains(&mine.public_key()), "{}", out.stdout);
}

#[test]
fn folder_upload_download_mkdir_and_delete() {
    let d = Airlockd::start();
    let _log = LogOnPanic(&d);
    let b = browser("folders", &d);
    b.login(&d.admin_email, &d.admin_password);
    b.goto("/ui/folders");
    b.fill("#f-name", "data");
    b.click("form[action='/ui/folders'] button[type=submit]");
    b.wait_text(".flashes", "Folder data created", WAIT);

    // Upload (streamed) and download (through the page's link) a file.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("big file.bin");
    random_file(&file, 24);
    b.choose_file("#u-file", &file);
    b.click(".upload-form button[type=submit]");
    b.wait_text(
        ".flashes",
        "Uploaded big file.bin (24.0 MiB)",
        Duration::from_secs(120),
    );
    b.check_accessibility();
    let row = "tr[data-entry='big file.bin']";
    assert!(b.text(row).contains("24.0 MiB"));
    b.click(&format!("{row} a.file-link"));
    let got = b.wait_download("big file.bin", Duration::from_secs(120));
    assert_eq!(sha256(&got), sha256(&file));
    // On disk it is the same, owned for the session user.
    let (status, body) = b.fetch("GET", "/folders/data/files", None);
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v[0]["name"], "big file.bin");
    assert_eq!(v[0]["size"], 24 << 20);

    // A directory, a file inside it, breadcrumbs.
    b.fill("#d-name", "sub");
    b.click("form[action$='/mkdir'] button");
    b.wait_text(".flashes", "Directory sub created", WAIT);
    b.click("tr[data-entry=sub] a.folder-link");
    b.wait_text(".breadcrumbs", "sub", WAIT);
    let small = tmp.path().join("notes.txt");
    std::fs::write(&small, "hello from the browser\n").unwrap();
    b.choose_file("#u-file", &small);
    b.click(".upload-form button[type=submit]");
    b.wait_text(".flashes", "Uploaded notes.txt", WAIT);
    let (status, body) = b.fetch("GET", "/folders/data/file?path=sub/notes.txt", None);
    assert_eq!(status, 200);
    assert_eq!(body, b"hello from the browser\n");

    // Delete with confirmation.
    b.click("tr[data-entry='notes.txt'] form[data-confirm] button");
    assert!(b.accept_confirm().contains("Delete file notes.txt?"));
    b.wait_text(".flashes", "sub/notes.txt deleted", WAIT);
    assert!(!b.exists("tr[data-entry='notes.txt']"));

    // Folder deletion asks too, and then the folder is gone.
    b.goto("/ui/folders");
    b.click("tr[data-folder=data] form[data-confirm] button");
    assert!(b.accept_confirm().contains("Delete folder data"));
    b.wait_text(".flashes", "Folder data deleted", WAIT);
    assert!(!b.exists("tr[data-folder=data]"));
}

#[test]
fn a_user_sees_only_their_own_things() {
    let d = Airlockd::start();
    let _log = LogOnPanic(&d);
    let alice_pw = add_user(&d, "alice@example.com");
    let bob_pw = add_user(&d, "bob@example.com");
    let b = browser("isolation", &d);

    b.login("alice@example.com", &alice_pw);
    b.goto("/ui/folders");
    b.fill("#f-name", "alice-data");
    b.click("form[action='/ui/folders'] button[type=submit]");
    b.wait_text(".flashes", "Folder alice-data created", WAIT);
    let folder_path = b.path();
    let folder_path = folder_path.split('?').next().unwrap().to_owned();
    let session = b.create_session("alice-s", &["alice-data"], "");
    b.click("form[action='/ui/logout'] button");
    b.wait_until("the login page", WAIT, |b| {
        b.path().starts_with("/ui/login")
    });

    b.login("bob@example.com", &bob_pw);
    b.wait_for("#session-rows");
    assert!(!b.exists("tr[data-session='alice-s']"));
    assert!(!b.body_text().contains("alice"), "{}", b.body_text());
    b.goto("/ui/folders");
    assert!(!b.body_text().contains("alice-data"));
    b.goto(&format!("/ui/sessions/{session}/ssh"));
    assert_eq!(b.text("h1"), "Not found");
    for path in [
        format!("/ui/sessions/{session}/id_container"),
        format!("/ui/sessions/{session}/ppk"),
        format!("/ui/sessions/{session}/known_hosts"),
        folder_path.clone(),
        format!("{folder_path}/download?path=x"),
        "/ui/sessions/rows?all=1".to_owned(),
    ] {
        let (status, body) = b.fetch("GET", &path, None);
        let body = String::from_utf8_lossy(&body);
        if path.contains("/rows") {
            assert!(!body.contains("alice-s"), "{path}: {body}");
        } else {
            assert_eq!(status, 404, "{path}: {body}");
            assert!(body.contains("<h1>Not found</h1>"), "{path}: {body}");
        }
    }
    // Bob's own valid form token does not reach Alice's session either.
    b.goto("/ui/sessions");
    let csrf = b
        .attr("form[action='/ui/logout'] input[name=csrf]", "value")
        .unwrap();
    let (status, body) = b.fetch(
        "POST",
        &format!("/ui/sessions/{session}/terminate"),
        Some(&format!("csrf={csrf}&confirmed=1")),
    );
    // (0: the fetch failed, or was answered with a redirect; the body
    // says which.)
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let (status, _) = b.fetch(
        "POST",
        &format!("{folder_path}/delete"),
        Some(&format!("csrf={csrf}&confirmed=1")),
    );
    assert_eq!(status, 404);
    assert!(container_of(&session).is_some());
}

#[test]
fn basic_flows_work_without_javascript() {
    let d = Airlockd::start();
    let _log = LogOnPanic(&d);
    assert!(docker::available(), "these tests need Docker");
    let b = Browser::start_with("no-js", &d.url, LIMIT, false);
    b.login(&d.admin_email, &d.admin_password);
    assert_eq!(
        b.exec("return 1", vec![]),
        json!(1),
        "WebDriver scripts still run"
    );
    // Without the script there is no live table and no dialog: the SSH/SFTP
    // link opens a page, and destructive buttons ask on a page.
    b.goto("/ui/sessions");
    assert!(!b.exists("#live-state:not([hidden])"));
    b.fill("#s-name", "plain");
    b.select("#s-mem", "256m");
    b.select("#s-cpu", "0.5");
    b.click("#new-session button[type=submit]");
    b.wait_text(".flashes", "Session plain is starting", WAIT);
    b.wait_until("session plain to run", RUNNING, |b| {
        b.goto("/ui/sessions");
        b.exists("tr[data-session=plain][data-status=RUNNING]")
    });
    b.click("tr[data-session=plain] a[data-dialog]");
    b.wait_until("the SSH/SFTP page", WAIT, |b| b.path().ends_with("/ssh"));
    b.check_accessibility();
    let text = b.body_text();
    // All three tabs are visible as sections.
    for needle in [
        "airlock app plain sshd -b 9922",
        "Logon Type",
        "airlock config-ssh",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
    b.click("#dl-key");
    let key = b.wait_download("id_container", WAIT);
    assert!(
        std::fs::read_to_string(key)
            .unwrap()
            .contains("PRIVATE KEY")
    );

    b.goto("/ui/sessions");
    b.click("tr[data-session=plain] form[data-confirm] button");
    b.wait_text("h1", "Terminate session?", WAIT);
    b.check_accessibility();
    b.click("main form button.btn-danger");
    b.wait_text(".flashes", "Session plain was terminated", WAIT);

    b.goto("/ui/folders");
    b.fill("#f-name", "nojs");
    b.click("form[action='/ui/folders'] button[type=submit]");
    b.wait_text(".flashes", "Folder nojs created", WAIT);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a.txt");
    std::fs::write(&file, "plain form upload\n").unwrap();
    b.choose_file("#u-file", &file);
    b.click(".upload-form button[type=submit]");
    b.wait_text(".flashes", "Uploaded a.txt", WAIT);
    b.goto("/ui/settings");
    b.fill("#ssh-port", "23456");
    b.click("form[action='/ui/settings/port'] button");
    b.wait_text(".flashes", "set to 23456", WAIT);

    // An administrator drains the node from the Cluster page, and ends it.
    b.goto("/ui/admin/cluster");
    b.click("#agents form[action$='/drain'] button");
    b.wait_text(".flashes", "takes no new sessions", WAIT);
    assert!(b.exists("#agents form[action$='/undrain'] button"));
    b.check_accessibility();
    let (status, body) = b.fetch("GET", "/admin/cluster", None);
    assert_eq!(status, 200);
    let cluster: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(cluster["agents"][0]["draining"], true, "{cluster}");
    b.click("#agents form[action$='/undrain'] button");
    b.wait_text(".flashes", "takes new sessions again", WAIT);
    assert!(b.exists("#agents form[action$='/drain'] button"));
}
