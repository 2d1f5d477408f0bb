use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = mms_builder::cli::Cli::parse();
    match cli.run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
