//! Task polling decisions (pure): exit status → outcome, elapsed → next delay.

use std::time::Duration;

/// How a stopped task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    /// `OK`.
    Ok,
    /// `WARNINGS: N` — success with warnings.
    Warnings(u32),
    /// Anything else: the error text.
    Failed(String),
}

/// Classifies a task's `exitstatus` (pve-common `UPID::status_is_error`).
pub fn outcome(exitstatus: &str) -> TaskOutcome {
    if exitstatus == "OK" {
        return TaskOutcome::Ok;
    }
    if let Some(n) = exitstatus.strip_prefix("WARNINGS: ")
        && let Ok(n) = n.trim().parse()
    {
        return TaskOutcome::Warnings(n);
    }
    TaskOutcome::Failed(exitstatus.to_owned())
}

/// Adaptive polling: short delays for short tasks, at most `max` for long
/// ones, so the overshoot past a task's end stays near `1/divisor` of its runtime.
#[derive(Debug, Clone, Copy)]
pub struct PollPolicy {
    /// First and smallest delay.
    pub min: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Delay = elapsed / divisor, clamped.
    pub divisor: u32,
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy {
            min: Duration::from_millis(10),
            max: Duration::from_secs(1),
            divisor: 20,
        }
    }
}

impl PollPolicy {
    /// The delay before the next poll, given how long the wait has lasted.
    pub fn next_delay(&self, elapsed: Duration) -> Duration {
        (elapsed / self.divisor.max(1)).clamp(self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses() {
        assert_eq!(outcome("OK"), TaskOutcome::Ok);
        assert_eq!(outcome("WARNINGS: 3"), TaskOutcome::Warnings(3));
        assert_eq!(
            outcome("clone failed: disk full"),
            TaskOutcome::Failed("clone failed: disk full".into())
        );
        assert_eq!(
            outcome("unexpected status"),
            TaskOutcome::Failed("unexpected status".into())
        );
    }

    #[test]
    fn delays_grow_and_clamp() {
        let p = PollPolicy::default();
        assert_eq!(p.next_delay(Duration::ZERO), Duration::from_millis(10));
        assert_eq!(
            p.next_delay(Duration::from_secs(2)),
            Duration::from_millis(100)
        );
        assert_eq!(
            p.next_delay(Duration::from_secs(600)),
            Duration::from_secs(1)
        );
    }
}
