//! `mms-backupd`: thin entry point; see the `mms_backupd` library.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match mms_backupd::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    mms_backupd::report::init_logging(cli.verbose);
    if let Err(e) = mms_backupd::signals::install() {
        eprintln!("mms-backupd: error: cannot set up signal handling: {e}");
        return ExitCode::FAILURE;
    }
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, the whole cause chain: the last line `systemctl status` shows.
            eprintln!(
                "mms-backupd: error: {}",
                format!("{e:#}").replace('\n', " ")
            );
            ExitCode::FAILURE
        }
    }
}
