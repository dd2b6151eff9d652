//! The files page of a running session in a real
//! headless Chromium, against a real airlockd and a real session: upload
//! (file picker and drag and drop), checksums inside the session, download
//! of files and of a directory as tar, rename, delete, mkdir, confinement
//! (`..`, links out), other users (404), and the page without JavaScript.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use airlock_testkit::browser::{Browser, WAIT};
use airlock_testkit::docker::{self, container_of};
use airlock_testkit::ssh::{random_file, sha256};
use airlock_testkit::{Airlockd, Cli, LogOnPanic};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(420);
const TRANSFER: Duration = Duration::from_secs(120);

/// sha256 of a file inside the session's container.
fn sha_inside(container: &str, path: &str) -> String {
    let out = docker::exec(container, &["sha256sum", path]);
    assert!(out.success(), "sha256sum {path}: {out:?}");
    out.stdout.split_whitespace().next().unwrap().to_owned()
}

fn exists_inside(container: &str, path: &str) -> bool {
    docker::exec(container, &["test", "-e", path]).success()
}

/// The owner of a path inside the session.
fn owner_inside(container: &str, path: &str) -> String {
    let out = docker::exec(container, &["stat", "-c", "%U", path]);
    out.stdout.trim().to_owned()
}

fn files_page(b: &Browser, id: &str, dir: &str) {
    b.goto(&format!("/ui/sessions/{id}/files?path={dir}"));
    b.wait_for(".files-table");
}

/// The bytes the drop test puts into a `File` in the page.
fn dropped_bytes() -> Vec<u8> {
    (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// Drops a 300 000-byte file named `name` onto the page (a `drop` event
/// with a `DataTransfer`, as a browser sends for a file dragged in).
fn drop_file(b: &Browser, name: &str) {
    b.exec(
        r#"const [name] = arguments;
           const bytes = new Uint8Array(300000);
           for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7) % 251;
           const dt = new DataTransfer();
           dt.items.add(new File([bytes], name, {type: 'application/octet-stream'}));
           const target = document.querySelector('.files-table tbody');
           for (const type of ['dragenter', 'dragover', 'drop']) {
             target.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
           }"#,
        vec![json!(name)],
    );
}

fn logout(b: &Browser) {
    b.click("form[action='/ui/logout'] button");
    b.wait_until("the login page", WAIT, |b| {
        b.path().starts_with("/ui/login")
    });
}

fn tar_list(archive: &Path) -> String {
    let out = Command::new("tar")
        .arg("-tvf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn upload_download_rename_and_delete_through_the_files_page() {
    let d = Airlockd::start();
    let _log = LogOnPanic(&d);
    assert!(docker::available(), "these tests need Docker");
    let b = Browser::start("session-files", &d.url, LIMIT);
    b.login(&d.admin_email, &d.admin_password);
    let id = b.create_session("files", &[], "");
    let c = container_of(&id).unwrap();

    // The session's row links to its files: the home directory.
    b.click("tr[data-session=files] a.files");
    b.wait_until("the files page", WAIT, |b| {
        b.path() == format!("/ui/sessions/{id}/files")
    });
    b.wait_for("tr[data-entry=id_container][data-kind=file]");
    b.check_accessibility();

    // A directory, opened, with breadcrumbs back.
    b.fill("#d-name", "data");
    b.click("form[action$='/mkdir'] button");
    b.wait_text(".flashes", "Directory data created", WAIT);
    assert_eq!(owner_inside(&c, "/home/work/data"), "work");
    b.click("tr[data-entry=data] a.folder-link");
    b.wait_text(".breadcrumbs", "data", WAIT);
    assert!(b.text("h1").contains("Files · files"));

    // Upload through the file picker (XHR with a progress bar), then check
    // the bytes inside the session.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("big file.bin");
    random_file(&file, 5);
    b.choose_file("#u-file", &file);
    b.click(".upload-form button[type=submit]");
    b.wait_text(".flashes", "Uploaded big file.bin (5.0 MiB)", TRANSFER);
    assert!(b.path().ends_with("?path=data"), "{}", b.path());
    assert_eq!(
        sha_inside(&c, "/home/work/data/big file.bin"),
        sha256(&file)
    );
    assert_eq!(owner_inside(&c, "/home/work/data/big file.bin"), "work");
    let row = "tr[data-entry='big file.bin']";
    assert!(b.text(row).contains("5.0 MiB"), "{}", b.text(row));

    // Download it back through its link.
    b.click(&format!("{row} a.file-link"));
    let got = b.wait_download("big file.bin", TRANSFER);
    assert_eq!(sha256(&got), sha256(&file));

    // Drag and drop: a dropped file takes the same upload path.
    drop_file(&b, "dropped.bin");
    b.wait_text(".flashes", "Uploaded dropped.bin (293.0 KiB)", TRANSFER);
    let expected = tmp.path().join("expected.bin");
    std::fs::write(&expected, dropped_bytes()).unwrap();
    assert_eq!(
        sha_inside(&c, "/home/work/data/dropped.bin"),
        sha256(&expected)
    );

    // Rename (a page with a form).
    b.click("tr[data-entry='dropped.bin'] a.rename");
    b.wait_text("h1", "Rename dropped.bin", WAIT);
    b.check_accessibility();
    b.fill("#r-name", "renamed.bin");
    b.click("main form button[type=submit]");
    b.wait_text(".flashes", "Renamed dropped.bin to renamed.bin", WAIT);
    assert!(exists_inside(&c, "/home/work/data/renamed.bin"));
    assert!(!exists_inside(&c, "/home/work/data/dropped.bin"));
    // Renaming onto an existing name is refused, nothing replaced.
    b.goto(&format!(
        "/ui/sessions/{id}/files/rename?path=data/renamed.bin"
    ));
    b.fill("#r-name", "big file.bin");
    b.click("main form button[type=submit]");
    b.wait_text(".form-error", "already exists", WAIT);
    assert_eq!(
        sha_inside(&c, "/home/work/data/big file.bin"),
        sha256(&file)
    );

    // The whole directory as a tar archive.
    files_page(&b, &id, "");
    b.click("tr[data-entry=data] a.download");
    let tarball = b.wait_download("data.tar", TRANSFER);
    let listing = tar_list(&tarball);
    assert!(listing.contains("data/big file.bin"), "{listing}");
    assert!(listing.contains("data/renamed.bin"), "{listing}");
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&tarball)
        .arg("-C")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(sha256(&out.join("data/big file.bin")), sha256(&file));

    // Delete a file, then the directory, each after a confirmation.
    files_page(&b, &id, "data");
    b.click("tr[data-entry='renamed.bin'] form[data-confirm] button");
    assert!(b.accept_confirm().contains("Delete file renamed.bin?"));
    b.wait_text(".flashes", "data/renamed.bin deleted", WAIT);
    assert!(!exists_inside(&c, "/home/work/data/renamed.bin"));
    files_page(&b, &id, "");
    b.click("tr[data-entry=data] form[data-confirm] button");
    assert!(
        b.accept_confirm()
            .contains("Delete directory data and everything in it?")
    );
    b.wait_text(".flashes", "data deleted", WAIT);
    assert!(!exists_inside(&c, "/home/work/data"));
    assert!(exists_inside(&c, "/home/work/id_container"));

    // Paths stay inside the home: `..` is refused with an explanation …
    b.goto(&format!("/ui/sessions/{id}/files?path=../../etc"));
    assert_eq!(b.text("h1"), "Invalid path");
    assert!(
        b.body_text()
            .contains("contains '..'; paths must stay inside /home/work"),
        "{}",
        b.body_text()
    );
    for path in [
        format!("/ui/sessions/{id}/files/download?path=../../etc/passwd"),
        format!("/ui/sessions/{id}/files/download?path=/etc/passwd"),
        format!("/ui/sessions/{id}/files/rename?path=..%2Fx"),
    ] {
        let (status, body) = b.fetch("GET", &path, None);
        assert_eq!(status, 400, "{path}: {}", String::from_utf8_lossy(&body));
    }
    // … and so is a link that leads out (the runner resolves it).
    let made = docker::docker(&[
        "exec",
        "-u",
        "work",
        &c,
        "ln",
        "-s",
        "/etc",
        "/home/work/etc-link",
    ]);
    assert!(made.success(), "{made:?}");
    let (status, body) = b.fetch(
        "GET",
        &format!("/ui/sessions/{id}/files/download?path=etc-link/passwd"),
        None,
    );
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("outside /home/work"), "{body}");
    // Deleting the link removes the link, not /etc.
    files_page(&b, &id, "");
    b.click("tr[data-entry=etc-link][data-kind=link] form[data-confirm] button");
    b.accept_confirm();
    b.wait_text(".flashes", "etc-link deleted", WAIT);
    assert!(exists_inside(&c, "/etc/passwd"));

    // Every action is on the audit trail.
    let (status, body) = b.fetch("GET", "/user/events", None);
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    let kinds: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for k in [
        "session.mkdir",
        "session.upload",
        "session.download",
        "session.rename",
        "session.delete",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }

    // Uploads count against the account's upload limit, per file; a
    // refused upload leaves nothing behind.
    d.admin_command(
        &["user", "limits", &d.admin_email, "--upload-size", "1M"],
        None,
    )
    .expect_code(0);
    files_page(&b, &id, "");
    b.choose_file("#u-file", &file);
    b.click(".upload-form button[type=submit]");
    b.wait_text(".flashes", "Upload failed", TRANSFER);
    assert!(
        b.text(".flashes")
            .contains("larger than your limit of 1 MiB"),
        "{}",
        b.text(".flashes")
    );
    assert!(!exists_inside(&c, "/home/work/big file.bin"));
    let left = docker::exec(&c, &["ls", "-A", "/home/work"]);
    assert!(!left.stdout.contains("airlock-part"), "{left:?}");
    // The API's `session upload` (the CLI, the official client) counts too.
    let cli = Cli::new(&d.url);
    cli.run(
        &["login"],
        Some(&format!("{}\n{}\n", d.admin_email, d.admin_password)),
    )
    .expect_code(0);
    std::fs::copy(&file, cli.cwd().join("big.bin")).unwrap();
    let out = cli.run(&["session", "upload", "files", "big.bin"], None);
    out.expect_code(1);
    assert!(
        out.stderr.contains("larger than your limit of 1 MiB") && out.stderr.contains("hint:"),
        "{}",
        out.stderr
    );
    assert!(!exists_inside(&c, "/home/work/big.bin"));
    d.admin_command(
        &["user", "limits", &d.admin_email, "--upload-size", "default"],
        None,
    )
    .expect_code(0);

    // Without JavaScript the page still works: a plain form post, and a
    // confirmation page before deleting.
    let plain = Browser::start_with("session-files-no-js", &d.url, LIMIT, false);
    plain.login(&d.admin_email, &d.admin_password);
    files_page(&plain, &id, "");
    let small = tmp.path().join("plain.txt");
    std::fs::write(&small, "plain form upload\n").unwrap();
    plain.choose_file("#u-file", &small);
    plain.click(".upload-form button[type=submit]");
    plain.wait_text(".flashes", "Uploaded plain.txt (18 B)", WAIT);
    assert_eq!(sha_inside(&c, "/home/work/plain.txt"), sha256(&small));
    plain.click("tr[data-entry='plain.txt'] form[data-confirm] button");
    plain.wait_text("h1", "Delete?", WAIT);
    plain.check_accessibility();
    plain.click("main form button.btn-danger");
    plain.wait_text(".flashes", "plain.txt deleted", WAIT);
    assert!(!exists_inside(&c, "/home/work/plain.txt"));
    drop(plain);

    // Another user sees none of it.
    logout(&b);
    d.add_user_with_keys("bob@example.com", "bob-password");
    b.login("bob@example.com", "bob-password");
    b.goto(&format!("/ui/sessions/{id}/files"));
    assert_eq!(b.text("h1"), "Not found");
    for path in [
        format!("/ui/sessions/{id}/files?path=.ssh"),
        format!("/ui/sessions/{id}/files/download?path=id_container"),
        format!("/ui/sessions/{id}/files/rename?path=id_container"),
    ] {
        let (status, body) = b.fetch("GET", &path, None);
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body.contains("<h1>Not found</h1>"), "{path}: {body}");
    }
    // Bob's own valid form token does not reach the admin's session either.
    b.goto("/ui/sessions");
    assert!(!b.exists("tr[data-session=files]"));
    let csrf = b
        .attr("form[action='/ui/logout'] input[name=csrf]", "value")
        .unwrap();
    for action in ["delete", "rename", "mkdir"] {
        let (status, _) = b.fetch(
            "POST",
            &format!("/ui/sessions/{id}/files/{action}"),
            Some(&format!("csrf={csrf}&confirmed=1&path=id_container&name=x")),
        );
        assert_eq!(status, 404, "{action}");
    }
    assert!(exists_inside(&c, "/home/work/id_container"));
    assert!(!exists_inside(&c, "/home/work/x"));
}
