//! `mms-firstboot` binary: parse the command line and run it (logic in the library).
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = mms_firstboot::cli::Cli::parse();
    mms_firstboot::cli::init_logging(cli.verbose);
    match cli.run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
