//! The ledger writer: usage records go through a channel to one writer that writes them in
//! batches (one transaction per batch), so requests never wait on a write of their own; a
//! caller that needs its record durable awaits the batch's acknowledgement. On SQLite the writer
//! is a thread with a connection of its own; on PostgreSQL, a task on the pool. A failed write is
//! retried, never dropped; on shutdown the queue is drained.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::store::Store;
use crate::store::ledger::UsageRecord;
use crate::store::sqlite_writer::SqliteWriter;

/// Most records per transaction.
const MAX_BATCH: usize = 1024;

/// A key's last-used time is written at most this often (milliseconds of its requests' start
/// times): it says when a key was last used, not how often, and writing it with every batch
/// cost the ledger a statement per batch.
const KEY_TOUCH_INTERVAL_MS: i64 = 1000;

/// Keys' last-used times: what was written, and what is newer but not yet due.
#[derive(Default)]
struct KeyTouches {
    /// Per key: the time written last, and the newest seen since (if newer).
    keys: std::collections::HashMap<String, (i64, Option<i64>)>,
}

impl KeyTouches {
    /// Notes the keys of `records`; returns those due to be written (first seen, or newer by
    /// [`KEY_TOUCH_INTERVAL_MS`] than their written time), in key order, as written from now on.
    fn note(&mut self, records: &[UsageRecord]) -> Vec<(String, i64)> {
        // The newest use of each key in this batch (a map: a batch may hold many keys).
        let mut newest: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
        for r in records {
            if let Some(id) = r.key_id.as_deref() {
                let at = newest.entry(id).or_insert(r.started_at);
                *at = (*at).max(r.started_at);
            }
        }
        let mut due = Vec::new();
        for (id, at) in newest {
            match self.keys.get_mut(id) {
                None => {
                    self.keys.insert(id.to_owned(), (at, None));
                    due.push((id.to_owned(), at));
                }
                Some((written, pending)) => {
                    if at >= *written + KEY_TOUCH_INTERVAL_MS {
                        *written = at;
                        *pending = None;
                        due.push((id.to_owned(), at));
                    } else if at > *written {
                        *pending = Some(pending.map_or(at, |p| p.max(at)));
                    }
                }
            }
        }
        due
    }

    /// Every newer time not yet written (at shutdown).
    fn flush(&mut self) -> Vec<(String, i64)> {
        self.keys
            .iter_mut()
            .filter_map(|(id, (written, pending))| {
                let at = pending.take()?;
                *written = at;
                Some((id.clone(), at))
            })
            .collect()
    }
}

struct Entry {
    /// None: a flush marker.
    record: Option<UsageRecord>,
    done: Option<oneshot::Sender<()>>,
}

/// A handle to the ledger writer.
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::UnboundedSender<Entry>,
    instance: String,
}

impl Ledger {
    /// Starts the writer over `store`; records carry `instance`. Returns the handle and the
    /// writer task (it ends once every handle is dropped and the queue is written).
    pub fn start(store: Store, instance: String) -> (Ledger, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = match store.sqlite_path().map(SqliteWriter::open) {
            Some(Ok(writer)) => spawn_writer_thread(store, writer, rx),
            Some(Err(e)) => {
                tracing::warn!(
                    "opening the ledger's own connection ({e}); writing through the pool"
                );
                tokio::spawn(write_loop(store, rx))
            }
            None => tokio::spawn(write_loop(store, rx)),
        };
        (Ledger { tx, instance }, task)
    }

    /// This process's instance id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Queues a record.
    pub fn record(&self, mut record: UsageRecord) {
        record.instance.clone_from(&self.instance);
        let _ = self.tx.send(Entry {
            record: Some(record),
            done: None,
        });
    }

    /// Queues a record and waits until it is committed.
    pub async fn record_durably(&self, record: UsageRecord) {
        self.record_acked(record).await;
    }

    /// Queues a record; the returned future ends once it is committed (dropping it does not
    /// withdraw the record).
    pub fn record_acked(&self, mut record: UsageRecord) -> impl Future<Output = ()> + use<> {
        record.instance.clone_from(&self.instance);
        self.send(Some(record))
    }

    /// Waits until every record queued before this call is committed.
    pub async fn flush(&self) {
        self.send(None).await;
    }

    /// Queues an entry; the future ends once it is committed.
    fn send(&self, record: Option<UsageRecord>) -> impl Future<Output = ()> + use<> {
        let (done, wait) = oneshot::channel();
        let sent = self
            .tx
            .send(Entry {
                record,
                done: Some(done),
            })
            .is_ok();
        async move {
            if sent {
                let _ = wait.await;
            }
        }
    }
}

/// The records of a batch's entries (flush markers have none).
fn take_records(batch: &mut [Entry]) -> Vec<UsageRecord> {
    batch.iter_mut().filter_map(|e| e.record.take()).collect()
}

/// Logs a failure to set keys' last-used times (advisory only: a later use sets them again).
fn touched(result: Result<(), crate::store::StoreError>) {
    if let Err(e) = result {
        tracing::warn!("setting keys' last-used times: {e}");
    }
}

/// Logs a written batch of `records` begun at `started`, and acknowledges it.
fn written(batch: &mut Vec<Entry>, records: usize, started: std::time::Instant) {
    tracing::debug!(
        records,
        micros = started.elapsed().as_micros(),
        "usage records written"
    );
    acknowledge(batch);
}

/// Tells the waiters of a written batch, and empties it.
fn acknowledge(batch: &mut Vec<Entry>) {
    for e in batch.drain(..) {
        if let Some(done) = e.done {
            let _ = done.send(());
        }
    }
}

/// The first retry's pause after a failed write (doubling up to [`MAX_BACKOFF`]).
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// The longest pause between retries of a failed write.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Writes batches through the pool (PostgreSQL, or SQLite when its own connection failed).
async fn write_loop(store: Store, mut rx: mpsc::UnboundedReceiver<Entry>) {
    let mut batch: Vec<Entry> = Vec::new();
    let mut keys = KeyTouches::default();
    loop {
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            touched(store.touch_keys(&keys.flush()).await);
            return;
        }
        let records = take_records(&mut batch);
        let started = std::time::Instant::now();
        let mut backoff = FIRST_BACKOFF;
        while !records.is_empty()
            && let Err(e) = store.write_usage(&records).await
        {
            tracing::error!(
                "writing {} usage records failed (retrying): {e}",
                records.len()
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        let due = keys.note(&records);
        if !due.is_empty() {
            touched(store.touch_keys(&due).await);
        }
        written(&mut batch, records.len(), started);
    }
}

/// Writes batches on SQLite from a thread of its own (through the pool when no thread can be
/// started); the returned task ends with it.
fn spawn_writer_thread(
    store: Store,
    writer: SqliteWriter,
    rx: mpsc::UnboundedReceiver<Entry>,
) -> tokio::task::JoinHandle<()> {
    let (hand, take) = std::sync::mpsc::channel::<(SqliteWriter, mpsc::UnboundedReceiver<Entry>)>();
    let (ended, end) = oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("tandem-ledger".into())
        .spawn(move || {
            if let Ok((writer, rx)) = take.recv() {
                write_loop_blocking(writer, rx);
            }
            let _ = ended.send(());
        });
    match spawned {
        Ok(_) => {
            let _ = hand.send((writer, rx));
            tokio::spawn(async move {
                let _ = end.await;
            })
        }
        Err(e) => {
            tracing::warn!("starting the ledger's writer thread ({e}); writing through the pool");
            tokio::spawn(write_loop(store, rx))
        }
    }
}

/// [`write_loop`] on SQLite's own connection: waits for the first entry, takes whatever else
/// is queued, writes it as one transaction and acknowledges it. (Holding a batch back for
/// more to join it measured worse: the same CPU, longer tails.)
fn write_loop_blocking(mut writer: SqliteWriter, mut rx: mpsc::UnboundedReceiver<Entry>) {
    let mut batch: Vec<Entry> = Vec::new();
    let mut keys = KeyTouches::default();
    loop {
        let Some(first) = rx.blocking_recv() else {
            touched(writer.touch_keys(&keys.flush()));
            return;
        };
        batch.push(first);
        while batch.len() < MAX_BATCH
            && let Ok(e) = rx.try_recv()
        {
            batch.push(e);
        }
        let records = take_records(&mut batch);
        let started = std::time::Instant::now();
        let mut backoff = FIRST_BACKOFF;
        while !records.is_empty()
            && let Err(e) = writer.write_usage(&records)
        {
            tracing::error!(
                "writing {} usage records failed (retrying): {e}",
                records.len()
            );
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        let due = keys.note(&records);
        if !due.is_empty() {
            touched(writer.touch_keys(&due));
        }
        written(&mut batch, records.len(), started);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(key: &str, at: i64) -> UsageRecord {
        UsageRecord {
            key_id: Some(key.into()),
            started_at: at,
            ..UsageRecord::default()
        }
    }

    /// A key's first use is written at once, later ones at most once per interval, the newest
    /// time held back is written at shutdown, and records without a key are ignored.
    #[test]
    fn key_touches_are_written_at_most_once_per_interval() {
        let mut k = KeyTouches::default();
        let open = UsageRecord::default();
        assert_eq!(
            k.note(&[used("a", 5_000), open.clone(), used("b", 5_100)]),
            vec![("a".into(), 5_000), ("b".into(), 5_100)]
        );
        assert!(k.note(&[used("a", 5_400), used("a", 5_300)]).is_empty());
        assert_eq!(
            k.note(&[used("a", 6_000), used("a", 6_700), used("b", 5_200)]),
            vec![("a".into(), 6_700)]
        );
        // Older records (a batch out of order) never move a time back.
        assert!(k.note(&[used("a", 100)]).is_empty());
        let mut last = k.flush();
        last.sort();
        assert_eq!(last, vec![("b".into(), 5_200)]);
        assert!(k.flush().is_empty());
    }
}
