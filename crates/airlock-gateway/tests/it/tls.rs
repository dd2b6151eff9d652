//! HTTPS in the accept loop: a real TLS client is served; a client that
//! never completes the handshake is cut off by the header-read timeout; a
//! plain-HTTP request to the HTTPS port gets no answer in the clear; the
//! connection caps hold under TLS. Certificates come from the `openssl`
//! command (a test CA and a server certificate for 127.0.0.1).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_gateway::quotas::Limit;
use airlock_gateway::{GatewayConfig, HttpLimits};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Gateway, within};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command (Debian package openssl)");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A CA and a server certificate for 127.0.0.1 in `dir`.
fn make_pki(dir: &Path) {
    std::fs::write(
        dir.join("ca.cnf"),
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = test CA\n[v3_ca]\n\
         basicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    let ec = "ec_paramgen_curve:prime256v1";
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-nodes",
            "-days",
            "1",
            "-newkey",
            "ec",
            "-pkeyopt",
            ec,
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-config",
            "ca.cnf",
            "-extensions",
            "v3_ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-newkey",
            "ec",
            "-pkeyopt",
            ec,
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    openssl(
        dir,
        &[
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
            "1",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
}

fn https_client(ca: &Path) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(limit, async {
        let mut buf = [0u8; 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server did not close the connection in time");
    (out, started.elapsed())
}

#[tokio::test]
async fn https_is_served_within_the_timeouts_and_caps() {
    within(async {
        let pki = tempfile::tempdir().unwrap();
        make_pki(pki.path());
        let tls = airlock_gateway::tls::server_config(
            &pki.path().join("server.pem"),
            &pki.path().join("server.key"),
        )
        .unwrap();
        let gw = Gateway::start_with(GatewayConfig {
            tls: Some(tls),
            http_limits: HttpLimits {
                header_read_timeout: Duration::from_secs(1),
                max_connections_per_ip: Limit::Max(3),
                ..HttpLimits::default()
            },
            ..GatewayConfig::default()
        })
        .await;
        let https = format!("https://{}/", gw.addr);
        let client = https_client(&pki.path().join("ca.pem"));
        let r = client.get(&https).send().await.unwrap();
        assert_eq!(r.status(), 200);

        // No handshake at all: closed after the header-read timeout.
        let mut idle = TcpStream::connect(gw.addr).await.unwrap();
        let (_, took) = closed_within(&mut idle, Duration::from_secs(10)).await;
        assert!(
            took >= Duration::from_millis(800),
            "closed before the timeout: {took:?}"
        );

        // Plain HTTP on the HTTPS port: no HTTP answer in the clear.
        let mut plain = TcpStream::connect(gw.addr).await.unwrap();
        plain
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (answer, _) = closed_within(&mut plain, Duration::from_secs(10)).await;
        assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");

        // The per-address cap counts connections before any handshake.
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(TcpStream::connect(gw.addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut extra = TcpStream::connect(gw.addr).await.unwrap();
        let (answer, took) = closed_within(&mut extra, Duration::from_secs(10)).await;
        assert!(answer.is_empty(), "{answer:?}");
        assert!(took < Duration::from_millis(800), "not refused: {took:?}");
        drop(held);
        let started = Instant::now();
        loop {
            match client.get(&https).send().await {
                Ok(r) if r.status() == 200 => break,
                _ if started.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("still refused: {other:?}"),
            }
        }
    })
    .await;
}
