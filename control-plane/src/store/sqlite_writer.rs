//! The ledger's writer on SQLite: a connection of its own, used from one blocking thread, with
//! its statements prepared once. A batch is one transaction of single-row upserts run in place,
//! where the pool would send every batch across threads as a fresh statement of its size; the
//! ledger's records go through it, everything else through the pool.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};

use super::ledger::{TOUCH_KEY_SQL, UsageRecord, last_per_request, upsert_sql};
use super::{Dialect, StoreError};

/// How long a write waits for another connection's write to end.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Pages of write-ahead log after which a commit checkpoints it (SQLite's default).
const WAL_CHECKPOINT_PAGES: i64 = 1000;

/// A connection that writes usage records and keys' last-used times.
pub struct SqliteWriter {
    conn: Connection,
    upsert: String,
}

impl SqliteWriter {
    /// Opens the (already migrated) database at `path`.
    pub fn open(path: &Path) -> Result<SqliteWriter, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // As the pool's connections: WAL without a sync per commit (a killed process loses
        // nothing written).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // A checkpoint after the commit that takes the log past this many pages. Only this
        // connection's checkpoints keep the log short under a steady load: one from another
        // connection never catches up with a writer that keeps appending, so the log only
        // restarts from its beginning after a checkpoint here, between two batches. Short logs
        // make short checkpoints (a millisecond or two, where one of 16k pages stalled the
        // ledger for tens).
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
        Ok(SqliteWriter {
            conn,
            upsert: upsert_sql(1, Dialect::Sqlite),
        })
    }

    /// Writes `records` (the last of each request wins) in one transaction.
    pub fn write_usage(&mut self, records: &[UsageRecord]) -> Result<(), StoreError> {
        let rows = last_per_request(records);
        if rows.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(&self.upsert)?;
            for r in rows {
                stmt.execute(params![
                    r.request_id,
                    r.instance,
                    r.tenant_id,
                    r.key_id,
                    r.endpoint,
                    r.model,
                    r.upstream,
                    r.route,
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.cached_tokens,
                    r.cost_usd,
                    r.savings_usd,
                    r.ttft_ms,
                    r.latency_ms,
                    r.status,
                    r.http_status,
                    r.started_at,
                    r.finished_at,
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Sets keys' last-used times (each only forward).
    pub fn touch_keys(&mut self, used: &[(String, i64)]) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(TOUCH_KEY_SQL)?;
            for (id, at) in used {
                stmt.execute(params![at, id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn record(id: &str, status: &str, tokens: i64) -> UsageRecord {
        UsageRecord {
            request_id: id.into(),
            instance: "test".into(),
            tenant_id: Some("t".into()),
            endpoint: "chat".into(),
            model: "m".into(),
            route: "server".into(),
            completion_tokens: tokens,
            cost_usd: 0.25 * tokens as f64,
            status: status.into(),
            http_status: 200,
            started_at: 1_700_000_000_000,
            ..UsageRecord::default()
        }
    }

    #[tokio::test]
    async fn writes_what_the_pool_reads() {
        let dir = std::env::temp_dir().join(format!("tandem-writer-{}", rand::random::<u64>()));
        let store = Store::open(&super::super::default_url(&dir)).await.unwrap();
        let mut w = SqliteWriter::open(store.sqlite_path().unwrap()).unwrap();
        // A request's start and end in one batch, another's start alone, then its end.
        w.write_usage(&[
            record("a", "in_flight", 0),
            record("b", "in_flight", 0),
            record("a", "completed", 7),
        ])
        .unwrap();
        assert_eq!(
            store.usage_record("b").await.unwrap().unwrap().status,
            "in_flight"
        );
        w.write_usage(&[record("b", "completed", 3)]).unwrap();
        let a = store.usage_record("a").await.unwrap().unwrap();
        assert_eq!(a, record("a", "completed", 7));
        let b = store.usage_record("b").await.unwrap().unwrap();
        assert_eq!(b, record("b", "completed", 3));
        // Nothing to write is no transaction.
        w.write_usage(&[]).unwrap();
        w.touch_keys(&[("nobody".into(), 5)]).unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
