use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    delivery_hook::cli::run(delivery_hook::cli::Cli::parse())
}
