//! Rate-limit buckets in this process (one replica).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::{Check, LimitKey, Refusal, Verdict, WINDOW_MS, charge, verdict};

/// In-process buckets.
pub struct LocalLimits {
    epoch: Instant,
    /// Theoretical arrival time of each limit's next unit, milliseconds since `epoch`.
    tat: Mutex<HashMap<LimitKey, f64>>,
}

impl Default for LocalLimits {
    fn default() -> Self {
        LocalLimits {
            epoch: Instant::now(),
            tat: Mutex::new(HashMap::new()),
        }
    }
}

impl LocalLimits {
    fn now_ms(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64() * 1e3
    }

    /// Charges every check if all have room.
    pub fn admit(&self, checks: &[Check]) -> Result<Verdict, Refusal> {
        let now = self.now_ms();
        let mut tat = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        let mut refusal: Option<(usize, f64)> = None;
        let mut next = Vec::with_capacity(checks.len());
        for (i, c) in checks.iter().enumerate() {
            let (new, over) = charge(tat.get(&c.key).copied(), now, c.limit, c.amount);
            if over > 1e-6 && refusal.is_none_or(|r| over > r.1) {
                refusal = Some((i, over));
            }
            next.push(new);
        }
        if let Some((i, over)) = refusal {
            let used: Vec<f64> = checks
                .iter()
                .map(|c| tat.get(&c.key).map_or(0.0, |t| t - now))
                .collect();
            return Err(Refusal {
                unit: checks[i].key.unit,
                limit: checks[i].limit,
                retry_after_ms: over.ceil() as u64,
                states: verdict(checks, &used),
            });
        }
        for (c, new) in checks.iter().zip(&next) {
            tat.insert(c.key.clone(), *new);
        }
        let used: Vec<f64> = next.iter().map(|t| t - now).collect();
        Ok(verdict(checks, &used))
    }

    /// Corrects a token charge by `delta`.
    pub fn adjust(&self, key: &LimitKey, limit: u64, delta: i64) {
        let now = self.now_ms();
        let interval = WINDOW_MS / limit.max(1) as f64;
        let mut tat = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        let cur = tat.get(key).copied().unwrap_or(now).max(now);
        let new = (cur + interval * delta as f64).min(now + 2.0 * WINDOW_MS);
        if new <= now {
            tat.remove(key);
        } else {
            tat.insert(key.clone(), new);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Scope, Unit};
    use super::*;

    fn check(s: &str, unit: Unit, limit: u64, amount: u64) -> Check {
        Check {
            key: LimitKey {
                scope: Scope::Key(s.into()),
                unit,
            },
            limit,
            amount,
        }
    }

    #[test]
    fn a_minutes_allowance_then_refusal_with_retry_after() {
        let l = LocalLimits::default();
        for i in 0..5 {
            let v = l.admit(&[check("a", Unit::Requests, 5, 1)]).unwrap();
            assert_eq!(v.requests.unwrap().remaining, 4 - i);
        }
        let refused = l.admit(&[check("a", Unit::Requests, 5, 1)]).unwrap_err();
        assert_eq!(refused.unit, Unit::Requests);
        // One request per 12 s comes back.
        assert!(refused.retry_after_ms > 11_000 && refused.retry_after_ms <= 12_000);
        assert_eq!(refused.states.requests.unwrap().remaining, 0);
        // Another key is independent.
        assert!(l.admit(&[check("b", Unit::Requests, 5, 1)]).is_ok());
    }

    #[test]
    fn all_limits_pass_or_none_is_charged() {
        let l = LocalLimits::default();
        assert!(
            l.admit(&[
                check("a", Unit::Requests, 100, 1),
                check("a", Unit::Tokens, 1000, 900)
            ])
            .is_ok()
        );
        let refused = l
            .admit(&[
                check("a", Unit::Requests, 100, 1),
                check("a", Unit::Tokens, 1000, 200),
            ])
            .unwrap_err();
        assert_eq!(refused.unit, Unit::Tokens);
        // The request limit was not charged by the refused request.
        let v = l.admit(&[check("a", Unit::Requests, 100, 1)]).unwrap();
        assert_eq!(v.requests.unwrap().remaining, 98);
        // The real count was lower: the tokens come back.
        let t = check("a", Unit::Tokens, 1000, 200);
        l.adjust(&t.key, 1000, -800);
        assert!(l.admit(&[t]).is_ok());
    }
}
