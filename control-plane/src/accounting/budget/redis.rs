//! Budgets in Redis, shared by every replica: one hash per tenant and month (spent and reserved
//! USD and tokens), started from the ledger's sum the first time a replica touches it, checked
//! and reserved atomically by a Lua script.

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use super::{Reservation, ReserveError, over_tokens, over_usd};
use crate::store::ledger::month_bounds;
use crate::store::{Store, now_ms};
use crate::tenants::model::Plan;

/// Starts a month's hash from the ledger unless a replica already did. KEYS[1]: the hash;
/// ARGV: spent USD, spent tokens, expiry in ms.
const INIT: &str = r"
if redis.call('HSETNX', KEYS[1], 'spent_usd', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'spent_tokens', ARGV[2], 'reserved_usd', '0', 'reserved_tokens', '0')
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
";

/// Reserves if what is spent and reserved is below the budget. ARGV: budget USD (negative:
/// none), budget tokens (negative: none), USD, tokens. Returns 'ok', 'usd' or 'tokens'.
const RESERVE: &str = r"
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent_usd') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved_usd') or '0')
local spent_t = tonumber(redis.call('HGET', KEYS[1], 'spent_tokens') or '0')
local reserved_t = tonumber(redis.call('HGET', KEYS[1], 'reserved_tokens') or '0')
local budget, budget_t = tonumber(ARGV[1]), tonumber(ARGV[2])
if budget >= 0 and spent + reserved >= budget - 0.000000001 then return 'usd' end
if budget_t >= 0 and spent_t + reserved_t >= budget_t then return 'tokens' end
redis.call('HINCRBYFLOAT', KEYS[1], 'reserved_usd', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'reserved_tokens', ARGV[4])
return 'ok'
";

/// Releases a reservation (ARGV 1, 2) and books the actual amounts (ARGV 3, 4).
const SETTLE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBYFLOAT', KEYS[1], 'reserved_usd', -tonumber(ARGV[1]))
  redis.call('HINCRBY', KEYS[1], 'reserved_tokens', -tonumber(ARGV[2]))
end
redis.call('HINCRBYFLOAT', KEYS[1], 'spent_usd', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'spent_tokens', ARGV[4])
return 1
";

/// Budgets in Redis.
pub struct RedisBudgets {
    store: Store,
    conn: ConnectionManager,
    init: Script,
    reserve: Script,
    settle: Script,
}

fn key(tenant: &str, month_start: i64) -> String {
    format!("tandem:budget:{tenant}:{month_start}")
}

impl RedisBudgets {
    /// Budgets over a connection, started from the ledger in `store`.
    pub fn new(store: Store, conn: ConnectionManager) -> RedisBudgets {
        RedisBudgets {
            store,
            conn,
            init: Script::new(INIT),
            reserve: Script::new(RESERVE),
            settle: Script::new(SETTLE),
        }
    }

    /// The current month's hash (and the month's start), started from the ledger if missing.
    async fn month(&self, tenant: &str) -> Result<(String, i64), ReserveError> {
        let (start, end) = month_bounds(now_ms());
        let k = key(tenant, start);
        let mut conn = self.conn.clone();
        let exists: bool = conn
            .exists(&k)
            .await
            .map_err(|e| ReserveError::Shared(e.to_string()))?;
        if !exists {
            let (usd, tokens) = self.store.spent_since(tenant, start).await?;
            // Kept a month past its end, for late settlements.
            let ttl = (end - now_ms()).max(0) + 31 * 86_400_000;
            let _: i64 = self
                .init
                .key(&k)
                .arg(usd)
                .arg(tokens)
                .arg(ttl)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| ReserveError::Shared(e.to_string()))?;
        }
        Ok((k, start))
    }

    /// Reserves for a request of `tenant` under `plan` (which has a budget).
    pub async fn reserve(
        &self,
        tenant: &str,
        plan: &Plan,
        usd: f64,
        tokens: i64,
    ) -> Result<Option<Reservation>, ReserveError> {
        let (k, month_start) = self.month(tenant).await?;
        let mut conn = self.conn.clone();
        let budget_tokens = plan
            .monthly_budget_tokens
            .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let answer: String = self
            .reserve
            .key(&k)
            .arg(plan.monthly_budget_usd.unwrap_or(-1.0))
            .arg(budget_tokens)
            .arg(usd)
            .arg(tokens)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| ReserveError::Shared(e.to_string()))?;
        match answer.as_str() {
            "usd" => Err(ReserveError::Over(over_usd(
                plan.monthly_budget_usd.unwrap_or_default(),
            ))),
            "tokens" => Err(ReserveError::Over(over_tokens(
                plan.monthly_budget_tokens.unwrap_or_default(),
            ))),
            _ => Ok(Some(Reservation {
                tenant: tenant.to_owned(),
                month_start,
                usd,
                tokens,
            })),
        }
    }

    /// Releases a reservation and books what was used (in the reservation's month).
    pub async fn settle(&self, r: &Reservation, usd: f64, tokens: i64) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .settle
            .key(key(&r.tenant, r.month_start))
            .arg(r.usd)
            .arg(r.tokens)
            .arg(usd)
            .arg(tokens)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// (spent, reserved) USD of a tenant this month.
    pub async fn current(&self, tenant: &str) -> redis::RedisResult<(f64, f64)> {
        let mut conn = self.conn.clone();
        let k = key(tenant, month_bounds(now_ms()).0);
        let (spent, reserved): (Option<f64>, Option<f64>) = redis::cmd("HMGET")
            .arg(&k)
            .arg("spent_usd")
            .arg("reserved_usd")
            .query_async(&mut conn)
            .await?;
        Ok((spent.unwrap_or(0.0), reserved.unwrap_or(0.0)))
    }
}
