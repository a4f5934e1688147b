//! Placeholder: implemented in its own issue.

use std::process::ExitCode;

/// Arguments (placeholder).
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {}

pub(crate) fn run(_args: ServeArgs) -> anyhow::Result<ExitCode> {
    eprintln!("midge: not implemented yet");
    Ok(ExitCode::from(1))
}
