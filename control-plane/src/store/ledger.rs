//! The usage ledger's rows: one per request, written when it starts (`in_flight`) and completed
//! when it ends, in batches; grouped sums for reports and invoices.

use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use super::{Dialect, Store, StoreError, now_ms};

/// One request's usage record.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct UsageRecord {
    /// The request's id (`x-request-id`).
    pub request_id: String,
    /// The server process that handled it.
    pub instance: String,
    /// Its tenant (none on an open server).
    pub tenant_id: Option<String>,
    /// The key it came with.
    pub key_id: Option<String>,
    /// `chat`, `completions` or `browser`.
    pub endpoint: String,
    /// The model's public name.
    pub model: String,
    /// The upstream that served it.
    pub upstream: Option<String>,
    /// `server` or `browser`.
    pub route: String,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Generated tokens.
    pub completion_tokens: i64,
    /// Prompt tokens served from a cache.
    pub cached_tokens: i64,
    /// What it cost the operator, USD.
    pub cost_usd: f64,
    /// What the server would have charged for tokens a browser served, USD.
    pub savings_usd: f64,
    /// Time to the first token, milliseconds.
    pub ttft_ms: Option<i64>,
    /// Time to the end, milliseconds.
    pub latency_ms: Option<i64>,
    /// `in_flight`, `completed`, `cancelled`, `failed`, `rejected` or `interrupted`.
    pub status: String,
    /// The HTTP status answered.
    pub http_status: i32,
    /// Unix milliseconds.
    pub started_at: i64,
    /// Unix milliseconds.
    pub finished_at: Option<i64>,
}

const COLUMNS: &str = "request_id, instance, tenant_id, key_id, endpoint, model, upstream, route, prompt_tokens, completion_tokens, cached_tokens, cost_usd, savings_usd, ttft_ms, latency_ms, status, http_status, started_at, finished_at";

/// Columns of the usage table.
const N_COLUMNS: usize = 19;

/// Rows per multi-row statement (SQLite binds at most 32,766 parameters).
const ROWS_PER_STATEMENT: usize = 256;

/// `INSERT ... VALUES (...), ... ON CONFLICT ... DO UPDATE` for `rows` rows, with positional
/// `?` parameters for SQLite (whose named `$N` ones cost a lookup each) and `$N` for PostgreSQL.
pub(super) fn upsert_sql(rows: usize, dialect: Dialect) -> String {
    let mut sql = format!("INSERT INTO usage ({COLUMNS}) VALUES ");
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..N_COLUMNS {
            if c > 0 {
                sql.push_str(", ");
            }
            match dialect {
                Dialect::Sqlite => sql.push('?'),
                Dialect::Postgres => sql.push_str(&format!("${}", r * N_COLUMNS + c + 1)),
            }
        }
        sql.push(')');
    }
    sql.push_str(
        " ON CONFLICT (request_id) DO UPDATE SET upstream = excluded.upstream, route = excluded.route, \
         prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens, \
         cached_tokens = excluded.cached_tokens, cost_usd = excluded.cost_usd, savings_usd = excluded.savings_usd, \
         ttft_ms = excluded.ttft_ms, latency_ms = excluded.latency_ms, status = excluded.status, \
         http_status = excluded.http_status, finished_at = excluded.finished_at",
    );
    sql
}

/// The last record of each request in `records`, in order (a batch may hold a request's
/// `in_flight` record and its final one).
pub(super) fn last_per_request(records: &[UsageRecord]) -> Vec<&UsageRecord> {
    let mut last: std::collections::HashMap<&str, usize> =
        std::collections::HashMap::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        last.insert(r.request_id.as_str(), i);
    }
    records
        .iter()
        .enumerate()
        .filter(|(i, r)| last.get(r.request_id.as_str()) == Some(i))
        .map(|(_, r)| r)
        .collect()
}

/// Sets a key's last-used time (`$1`) unless it is already later (key id `$2`).
pub(super) const TOUCH_KEY_SQL: &str = "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)";

/// A ledger query's filter.
#[derive(Clone, Debug, Default)]
pub struct UsageFilter {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// From this time (Unix milliseconds, inclusive).
    pub from_ms: Option<i64>,
    /// To this time (Unix milliseconds, exclusive).
    pub to_ms: Option<i64>,
    /// Only this route (`server` or `browser`).
    pub route: Option<String>,
}

/// How usage is grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// Per UTC day.
    Day,
    /// Per model.
    Model,
    /// Per upstream.
    Upstream,
    /// Per route (server or browser).
    Route,
    /// Per tenant.
    Tenant,
}

impl GroupBy {
    fn column(self) -> &'static str {
        match self {
            // Integer division by a day in milliseconds: the same in SQLite and PostgreSQL.
            GroupBy::Day => "CAST(started_at / 86400000 AS BIGINT)",
            GroupBy::Model => "model",
            GroupBy::Upstream => "COALESCE(upstream, '')",
            GroupBy::Route => "route",
            GroupBy::Tenant => "COALESCE(tenant_id, '')",
        }
    }
}

/// One group's sums.
#[derive(Clone, Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct UsageGroup {
    /// The group (a `YYYY-MM-DD` day, a model, an upstream, a route or a tenant).
    pub group: String,
    /// Requests.
    pub requests: i64,
    /// Of which failed, rejected, cancelled or interrupted.
    pub errors: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Generated tokens.
    pub completion_tokens: i64,
    /// Cached prompt tokens.
    pub cached_tokens: i64,
    /// Cost, USD.
    pub cost_usd: f64,
    /// Savings from browser routing, USD.
    pub savings_usd: f64,
}

fn record(row: &sqlx::any::AnyRow) -> Result<UsageRecord, StoreError> {
    Ok(UsageRecord {
        request_id: row.try_get("request_id")?,
        instance: row.try_get("instance")?,
        tenant_id: row.try_get("tenant_id")?,
        key_id: row.try_get("key_id")?,
        endpoint: row.try_get("endpoint")?,
        model: row.try_get("model")?,
        upstream: row.try_get("upstream")?,
        route: row.try_get("route")?,
        prompt_tokens: row.try_get("prompt_tokens")?,
        completion_tokens: row.try_get("completion_tokens")?,
        cached_tokens: row.try_get("cached_tokens")?,
        cost_usd: row.try_get("cost_usd")?,
        savings_usd: row.try_get("savings_usd")?,
        ttft_ms: row.try_get("ttft_ms")?,
        latency_ms: row.try_get("latency_ms")?,
        status: row.try_get("status")?,
        http_status: row.try_get("http_status")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

impl Store {
    /// Writes records atomically: a new request id is inserted, a known one updated (its start
    /// row completed); of several records of one request in `records`, the last counts. Rows go
    /// in multi-row statements; up to [`ROWS_PER_STATEMENT`] rows are one statement (atomic by
    /// itself, so no explicit transaction and its extra round trips), more are one transaction.
    pub async fn write_usage(&self, records: &[UsageRecord]) -> Result<(), StoreError> {
        let rows = last_per_request(records);
        if rows.len() <= ROWS_PER_STATEMENT {
            if !rows.is_empty() {
                self.upsert(&rows, self.pool()).await?;
            }
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            self.upsert(chunk, &mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Runs the upsert of `rows` on `executor`.
    async fn upsert<'c, E>(&self, rows: &[&UsageRecord], executor: E) -> Result<(), StoreError>
    where
        E: sqlx::Executor<'c, Database = sqlx::Any>,
    {
        let sql = upsert_sql(rows.len(), self.dialect());
        let mut q = sqlx::query(&sql);
        for r in rows {
            q = q
                .bind(&r.request_id)
                .bind(&r.instance)
                .bind(&r.tenant_id)
                .bind(&r.key_id)
                .bind(&r.endpoint)
                .bind(&r.model)
                .bind(&r.upstream)
                .bind(&r.route)
                .bind(r.prompt_tokens)
                .bind(r.completion_tokens)
                .bind(r.cached_tokens)
                .bind(r.cost_usd)
                .bind(r.savings_usd)
                .bind(r.ttft_ms)
                .bind(r.latency_ms)
                .bind(&r.status)
                .bind(r.http_status)
                .bind(r.started_at)
                .bind(r.finished_at);
        }
        q.execute(executor).await?;
        Ok(())
    }

    /// Sets keys' last-used times (each only forward).
    pub async fn touch_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        for (id, at) in used {
            sqlx::query(TOUCH_KEY_SQL)
                .bind(*at)
                .bind(id)
                .execute(self.pool())
                .await?;
        }
        Ok(())
    }

    /// Marks this instance's requests still in flight (from before a crash) as interrupted;
    /// returns how many.
    pub async fn mark_interrupted(&self, instance: &str) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE usage SET status = 'interrupted', http_status = 0, finished_at = $1 WHERE instance = $2 AND status = 'in_flight'",
        )
        .bind(now_ms())
        .bind(instance)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected())
    }

    /// One request's record.
    pub async fn usage_record(&self, request_id: &str) -> Result<Option<UsageRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM usage WHERE request_id = $1"
        ))
        .bind(request_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(record).transpose()
    }

    /// The records matching a filter, oldest first (at most `limit`).
    pub async fn usage_records(
        &self,
        filter: &UsageFilter,
        limit: i64,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        let (clause, binds) = where_clause(filter);
        let sql = format!(
            "SELECT {COLUMNS} FROM usage{clause} ORDER BY started_at, request_id LIMIT {}",
            limit.max(0)
        );
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = match b {
                Bind::Text(t) => q.bind(t),
                Bind::Int(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter().map(record).collect()
    }

    /// Sums of the records matching a filter, by group.
    pub async fn usage_groups(
        &self,
        filter: &UsageFilter,
        by: GroupBy,
    ) -> Result<Vec<UsageGroup>, StoreError> {
        let (clause, binds) = where_clause(filter);
        let col = by.column();
        let sql = format!(
            "SELECT {col} AS grp, COUNT(*) AS requests, \
             CAST(COALESCE(SUM(CASE WHEN status = 'completed' THEN 0 ELSE 1 END), 0) AS BIGINT) AS errors, \
             CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
             CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
             CAST(COALESCE(SUM(cached_tokens), 0) AS BIGINT) AS cached_tokens, \
             CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) AS cost_usd, \
             CAST(COALESCE(SUM(savings_usd), 0) AS DOUBLE PRECISION) AS savings_usd \
             FROM usage{clause} GROUP BY {col} ORDER BY {col}"
        );
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = match b {
                Bind::Text(t) => q.bind(t),
                Bind::Int(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| {
                let group = match by {
                    GroupBy::Day => day_string(row.try_get::<i64, _>("grp")?),
                    _ => row.try_get::<String, _>("grp")?,
                };
                Ok(UsageGroup {
                    group,
                    requests: row.try_get("requests")?,
                    errors: row.try_get("errors")?,
                    prompt_tokens: row.try_get("prompt_tokens")?,
                    completion_tokens: row.try_get("completion_tokens")?,
                    cached_tokens: row.try_get("cached_tokens")?,
                    cost_usd: row.try_get("cost_usd")?,
                    savings_usd: row.try_get("savings_usd")?,
                })
            })
            .collect()
    }

    /// What a tenant spent since `from_ms`: (USD, tokens), server-side requests only.
    pub async fn spent_since(&self, tenant: &str, from_ms: i64) -> Result<(f64, i64), StoreError> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) AS usd, \
             CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT) AS tokens \
             FROM usage WHERE tenant_id = $1 AND started_at >= $2 AND route = 'server'",
        )
        .bind(tenant)
        .bind(from_ms)
        .fetch_one(self.pool())
        .await?;
        Ok((row.try_get("usd")?, row.try_get("tokens")?))
    }
}

enum Bind {
    Text(String),
    Int(i64),
}

fn where_clause(f: &UsageFilter) -> (String, Vec<Bind>) {
    let mut parts = Vec::new();
    let mut binds = Vec::new();
    if let Some(t) = &f.tenant {
        binds.push(Bind::Text(t.clone()));
        parts.push(format!("tenant_id = ${}", binds.len()));
    }
    if let Some(from) = f.from_ms {
        binds.push(Bind::Int(from));
        parts.push(format!("started_at >= ${}", binds.len()));
    }
    if let Some(to) = f.to_ms {
        binds.push(Bind::Int(to));
        parts.push(format!("started_at < ${}", binds.len()));
    }
    if let Some(r) = &f.route {
        binds.push(Bind::Text(r.clone()));
        parts.push(format!("route = ${}", binds.len()));
    }
    if parts.is_empty() {
        (String::new(), binds)
    } else {
        (format!(" WHERE {}", parts.join(" AND ")), binds)
    }
}

/// `YYYY-MM-DD` of a day number since the epoch (UTC).
pub fn day_string(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// (year, month, day) of a day number since 1970-01-01 (the proleptic Gregorian calendar).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The day number since 1970-01-01 of a date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The UTC month containing `ms`: (start, end) in Unix milliseconds.
pub fn month_bounds(ms: i64) -> (i64, i64) {
    let (y, m, _) = civil_from_days(ms.div_euclid(86_400_000));
    month_range(y, m)
}

/// (start, end) of a UTC month in Unix milliseconds.
pub fn month_range(y: i64, m: u32) -> (i64, i64) {
    let start = days_from_civil(y, m, 1) * 86_400_000;
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (start, days_from_civil(ny, nm, 1) * 86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips() {
        assert_eq!(day_string(0), "1970-01-01");
        assert_eq!(
            civil_from_days(days_from_civil(2026, 11, 29)),
            (2026, 11, 29)
        );
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        let (a, b) = month_range(2026, 12);
        assert_eq!(day_string(a / 86_400_000), "2026-12-01");
        assert_eq!(day_string(b / 86_400_000), "2027-01-01");
        assert_eq!(month_bounds(a + 5), (a, b));
    }
}
