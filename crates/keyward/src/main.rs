//! `keyward`: the partner-credential service and its operator commands.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod commands;
mod runtime;
mod scan;

/// mimalloc instead of glibc's malloc: under load the service allocates on every request from
/// many threads, and glibc's arena locks showed up in profiles (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "keyward",
    version,
    about = "Partner credentials for a payment API: onboarding, signed requests, key regeneration."
)]
struct Cli {
    /// A TOML file of the server's settings (also KEYWARD_CONFIG), for the operator commands;
    /// environment variables override it. Partner commands need no server settings.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Server(commands::ServerCommand),
    #[command(flatten)]
    Partner(keyward_client::cli::PartnerCommand),
    /// Find keyward's keys and tokens in files, folders, stdin or a git history (no server
    /// needed); exit 1 if any is found.
    Scan(scan::ScanArgs),
}

fn main() -> ExitCode {
    quiet_on_broken_pipe();
    let cli = match Cli::from_arg_matches(&grouped_help(Cli::command()).get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = match runtime::build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("keyward: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keyward: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `keyward … | head` ends quietly when `head` stops reading, as a command-line tool should:
/// printing to a closed pipe ends the process with success instead of a panic message.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        // The partner's commands talk to a server; they need none of the server's settings.
        Command::Partner(command) => keyward_client::cli::run(command)
            .await
            .map(|()| ExitCode::SUCCESS)
            .map_err(anyhow::Error::msg),
        Command::Server(command) => commands::operate(cli.config.as_deref(), command)
            .await
            .map(|()| ExitCode::SUCCESS),
        // Its own exit codes: 0 nothing found, 1 found, 2 an input could not be read.
        Command::Scan(args) => Ok(scan::run(args)),
    }
}

/// `keyward --help` lists the operator's commands and the partner's apart: the first run
/// where the server's settings are, the second anywhere, talking to a server over HTTP.
fn grouped_help(command: clap::Command) -> clap::Command {
    let list = |group: clap::Command| -> String {
        group
            .get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| {
                let about = c.get_about().map(ToString::to_string).unwrap_or_default();
                format!("  {:<17} {about}", c.get_name())
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let operators = list(commands::ServerCommand::augment_subcommands(
        clap::Command::new(""),
    ));
    let partners = list(keyward_client::cli::PartnerCommand::augment_subcommands(
        clap::Command::new(""),
    ));
    command.help_template(format!(
        "{{about}}\n\n{{usage-heading}} {{usage}}\n\n\
         Operator commands (where the server runs, with its settings):\n{operators}\n\n\
         Partner commands (with a partner's keys, against a server over HTTP):\n{partners}\n\n\
         Anyone:\n  scan              Find keyward's keys and tokens in files, folders, stdin or a git history\n\n\
         Options:\n{{options}}\n\n\
         `keyward help <command>` or `keyward <command> --help` for a command's own options.\n"
    ))
}
