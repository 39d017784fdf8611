//! Requests and tokens per minute, per key and per tenant, by the generic cell rate algorithm:
//! each limit is a bucket of one minute's allowance that refills continuously, kept as the
//! "theoretical arrival time" of its next unit. A request is admitted only if every bucket that
//! applies has room (then all are charged at once); tokens are charged an estimate at
//! admission and corrected by the actual count at the end. The buckets live in this process
//! ([`local`]) or, for several replicas, in Redis ([`redis`], the same algorithm in one atomic
//! script).

pub mod local;
pub mod redis;

/// One minute, in milliseconds.
pub const WINDOW_MS: f64 = 60_000.0;

/// What a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unit {
    /// Requests.
    Requests,
    /// Tokens.
    Tokens,
}

/// Whose limit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// An API key (by id).
    Key(String),
    /// A tenant (by id).
    Tenant(String),
}

/// One limit a request is checked against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LimitKey {
    /// Whose.
    pub scope: Scope,
    /// Of what.
    pub unit: Unit,
}

impl LimitKey {
    /// The key's name in a shared store.
    pub fn name(&self) -> String {
        let (kind, id) = match &self.scope {
            Scope::Key(id) => ("key", id),
            Scope::Tenant(id) => ("tenant", id),
        };
        let unit = match self.unit {
            Unit::Requests => "rpm",
            Unit::Tokens => "tpm",
        };
        format!("tandem:limit:{kind}:{id}:{unit}")
    }
}

/// A limit to check: which, its allowance per minute, and the amount to charge.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// The limit.
    pub key: LimitKey,
    /// Per minute.
    pub limit: u64,
    /// Units charged.
    pub amount: u64,
}

/// The state of one limit after a check, for the `x-ratelimit-*` headers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LimitState {
    /// Per minute.
    pub limit: u64,
    /// What is left now.
    pub remaining: u64,
    /// Milliseconds until the bucket is full again.
    pub reset_ms: u64,
}

/// A refused request: which unit, and when it could pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Refusal {
    /// The unit that ran out.
    pub unit: Unit,
    /// The limit per minute.
    pub limit: u64,
    /// Milliseconds until the request would be admitted.
    pub retry_after_ms: u64,
    /// The state of the tightest request and token limits (for headers).
    pub states: Verdict,
}

/// The tightest request and token limits after a check.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Verdict {
    /// Requests per minute.
    pub requests: Option<LimitState>,
    /// Tokens per minute.
    pub tokens: Option<LimitState>,
}

/// The milliseconds of allowance in use once `amount` more units are charged to a bucket
/// whose next unit is due at `tat` (`now` on the same clock), and by how much that overflows
/// the window (positive: refused).
pub fn charge(tat: Option<f64>, now: f64, limit: u64, amount: u64) -> (f64, f64) {
    let interval = WINDOW_MS / limit.max(1) as f64;
    let start = tat.unwrap_or(now).max(now);
    let new = start + interval * amount.min(limit) as f64;
    (new, new - now - WINDOW_MS)
}

/// The tightest request and token states of `checks`, each bucket having `used[i]`
/// milliseconds of its window in use.
pub fn verdict(checks: &[Check], used: &[f64]) -> Verdict {
    let mut v = Verdict::default();
    for (c, used) in checks.iter().zip(used) {
        let interval = WINDOW_MS / c.limit.max(1) as f64;
        let used = used.max(0.0);
        let s = LimitState {
            limit: c.limit,
            remaining: ((WINDOW_MS - used) / interval).floor().max(0.0) as u64,
            reset_ms: used.ceil() as u64,
        };
        let slot = match c.key.unit {
            Unit::Requests => &mut v.requests,
            Unit::Tokens => &mut v.tokens,
        };
        if slot.is_none_or(|o| s.remaining < o.remaining) {
            *slot = Some(s);
        }
    }
    v
}

/// A duration as OpenAI writes it in `x-ratelimit-reset-*` (`1s`, `6m0s`, `20ms`).
pub fn reset_text(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms as f64 / 1e3;
    if s < 60.0 {
        let t = format!("{s:.3}");
        let t = t.trim_end_matches('0').trim_end_matches('.');
        return format!("{t}s");
    }
    let m = (s / 60.0).floor();
    format!("{}m{}s", m as u64, (s - m * 60.0).round() as u64)
}

/// Where the buckets live.
pub enum Limiter {
    /// In this process.
    Local(local::LocalLimits),
    /// In Redis, shared by every replica.
    Redis(redis::RedisLimits),
}

impl Limiter {
    /// Charges every check if all have room; otherwise charges nothing and says when the
    /// tightest would. A shared store that cannot be reached admits (and logs why).
    pub async fn admit(&self, checks: &[Check]) -> Result<Verdict, Refusal> {
        if checks.is_empty() {
            return Ok(Verdict::default());
        }
        match self {
            Limiter::Local(l) => l.admit(checks),
            Limiter::Redis(r) => match r.admit(checks).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!("rate limits in Redis are unavailable, admitting: {e}");
                    Ok(Verdict::default())
                }
            },
        }
    }

    /// Corrects a token charge by `delta` (the actual count minus the estimate).
    pub async fn adjust(&self, key: &LimitKey, limit: u64, delta: i64) {
        if delta == 0 {
            return;
        }
        match self {
            Limiter::Local(l) => l.adjust(key, limit, delta),
            Limiter::Redis(r) => {
                if let Err(e) = r.adjust(key, limit, delta).await {
                    tracing::error!("correcting a token charge in Redis: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_durations_read_like_openais() {
        assert_eq!(reset_text(20), "20ms");
        assert_eq!(reset_text(1500), "1.5s");
        assert_eq!(reset_text(360_000), "6m0s");
    }

    #[test]
    fn charging_a_full_minute_fits_and_one_more_overflows() {
        let (tat, over) = charge(None, 0.0, 10, 10);
        assert_eq!(tat, WINDOW_MS);
        assert!(over <= 0.0);
        let (_, over) = charge(Some(tat), 0.0, 10, 1);
        assert!((over - 6000.0).abs() < 1e-9);
    }
}
