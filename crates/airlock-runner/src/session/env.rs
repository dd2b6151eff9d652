//! The environment of a session's command: the image's base environment,
//! the client's variables (minus the ones the server sets), then ours.

use crate::server::ConnCtx;

use super::Spec;

/// The environment for `spec`'s command; `tty` is its terminal, if any.
pub(super) fn session_env(ctx: &ConnCtx, spec: &Spec, tty: Option<&str>) -> Vec<(String, String)> {
    let s = &ctx.settings;
    const OURS: &[&str] = &[
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "PATH",
        "MAIL",
        "SSH_CONNECTION",
        "SSH_CLIENT",
        "SSH_TTY",
        "SSH_AUTH_SOCK",
        "TERM",
    ];
    let mut env: Vec<(String, String)> = s.base_env.clone();
    let mut has_lang = false;
    for (k, v) in &spec.client_env {
        if OURS.contains(&k.as_str()) || k.is_empty() || k.contains('=') {
            continue;
        }
        if k == "LANG" {
            has_lang = true;
        }
        env.push((k.clone(), v.clone()));
    }
    let home = s.home.display().to_string();
    env.push(("HOME".into(), home));
    env.push(("USER".into(), s.user.clone()));
    env.push(("LOGNAME".into(), s.user.clone()));
    env.push(("SHELL".into(), s.shell.clone()));
    env.push(("PATH".into(), s.path_env.clone()));
    if !has_lang {
        env.push(("LANG".into(), s.lang.clone()));
    }
    let (pip, pport) = (ctx.peer.ip().to_canonical(), ctx.peer.port());
    let (lip, lport) = (ctx.local.ip().to_canonical(), ctx.local.port());
    env.push((
        "SSH_CONNECTION".into(),
        format!("{pip} {pport} {lip} {lport}"),
    ));
    env.push(("SSH_CLIENT".into(), format!("{pip} {pport} {lport}")));
    if let Some(p) = &spec.pty {
        env.push((
            "TERM".into(),
            if p.term.is_empty() {
                "xterm".into()
            } else {
                p.term.clone()
            },
        ));
    }
    if let Some(t) = tty {
        env.push(("SSH_TTY".into(), t.to_string()));
    }
    if let Some(a) = &spec.agent {
        env.push(("SSH_AUTH_SOCK".into(), a.display().to_string()));
    }
    env
}
