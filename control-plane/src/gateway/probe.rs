//! Active health checks: every upstream is probed on its own interval (a remote one's
//! `/v1/models`, which also refreshes its model list; a local engine's thread). Results feed the
//! circuit breaker beside the passive tracking of requests.

use std::sync::{Arc, Weak};

use super::UpstreamHandle;

/// Probes `handle` once: a success or a failure for its breaker.
pub async fn probe_once(handle: &UpstreamHandle) -> bool {
    match handle.upstream.probe().await {
        Ok(()) => {
            if handle.breaker.success() {
                tracing::info!(upstream = %handle.id, "circuit breaker closed after probes");
            }
            true
        }
        Err(e) => {
            tracing::debug!(upstream = %handle.id, "probe failed: {e}");
            if handle.breaker.failure() {
                tracing::warn!(upstream = %handle.id, "circuit breaker opened by probes: {e}");
            }
            false
        }
    }
}

/// Probes `handle` every `probe_interval` until the gateway drops it.
pub fn spawn_prober(handle: &Arc<UpstreamHandle>) {
    let weak: Weak<UpstreamHandle> = Arc::downgrade(handle);
    let interval = handle.settings.probe_interval;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let Some(h) = weak.upgrade() else { break };
            probe_once(&h).await;
        }
    });
}
