//! `subliminal completions bash|zsh|fish|elvish|powershell`: the shell's
//! completion script on standard output, generated from the same command
//! definition that parses the arguments (kinds' tools included), so it
//! never lags behind a new flag.
//!
//! bash: `subliminal completions bash > ~/.local/share/bash-completion/completions/subliminal`

use std::process::ExitCode;

use clap_complete::Shell;

#[derive(clap::Args)]
pub struct Args {
    /// The shell to write completions for.
    shell: Shell,
}

pub fn run(args: Args, mut command: clap::Command) -> anyhow::Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "subliminal", &mut script);
    use std::io::Write as _;
    std::io::stdout().lock().write_all(&script)?;
    Ok(ExitCode::SUCCESS)
}
