//! Finding the static `airlock-runner` binary that agents mount into
//! sessions.

use std::path::{Path, PathBuf};

use crate::cli::hinted;

/// Whether an ELF file has no program interpreter (i.e. is statically
/// linked). Reads the program headers; no ELF crate is needed for this.
pub fn is_static_elf(path: &Path) -> std::io::Result<bool> {
    let data = std::fs::read(path)?;
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        data.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        data.get(o..o + 8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    };
    // 64-bit little-endian ELF only (x86_64 / aarch64).
    if data.get(..5) != Some(b"\x7fELF\x02") || data.get(5) != Some(&1) {
        return Ok(false);
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Ok(false);
    };
    let phoff = usize::try_from(phoff).unwrap_or(usize::MAX);
    for i in 0..usize::from(phnum) {
        let off = phoff.saturating_add(i * usize::from(phentsize));
        match u32_at(off) {
            Some(3) => return Ok(false), // PT_INTERP
            Some(_) => {}
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// The runner to use: `--runner`, else `airlock-runner` next to this
/// executable if it is static, else the static build of the source tree
/// (`target/x86_64-unknown-linux-gnu/release/airlock-runner`).
pub fn locate(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let hint = "build it with `scripts/build-runner` (a static binary), or pass --runner PATH";
    if let Some(p) = explicit {
        return match is_static_elf(p) {
            Ok(true) => Ok(p.to_owned()),
            Ok(false) => Err(hinted(
                format!(
                    "{} is not a statically linked binary; it would not run in every image",
                    p.display()
                ),
                hint,
            )),
            Err(e) => Err(hinted(
                format!("cannot read the runner {}: {e}", p.display()),
                hint,
            )),
        };
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut candidates = vec![dir.join("airlock-runner")];
    // target/{debug,release}/airlockd → target/x86_64-unknown-linux-gnu/release/
    if let Some(target) = dir.parent() {
        candidates.push(target.join("x86_64-unknown-linux-gnu/release/airlock-runner"));
    }
    for c in &candidates {
        if c.is_file() && is_static_elf(c).unwrap_or(false) {
            return Ok(c.clone());
        }
    }
    Err(hinted(
        format!(
            "no static airlock-runner found (looked at {})",
            candidates
                .iter()
                .map(|c| c.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        hint,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_binaries_are_not_static() {
        assert!(!is_static_elf(Path::new("/bin/sh")).unwrap());
        let dir = std::env::temp_dir().join(format!("airlockd-elf-{}", std::process::id()));
        std::fs::write(&dir, b"not an elf").unwrap();
        assert!(!is_static_elf(&dir).unwrap());
        let _ = std::fs::remove_file(&dir);
    }
}
