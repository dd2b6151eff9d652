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
//! - cannot reach another session (`-i BRIDGE -o BRIDGE -j DROP` in
//!   `DOCKER-USER`, in addition to Docker's own `enable_icc=false`; other
//!   bridges are kept apart by Docker's isolation chains), nor link-local
//!   addresses such as cloud metadata at 169.254.169.254 —
//!   `AIRLOCK-FORWARD`, jumped to from `DOCKER-USER` for packets from the
//!   bridge;
//! - with [`Egress::None`], cannot open any connection out at all.
//!
//! Everything is idempotent and persists across agent restarts: the
//! network and chains are checked and (re)filled at every start, never
//! removed. Several agents on one host share the two chains (their rules
//! name no bridge) and each adds its own bridge's rules; the last to start
//! sets the egress policy.
//!
//! The rules go where Docker's bridges are: the agent's own network
//! namespace, or the one named by `--firewall-netns` when the agent runs in
//! a namespace of its own (as `scripts/cluster` runs each node's agent).

use std::path::Path;
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

/// The rules of our two chains for an egress policy, in `iptables -S` form.
/// They name no bridge, so agents on different bridges of one host share
/// them.
pub fn chain_rules(egress: Egress) -> (Vec<String>, Vec<String>) {
    let input = vec![
        format!("-A {INPUT_CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
        format!("-A {INPUT_CHAIN} -j DROP"),
    ];
    let mut forward = vec![format!("-A {FORWARD_CHAIN} -d {LINK_LOCAL} -j DROP")];
    if egress == Egress::None {
        forward.push(format!(
            "-A {FORWARD_CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"
        ));
        forward.push(format!("-A {FORWARD_CHAIN} -j DROP"));
    }
    (input, forward)
}

/// `iptables` in one network namespace: the one at `netns` (entered with
/// util-linux's `nsenter`), or ours when `None`.
#[derive(Debug, Clone, Copy)]
struct Tables<'a> {
    netns: Option<&'a Path>,
}

impl Tables<'_> {
    /// Runs `iptables -w ARGS`: whether it succeeded, and its output (or
    /// its error).
    fn run(self, args: &[&str]) -> Result<(bool, String), String> {
        let mut cmd = match self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display()))
                    .arg("--")
                    .arg("iptables");
                c
            }
            None => Command::new("iptables"),
        };
        let out = cmd
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

    fn must(self, args: &[&str]) -> Result<String, String> {
        match self.run(args)? {
            (true, out) => Ok(out),
            (false, err) => Err(format!("`iptables {}` failed: {err}", args.join(" "))),
        }
    }

    /// Makes `chain` hold exactly `rules` (rewritten only when different, so
    /// a restart does not open a window with an empty chain).
    fn fill_chain(self, chain: &str, rules: &[String]) -> Result<(), String> {
        let (exists, _) = self.run(&["-S", chain])?;
        if !exists {
            self.must(&["-N", chain])?;
        }
        let current = self.must(&["-S", chain])?;
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
        self.must(&["-I", chain, "1", "-j", "DROP"])?;
        for _ in 0..current.len() {
            self.must(&["-D", chain, "2"])?;
        }
        for rule in rules {
            let args: Vec<&str> = rule.split_whitespace().collect();
            self.must(&args)?;
        }
        self.must(&["-D", chain, "1"])?;
        Ok(())
    }

    /// Makes sure `rule` is in chain `from` (inserted as its first rule
    /// when missing).
    fn ensure_first(self, from: &str, rule: &[&str]) -> Result<(), String> {
        let mut check = vec!["-C", from];
        check.extend(rule);
        if self.run(&check)?.0 {
            return Ok(());
        }
        let mut insert = vec!["-I", from, "1"];
        insert.extend(rule);
        self.must(&insert).map(drop)
    }
}

/// Installs (idempotently) the host rules for the session bridge, in the
/// network namespace at `netns` (default: ours). Blocking: call it from a
/// blocking thread.
pub fn install_rules(bridge: &str, egress: Egress, netns: Option<&Path>) -> Result<(), String> {
    let lock_path = if Path::new("/run").is_dir() {
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
    let t = Tables { netns };
    if !t.run(&["-S", "DOCKER-USER"])?.0 {
        let place = match netns {
            Some(ns) => format!(" in the network namespace {}", ns.display()),
            None => String::new(),
        };
        return Err(format!(
            "the DOCKER-USER chain is missing{place} (is Docker running with its iptables integration on?)"
        ));
    }
    let (input, forward) = chain_rules(egress);
    t.fill_chain(INPUT_CHAIN, &input)?;
    t.fill_chain(FORWARD_CHAIN, &forward)?;
    t.ensure_first("INPUT", &["-i", bridge, "-j", INPUT_CHAIN])?;
    t.ensure_first("DOCKER-USER", &["-i", bridge, "-j", FORWARD_CHAIN])?;
    // Session to session on this bridge: dropped before anything else.
    t.ensure_first("DOCKER-USER", &["-i", bridge, "-o", bridge, "-j", "DROP"])?;
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
    let netns = policy.firewall_netns.clone();
    let result = tokio::task::spawn_blocking(move || install_rules(&b, egress, netns.as_deref()))
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
        let (input, open) = chain_rules(Egress::Open);
        assert_eq!(
            input.last().map(String::as_str),
            Some("-A AIRLOCK-INPUT -j DROP")
        );
        assert!(open.contains(&"-A AIRLOCK-FORWARD -d 169.254.0.0/16 -j DROP".to_owned()));
        assert!(open.iter().all(|r| !r.contains("airlock0")), "{open:?}");
        assert!(!open.contains(&"-A AIRLOCK-FORWARD -j DROP".to_owned()));
        let (_, none) = chain_rules(Egress::None);
        assert_eq!(
            none.last().map(String::as_str),
            Some("-A AIRLOCK-FORWARD -j DROP")
        );
    }
}
