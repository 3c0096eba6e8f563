//! Retrying what may succeed if tried again (a dropped connection, a
//! busy registry), and nothing else: a 404 or a refused login is final at
//! once, so that a mistake is reported without a minute of backoff.

use std::time::Duration;

use super::RegistryError;

/// The longest wait between two attempts, whatever `Retry-After` asks.
const MAX_DELAY: Duration = Duration::from_secs(10);

/// How often and how patiently transient failures are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub retries: u32,
    /// The wait before the first retry; each later one waits twice as long.
    pub base_delay: Duration,
    /// How long one request may take, from connecting to the last byte of
    /// its body: a timeout per read alone let a server sending a byte
    /// every few seconds hold a request forever. A request that passes it
    /// fails transiently, so the whole of one fetch is bounded by
    /// `(retries + 1) * deadline` plus the delays.
    pub deadline: Duration,
}

/// The default [`RetryPolicy::deadline`]: a chunk (1 MiB) at 9 KB/s.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 4,
            base_delay: Duration::from_millis(200),
            deadline: DEFAULT_DEADLINE,
        }
    }
}

impl RetryPolicy {
    /// The default, with `LAYERFS_HTTP_RETRIES`,
    /// `LAYERFS_HTTP_RETRY_DELAY_MS` (the first wait) and
    /// `LAYERFS_HTTP_DEADLINE_SECS` applied, so that scripts and tests can
    /// make a failing or stalling registry fail fast.
    pub fn from_env() -> RetryPolicy {
        let mut policy = RetryPolicy::default();
        if let Some(retries) = env_number("LAYERFS_HTTP_RETRIES") {
            policy.retries = u32::try_from(retries).unwrap_or(u32::MAX);
        }
        if let Some(ms) = env_number("LAYERFS_HTTP_RETRY_DELAY_MS") {
            policy.base_delay = Duration::from_millis(ms);
        }
        if let Some(secs) = env_number("LAYERFS_HTTP_DEADLINE_SECS").filter(|&s| s > 0) {
            policy.deadline = Duration::from_secs(secs);
        }
        policy
    }

    /// How long to wait before retry number `retry` (0 for the first):
    /// what the server asked for if it did, else exponential backoff.
    pub(crate) fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        retry_after
            .unwrap_or_else(|| self.base_delay.saturating_mul(1 << retry.min(16)))
            .min(MAX_DELAY)
    }

    /// Runs `attempt` until it succeeds, fails for good, or has failed
    /// transiently `retries + 1` times.
    pub(crate) fn run<T>(
        &self,
        mut attempt: impl FnMut() -> Result<T, Failure>,
    ) -> Result<T, RegistryError> {
        let mut retry = 0;
        loop {
            match attempt() {
                Ok(value) => return Ok(value),
                Err(failure) if failure.transient && retry < self.retries => {
                    let delay = self.delay(retry, failure.retry_after);
                    log::debug!("{}; retrying in {delay:?}", failure.error);
                    std::thread::sleep(delay);
                    retry += 1;
                }
                Err(failure) => return Err(failure.give_up(retry + 1)),
            }
        }
    }
}

/// A number from the environment; a malformed one is reported and ignored.
fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    match text.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => {
            log::warn!("{name}={text:?} is not a number; using the default");
            None
        }
    }
}

/// Why one attempt failed, and whether another might do better.
#[derive(Debug)]
pub(crate) struct Failure {
    /// What went wrong.
    pub error: RegistryError,
    /// Whether trying again may help.
    pub transient: bool,
    /// How long the server asked us to wait (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A failure worth another attempt.
    pub fn transient(error: RegistryError) -> Failure {
        Failure {
            error,
            transient: true,
            retry_after: None,
        }
    }

    /// The error to report after `attempts` attempts.
    pub fn give_up(self, attempts: u32) -> RegistryError {
        if self.transient && attempts > 1 {
            RegistryError::GaveUp {
                attempts,
                source: Box::new(self.error),
            }
        } else {
            self.error
        }
    }
}

/// A failure no retry can fix.
impl From<RegistryError> for Failure {
    fn from(error: RegistryError) -> Failure {
        Failure {
            error,
            transient: false,
            retry_after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(retries: u32) -> RetryPolicy {
        RetryPolicy {
            retries,
            base_delay: Duration::from_millis(1),
            ..RetryPolicy::default()
        }
    }

    fn busy() -> RegistryError {
        RegistryError::Status {
            place: "r/x".into(),
            what: "manifest t".into(),
            status: 503,
        }
    }

    #[test]
    fn delays_double_and_are_capped() {
        let p = RetryPolicy {
            retries: 9,
            base_delay: Duration::from_millis(200),
            ..RetryPolicy::default()
        };
        assert_eq!(p.delay(0, None), Duration::from_millis(200));
        assert_eq!(p.delay(2, None), Duration::from_millis(800));
        assert_eq!(p.delay(30, None), MAX_DELAY);
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(p.delay(0, Some(Duration::from_secs(3600))), MAX_DELAY);
    }

    #[test]
    fn transient_failures_are_retried_until_the_budget_ends() {
        let mut calls = 0;
        let result: Result<(), _> = policy(3).run(|| {
            calls += 1;
            Err(Failure::transient(busy()))
        });
        assert_eq!(calls, 4);
        let message = result.expect_err("fails").to_string();
        assert!(message.contains("gave up after 4 attempts"), "{message}");
        assert!(message.contains("503"), "{message}");

        let mut calls = 0;
        let result = policy(3).run(|| {
            calls += 1;
            if calls < 3 {
                Err(Failure::transient(busy()))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(result.expect("third time"), 3);
    }

    #[test]
    fn final_failures_are_not_retried() {
        let mut calls = 0;
        let result: Result<(), _> = policy(3).run(|| {
            calls += 1;
            Err(Failure::from(busy()))
        });
        assert_eq!(calls, 1);
        assert!(!result.expect_err("fails").to_string().contains("gave up"));
    }
}
