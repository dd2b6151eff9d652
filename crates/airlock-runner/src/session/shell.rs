//! What a session runs: the user's shell, or a file-transfer server started
//! directly; and the sh-like lexer that decides which.

use std::path::{Path, PathBuf};

use tracing::debug;

use crate::server::ConnCtx;

/// What to execute.
pub(super) struct Launch {
    pub(super) program: PathBuf,
    pub(super) arg0: Option<String>,
    pub(super) args: Vec<String>,
}

pub(super) fn launch_for(ctx: &ConnCtx, command: Option<&str>) -> Launch {
    let s = &ctx.settings;
    match command {
        None => {
            let base = Path::new(&s.shell)
                .file_name()
                .map(|b| b.to_string_lossy().into_owned())
                .unwrap_or_else(|| "sh".into());
            Launch {
                program: PathBuf::from(&s.shell),
                arg0: Some(format!("-{base}")),
                args: Vec::new(),
            }
        }
        Some(cmd) => {
            if let Some(l) = direct_launch(cmd, &s.path_env, &s.self_exe) {
                debug!("running {cmd:?} without the shell: {}", l.program.display());
                return l;
            }
            Launch {
                program: PathBuf::from(&s.shell),
                arg0: None,
                args: vec!["-c".into(), cmd.into()],
            }
        }
    }
}

/// File-transfer server commands (`scp -t/-f …`, `rsync --server …`) are run
/// directly, not through the user's shell, so rc files that print text
/// cannot corrupt their protocol streams (docs/ssh-server-notes.md N9). When the
/// image has no `scp`, the runner itself serves it (multi-call binary).
/// Anything that needs the shell (globs, variables, `~` for a system
/// binary, pipes) still goes through it.
fn direct_launch(cmd: &str, path: &str, self_exe: &Path) -> Option<Launch> {
    let words = split_simple(cmd)?;
    let (first, rest) = words.split_first()?;
    // The built-in speedtest (`airlock speedtest`), always the runner's own.
    if first == crate::speedtest::NAME {
        return Some(Launch {
            program: self_exe.to_path_buf(),
            arg0: Some(first.clone()),
            args: rest.to_vec(),
        });
    }
    let server_mode = match first.as_str() {
        "scp" => rest
            .iter()
            .any(|w| w.starts_with('-') && (w.contains('t') || w.contains('f'))),
        "rsync" => rest.iter().any(|w| w == "--server"),
        _ => false,
    };
    if !server_mode {
        return None;
    }
    match find_in_path(first, path) {
        Some(p) => {
            if rest.iter().any(|w| w.starts_with('~')) {
                return None;
            }
            Some(Launch {
                program: p,
                arg0: Some(first.clone()),
                args: rest.to_vec(),
            })
        }
        None if first == "scp" => Some(Launch {
            program: self_exe.to_path_buf(),
            arg0: Some("scp".into()),
            args: rest.to_vec(),
        }),
        None => None,
    }
}

/// If `cmd` is an scp server command and no `scp` is in `path`, the
/// arguments for the built-in scp.
pub fn scp_fallback(cmd: &str, path: &str) -> Option<Vec<String>> {
    let l = direct_launch(cmd, path, Path::new("/self"))?;
    (l.program == Path::new("/self")).then_some(l.args)
}

fn find_in_path(name: &str, path: &str) -> Option<PathBuf> {
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Split a command line into words with sh-like quoting; `None` if it uses
/// shell features beyond quoting (pipes, variables, globs, …).
pub fn split_simple(cmd: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = cmd.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return None,
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x @ ('"' | '\\' | '$' | '`')) => cur.push(x),
                            Some(x) => {
                                cur.push('\\');
                                cur.push(x);
                            }
                            None => return None,
                        },
                        Some('$' | '`') => return None,
                        Some(x) => cur.push(x),
                        None => return None,
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next()?);
            }
            ';' | '&' | '|' | '<' | '>' | '(' | ')' | '$' | '`' | '*' | '?' | '[' => return None,
            x => {
                in_word = true;
                cur.push(x);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn split() {
        assert_eq!(
            split_simple("scp -t -- 'a b' c\\ d \"e\\\"f\"").unwrap(),
            vec!["scp", "-t", "--", "a b", "c d", "e\"f"]
        );
        assert!(split_simple("scp -f *.txt").is_none());
        assert!(split_simple("echo hi; ls").is_none());
    }

    #[test]
    fn scp_detection() {
        assert!(scp_fallback("scp -t /tmp", "/nonexistent").is_some());
        assert!(scp_fallback("scp -v -r -f -- ~/x", "/nonexistent").is_some());
        assert!(scp_fallback("ls -l", "/nonexistent").is_none());
        assert!(scp_fallback("scp -t /tmp", "/usr/bin:/bin").is_none());
    }
}
