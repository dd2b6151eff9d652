//! Name resolution without NSS or DNS: numeric addresses, `localhost` and
//! names from `/etc/hosts` only (glibc's resolver is unsafe in a static binary).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// Resolve `host` to candidate addresses.
pub fn resolve(host: &str, port: u16) -> Vec<SocketAddr> {
    resolve_with_hosts(host, port, Path::new("/etc/hosts"))
}

/// Resolve `host` using the given hosts file.
pub fn resolve_with_hosts(host: &str, port: u16, hosts_file: &Path) -> Vec<SocketAddr> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = h.parse::<IpAddr>() {
        return vec![SocketAddr::new(ip, port)];
    }
    let mut out = Vec::new();
    if let Ok(text) = std::fs::read_to_string(hosts_file) {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut it = line.split_whitespace();
            let Some(addr) = it.next() else { continue };
            let Ok(ip) = addr.parse::<IpAddr>() else {
                continue;
            };
            if it.any(|n| n.eq_ignore_ascii_case(h)) {
                let sa = SocketAddr::new(ip, port);
                if !out.contains(&sa) {
                    out.push(sa);
                }
            }
        }
    }
    if out.is_empty() && h.eq_ignore_ascii_case("localhost") {
        out.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        out.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port));
    }
    // Prefer IPv4 first, like most clients do for localhost.
    out.sort_by_key(|a| a.is_ipv6());
    out
}

/// Parse a bind address of a `tcpip-forward` request.
pub fn bind_addrs(address: &str, port: u16) -> Vec<SocketAddr> {
    match address {
        "" | "*" | "0.0.0.0" => vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)],
        "::" => vec![SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)],
        "localhost" => vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)],
        other => resolve(other, port),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn numeric_and_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(
            &hosts,
            "10.1.2.3 db db.local # comment\n::1 ip6-localhost\n",
        )
        .unwrap();
        assert_eq!(
            resolve_with_hosts("127.0.0.1", 80, &hosts),
            vec!["127.0.0.1:80".parse().unwrap()]
        );
        assert_eq!(
            resolve_with_hosts("DB.local", 5, &hosts),
            vec!["10.1.2.3:5".parse().unwrap()]
        );
        assert!(resolve_with_hosts("example.com", 5, &hosts).is_empty());
        assert_eq!(
            resolve_with_hosts("localhost", 7, &hosts)[0],
            "127.0.0.1:7".parse().unwrap()
        );
    }
}
