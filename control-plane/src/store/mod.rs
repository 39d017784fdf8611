//! The database behind tenants, keys and the usage ledger: SQLite by default (a file under the
//! data directory, WAL), PostgreSQL when several replicas share it. One schema and one set of
//! queries serve both (through sqlx's `Any` driver), with versioned migrations run at start.

pub mod directory;
pub mod ledger;
pub mod sqlite_writer;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor};

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not a database this build speaks.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    Url(String),
    /// The database answered with an error.
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    /// SQLite answered the ledger writer with an error.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A migration failed.
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be read back.
    #[error("stored data is malformed: {0}")]
    Malformed(String),
    /// Something with the data directory.
    #[error("{0}")]
    Io(String),
}

/// The database dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite (one node).
    Sqlite,
    /// PostgreSQL (several replicas).
    Postgres,
}

/// The schema's migrations, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "tenants and ledger",
    include_str!("migrations/0001_tenants_and_ledger.sql"),
)];

/// A connection pool to the database, migrated to the current schema.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    /// The SQLite database's file.
    sqlite_path: Option<PathBuf>,
}

impl Store {
    /// Opens (creating where needed) the database at `url` and migrates it.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else {
            return Err(StoreError::Url(url.to_owned()));
        };
        let url = match dialect {
            Dialect::Sqlite => sqlite_url(url)?,
            Dialect::Postgres => url.to_owned(),
        };
        let sqlite_path = (dialect == Dialect::Sqlite).then(|| PathBuf::from(sqlite_file(&url)));
        let options: AnyConnectOptions = url.parse()?;
        let pool = AnyPoolOptions::new()
            // SQLite has one writer; a few connections let reports read while the ledger writes.
            .max_connections(match dialect {
                Dialect::Sqlite => 4,
                Dialect::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // WAL survives a killed process without syncing every commit.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        // Checkpoints (which sync the file) run in the background, not in the
                        // commit a request waits for; this is only a bound if they fall behind.
                        conn.execute("PRAGMA wal_autocheckpoint = 16384").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let store = Store {
            pool,
            dialect,
            sqlite_path,
        };
        store.migrate().await?;
        if dialect == Dialect::Sqlite {
            spawn_checkpointer(store.pool.clone());
        }
        Ok(store)
    }

    /// The pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The SQLite database's file (none on PostgreSQL).
    pub fn sqlite_path(&self) -> Option<&Path> {
        self.sqlite_path.as_deref()
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let migrations: Vec<Migration> = MIGRATIONS
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    Cow::Borrowed(*sql),
                    false,
                )
            })
            .collect();
        let migrator = Migrator {
            migrations: Cow::Owned(migrations),
            ..Migrator::DEFAULT
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }
}

/// How often SQLite's write-ahead log is copied back into the database.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// Checkpoints SQLite's write-ahead log in the background (passive: never waits for readers or
/// the writer), until the pool closes.
fn spawn_checkpointer(pool: AnyPool) {
    tokio::spawn(async move {
        while !pool.is_closed() {
            tokio::time::sleep(CHECKPOINT_INTERVAL).await;
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                tracing::debug!("checkpointing the database: {e}");
            }
        }
    });
}

/// The default database: SQLite in `data_dir`.
pub fn default_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("tandem.db").display())
}

/// The file of a `sqlite:` URL.
fn sqlite_file(url: &str) -> &str {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or_default();
    rest.split_once('?').map_or(rest, |(path, _)| path)
}

/// A SQLite URL that creates the file (and its folder) when missing.
fn sqlite_url(url: &str) -> Result<String, StoreError> {
    let path = sqlite_file(url);
    let query = url.split_once('?').map_or("", |(_, q)| q);
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::Url(url.to_owned()));
    }
    if let Some(dir) = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Io(format!("creating {}: {e}", dir.display())))?;
    }
    let query = if query.contains("mode=") {
        query.to_owned()
    } else if query.is_empty() {
        "mode=rwc".to_owned()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_create_the_file() {
        assert_eq!(
            sqlite_url("sqlite:///tmp/x/t.db").unwrap(),
            "sqlite:///tmp/x/t.db?mode=rwc"
        );
        assert!(sqlite_url("sqlite::memory:").is_err());
        assert_eq!(sqlite_file("sqlite:///tmp/x/t.db?mode=rwc"), "/tmp/x/t.db");
        assert_eq!(sqlite_file("sqlite:t.db"), "t.db");
    }

    #[tokio::test]
    async fn opening_twice_migrates_once() {
        let dir = std::env::temp_dir().join(format!("tandem-store-{}", rand::random::<u64>()));
        let url = default_url(&dir);
        let a = Store::open(&url).await.unwrap();
        let b = Store::open(&url).await.unwrap();
        assert_eq!(a.dialect(), Dialect::Sqlite);
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tiers")
            .fetch_one(b.pool())
            .await
            .unwrap();
        assert_eq!(n, 0);
        assert!(Store::open("mysql://x").await.is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
