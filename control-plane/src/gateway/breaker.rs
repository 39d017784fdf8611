//! A circuit breaker per upstream: it opens after consecutive failures (requests or probes),
//! lets one trial through after a cool-down (half-open), and closes again after consecutive
//! successes. Client errors never reach it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Breaker settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open it.
    pub failures_to_open: u32,
    /// How long it stays open before a trial.
    pub cooldown: Duration,
    /// Consecutive successes in half-open that close it.
    pub successes_to_close: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures_to_open: 3,
            cooldown: Duration::from_secs(5),
            successes_to_close: 2,
        }
    }
}

/// The breaker's state, as metrics show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// One trial at a time.
    HalfOpen,
    /// No requests until the cool-down ends.
    Open,
}

impl BreakerState {
    /// 0 closed, 1 half-open, 2 open (the gauge's value).
    pub fn gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }

    /// The state's name.
    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { successes: u32, trial: bool },
}

/// A circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state now (an open breaker whose cool-down ended reads as half-open).
    pub fn state(&self) -> BreakerState {
        match &*self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if Instant::now() < *until => BreakerState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether a request may be routed here (without taking the half-open trial).
    pub fn is_routable(&self) -> bool {
        match &*self.lock() {
            Inner::Closed { .. } => true,
            Inner::Open { until } => Instant::now() >= *until,
            Inner::HalfOpen { trial, .. } => !trial,
        }
    }

    /// Asks to send a request: always in closed; in half-open, only when no other trial is
    /// running (this one becomes the trial).
    pub fn try_acquire(&self) -> bool {
        let mut g = self.lock();
        match &mut *g {
            Inner::Closed { .. } => true,
            Inner::Open { until } => {
                if Instant::now() >= *until {
                    *g = Inner::HalfOpen {
                        successes: 0,
                        trial: true,
                    };
                    true
                } else {
                    false
                }
            }
            Inner::HalfOpen { trial, .. } => {
                if *trial {
                    false
                } else {
                    *trial = true;
                    true
                }
            }
        }
    }

    /// Gives back a half-open trial that ended with neither success nor failure (a client
    /// error, or the client went away).
    pub fn release(&self) {
        if let Inner::HalfOpen { trial, .. } = &mut *self.lock() {
            *trial = false;
        }
    }

    /// Records a success (a request or a probe); returns whether the state changed.
    pub fn success(&self) -> bool {
        let mut g = self.lock();
        match &mut *g {
            Inner::Closed { failures } => {
                *failures = 0;
                false
            }
            Inner::Open { until } => {
                // A probe that succeeds after the cool-down counts as the trial.
                if Instant::now() >= *until {
                    *g = Inner::HalfOpen {
                        successes: 1,
                        trial: false,
                    };
                    self.close_if_done(&mut g)
                } else {
                    false
                }
            }
            Inner::HalfOpen { successes, trial } => {
                *successes += 1;
                *trial = false;
                self.close_if_done(&mut g)
            }
        }
    }

    fn close_if_done(&self, g: &mut Inner) -> bool {
        if let Inner::HalfOpen { successes, .. } = g
            && *successes >= self.config.successes_to_close
        {
            *g = Inner::Closed { failures: 0 };
            return true;
        }
        false
    }

    /// Records a failure; returns whether it opened the breaker.
    pub fn failure(&self) -> bool {
        let mut g = self.lock();
        let open = match &mut *g {
            Inner::Closed { failures } => {
                *failures += 1;
                *failures >= self.config.failures_to_open
            }
            Inner::HalfOpen { .. } => true,
            // A failure after the cool-down (a probe's) is a failed trial: open again.
            Inner::Open { until } => Instant::now() >= *until,
        };
        if open {
            *g = Inner::Open {
                until: Instant::now() + self.config.cooldown,
            };
        }
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(cooldown_ms: u64) -> Breaker {
        Breaker::new(BreakerConfig {
            failures_to_open: 3,
            cooldown: Duration::from_millis(cooldown_ms),
            successes_to_close: 2,
        })
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker(10_000);
        assert!(!b.failure());
        assert!(!b.failure());
        b.success();
        assert!(!b.failure());
        assert!(!b.failure());
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.failure());
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.try_acquire());
        assert!(!b.is_routable());
    }

    #[test]
    fn half_open_allows_one_trial_and_closes_after_successes() {
        let b = breaker(20);
        for _ in 0..3 {
            b.failure();
        }
        assert!(!b.try_acquire());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.try_acquire());
        assert!(!b.try_acquire(), "one trial at a time");
        assert!(!b.success());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.try_acquire());
        assert!(b.success());
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_failed_trial_opens_again_and_released_trials_free_the_slot() {
        let b = breaker(20);
        for _ in 0..3 {
            b.failure();
        }
        std::thread::sleep(Duration::from_millis(30));
        assert!(b.try_acquire());
        b.release();
        assert!(b.try_acquire());
        assert!(b.failure());
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn a_failed_probe_after_the_cooldown_opens_it_again() {
        let b = breaker(20);
        for _ in 0..3 {
            b.failure();
        }
        assert!(!b.failure(), "still open: no change");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.failure());
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn probes_after_the_cooldown_close_it() {
        let b = breaker(20);
        for _ in 0..3 {
            b.failure();
        }
        assert!(
            !b.success(),
            "a success during the cool-down changes nothing"
        );
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(30));
        b.success();
        assert!(b.success());
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
