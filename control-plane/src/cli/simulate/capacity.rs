//! The server's capacity for the workload: the chat requests per second it completes while
//! clients keep it busy. Measured before the passes, so that `--utilization` can size the
//! population to the server as an operator sizes a server to its traffic.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::Value;

use super::client::Client;

/// Sends `requests` (messages and `max_tokens`, in a cycle) from `concurrency` clients that each
/// send the next as soon as their last is answered, for `duration`; gives the requests completed
/// per second (those still running at the end are awaited and counted).
pub async fn requests_per_second(
    client: &Client,
    requests: Arc<Vec<(Vec<Value>, u32)>>,
    concurrency: usize,
    duration: Duration,
) -> Result<f64> {
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, requests, next) = (client.clone(), requests.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut done = 0usize;
            while start.elapsed() < duration && !requests.is_empty() {
                let i = next.fetch_add(1, Ordering::Relaxed) % requests.len();
                let (messages, max_tokens) = &requests[i];
                client.chat(messages, *max_tokens).await?;
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut done = 0;
    for w in workers {
        done += w.await??;
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}
