//! Rate-limit buckets in Redis, shared by every replica: the same algorithm as in-process, run
//! atomically by a Lua script on Redis's own clock (so replicas' clocks do not matter).

use redis::Script;
use redis::aio::ConnectionManager;

use super::{Check, LimitKey, Refusal, Verdict, verdict};

/// Checks every bucket and charges all of them only if all have room. KEYS: the buckets;
/// ARGV: per bucket its limit per minute and the amount. Returns {admitted (1/0), index of the
/// refusing bucket (1-based, 0 if none), overflow ms, then each bucket's used ms}; numbers as
/// strings (Lua numbers would be truncated to integers).
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local window = 60000
local n = #KEYS
local before, after = {}, {}
local worst, worst_i = 0, 0
for i = 1, n do
  local limit = tonumber(ARGV[2 * i - 1])
  local amount = math.min(tonumber(ARGV[2 * i]), limit)
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new = tat + window / limit * amount
  local over = new - now - window
  if over > 0.000001 and over > worst then worst, worst_i = over, i end
  before[i], after[i] = tat, new
end
local out = {}
if worst_i > 0 then
  out[1], out[2], out[3] = '0', tostring(worst_i), tostring(worst)
  for i = 1, n do out[3 + i] = tostring(before[i] - now) end
  return out
end
for i = 1, n do
  redis.call('SET', KEYS[i], tostring(after[i]), 'PX', math.ceil(after[i] - now) + 1000)
end
out[1], out[2], out[3] = '1', '0', '0'
for i = 1, n do out[3 + i] = tostring(after[i] - now) end
return out
";

/// Moves a bucket by ARGV[2] units of a limit of ARGV[1] per minute (negative: gives back).
const ADJUST: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local window = 60000
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new = math.min(tat + window / tonumber(ARGV[1]) * tonumber(ARGV[2]), now + 2 * window)
if new <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], tostring(new), 'PX', math.ceil(new - now) + 1000)
end
return 1
";

/// Buckets in Redis.
pub struct RedisLimits {
    conn: ConnectionManager,
    admit: Script,
    adjust: Script,
}

impl RedisLimits {
    /// Buckets over a connection.
    pub fn new(conn: ConnectionManager) -> RedisLimits {
        RedisLimits {
            conn,
            admit: Script::new(ADMIT),
            adjust: Script::new(ADJUST),
        }
    }

    /// Charges every check if all have room.
    pub async fn admit(&self, checks: &[Check]) -> redis::RedisResult<Result<Verdict, Refusal>> {
        let mut inv = self.admit.prepare_invoke();
        for c in checks {
            inv.key(c.key.name());
            inv.arg(c.limit.max(1)).arg(c.amount);
        }
        let mut conn = self.conn.clone();
        let out: Vec<String> = inv.invoke_async(&mut conn).await?;
        let num = |i: usize| {
            out.get(i)
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let used: Vec<f64> = (0..checks.len()).map(|i| num(3 + i)).collect();
        let states = verdict(checks, &used);
        if out.first().map(String::as_str) == Some("1") {
            return Ok(Ok(states));
        }
        let i = (num(1) as usize).clamp(1, checks.len()) - 1;
        Ok(Err(Refusal {
            unit: checks[i].key.unit,
            limit: checks[i].limit,
            retry_after_ms: num(2).ceil() as u64,
            states,
        }))
    }

    /// Corrects a token charge by `delta`.
    pub async fn adjust(&self, key: &LimitKey, limit: u64, delta: i64) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .adjust
            .key(key.name())
            .arg(limit.max(1))
            .arg(delta)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}
