use std::process::ExitCode;

use clap::Parser;

/// musl's malloc takes one lock for every thread; the static build
/// allocates with mimalloc.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    delivery_hook::cli::run_command_line(delivery_hook::cli::Cli::parse())
}
