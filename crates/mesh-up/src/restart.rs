//! Restart policy and back-off (pure).
//!
//! A service that ends is restarted according to its `restart` policy after
//! a delay that starts at [`Backoff::initial`] (1 s) and doubles with each
//! restart in a row, up to [`Backoff::max`] (30 s). A run that stayed up for
//! [`Backoff::reset_after`] (10 s) or longer was not a crash loop: the next
//! restart is again the first in a row, after the initial delay.
//! `max_restarts` bounds the restarts in a row; the crash after the last one
//! leaves the service `failed`.

use std::{fmt, time::Duration};

use crate::RestartPolicy;

/// How a service's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Its exit status, when it exited.
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
}

impl Exit {
    /// Exited with status `code`.
    pub const fn status(code: i32) -> Self {
        Self {
            code: Some(code),
            signal: None,
        }
    }

    /// Exited with status 0.
    pub fn success(self) -> bool {
        self.code == Some(0)
    }
}

impl From<std::process::ExitStatus> for Exit {
    fn from(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt as _;
        Self {
            code: status.code(),
            signal: status.signal(),
        }
    }
}

/// What the user reads: `status 1`, `signal SIGKILL`.
impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "status {code}"),
            (None, Some(signal)) => match nix::sys::signal::Signal::try_from(signal) {
                Ok(name) => write!(f, "signal {name}"),
                Err(_) => write!(f, "signal {signal}"),
            },
            (None, None) => f.write_str("an unknown status"),
        }
    }
}

/// The delays between restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first restart in a row. Default: 1 s.
    pub initial: Duration,
    /// Longest delay. Default: 30 s.
    pub max: Duration,
    /// A run at least this long resets the back-off. Default: 10 s.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay before restart number `attempt` in a row (1-based):
    /// `initial * 2^(attempt - 1)`, at most `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1 << doublings)
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// What to do with a service whose process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Start it again after `delay`; this is restart `attempt` in a row.
    Restart {
        /// Time to wait first.
        delay: Duration,
        /// Restarts in a row, this one included.
        attempt: u32,
    },
    /// The policy does not restart it: it stays `exited`.
    Stay,
    /// `max_restarts` restarts in a row did not help: it turns `failed`.
    GiveUp {
        /// The restarts made in a row.
        restarts: u32,
    },
}

/// The restart bookkeeping of one service.
#[derive(Debug, Clone)]
pub struct Restarts {
    policy: RestartPolicy,
    max: Option<u32>,
    backoff: Backoff,
    in_a_row: u32,
    total: u32,
}

impl Restarts {
    /// No restarts yet.
    pub fn new(policy: RestartPolicy, max: Option<u32>, backoff: Backoff) -> Self {
        Self {
            policy,
            max,
            backoff,
            in_a_row: 0,
            total: 0,
        }
    }

    /// Restarts since the supervisor started the service; `devmesh ps`
    /// shows it.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// Decides on a process that ended with `exit` after running `uptime`
    /// (not for one that was asked to stop).
    pub fn on_exit(&mut self, exit: Exit, uptime: Duration) -> Decision {
        if uptime >= self.backoff.reset_after {
            self.in_a_row = 0;
        }
        let wanted = match self.policy {
            RestartPolicy::OnFailure => !exit.success(),
            RestartPolicy::Always => true,
            _ => false,
        };
        if !wanted {
            return Decision::Stay;
        }
        if self.max.is_some_and(|max| self.in_a_row >= max) {
            return Decision::GiveUp {
                restarts: self.in_a_row,
            };
        }
        self.in_a_row += 1;
        self.total += 1;
        Decision::Restart {
            delay: self.backoff.delay(self.in_a_row),
            attempt: self.in_a_row,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRASH: Exit = Exit::status(1);
    const CLEAN: Exit = Exit::status(0);
    const QUICK: Duration = Duration::from_millis(100);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn delay_doubles_from_one_second_up_to_the_cap() {
        let b = Backoff::default();
        let delays: Vec<_> = (1..=7).map(|n| b.delay(n)).collect();
        assert_eq!(
            delays,
            [
                secs(1),
                secs(2),
                secs(4),
                secs(8),
                secs(16),
                secs(30),
                secs(30)
            ]
        );
        assert_eq!(b.delay(u32::MAX), secs(30));
    }

    #[test]
    fn policies_decide_which_exits_restart() {
        let mut no = Restarts::new(RestartPolicy::No, None, Backoff::default());
        assert_eq!(no.on_exit(CRASH, QUICK), Decision::Stay);
        let mut on_failure = Restarts::new(RestartPolicy::OnFailure, None, Backoff::default());
        assert_eq!(on_failure.on_exit(CLEAN, QUICK), Decision::Stay);
        let killed = Exit {
            code: None,
            signal: Some(9),
        };
        assert!(matches!(
            on_failure.on_exit(killed, QUICK),
            Decision::Restart { attempt: 1, .. }
        ));
        let mut always = Restarts::new(RestartPolicy::Always, None, Backoff::default());
        assert!(matches!(
            always.on_exit(CLEAN, QUICK),
            Decision::Restart { attempt: 1, .. }
        ));
    }

    #[test]
    fn a_crash_loop_backs_off_then_gives_up_at_max_restarts() {
        let mut r = Restarts::new(RestartPolicy::OnFailure, Some(3), Backoff::default());
        let decisions: Vec<_> = (0..4).map(|_| r.on_exit(CRASH, QUICK)).collect();
        assert_eq!(
            decisions,
            [
                Decision::Restart {
                    delay: secs(1),
                    attempt: 1
                },
                Decision::Restart {
                    delay: secs(2),
                    attempt: 2
                },
                Decision::Restart {
                    delay: secs(4),
                    attempt: 3
                },
                Decision::GiveUp { restarts: 3 },
            ]
        );
        assert_eq!(r.total(), 3);
    }

    #[test]
    fn a_long_run_resets_the_back_off() {
        let mut r = Restarts::new(RestartPolicy::Always, Some(2), Backoff::default());
        r.on_exit(CRASH, QUICK);
        r.on_exit(CRASH, QUICK);
        // Up for the reset window: not a loop, the count starts over.
        assert_eq!(
            r.on_exit(CRASH, secs(10)),
            Decision::Restart {
                delay: secs(1),
                attempt: 1
            }
        );
        assert_eq!(r.total(), 3);
    }

    #[test]
    fn exits_read_as_the_user_sees_them() {
        assert_eq!(CRASH.to_string(), "status 1");
        let killed = Exit {
            code: None,
            signal: Some(9),
        };
        assert_eq!(killed.to_string(), "signal SIGKILL");
        assert!(CLEAN.success() && !killed.success());
    }
}
