//! `midge config`: configuration tools.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::mosquitto_conf;

/// Configuration tools.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the midge TOML equivalent of a mosquitto.conf (with what midge does
    /// differently as comments). `midge serve -c mosquitto.conf` reads it directly too.
    Convert {
        /// The mosquitto configuration file (its include_dir files are read too).
        file: PathBuf,
    },
}

pub(crate) fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Convert { file } => {
            let c = mosquitto_conf::convert(&file);
            if !c.errors.is_empty() {
                eprintln!(
                    "midge: {} problem(s) in {}:",
                    c.errors.len(),
                    file.display()
                );
                for e in &c.errors {
                    eprintln!("  {e}");
                }
                return Ok(ExitCode::from(2));
            }
            let text = mosquitto_conf::to_toml_text(&file, &c);
            // the output is a valid midge configuration: say so if it is not
            if let Err(e) = crate::config::parse(&text, "the converted configuration") {
                eprintln!("midge: {e}");
                return Ok(ExitCode::from(2));
            }
            let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
            Ok(ExitCode::SUCCESS)
        }
    }
}
