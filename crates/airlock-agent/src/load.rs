//! How busy this node is, from its kernel (`/proc`), for the heartbeat.

use airlock_proto::agent::NodeLoad;

/// The node's load now; fields it cannot read are zero.
pub fn read() -> NodeLoad {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    NodeLoad {
        load1: load1(&loadavg).unwrap_or(0.0),
        mem_available: mem_available(&meminfo).unwrap_or(0),
    }
}

/// The first field of `/proc/loadavg`.
fn load1(loadavg: &str) -> Option<f64> {
    loadavg.split_whitespace().next()?.parse().ok()
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc() {
        assert_eq!(load1("0.66 0.93 1.25 1/512 12345\n"), Some(0.66));
        assert_eq!(load1(""), None);
        let meminfo =
            "MemTotal:       24582144 kB\nMemFree:         1000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(mem_available(meminfo), Some(20_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn reads_this_machine() {
        let l = read();
        assert!(l.mem_available > 0, "{l:?}");
        assert!(l.load1 >= 0.0);
    }
}
