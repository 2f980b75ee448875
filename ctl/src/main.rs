//! `bronzectl`: parse the command line and run it (see `bronzectl::cli`);
//! exit 0 only if every node succeeded.

use bronzectl::cli::Cli;
use clap::Parser;
use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.run(&cli.globals).await {
        Ok(code) => code,
        Err(e) => {
            // It can quote a node's answer or a bundle's manifest.
            eprintln!("error: {}", bronze_bundle::text::printable(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}
