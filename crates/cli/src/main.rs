//! The `midge` binary: one program for the broker and the tools around it.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench_cmd;
mod completions;
mod config;
mod config_cmd;
mod device_cmd;
mod import_cmd;
mod mosquitto_conf;
mod mqtt_opts;
mod passwd_cmd;
mod pub_cmd;
mod serve;
mod sub_cmd;
mod sub_format;

/// midge: an MQTT broker and IoT-hub toolkit.
#[derive(Debug, Parser)]
#[command(name = "midge", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker.
    Serve(serve::ServeArgs),
    /// Publish a message (like mosquitto_pub).
    #[command(disable_help_flag = true)]
    Pub(pub_cmd::PubArgs),
    /// Subscribe and print messages (like mosquitto_sub).
    #[command(disable_help_flag = true)]
    Sub(sub_cmd::SubArgs),
    /// Manage a password file (like mosquitto_passwd).
    Passwd(passwd_cmd::PasswdArgs),
    /// Configuration tools: `midge config convert mosquitto.conf` prints the equivalent
    /// midge TOML.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completions(completions::CompletionsArgs),
    /// Benchmark a broker: connections, pub, sub, fan-in, fan-out, latency, sink.
    Bench(bench_cmd::BenchArgs),
    /// Manage the devices of a running server (through its HTTP API).
    Device(device_cmd::DeviceArgs),
    /// Manage the topic policies of a running server (through its HTTP API).
    Policy(device_cmd::PolicyArgs),
    /// Import mosquitto's persistence file (mosquitto.db) into the data folder.
    Import(import_cmd::ImportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Pub(args) => pub_cmd::run(args),
        Command::Sub(args) => sub_cmd::run(args),
        Command::Passwd(args) => passwd_cmd::run(args),
        Command::Config(cmd) => config_cmd::run(cmd),
        Command::Completions(args) => completions::run::<Cli>(args),
        Command::Bench(args) => bench_cmd::run(args),
        Command::Device(args) => device_cmd::run_device(args),
        Command::Policy(args) => device_cmd::run_policy(args),
        Command::Import(args) => import_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
