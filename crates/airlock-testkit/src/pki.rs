//! A throwaway certificate authority for TLS tests, made with the
//! `openssl` command.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::run;

/// A CA and one server certificate, in a temporary directory (strict
/// enough for Python 3.13's X509_STRICT checks).
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, and a server certificate it issued for 127.0.0.1, 127.0.0.2
    /// and localhost (EC P-256, two days).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        std::fs::write(
            p("ca.cnf"),
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = airlock test CA\n\
             [v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n",
        )
        .unwrap();
        std::fs::write(
            p("server.ext"),
            "subjectAltName = IP:127.0.0.1,IP:127.0.0.2,DNS:localhost\nbasicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n\
             subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid,issuer\n",
        )
        .unwrap();
        let openssl = |args: &[&str]| {
            let out = run(
                Command::new("openssl").args(args).current_dir(dir.path()),
                None,
                Duration::from_secs(30),
            );
            assert!(out.success(), "openssl {args:?}: {out:?}");
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let mut a = vec!["req", "-x509", "-new", "-nodes", "-days", "2"];
        a.extend(ec);
        a.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-config",
            "ca.cnf",
            "-extensions",
            "v3_ca",
        ]);
        openssl(&a);
        let mut a = vec!["req", "-new", "-nodes", "-subj", "/CN=localhost"];
        a.extend(ec);
        a.extend(["-keyout", "server.key", "-out", "server.csr"]);
        openssl(&a);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        Pki { dir }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate (PEM).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server key (PEM).
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}
