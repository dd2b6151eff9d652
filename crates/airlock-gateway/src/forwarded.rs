//! Who the client is and which origin the gateway has, believing
//! `X-Forwarded-*` headers only from configured trusted proxies.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use http::HeaderMap;
use http::request::Parts;

use crate::GatewayConfig;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The TCP peer of a request (unspecified when unknown, e.g. in-process
/// tests without connect info).
pub fn peer_of(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
        .to_canonical()
}

/// [`peer_of`] for a whole request.
pub fn peer_of_request<B>(req: &http::Request<B>) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
        .to_canonical()
}

/// The client's address: the peer, or — when the peer is a trusted proxy —
/// the right-most `X-Forwarded-For` entry that is not itself a trusted
/// proxy (entries further left are whatever the client chose to send).
pub fn client_ip(cfg: &GatewayConfig, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
    let peer = peer.to_canonical();
    if !cfg.forwarded_from(peer) {
        return peer;
    }
    let mut chain: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            return peer;
        };
        for item in value.split(',') {
            match item.trim().parse::<IpAddr>() {
                Ok(ip) => chain.push(ip.to_canonical()),
                Err(_) => return peer,
            }
        }
    }
    let mut client = peer;
    for ip in chain.into_iter().rev() {
        client = ip;
        if !cfg.forwarded_from(ip) {
            break;
        }
    }
    client
}

/// `X-Forwarded-<name>` from a trusted proxy (first value), else `None`.
pub fn forwarded<'a>(
    cfg: &GatewayConfig,
    headers: &'a HeaderMap,
    peer: IpAddr,
    name: &str,
) -> Option<&'a str> {
    if !cfg.forwarded_from(peer) {
        return None;
    }
    header(headers, &format!("x-forwarded-{name}"))
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(proxies: &[&str]) -> GatewayConfig {
        GatewayConfig {
            trusted_proxies: proxies.iter().map(|p| p.parse().unwrap()).collect(),
            ..GatewayConfig::default()
        }
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn xff_only_from_trusted_proxies() {
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let h = xff("203.0.113.7");
        assert_eq!(client_ip(&cfg(&[]), &h, peer), peer);
        assert_eq!(
            client_ip(&cfg(&["10.0.0.0/8"]), &h, peer),
            peer,
            "an untrusted peer's XFF is ignored"
        );
        assert_eq!(
            client_ip(&cfg(&["127.0.0.1"]), &h, peer),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        // A client cannot pick its address by prepending entries.
        let h = xff("1.2.3.4, 203.0.113.7");
        assert_eq!(
            client_ip(&cfg(&["127.0.0.1"]), &h, peer),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        // Chained trusted proxies are skipped.
        let h = xff("198.51.100.1, 10.0.0.5");
        assert_eq!(
            client_ip(&cfg(&["127.0.0.1", "10.0.0.0/8"]), &h, peer),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        // Garbage: the peer.
        let h = xff("nonsense");
        assert_eq!(client_ip(&cfg(&["127.0.0.1"]), &h, peer), peer);
        assert_eq!(
            forwarded(&cfg(&[]), &xff("x"), peer, "for"),
            None,
            "untrusted"
        );
    }
}
