//! A real headless Chromium driven through chromedriver (WebDriver), with a
//! synchronous API for tests.
//!
//! Every wait has a deadline, and the whole browser has one too: a test that
//! outlives it fails instead of hanging. When a test panics while a
//! [`Browser`] is alive, a screenshot and the page source are saved to the
//! artifact directory (`$AIRLOCK_TEST_ARTIFACTS`, default
//! `target/browser-artifacts/`) and their paths printed.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How long a single wait lasts by default.
pub const WAIT: Duration = Duration::from_secs(20);

/// A headless Chromium session.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    /// Where Chromium saves downloads.
    pub downloads: tempfile::TempDir,
    /// The server under test (`http://127.0.0.1:PORT`).
    pub base: String,
    name: String,
    deadline: Instant,
}

fn find_binary(candidates: &[&str]) -> String {
    for c in candidates {
        if Path::new(c).is_file() {
            return (*c).to_owned();
        }
    }
    panic!(
        "none of {candidates:?} exists; install the Debian packages chromium and chromium-driver (.ci/run does)"
    );
}

/// Serves `page` to every request on a fresh 127.0.0.1 port (until the
/// test process exits): another origin, for cross-site attacks. Returns the
/// origin (`http://127.0.0.1:PORT`).
pub fn serve_page(page: String) -> String {
    use std::io::{BufRead as _, BufReader, Write as _};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    origin
}

/// Where failure screenshots go.
pub fn artifact_dir() -> PathBuf {
    let dir = std::env::var_os("AIRLOCK_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap();
            // target/<profile>/deps/<test> → target/browser-artifacts
            exe.ancestors()
                .nth(3)
                .map(|t| t.join("browser-artifacts"))
                .unwrap_or_else(std::env::temp_dir)
        });
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Browser {
    /// Starts chromedriver and a headless Chromium for `base`; `name` names
    /// the failure artifacts; the whole session may last `limit`.
    pub fn start(name: &str, base: &str, limit: Duration) -> Self {
        Self::start_with(name, base, limit, true)
    }

    /// Like [`Browser::start`]; `javascript: false` disables scripts, to
    /// check that pages work without them.
    pub fn start_with(name: &str, base: &str, limit: Duration, javascript: bool) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let driver_bin = find_binary(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]);
        let chrome_bin = find_binary(&["/usr/bin/chromium", "/usr/lib/chromium/chromium"]);
        let port = crate::free_port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let downloads = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chrome_bin,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                    "--disable-gpu", "--window-size=1360,900", "--lang=en-US",
                    "--no-first-run", "--no-default-browser-check",
                    "--disable-search-engine-choice-screen", "--hide-scrollbars",
                    "--force-device-scale-factor=1",
                ],
                "prefs": {
                    "download.default_directory": downloads.path().display().to_string(),
                    "download.prompt_for_download": false,
                    "download.directory_upgrade": true,
                    "safebrowsing.enabled": false,
                    "profile.default_content_settings.popups": 0,
                    "profile.managed_default_content_settings.javascript": if javascript { 1 } else { 2 },
                }
            }),
        );
        caps.insert("unhandledPromptBehavior".into(), json!("ignore"));
        let url = format!("http://127.0.0.1:{port}");
        let client = rt
            .block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(60),
                    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                        .capabilities(caps)
                        .connect(&url),
                )
                .await
            })
            .expect("chromium did not start within 60 s")
            .expect("start a chromium session");
        rt.block_on(
            client.update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
                Some(Duration::from_secs(30)),
                Some(Duration::from_secs(30)),
                Some(Duration::ZERO),
            )),
        )
        .unwrap();
        Browser {
            rt,
            client: Some(client),
            driver,
            downloads,
            base: base.trim_end_matches('/').to_owned(),
            name: name.to_owned(),
            deadline: Instant::now() + limit,
        }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    fn check_deadline(&self) {
        assert!(
            Instant::now() < self.deadline,
            "browser test {} ran past its deadline",
            self.name
        );
    }

    /// Opens `path` (relative to the server) or a full URL.
    pub fn goto(&self, path: &str) {
        self.check_deadline();
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        self.rt.block_on(self.c().goto(&url)).unwrap();
    }

    /// The current URL's path and query.
    pub fn path(&self) -> String {
        let u = self.rt.block_on(self.c().current_url()).unwrap();
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        }
    }

    /// Creates a session through the sessions page's form (0.5 CPU,
    /// 256 MiB, `mounts` ticked, `env` in the variables box) and waits
    /// (without reloading) until its row says RUNNING; returns its id.
    pub fn create_session(&self, name: &str, mounts: &[&str], env: &str) -> String {
        self.goto("/ui/sessions");
        self.fill("#s-name", name);
        self.fill("#s-env", env);
        self.select("#s-mem", "256m");
        self.select("#s-cpu", "0.5");
        for m in mounts {
            self.click(&format!("input[name=mount][value='{m}']"));
        }
        self.click("#new-session button[type=submit]");
        self.wait_text(".flashes", &format!("Session {name} is starting"), WAIT);
        let row = format!("tr[data-session='{name}'][data-status=RUNNING]");
        self.wait_until(
            &format!("session {name} to run"),
            Duration::from_secs(90),
            |b| b.exists(&row),
        );
        let href = self
            .attr(&format!("tr[data-session='{name}'] a[data-dialog]"), "href")
            .unwrap();
        href.trim_end_matches("/ssh")
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned()
    }

    /// Types `text` into the focused element key by key, as a user does
    /// (`\n` is Enter). Works where `send_keys` cannot, e.g. on xterm.js's
    /// hidden input.
    pub fn type_keys(&self, text: &str) {
        let mut seq = KeyActions::new("keyboard".to_owned());
        for ch in text.chars() {
            let ch = if ch == '\n' { '\u{e007}' } else { ch };
            seq = seq
                .then(KeyAction::Down { value: ch })
                .then(KeyAction::Up { value: ch });
        }
        self.perform(seq);
    }

    /// Presses Control+`key` (e.g. `'c'` for an interrupt).
    pub fn press_ctrl(&self, key: char) {
        const CONTROL: char = '\u{e009}';
        let seq = KeyActions::new("keyboard".to_owned())
            .then(KeyAction::Down { value: CONTROL })
            .then(KeyAction::Down { value: key })
            .then(KeyAction::Up { value: key })
            .then(KeyAction::Up { value: CONTROL });
        self.perform(seq);
    }

    fn perform(&self, seq: KeyActions) {
        self.check_deadline();
        self.rt.block_on(self.c().perform_actions(seq)).unwrap();
        self.rt.block_on(self.c().release_actions()).unwrap();
    }

    /// Closes the current window and opens `path` in a new one (as a user
    /// who closed the tab and came back would).
    pub fn reopen_in_new_window(&self, path: &str) {
        self.check_deadline();
        let c = self.c();
        // A window rather than a tab: headless Chromium leaves a new tab in
        // the background, where pages' timers are throttled.
        let new = self.rt.block_on(c.new_window(false)).unwrap();
        self.rt.block_on(c.close_window()).unwrap();
        self.rt.block_on(c.switch_to_window(new.handle)).unwrap();
        self.goto(path);
    }

    /// Opens a WebSocket to `url` from the current page; returns `open`,
    /// `refused` or `timeout`.
    pub fn websocket_from_page(&self, url: &str) -> String {
        self.exec_async(
            r#"const [url, done] = arguments;
               const s = new WebSocket(url);
               let settled = false;
               const end = r => { if (!settled) { settled = true; try { s.close(); } catch (e) {} done(r); } };
               s.onopen = () => end('open');
               s.onerror = () => end('refused');
               s.onclose = () => end('refused');
               setTimeout(() => end('timeout'), 15000);"#,
            vec![json!(url)],
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Polls `f` until it is true (or panics after `limit`).
    pub fn wait_until(&self, what: &str, limit: Duration, mut f: impl FnMut(&Browser) -> bool) {
        let start = Instant::now();
        loop {
            if f(self) {
                return;
            }
            self.check_deadline();
            assert!(start.elapsed() < limit, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Whether an element matches `css` now.
    pub fn exists(&self, css: &str) -> bool {
        self.rt
            .block_on(self.c().find_all(Locator::Css(css)))
            .map(|v| !v.is_empty())
            .unwrap_or(false)
    }

    /// Waits for an element matching `css`.
    pub fn wait_for(&self, css: &str) {
        self.wait_until(&format!("an element {css:?}"), WAIT, |b| b.exists(css));
    }

    /// Clicks the first element matching `css`.
    pub fn click(&self, css: &str) {
        self.wait_for(css);
        let el = self.rt.block_on(self.c().find(Locator::Css(css))).unwrap();
        self.rt.block_on(el.click()).unwrap();
    }

    /// Replaces the value of an input or textarea.
    pub fn fill(&self, css: &str, text: &str) {
        self.wait_for(css);
        let el = self.rt.block_on(self.c().find(Locator::Css(css))).unwrap();
        self.rt.block_on(el.clear()).unwrap();
        if !text.is_empty() {
            self.rt.block_on(el.send_keys(text)).unwrap();
        }
    }

    /// Chooses a local file in an `<input type=file>`.
    pub fn choose_file(&self, css: &str, file: &Path) {
        self.wait_for(css);
        let el = self.rt.block_on(self.c().find(Locator::Css(css))).unwrap();
        self.rt
            .block_on(el.send_keys(&file.display().to_string()))
            .unwrap();
    }

    /// Selects the option with `value` in a `<select>`.
    pub fn select(&self, css: &str, value: &str) {
        self.wait_for(css);
        let el = self.rt.block_on(self.c().find(Locator::Css(css))).unwrap();
        self.rt.block_on(el.select_by_value(value)).unwrap();
    }

    /// The visible text of the first element matching `css`.
    pub fn text(&self, css: &str) -> String {
        self.wait_for(css);
        let el = self.rt.block_on(self.c().find(Locator::Css(css))).unwrap();
        self.rt.block_on(el.text()).unwrap()
    }

    /// The text of the whole page body.
    pub fn body_text(&self) -> String {
        self.text("body")
    }

    /// An attribute of the first element matching `css`.
    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.wait_for(css);
        let el = self.rt.block_on(self.c().find(Locator::Css(css))).unwrap();
        self.rt.block_on(el.attr(name)).unwrap()
    }

    /// Waits until the element `css` contains `needle`.
    pub fn wait_text(&self, css: &str, needle: &str, limit: Duration) {
        self.wait_until(&format!("{needle:?} in {css:?}"), limit, |b| {
            b.exists(css)
                && b.rt
                    .block_on(async {
                        let el = b.c().find(Locator::Css(css)).await?;
                        el.text().await
                    })
                    .map(|t| t.contains(needle))
                    .unwrap_or(false)
        });
    }

    /// Runs synchronous JavaScript and returns its value.
    pub fn exec(&self, js: &str, args: Vec<Value>) -> Value {
        self.check_deadline();
        self.rt.block_on(self.c().execute(js, args)).unwrap()
    }

    /// Runs asynchronous JavaScript (the last argument is the callback).
    pub fn exec_async(&self, js: &str, args: Vec<Value>) -> Value {
        self.check_deadline();
        self.rt.block_on(self.c().execute_async(js, args)).unwrap()
    }

    /// The text of the open alert/confirm, if any.
    pub fn alert_text(&self) -> Option<String> {
        self.rt.block_on(self.c().get_alert_text()).ok()
    }

    /// Waits for a confirm() and accepts it; returns its text.
    pub fn accept_confirm(&self) -> String {
        let mut text = None;
        self.wait_until("a confirmation dialog", WAIT, |b| {
            text = b.alert_text();
            text.is_some()
        });
        self.rt.block_on(self.c().accept_alert()).unwrap();
        text.unwrap_or_default()
    }

    /// Fetches `path` with the browser's cookies (as the page's script
    /// would); returns the status and body bytes.
    pub fn fetch(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Vec<u8>) {
        let v = self.exec_async(
            r#"const [method, url, body, done] = arguments;
               const init = {method, credentials: 'same-origin', redirect: 'manual'};
               if (body !== null) { init.body = body; init.headers = {'Content-Type': 'application/x-www-form-urlencoded'}; }
               fetch(url, init).then(async r => {
                 const buf = new Uint8Array(await r.arrayBuffer());
                 let s = ''; for (const b of buf) s += String.fromCharCode(b);
                 // A redirect (redirect: 'manual') has status 0: say so.
                 if (r.type === 'opaqueredirect') s = 'a redirect (opaqueredirect)';
                 done({status: r.status, body: btoa(s)});
               }).catch(e => done({status: 0, body: btoa(String(e))}));"#,
            vec![json!(method), json!(path), json!(body)],
        );
        let status = v["status"].as_u64().unwrap_or(0) as u16;
        let body = base64_decode(v["body"].as_str().unwrap_or(""));
        (status, body)
    }

    /// Waits until Chromium has finished downloading `name`.
    pub fn wait_download(&self, name: &str, limit: Duration) -> PathBuf {
        let path = self.downloads.path().join(name);
        let partial = self.downloads.path().join(format!("{name}.crdownload"));
        self.wait_until(&format!("the download of {name}"), limit, |_| {
            path.is_file() && !partial.exists()
        });
        // Chromium renames the finished file into place; give it a moment
        // to close it.
        std::thread::sleep(Duration::from_millis(200));
        path
    }

    /// Logs in through the login page.
    pub fn login(&self, email: &str, password: &str) {
        self.goto("/ui/login");
        self.fill("#email", email);
        self.fill("#password", password);
        self.click("form button[type=submit]");
        self.wait_until("the sessions page after login", WAIT, |b| {
            b.path().starts_with("/ui/sessions")
        });
    }

    /// Saves a PNG of the viewport.
    pub fn screenshot(&self, path: &Path) {
        let png = self.rt.block_on(self.c().screenshot()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Saves a PNG of one element (e.g. a dialog).
    pub fn screenshot_element(&self, css: &str, path: &Path) {
        self.wait_for(css);
        let el = self.rt.block_on(self.c().find(Locator::Css(css))).unwrap();
        let png = self.rt.block_on(el.screenshot()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Resizes the window.
    pub fn resize(&self, width: u32, height: u32) {
        self.rt
            .block_on(self.c().set_window_size(width, height))
            .unwrap();
    }

    /// Checks the accessibility basics of the current page: a language, a
    /// title, exactly one h1, a label (or aria-label) on every form
    /// control, alt on every image, a name on every button and link, and
    /// unique ids. Panics listing the problems.
    pub fn check_accessibility(&self) {
        let problems = self.exec(
            r#"const p = [];
               if (!document.documentElement.lang) p.push('<html> has no lang');
               if (!document.title.trim()) p.push('no <title>');
               const h1 = document.querySelectorAll('h1').length;
               if (h1 !== 1) p.push(h1 + ' <h1> elements (want 1)');
               for (const img of document.querySelectorAll('img')) {
                 if (!img.hasAttribute('alt')) p.push('image without alt: ' + img.outerHTML.slice(0, 120));
               }
               for (const el of document.querySelectorAll('input, select, textarea, progress')) {
                 if (el.type === 'hidden') continue;
                 const ok = (el.id && document.querySelector('label[for="' + CSS.escape(el.id) + '"]'))
                   || el.closest('label') || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
                 if (!ok) p.push('control without label: ' + el.outerHTML.slice(0, 120));
               }
               for (const el of document.querySelectorAll('button, a[href]')) {
                 if (!el.textContent.trim() && !el.getAttribute('aria-label') && !el.getAttribute('title')) {
                   p.push('control without a name: ' + el.outerHTML.slice(0, 120));
                 }
               }
               const seen = new Set();
               for (const el of document.querySelectorAll('[id]')) {
                 if (seen.has(el.id)) p.push('duplicate id ' + el.id);
                 seen.add(el.id);
               }
               return p;"#,
            vec![],
        );
        let list: Vec<String> = problems
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            list.is_empty(),
            "accessibility problems on {}:\n  {}",
            self.path(),
            list.join("\n  ")
        );
    }

    fn save_failure_artifacts(&self) {
        let dir = artifact_dir();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let png = dir.join(format!("{}-{stamp}.png", self.name));
        let html = dir.join(format!("{}-{stamp}.html", self.name));
        let shot = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(15), self.c().screenshot()).await
        });
        if let Ok(Ok(bytes)) = shot {
            let _ = std::fs::write(&png, bytes);
            eprintln!("browser screenshot of the failure: {}", png.display());
        }
        let src = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(15), self.c().source()).await
        });
        if let Ok(Ok(src)) = src {
            let _ = std::fs::write(&html, src);
            eprintln!("page source at the failure: {}", html.display());
        }
        if let Ok(Ok(url)) = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), self.c().current_url()).await
        }) {
            eprintln!("page at the failure: {url}");
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking() && self.client.is_some() {
            self.save_failure_artifacts();
        }
        if let Some(c) = self.client.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), c.close()).await });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let Some(v) = T.iter().position(|&t| t == c) else {
            continue;
        };
        buf = (buf << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64() {
        assert_eq!(super::base64_decode("aGVsbG8h"), b"hello!");
        assert_eq!(super::base64_decode("aGk="), b"hi");
    }
}
