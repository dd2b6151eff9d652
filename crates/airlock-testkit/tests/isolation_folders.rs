//! Tenant isolation, folder I/O: attacks on the gateway's folder
//! routes from inside a real session. The session's user controls every
//! entry of a mounted folder at every instant, and the gateway runs as
//! root; whatever the session plants or swaps, the folder API must never
//! read, write, list or delete anything outside the folder, and must never
//! block on a special file. Canary files outside the folder keep their
//! content throughout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use airlock_testkit::docker::{self, container_of};
use airlock_testkit::process::run;
use airlock_testkit::{Airlockd, Cli};

const CANARY: &str = "canary: this must never leave the host\n";

struct Lab {
    d: Airlockd,
    cli: Cli,
    container: String,
    /// The folder's directory on the host.
    folder: PathBuf,
    /// A directory outside every folder, with `secret.txt`.
    canary: PathBuf,
}

impl Lab {
    fn new() -> Self {
        assert!(docker::available(), "these tests need Docker");
        let d = Airlockd::start();
        let cli = Cli::new(&d.url);
        cli.run(
            &["login"],
            Some(&format!("{}\n{}\n", d.admin_email, d.admin_password)),
        )
        .expect_code(0);
        cli.run(&["vfolder", "create", "data"], None).expect_code(0);
        let out = cli.run(
            &[
                "session", "create", "--name", "prey", "--cpu", "0.5", "--mem", "256m", "--mount",
                "data", "--json",
            ],
            None,
        );
        out.expect_code(0);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let container = container_of(v["id"].as_str().unwrap()).unwrap();
        let vfolders = d.data.path().join("state/vfolders");
        let folder = std::fs::read_dir(&vfolders)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.is_dir())
            .expect("the folder's directory");
        let canary = d.data.path().join("canary");
        std::fs::create_dir_all(&canary).unwrap();
        std::fs::write(canary.join("secret.txt"), CANARY).unwrap();
        Lab {
            d,
            cli,
            container,
            folder,
            canary,
        }
    }

    /// A shell command inside the session, as its user.
    fn inside(&self, script: &str) -> airlock_testkit::process::Output {
        let out = docker::docker(&["exec", "-u", "work", &self.container, "sh", "-c", script]);
        assert!(out.success(), "{script}: {out:?}");
        out
    }

    /// An HTTP request with the login cookie; returns (status, body).
    fn api(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Vec<u8>) {
        let url = format!("{}{path}", self.d.url);
        let cookie = format!("Cookie: AIOHTTP_SESSION={}", self.cli.cookie());
        let mut args = vec![
            "-sS",
            "--max-time",
            "20",
            "-X",
            method,
            "-H",
            &cookie,
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ];
        if body.is_some() {
            args.extend([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                "@-",
            ]);
        }
        args.push(&url);
        let out = Command::new("curl")
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                if let Some(b) = body {
                    c.stdin.take().unwrap().write_all(b)?;
                } else {
                    drop(c.stdin.take());
                }
                c.wait_with_output()
            })
            .unwrap();
        let raw = out.stdout;
        let split = raw.iter().rposition(|&b| b == b'\n').unwrap();
        let code = std::str::from_utf8(&raw[split + 1..])
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        (code, raw[..split].to_vec())
    }

    fn get_file(&self, path: &str) -> (u16, Vec<u8>) {
        self.api("GET", &format!("/folders/data/file?path={path}"), None)
    }

    fn token(&self, what: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let (code, b) = self.api(
            "POST",
            &format!("/folders/data/request-{what}"),
            Some(body.to_string().as_bytes()),
        );
        (code, serde_json::from_slice(&b).unwrap_or_default())
    }

    /// The canary is untouched and nothing new appeared beside it.
    fn assert_canary_intact(&self) {
        assert_eq!(
            std::fs::read_to_string(self.canary.join("secret.txt")).unwrap(),
            CANARY
        );
        let names: Vec<_> = std::fs::read_dir(&self.canary)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec!["secret.txt"],
            "nothing may be written outside the folder"
        );
    }
}

fn never_canary(what: &str, body: &[u8]) {
    assert!(
        !String::from_utf8_lossy(body).contains("canary:"),
        "{what} leaked a host file"
    );
}

#[test]
fn links_planted_or_swapped_in_never_lead_out_of_the_folder() {
    let lab = Lab::new();
    let canary = lab.canary.display().to_string();

    // Planted before any request: a link to a host file, and to the root.
    lab.inside(&format!(
        "cd /home/work/data && ln -s {canary}/secret.txt leak && ln -s / root && \
         mkdir sub && ln -s {canary} sub/out && echo inside > ok.txt"
    ));
    for p in ["leak", "root/etc/passwd", "sub/out/secret.txt"] {
        let (code, body) = lab.get_file(p);
        assert_eq!(code, 400, "GET {p}: {}", String::from_utf8_lossy(&body));
        never_canary(p, &body);
        assert!(
            String::from_utf8_lossy(&body).contains("symbolic link"),
            "{}",
            String::from_utf8_lossy(&body)
        );
        let (code, _) = lab.token("download", serde_json::json!({ "path": p }));
        assert_eq!(code, 400, "request-download {p}");
    }
    // Listings show links as links and never list through them.
    let (code, body) = lab.api("GET", "/folders/data/files?path=", None);
    assert_eq!(code, 200);
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let leak = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "leak")
        .unwrap();
    assert_eq!(leak["kind"], "symlink");
    let (code, body) = lab.api("GET", "/folders/data/files?path=sub/out", None);
    assert_eq!(code, 400);
    never_canary("listing", &body);

    // A link at the target of an upload is replaced, not written through;
    // a link in the directory part refuses the upload.
    let (code, _) = lab.api("PUT", "/folders/data/file?path=leak", Some(b"overwritten"));
    assert_eq!(code, 201);
    let (code, _) = lab.api("PUT", "/folders/data/file?path=sub/out/new.txt", Some(b"x"));
    assert_eq!(code, 400);
    let (code, _) = lab.api(
        "POST",
        "/folders/data/mkdir",
        Some(br#"{"path": "sub/out/newdir", "parents": true}"#),
    );
    assert_eq!(code, 400);
    // Deleting a link removes the link; deleting through one is refused.
    let (code, _) = lab.api("DELETE", "/folders/data/file?path=sub/out/secret.txt", None);
    assert_eq!(code, 400);
    let (code, _) = lab.api("DELETE", "/folders/data/file?path=sub&recursive=true", None);
    assert_eq!(code, 204);
    lab.assert_canary_intact();

    // Swapped in after the token was issued: the token names the path, and
    // every request resolves it again beneath the folder root.
    let (code, t) = lab.token("download", serde_json::json!({ "path": "ok.txt" }));
    assert_eq!(code, 200, "{t}");
    let url = format!(
        "/folders/_/tus/download?token={}",
        t["token"].as_str().unwrap()
    );
    let (code, body) = lab.api("GET", &url, None);
    assert_eq!((code, body.as_slice()), (200, &b"inside\n"[..]));
    lab.inside(&format!(
        "cd /home/work/data && rm ok.txt && ln -s {canary}/secret.txt ok.txt"
    ));
    let (code, body) = lab.api("GET", &url, None);
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    never_canary("download token", &body);

    // An upload whose directory is swapped for a link mid-way: the finished
    // file must not land outside.
    let (code, t) = lab.token(
        "upload",
        serde_json::json!({ "path": "up/f.txt", "size": 8 }),
    );
    assert_eq!(code, 200, "{t}");
    let tok = t["token"].as_str().unwrap().to_owned();
    assert!(lab.folder.join("up").is_dir());
    lab.inside(&format!(
        "cd /home/work/data && rm -rf up && ln -s {canary} up"
    ));
    let out = run(
        Command::new("curl").args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
            "-X",
            "PATCH",
            "-H",
            "Tus-Resumable: 1.0.0",
            "-H",
            "Upload-Offset: 0",
            "-H",
            "Content-Type: application/offset+octet-stream",
            "--data-binary",
            "12345678",
            &format!("{}/folders/_/tus/upload?token={tok}", lab.d.url),
        ]),
        None,
        Duration::from_secs(30),
    );
    assert_eq!(out.stdout.trim(), "400", "{out:?}");
    lab.assert_canary_intact();
    // Nothing of the upload is left in the folder either.
    let left = lab.inside("find /home/work/data -name '*airlock-upload*' | wc -l");
    assert_eq!(left.stdout.trim(), "0");
}

#[test]
fn a_rename_race_inside_the_session_never_wins() {
    let lab = Lab::new();
    let canary = lab.canary.display().to_string();
    // `race` flips between a real directory and a link to the canary
    // directory as fast as the session can make it, for the whole test.
    lab.inside(&format!(
        "cd /home/work/data && (end=$(($(date +%s)+40)); \
         while [ $(date +%s) -lt $end ]; do \
           mkdir -p race.d && echo fine > race.d/secret.txt; \
           rm -rf race.old; mv -T race race.old; mv -T race.d race; \
           ln -sfn {canary} race.l; \
           rm -rf race.old; mv -T race race.old; mv -T race.l race; \
         done) >/dev/null 2>&1 &"
    ));
    let start = Instant::now();
    let (mut ok, mut refused) = (0, 0);
    while start.elapsed() < Duration::from_secs(25) {
        let (code, body) = lab.get_file("race/secret.txt");
        never_canary("download during the race", &body);
        match code {
            200 => {
                assert_eq!(body, b"fine\n");
                ok += 1;
            }
            _ => refused += 1,
        }
        let (_, body) = lab.api("GET", "/folders/data/files?path=race", None);
        never_canary("listing during the race", &body);
        let (code, t) = lab.token("download", serde_json::json!({ "path": "race/secret.txt" }));
        if code == 200 {
            let url = format!(
                "/folders/_/tus/download?token={}",
                t["token"].as_str().unwrap()
            );
            let (_, body) = lab.api("GET", &url, None);
            never_canary("token download during the race", &body);
        }
        let _ = lab.api("DELETE", "/folders/data/file?path=race/secret.txt", None);
        let _ = lab.api(
            "PUT",
            "/folders/data/file?path=race/dropped.txt",
            Some(b"dropped"),
        );
        lab.assert_canary_intact();
    }
    assert!(ok + refused > 20, "the race loop made too few requests");
    eprintln!("race: {ok} downloads of the real file, {refused} refused");
    lab.assert_canary_intact();
}

#[test]
fn special_files_are_listed_but_never_opened() {
    let lab = Lab::new();
    lab.inside(
        "mkfifo /home/work/data/pipe && mkdir /home/work/data/d && mkfifo /home/work/data/d/p2",
    );
    // A device node, as an image that lets its user be root could make.
    let dev = lab.folder.join("null");
    let out = run(
        Command::new("mknod").arg(&dev).args(["c", "1", "3"]),
        None,
        Duration::from_secs(10),
    );
    assert!(out.success(), "{out:?}");

    let (code, body) = lab.api("GET", "/folders/data/files?path=", None);
    assert_eq!(code, 200);
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let kind = |n: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == n)
            .map(|e| e["kind"].as_str().unwrap().to_owned())
    };
    assert_eq!(kind("pipe").as_deref(), Some("fifo"));
    assert_eq!(kind("null").as_deref(), Some("char-device"));

    // Reading one is a clear, immediate error (curl's own deadline is 20 s;
    // a blocked open would hit it).
    for p in ["pipe", "null", "d/p2"] {
        let (code, body) = lab.get_file(p);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(code, 400, "{p}: {text}");
        assert!(text.contains("special files"), "{text}");
        let (code, _) = lab.token("download", serde_json::json!({ "path": p }));
        assert_eq!(code, 400);
    }
    // The web UI's download refuses it the same way (cookie auth).
    let (code, _) = lab.api("GET", "/ui/folders/data/download?path=pipe", None);
    assert!(code == 400 || code == 404, "web download of a FIFO: {code}");
    // Many at once do not park the server: it still answers.
    let handles: Vec<_> = (0..40)
        .map(|_| {
            let url = format!("{}/folders/data/file?path=pipe", lab.d.url);
            let cookie = format!("Cookie: AIOHTTP_SESSION={}", lab.cli.cookie());
            std::thread::spawn(move || {
                run(
                    Command::new("curl").args(["-sS", "--max-time", "20", "-H", &cookie, &url]),
                    None,
                    Duration::from_secs(30),
                )
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap().success());
    }
    let (code, _) = lab.api("GET", "/folders/data/files?path=", None);
    assert_eq!(code, 200);
    // Deleting one removes it (never opens it).
    let (code, _) = lab.api("DELETE", "/folders/data/file?path=pipe", None);
    assert_eq!(code, 204);
    assert!(!Path::new(&lab.folder.join("pipe")).exists());
    lab.assert_canary_intact();
}
