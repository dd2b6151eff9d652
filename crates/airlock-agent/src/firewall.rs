//! The session network and the host firewall that fences it in.
//!
//! Every new session container is attached to one Docker bridge network
//! ([`NETWORK`], bridge interface [`BRIDGE`]) created with inter-container
//! traffic off. Host rules (iptables, in chains of our own so they are easy
//! to find and never touch anything else) then make sure that a session:
//!
//! - cannot open a connection to the node itself (any address of the host:
//!   the gateway, the agent API, sshd, anything) — `AIRLOCK-INPUT`, jumped
//!   to from `INPUT` for packets arriving on the bridge, accepts only
//!   replies (`ESTABLISHED,RELATED`), so the agent still reaches the runner
//!   at `container-IP:2200` while the container cannot call back;
//! - cannot reach another session (`-o BRIDGE -j DROP`, in addition to
//!   Docker's own `enable_icc=false`), nor link-local addresses such as
//!   cloud metadata at 169.254.169.254 — `AIRLOCK-FORWARD`, jumped to from
//!   `DOCKER-USER` for packets from the bridge;
//! - with [`Egress::None`], cannot open any connection out at all.
//!
//! Everything is idempotent and persists across agent restarts: the
//! network and chains are checked and (re)filled at every start, never
//! removed. Several agents on one host share them; the last to start sets
//! the egress policy.

use std::process::Command;

use crate::config::{Egress, NetworkPolicy};
use crate::error::AgentError;
use crate::runtime::Runtime;

/// Default name of the session network.
pub const NETWORK: &str = "airlock-sessions";
/// Default Linux bridge interface of the session network.
pub const BRIDGE: &str = "airlock0";
/// Our chain for packets from sessions to the host.
pub const INPUT_CHAIN: &str = "AIRLOCK-INPUT";
/// Our chain for packets from sessions through the host.
pub const FORWARD_CHAIN: &str = "AIRLOCK-FORWARD";
/// Link-local addresses (cloud metadata services live there).
pub const LINK_LOCAL: &str = "169.254.0.0/16";
/// Serialises firewall changes between airlockd processes on one host.
const LOCK_FILE: &str = "/run/airlock-firewall.lock";

/// Creates the session network if it does not exist yet and returns the
/// name of its bridge interface.
pub async fn ensure_network(
    runtime: &dyn Runtime,
    policy: &NetworkPolicy,
) -> Result<String, AgentError> {
    let network = runtime
        .ensure_network(&policy.network, &policy.bridge)
        .await?;
    if network.inter_container {
        tracing::warn!(network = %policy.network, "the session network allows inter-container traffic; the firewall blocks it instead (recreate the network to let Docker block it too)");
    }
    Ok(network.bridge)
}

/// The rules of our two chains for a bridge and an egress policy, in
/// `iptables -S` form.
pub fn chain_rules(bridge: &str, egress: Egress) -> (Vec<String>, Vec<String>) {
    let input = vec![
        format!("-A {INPUT_CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
        format!("-A {INPUT_CHAIN} -j DROP"),
    ];
    let mut forward = vec![
        format!("-A {FORWARD_CHAIN} -d {LINK_LOCAL} -j DROP"),
        format!("-A {FORWARD_CHAIN} -o {bridge} -j DROP"),
    ];
    if egress == Egress::None {
        forward.push(format!(
            "-A {FORWARD_CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"
        ));
        forward.push(format!("-A {FORWARD_CHAIN} -j DROP"));
    }
    (input, forward)
}

fn iptables(args: &[&str]) -> Result<(bool, String), String> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run iptables: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok((
        out.status.success(),
        if out.status.success() { stdout } else { stderr },
    ))
}

fn must(args: &[&str]) -> Result<String, String> {
    match iptables(args)? {
        (true, out) => Ok(out),
        (false, err) => Err(format!("`iptables {}` failed: {err}", args.join(" "))),
    }
}

/// Makes `chain` hold exactly `rules` (rewritten only when different, so a
/// restart does not open a window with an empty chain).
fn fill_chain(chain: &str, rules: &[String]) -> Result<(), String> {
    let (exists, _) = iptables(&["-S", chain])?;
    if !exists {
        must(&["-N", chain])?;
    }
    let current = must(&["-S", chain])?;
    let current: Vec<&str> = current
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("-A "))
        .collect();
    if current == rules.iter().map(String::as_str).collect::<Vec<_>>() {
        return Ok(());
    }
    // Refill under a leading DROP, so the chain never lets anything
    // through while it changes.
    must(&["-I", chain, "1", "-j", "DROP"])?;
    let n = current.len();
    for _ in 0..n {
        must(&["-D", chain, "2"])?;
    }
    for rule in rules {
        let args: Vec<&str> = rule.split_whitespace().collect();
        must(&args)?;
    }
    must(&["-D", chain, "1"])?;
    Ok(())
}

/// Makes sure `from` jumps to `chain` for packets matching `iface_flag
/// bridge` (as its first rule).
fn ensure_jump(from: &str, iface_flag: &str, bridge: &str, chain: &str) -> Result<(), String> {
    let rule = [iface_flag, bridge, "-j", chain];
    let mut check = vec!["-C", from];
    check.extend(rule);
    if iptables(&check)?.0 {
        return Ok(());
    }
    let mut insert = vec!["-I", from, "1"];
    insert.extend(rule);
    must(&insert).map(drop)
}

/// Installs (idempotently) the host rules for the session bridge. Blocking:
/// call it from a blocking thread.
pub fn install_rules(bridge: &str, egress: Egress) -> Result<(), String> {
    let lock_path = if std::path::Path::new("/run").is_dir() {
        LOCK_FILE.to_owned()
    } else {
        std::env::temp_dir()
            .join("airlock-firewall.lock")
            .display()
            .to_string()
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {lock_path}: {e}"))?;
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("cannot lock {lock_path}: {e}"))?;
    // Docker creates DOCKER-USER when it manages iptables itself.
    if !iptables(&["-S", "DOCKER-USER"])?.0 {
        return Err(
            "the DOCKER-USER chain is missing (is Docker running with its iptables integration on?)"
                .to_owned(),
        );
    }
    let (input, forward) = chain_rules(bridge, egress);
    fill_chain(INPUT_CHAIN, &input)?;
    fill_chain(FORWARD_CHAIN, &forward)?;
    ensure_jump("INPUT", "-i", bridge, INPUT_CHAIN)?;
    ensure_jump("DOCKER-USER", "-i", bridge, FORWARD_CHAIN)?;
    Ok(())
}

/// The session network and, unless the operator turned it off, its
/// firewall. Returns the bridge name.
pub async fn prepare(runtime: &dyn Runtime, policy: &NetworkPolicy) -> Result<String, AgentError> {
    let bridge = ensure_network(runtime, policy).await?;
    if !policy.firewall {
        tracing::warn!(
            bridge = %bridge,
            "the session firewall is OFF (--no-firewall): sessions can connect to every service on this node, and to cloud metadata addresses"
        );
        return Ok(bridge);
    }
    let b = bridge.clone();
    let egress = policy.egress;
    let result = tokio::task::spawn_blocking(move || install_rules(&b, egress))
        .await
        .map_err(|e| AgentError::Docker(format!("the firewall set-up did not finish: {e}")))?;
    match result {
        Ok(()) => {
            tracing::info!(bridge = %bridge, ?egress, "session firewall in place");
            Ok(bridge)
        }
        Err(e) => Err(AgentError::Firewall(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_per_egress() {
        let (input, open) = chain_rules("airlock0", Egress::Open);
        assert_eq!(
            input.last().map(String::as_str),
            Some("-A AIRLOCK-INPUT -j DROP")
        );
        assert!(open.contains(&"-A AIRLOCK-FORWARD -d 169.254.0.0/16 -j DROP".to_owned()));
        assert!(open.contains(&"-A AIRLOCK-FORWARD -o airlock0 -j DROP".to_owned()));
        assert!(!open.contains(&"-A AIRLOCK-FORWARD -j DROP".to_owned()));
        let (_, none) = chain_rules("airlock0", Egress::None);
        assert_eq!(
            none.last().map(String::as_str),
            Some("-A AIRLOCK-FORWARD -j DROP")
        );
    }
}
