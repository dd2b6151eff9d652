//! The one table between SSH signal names (RFC 4254 section 6.10) and
//! POSIX signals.

use std::mem::discriminant;

use nix::sys::signal::Signal;
use russh::Sig;

/// The signals SSH names; any other travels as its name without `SIG`.
static NAMED: [(Signal, Sig); 12] = [
    (Signal::SIGABRT, Sig::ABRT),
    (Signal::SIGALRM, Sig::ALRM),
    (Signal::SIGFPE, Sig::FPE),
    (Signal::SIGHUP, Sig::HUP),
    (Signal::SIGILL, Sig::ILL),
    (Signal::SIGINT, Sig::INT),
    (Signal::SIGKILL, Sig::KILL),
    (Signal::SIGPIPE, Sig::PIPE),
    (Signal::SIGQUIT, Sig::QUIT),
    (Signal::SIGSEGV, Sig::SEGV),
    (Signal::SIGTERM, Sig::TERM),
    (Signal::SIGUSR1, Sig::USR1),
];

/// The SSH name of signal number `n` (for exit-signal).
pub(super) fn to_ssh(n: i32) -> Sig {
    match Signal::try_from(n) {
        Ok(s) => match NAMED.iter().find(|(p, _)| *p == s) {
            Some((_, q)) => q.clone(),
            None => Sig::Custom(s.as_str().trim_start_matches("SIG").to_string()),
        },
        Err(_) => Sig::Custom(format!("{n}")),
    }
}

/// The POSIX signal an SSH `signal` request names; `None` if unknown.
pub(super) fn from_ssh(sig: &Sig) -> Option<Signal> {
    match sig {
        Sig::Custom(name) => format!("SIG{name}").parse::<Signal>().ok(),
        named => NAMED
            .iter()
            .find(|(_, q)| discriminant(q) == discriminant(named))
            .map(|(p, _)| *p),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip() {
        for (p, _) in &NAMED {
            let s = to_ssh(*p as i32);
            assert!(!matches!(s, Sig::Custom(_)), "{p}");
            assert_eq!(from_ssh(&s), Some(*p));
        }
        let s = to_ssh(Signal::SIGUSR2 as i32);
        assert!(matches!(&s, Sig::Custom(n) if n == "USR2"), "{s:?}");
        assert_eq!(from_ssh(&s), Some(Signal::SIGUSR2));
        assert_eq!(from_ssh(&Sig::Custom("NOPE".into())), None);
    }
}
