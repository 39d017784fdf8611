//! The response cache: whole answers of deterministic requests (temperature 0, or a seed), kept
//! for a while and replayed (as a stream when the request streams). Keyed by tenant, model and
//! the normalized request, so it is never shared across tenants; bounded in bytes, least
//! recently used evicted first. Off unless `--response-cache-mb` is set.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lru::LruCache;
use serde_json::Value;
use sha2::{Digest, Sha256};

use futures_util::StreamExt;

use crate::gateway::UpstreamHandle;
use crate::gateway::dispatch::Dispatched;
use crate::gateway::upstream::{Output, OutputStream, UpstreamError};
use crate::openai::ApiRequest;

/// A cached answer.
#[derive(Clone)]
pub struct CachedAnswer {
    /// Its outputs, in order (deltas, then usage).
    pub outputs: Arc<Vec<Output>>,
    /// The upstream that produced it.
    pub upstream: Arc<UpstreamHandle>,
    /// The model's public name.
    pub model: String,
    /// The upstream's fingerprint.
    pub fingerprint: String,
}

struct Entry {
    answer: CachedAnswer,
    bytes: usize,
    stored: Instant,
}

/// Hits and misses so far.
#[derive(Debug, Default)]
pub struct CacheCounters {
    /// Lookups that found an answer.
    pub hits: AtomicU64,
    /// Lookups of cacheable requests that found none.
    pub misses: AtomicU64,
}

struct Inner {
    map: LruCache<[u8; 32], Entry>,
    bytes: usize,
}

/// The cache.
pub struct ResponseCache {
    inner: Mutex<Inner>,
    max_bytes: usize,
    ttl: Duration,
    /// Hits and misses.
    pub counters: CacheCounters,
}

/// Bytes counted per cached output besides its text.
const OUTPUT_OVERHEAD: usize = 64;

impl ResponseCache {
    /// A cache of at most `max_bytes` whose answers live `ttl`.
    pub fn new(max_bytes: usize, ttl: Duration) -> ResponseCache {
        ResponseCache {
            inner: Mutex::new(Inner {
                map: LruCache::unbounded(),
                bytes: 0,
            }),
            max_bytes,
            ttl,
            counters: CacheCounters::default(),
        }
    }

    /// The key of a request of `tenant` for `model`, if its answer is deterministic: greedy
    /// (temperature 0) or seeded, one choice per prompt, no `n`/`best_of` sampling spread.
    pub fn key(tenant: Option<&str>, model: &str, req: &ApiRequest) -> Option<[u8; 32]> {
        let s = req.sampling();
        let deterministic = s.temperature == Some(0.0) || s.seed.is_some();
        if !deterministic {
            return None;
        }
        let (endpoint, mut v) = match req {
            ApiRequest::Chat(r) => ("chat", serde_json::to_value(r).ok()?),
            ApiRequest::Completion(r) => ("completions", serde_json::to_value(r).ok()?),
        };
        if let Value::Object(m) = &mut v {
            // What only changes how the same answer is delivered.
            for k in ["stream", "stream_options", "user", "model"] {
                m.remove(k);
            }
        }
        let mut h = Sha256::new();
        h.update(tenant.unwrap_or("").as_bytes());
        h.update([0]);
        h.update(model.as_bytes());
        h.update([0]);
        h.update(endpoint.as_bytes());
        h.update([0]);
        h.update(canonical(&v).as_bytes());
        Some(h.finalize().into())
    }

    /// The answer stored under `key`, if fresh.
    pub fn get(&self, key: &[u8; 32]) -> Option<CachedAnswer> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = inner.map.get(key).map(|e| e.stored.elapsed() < self.ttl);
        match fresh {
            Some(true) => {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                inner.map.get(key).map(|e| e.answer.clone())
            }
            Some(false) => {
                if let Some(e) = inner.map.pop(key) {
                    inner.bytes -= e.bytes;
                }
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Stores an answer, evicting the least recently used ones beyond the size bound.
    pub fn put(&self, key: [u8; 32], answer: CachedAnswer) {
        let bytes = answer
            .outputs
            .iter()
            .map(|o| match o {
                Output::Delta(d) => d.text.len() + OUTPUT_OVERHEAD,
                Output::Usage(_) => OUTPUT_OVERHEAD,
            })
            .sum::<usize>()
            + answer.model.len()
            + 128;
        if bytes > self.max_bytes {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = inner.map.put(
            key,
            Entry {
                answer,
                bytes,
                stored: Instant::now(),
            },
        ) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        while inner.bytes > self.max_bytes {
            match inner.map.pop_lru() {
                Some((_, e)) => inner.bytes -= e.bytes,
                None => break,
            }
        }
    }

    /// (entries, bytes) held now.
    pub fn size(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (inner.map.len(), inner.bytes)
    }
}

/// JSON text with every object's keys sorted, so that equal requests give equal text.
fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

/// A cached answer as a dispatched request.
pub fn replay(hit: CachedAnswer) -> Dispatched {
    let mut outputs = hit.outputs.iter().cloned();
    let first = outputs.next().unwrap_or(Output::Usage(Default::default()));
    let rest: Vec<Result<Output, UpstreamError>> = outputs.map(Ok).collect();
    Dispatched {
        first,
        rest: Box::pin(futures_util::stream::iter(rest)),
        upstream: hit.upstream,
        model: hit.model,
        fingerprint: hit.fingerprint,
    }
}

/// `d` with its outputs kept, and stored under `key` once it ends without error.
pub fn capture(d: Dispatched, cache: Arc<ResponseCache>, key: [u8; 32]) -> Dispatched {
    struct St {
        rest: OutputStream,
        kept: Vec<Output>,
        failed: bool,
        cache: Arc<ResponseCache>,
        key: [u8; 32],
        upstream: Arc<UpstreamHandle>,
        model: String,
        fingerprint: String,
    }
    let st = St {
        rest: d.rest,
        kept: vec![d.first.clone()],
        failed: false,
        cache,
        key,
        upstream: Arc::clone(&d.upstream),
        model: d.model.clone(),
        fingerprint: d.fingerprint.clone(),
    };
    let rest = futures_util::stream::unfold(Some(st), |st| async move {
        let mut st = st?;
        match st.rest.next().await {
            Some(Ok(out)) => {
                st.kept.push(out.clone());
                Some((Ok(out), Some(st)))
            }
            Some(Err(e)) => {
                st.failed = true;
                Some((Err(e), Some(st)))
            }
            None => {
                if !st.failed {
                    st.cache.put(
                        st.key,
                        CachedAnswer {
                            outputs: Arc::new(std::mem::take(&mut st.kept)),
                            upstream: st.upstream,
                            model: st.model,
                            fingerprint: st.fingerprint,
                        },
                    );
                }
                None
            }
        }
    });
    Dispatched {
        rest: Box::pin(rest),
        ..d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(v: Value) -> ApiRequest {
        ApiRequest::Chat(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn keys_are_per_tenant_and_only_for_deterministic_requests() {
        let greedy = chat(serde_json::json!({"model": "m", "temperature": 0,
            "messages": [{"role": "user", "content": "hi"}]}));
        let streamed = chat(
            serde_json::json!({"model": "m", "temperature": 0, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}),
        );
        let sampled = chat(serde_json::json!({"model": "m",
            "messages": [{"role": "user", "content": "hi"}]}));
        let a = ResponseCache::key(Some("a"), "m", &greedy).unwrap();
        assert_eq!(Some(a), ResponseCache::key(Some("a"), "m", &streamed));
        assert_ne!(Some(a), ResponseCache::key(Some("b"), "m", &greedy));
        assert_ne!(Some(a), ResponseCache::key(Some("a"), "other", &greedy));
        assert_eq!(ResponseCache::key(Some("a"), "m", &sampled), None);
    }
}
