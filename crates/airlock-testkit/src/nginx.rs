//! Debian's nginx, run as a child with its own prefix, for tests of the
//! shipped `deploy/nginx/*.conf` files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Background, run};

/// A running nginx; stopped (with its workers) when dropped.
pub struct Nginx {
    _dir: tempfile::TempDir,
    proc: Background,
}

/// `example` (a shipped `deploy/nginx/` file) with each `(from, to)`
/// replaced; every `from` must be in it, so the shipped file is what is
/// tested.
pub fn render(example: &Path, substitutions: &[(&str, String)]) -> String {
    let mut conf = std::fs::read_to_string(example).unwrap();
    for (from, to) in substitutions {
        assert!(
            conf.contains(from),
            "{from:?} is not in {}",
            example.display()
        );
        conf = conf.replace(from, to);
    }
    conf
}

impl Nginx {
    /// Starts nginx with `site` (an http-level configuration) and waits
    /// until `ready_port` on 127.0.0.1 accepts connections.
    pub fn start(site: &str, ready_port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        // nginx's workers run as nobody and need the temporary paths.
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::write(p.join("airlock.conf"), site).unwrap();
        std::fs::write(
            p.join("nginx.conf"),
            format!(
                "worker_processes 1;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  \
                 proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
                 uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
                 include {d}/airlock.conf;\n}}\n",
                d = p.display()
            ),
        )
        .unwrap();
        let t = run(
            Command::new("nginx")
                .args(["-t", "-p"])
                .arg(p)
                .arg("-c")
                .arg(p.join("nginx.conf")),
            None,
            Duration::from_secs(20),
        );
        assert!(t.success(), "nginx -t: {t:?}");
        // Its own process group (setsid execs nginx: the master's pid is
        // the group's), so that the workers go with it whatever happens.
        let proc = Background::spawn(
            Command::new("setsid")
                .arg("nginx")
                .arg("-p")
                .arg(p)
                .arg("-c")
                .arg(p.join("nginx.conf"))
                .args(["-g", "daemon off;"]),
        );
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", ready_port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "nginx did not start: {}",
                proc.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx { _dir: dir, proc }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // The master stops its workers on SIGTERM; whatever is left, the
        // Background handle kills with the whole group.
        let _ = Command::new("kill")
            .args(["-TERM", &self.proc.pid().to_string()])
            .status();
        let start = Instant::now();
        while self.proc.try_wait().is_none() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
