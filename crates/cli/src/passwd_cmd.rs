//! Placeholder: implemented in its own issue.

use std::process::ExitCode;

/// Arguments (placeholder).
#[derive(Debug, clap::Args)]
pub(crate) struct PasswdArgs {}

pub(crate) fn run(_args: PasswdArgs) -> anyhow::Result<ExitCode> {
    eprintln!("midge: not implemented yet");
    Ok(ExitCode::from(1))
}
