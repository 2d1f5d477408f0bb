//! Progress output on stderr: an indicatif spinner on a TTY, plain lines
//! otherwise (CI, pipes, `NO_COLOR`). Never prints a secret: callers pass
//! step descriptions, which show secrets as `(secret)`.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// Reports steps and firstboot phases.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A spinner when stderr is a terminal and `NO_COLOR` is unset, plain lines otherwise.
    pub fn auto() -> Self {
        let tty = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        if !tty {
            return Progress { bar: None };
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress { bar: Some(bar) }
    }

    /// Plain lines only.
    pub fn plain() -> Self {
        Progress { bar: None }
    }

    /// A step starts.
    pub fn step(&self, n: usize, total: usize, what: &str) {
        let line = format!("[{n}/{total}] {what}");
        match &self.bar {
            Some(b) => {
                b.println(&line);
                b.set_message(what.to_owned());
            }
            None => eprintln!("{line}"),
        }
    }

    /// A line of information.
    pub fn info(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    /// Updates the spinner's message (a TTY only; plain mode prints phase changes via `info`).
    pub fn status(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(msg.to_owned());
        }
    }

    /// Stops the spinner.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
