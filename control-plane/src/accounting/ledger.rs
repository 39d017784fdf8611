//! The ledger writer: usage records go through a channel to one task that writes them in
//! batches (one transaction per batch), so requests never wait on a write of their own; a
//! caller that needs its record durable awaits the batch's acknowledgement. A failed write is
//! retried, never dropped; on shutdown the queue is drained.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::store::Store;
use crate::store::ledger::UsageRecord;

/// Most records per transaction.
const MAX_BATCH: usize = 1024;

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
        let task = tokio::spawn(write_loop(store, rx));
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

async fn write_loop(store: Store, mut rx: mpsc::UnboundedReceiver<Entry>) {
    let mut batch: Vec<Entry> = Vec::new();
    loop {
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let records: Vec<UsageRecord> = batch.iter().filter_map(|e| e.record.clone()).collect();
        let started = std::time::Instant::now();
        let mut backoff = Duration::from_millis(50);
        while !records.is_empty()
            && let Err(e) = store.write_usage(&records).await
        {
            tracing::error!(
                "writing {} usage records failed (retrying): {e}",
                records.len()
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        tracing::debug!(
            records = records.len(),
            micros = started.elapsed().as_micros(),
            "usage records written"
        );
        for e in batch.drain(..) {
            if let Some(done) = e.done {
                let _ = done.send(());
            }
        }
    }
}
