use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    delivery_hook::cli::run_command_line(delivery_hook::cli::Cli::parse())
}
