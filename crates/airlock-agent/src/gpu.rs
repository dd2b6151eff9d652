//! NVIDIA GPUs of this node: found with `nvidia-smi` (the NVIDIA driver's
//! own tool; nothing else tells the UUIDs that Docker's device requests
//! name), handed out whole to sessions, and passed to Docker as a device
//! request for the NVIDIA container runtime.

use std::time::Duration;

use airlock_proto::agent::Gpu;

/// How long `nvidia-smi` may take (it can hang on a wedged driver).
const DETECT_TIMEOUT: Duration = Duration::from_secs(20);

/// The query: one CSV line per GPU.
const QUERY: &[&str] = &[
    "--query-gpu=uuid,name,memory.total",
    "--format=csv,noheader,nounits",
];

/// The GPUs `nvidia-smi` reports, or why there are none (said once at
/// start: no `nvidia-smi`, or it failed).
pub async fn detect() -> Result<Vec<Gpu>, String> {
    let run = tokio::process::Command::new("nvidia-smi")
        .args(QUERY)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(DETECT_TIMEOUT, run).await {
        Err(_) => Err(format!(
            "nvidia-smi did not answer within {} s",
            DETECT_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Err("this node has no NVIDIA GPU (nvidia-smi is not installed)".to_owned())
        }
        Ok(Err(e)) => Err(format!("cannot run nvidia-smi: {e}")),
        Ok(Ok(out)) if !out.status.success() => Err(format!(
            "nvidia-smi failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(Ok(out)) => Ok(parse(&String::from_utf8_lossy(&out.stdout))),
    }
}

/// Parses `nvidia-smi --query-gpu=uuid,name,memory.total
/// --format=csv,noheader,nounits` (lines it cannot read are skipped).
pub fn parse(csv: &str) -> Vec<Gpu> {
    csv.lines()
        .filter_map(|line| {
            let mut f = line.split(',').map(str::trim);
            let uuid = f.next().filter(|u| u.starts_with("GPU-"))?;
            let name = f.next()?;
            let mem_mib = f.next().and_then(|m| m.parse().ok()).unwrap_or(0);
            Some(Gpu {
                uuid: uuid.to_owned(),
                name: name.to_owned(),
                mem_mib,
            })
        })
        .collect()
}

/// `n` of `all` (UUIDs) that `held` does not hold, in the node's order;
/// `None` when fewer are free.
pub fn pick(all: &[Gpu], held: &[String], n: usize) -> Option<Vec<String>> {
    let free: Vec<String> = all
        .iter()
        .filter(|g| !held.contains(&g.uuid))
        .take(n)
        .map(|g| g.uuid.clone())
        .collect();
    (free.len() == n).then_some(free)
}

/// `CUDA_VISIBLE_DEVICES` inside a container given `n` devices: the NVIDIA
/// runtime shows them renumbered from 0.
pub fn visible_devices(n: usize) -> String {
    (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TWO: &str = "GPU-8c3d9a0e-1111-2222-3333-444455556666, NVIDIA H200, 143771\n\
                       GPU-0f9e8d7c-aaaa-bbbb-cccc-ddddeeeeffff, NVIDIA H200, 143771\n";

    #[test]
    fn parses_nvidia_smi() {
        let g = parse(TWO);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].uuid, "GPU-8c3d9a0e-1111-2222-3333-444455556666");
        assert_eq!(g[0].name, "NVIDIA H200");
        assert_eq!(g[0].mem_mib, 143_771);
        assert!(parse("").is_empty());
        assert!(parse("No devices were found\n").is_empty());
    }

    #[test]
    fn picks_free_devices_in_order() {
        let g = parse(TWO);
        let first = g[0].uuid.clone();
        assert_eq!(pick(&g, &[], 1), Some(vec![first.clone()]));
        assert_eq!(
            pick(&g, std::slice::from_ref(&first), 1),
            Some(vec![g[1].uuid.clone()])
        );
        assert_eq!(pick(&g, &[first], 2), None);
        assert_eq!(pick(&g, &[], 0), Some(vec![]));
        assert_eq!(visible_devices(3), "0,1,2");
        assert_eq!(visible_devices(0), "");
    }
}
