//! `airlock completion bash|zsh|fish`: the shell completion script on stdout.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::args::{Cli, CompletionShell};
use crate::error::{CliError, CliResult};

/// Writes the completion script for `shell` to stdout.
pub fn run(shell: CompletionShell) -> CliResult<()> {
    let mut out = Vec::new();
    write(shell, &mut out);
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&out)
        .and_then(|()| stdout.flush())
        .map_err(|e| {
            CliError::new(format!("cannot write the completion script: {e}"))
                .hint("redirect it to a file: airlock completion bash > airlock.bash")
        })
}

/// The completion script for `shell`.
pub fn write(shell: CompletionShell, out: &mut Vec<u8>) {
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "airlock", out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_the_subcommands() {
        for shell in [
            CompletionShell::Bash,
            CompletionShell::Zsh,
            CompletionShell::Fish,
        ] {
            let mut out = Vec::new();
            write(shell, &mut out);
            let text = String::from_utf8(out).unwrap_or_default();
            assert!(text.contains("config-ssh"), "{shell:?}: {text}");
            assert!(text.contains("vfolder"), "{shell:?}");
        }
    }
}
