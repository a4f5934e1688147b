//! `midge completions bash|zsh|fish`: shell completion scripts (clap_complete).

use std::process::ExitCode;

use clap::{Command, CommandFactory};
use clap_complete::Shell;

/// Arguments of `midge completions`.
#[derive(Debug, clap::Args)]
pub(crate) struct CompletionsArgs {
    /// Shell to generate completions for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Drop the propagated `-V/--version` of every subcommand: several tools use `-V` for the
/// MQTT protocol version (as mosquitto's do), and a version flag on a subcommand completes
/// to nothing useful.
fn without_subcommand_versions(mut cmd: Command) -> Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in names {
        cmd = cmd.mut_subcommand(name, |s| {
            without_subcommand_versions(s.disable_version_flag(true))
        });
    }
    cmd
}

pub(crate) fn run<C: CommandFactory>(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = without_subcommand_versions(C::command());
    let name = cmd.get_name().to_string();
    // generate into memory: clap_complete panics on a write error (e.g. `| head` closing
    // the pipe), and a closed pipe is not an error worth more than a quiet exit
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, name, &mut script);
    match std::io::Write::write_all(&mut std::io::stdout().lock(), &script) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
    }
}
