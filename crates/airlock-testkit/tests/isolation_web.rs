//! Cross-site attacks in a real browser: a logged-in
//! user visits a page on another origin (here another port on 127.0.0.1 —
//! the same *site*, so even `SameSite=Lax` cookies ride along) that
//! auto-submits forms to the gateway in every encoding that needs no CORS
//! preflight and opens a WebSocket to the user's tunnel. Nothing may change
//! and the socket must be refused; the same WebSocket from the gateway's own
//! pages still opens.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use airlock_testkit::browser::{Browser, WAIT, serve_page};
use airlock_testkit::{Airlockd, Cli, docker};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(300);

struct LogOnPanic<'a>(&'a Airlockd);

impl Drop for LogOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- airlockd log\n{}", self.0.log());
        }
    }
}

/// The attacker's page: three forms (text/plain forging JSON, urlencoded,
/// multipart) posted into hidden frames, and a WebSocket to the tunnel.
fn attack_page(gateway: &str, folder_id: &str, session: &str) -> String {
    let ws = gateway.replacen("http://", "ws://", 1);
    format!(
        r#"<!doctype html><html><head><title>innocent</title></head><body>
<iframe name="f1"></iframe><iframe name="f2"></iframe><iframe name="f3"></iframe>
<form id="a" method="post" enctype="text/plain" target="f1" action="{gateway}/folders/{folder_id}/rename">
  <input name='{{"new_name":"pwned","x":"' value='"}}'>
</form>
<form id="b" method="post" target="f2" action="{gateway}/folders">
  <input name="name" value="evil-urlencoded">
</form>
<form id="c" method="post" enctype="multipart/form-data" target="f3" action="{gateway}/ui/folders/{folder_id}/delete">
  <input name="confirmed" value="1">
</form>
<script>
window.ws = 'pending';
document.getElementById('a').submit();
document.getElementById('b').submit();
document.getElementById('c').submit();
const s = new WebSocket('{ws}/stream/session/{session}/tcpproxy?app=sshd');
s.binaryType = 'arraybuffer';
s.onopen = () => {{ window.ws = 'open'; }};
s.onerror = () => {{ if (window.ws === 'pending') window.ws = 'refused'; }};
s.onclose = () => {{ if (window.ws === 'pending') window.ws = 'refused'; }};
</script></body></html>"#
    )
}

fn folders(cli: &Cli, d: &Airlockd) -> Vec<Value> {
    cli.get_json(&format!("{}/folders", d.url))
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn cross_origin_form_posts_and_websocket_are_refused_in_a_real_browser() {
    assert!(docker::available(), "this test needs Docker");
    let d = Airlockd::start();
    let _log = LogOnPanic(&d);
    let password = "victim-password";
    d.admin_command(
        &["user", "add", "victim@example.com"],
        Some(format!("{password}\n").as_bytes()),
    )
    .expect_code(0);
    let cli = Cli::new(&d.url);
    cli.run(
        &["login"],
        Some(&format!("victim@example.com\n{password}\n")),
    )
    .expect_code(0);
    cli.run(&["vfolder", "create", "data"], None).expect_code(0);
    let out = cli.run(
        &[
            "session", "create", "--name", "demo", "--cpu", "0.5", "--mem", "256m", "--json",
        ],
        None,
    );
    out.expect_code(0);
    let before = folders(&cli, &d);
    assert_eq!(before.len(), 1, "{before:?}");
    let folder_id = before[0]["id"].as_str().unwrap().to_owned();

    let b = Browser::start("cross_origin", &d.url, LIMIT);
    b.login("victim@example.com", password);
    let ws_url = format!(
        "{}/stream/session/demo/tcpproxy?app=sshd",
        d.url.replacen("http://", "ws://", 1)
    );
    // Control: from the gateway's own page the tunnel opens (so a refusal
    // below is the origin check, not a broken session).
    assert_eq!(b.websocket_from_page(&ws_url), "open");

    let evil = serve_page(attack_page(&d.url, &folder_id, "demo"));
    b.goto(&format!("{evil}/"));
    b.wait_until("the attack page's WebSocket to settle", WAIT, |b| {
        b.exec("return window.ws", vec![]) != json!("pending")
    });
    assert_eq!(b.exec("return window.ws", vec![]), json!("refused"));
    // Let the three form posts land (they target frames on the page).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(b.websocket_from_page(&ws_url), "refused");

    // Nothing changed: same single folder, same name; the session lives.
    let after = folders(&cli, &d);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["name"], "data", "{after:?}");
    assert_eq!(after[0]["id"], folder_id.as_str());
    let s = cli.run(&["session", "info", "demo", "--json"], None);
    s.expect_code(0);
    assert!(s.stdout.contains("RUNNING"), "{}", s.stdout);
    let log = d.log();
    assert!(log.contains("refused a cross-site request"), "{log}");

    // The victim's own pages still work (same-origin posts are accepted).
    b.goto("/ui/settings");
    b.fill("#ssh-port", "10022");
    b.click("form[action='/ui/settings/port'] button[type=submit]");
    b.wait_text(".flashes", "10022", WAIT);
}

fn api_cli(d: &Airlockd, ak: &str, sk: &str) -> Cli {
    let cli = Cli::empty();
    cli.write_env(&format!(
        "BACKEND_ENDPOINT={}\nBACKEND_ENDPOINT_TYPE=api\nBACKEND_ACCESS_KEY={ak}\nBACKEND_SECRET_KEY={sk}\n",
        d.url
    ));
    cli
}

fn printed(out: &str, label: &str) -> String {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in {out}"))
        .trim()
        .to_owned()
}

/// Keypairs are regenerated and revoked from the CLI and by the admin, and
/// old keys stop working at once; a disabled account cannot log in.
#[test]
fn keypair_regenerate_revoke_and_disable_from_cli_and_airlockd() {
    let d = Airlockd::start();
    let _log = LogOnPanic(&d);
    let (ak, sk) = d.add_user_with_keys("kp@example.com", "kp-password");
    api_cli(&d, &ak, &sk)
        .run(&["settings"], None)
        .expect_code(0);

    // The user regenerates (logged in with a password).
    let cli = Cli::new(&d.url);
    cli.run(&["login"], Some("kp@example.com\nkp-password\n"))
        .expect_code(0);
    let out = cli.run(&["keypair", "regenerate"], None);
    out.expect_code(0);
    let (ak2, sk2) = (
        printed(&out.stdout, "BACKEND_ACCESS_KEY="),
        printed(&out.stdout, "BACKEND_SECRET_KEY="),
    );
    assert_ne!(ak2, ak);
    api_cli(&d, &ak, &sk)
        .run(&["settings"], None)
        .expect_code(1);
    api_cli(&d, &ak2, &sk2)
        .run(&["settings"], None)
        .expect_code(0);
    let shown = cli.run(&["keypair", "show"], None);
    shown.expect_code(0);
    assert!(shown.stdout.contains(&ak2), "{}", shown.stdout);
    assert!(!shown.stdout.contains(&sk2), "{}", shown.stdout);

    // The user revokes it.
    cli.run(&["keypair", "revoke"], None).expect_code(0);
    api_cli(&d, &ak2, &sk2)
        .run(&["settings"], None)
        .expect_code(1);

    // The admin gives a new one.
    let out = d.admin_command(&["user", "keypair", "kp@example.com", "--regenerate"], None);
    out.expect_code(0);
    let (ak3, sk3) = (
        printed(&out.stdout, "access key:"),
        printed(&out.stdout, "secret key:"),
    );
    api_cli(&d, &ak3, &sk3)
        .run(&["settings"], None)
        .expect_code(0);

    // Disabling ends the login and refuses the keys.
    d.admin_command(&["user", "disable", "kp@example.com"], None)
        .expect_code(0);
    let out = cli.run(&["settings"], None);
    out.expect_code(1);
    api_cli(&d, &ak3, &sk3)
        .run(&["settings"], None)
        .expect_code(1);
    let out = Cli::new(&d.url).run(&["login"], Some("kp@example.com\nkp-password\n"));
    out.expect_code(1);
    d.admin_command(&["user", "enable", "kp@example.com"], None)
        .expect_code(0);
    api_cli(&d, &ak3, &sk3)
        .run(&["settings"], None)
        .expect_code(0);
}

/// The settings page regenerates the keypair (secret shown once) and
/// changes the password, which ends every login of the account.
#[test]
fn web_keypair_regenerate_and_password_change_end_logins() {
    let d = Airlockd::start();
    let _log = LogOnPanic(&d);
    let (ak, sk) = d.add_user_with_keys("web@example.com", "web-password");
    let cli = Cli::new(&d.url);
    cli.run(&["login"], Some("web@example.com\nweb-password\n"))
        .expect_code(0);
    let b = Browser::start("web_credentials", &d.url, LIMIT);
    b.login("web@example.com", "web-password");
    b.goto("/ui/settings");
    assert_eq!(b.text("#access-key"), ak);
    assert!(!b.body_text().contains(&sk));
    b.click("#regenerate-keypair");
    b.accept_confirm();
    b.wait_for("#new-keypair");
    let shown = b.text("#new-keypair");
    let new_ak = printed(&shown, "BACKEND_ACCESS_KEY=");
    let new_sk = printed(&shown, "BACKEND_SECRET_KEY=");
    assert_ne!(new_ak, ak);
    api_cli(&d, &ak, &sk)
        .run(&["settings"], None)
        .expect_code(1);
    api_cli(&d, &new_ak, &new_sk)
        .run(&["settings"], None)
        .expect_code(0);
    // Reloading does not show the secret again.
    b.goto("/ui/settings");
    assert!(!b.body_text().contains(&new_sk));

    b.fill("#old-password", "web-password");
    b.fill("#new-password", "web-password-2");
    b.fill("#repeat-password", "web-password-2");
    b.click("form[action='/ui/settings/password'] button[type=submit]");
    b.wait_until("the login page", WAIT, |b| {
        b.path().starts_with("/ui/login")
    });
    assert!(b.body_text().contains("Password changed"));
    let (_, body) = b.fetch("GET", "/server/login-check", None);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["authenticated"], false, "{v}");
    // The CLI's login ended too.
    cli.run(&["settings"], None).expect_code(1);
    b.login("web@example.com", "web-password-2");
}
