//! Metering an upstream's stream: counts what passes, and when the stream ends settles the
//! request's limits and budget and completes its usage record, durably, before the client sees
//! the end (so a finished response is always in the ledger). A stream dropped early (the
//! client went away) or broken by the upstream is recorded as cancelled or failed.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;

use super::{Accounting, Admission, elapsed_ms};
use crate::gateway::UpstreamHandle;
use crate::gateway::router::{Prior, price};
use crate::gateway::upstream::{Output, OutputStream};
use crate::store::ledger::UsageRecord;
use crate::store::now_ms;

/// Where an answer comes from.
pub struct Source {
    /// The upstream that produced it.
    pub upstream: Arc<UpstreamHandle>,
    /// Replayed from the response cache (it costs nothing).
    pub cached: bool,
}

/// A request's accounting while its stream runs.
pub struct Meter {
    acc: Arc<Accounting>,
    admission: Option<Admission>,
    record: UsageRecord,
    source: Source,
    started: Instant,
    prompt_tokens: Option<usize>,
    completion_tokens: Option<usize>,
    deltas: usize,
    failed: Option<u16>,
    done: bool,
}

impl Meter {
    /// Meters a request that `upstream` started answering (its first output is `first`);
    /// `record` is its started record.
    pub fn new(
        acc: Arc<Accounting>,
        admission: Option<Admission>,
        mut record: UsageRecord,
        source: Source,
        started: Instant,
        first: &Output,
    ) -> Meter {
        record.upstream = Some(if source.cached {
            "cache".to_owned()
        } else {
            source.upstream.id.clone()
        });
        record.ttft_ms = Some(elapsed_ms(started));
        let mut m = Meter {
            acc,
            admission,
            record,
            source,
            started,
            prompt_tokens: None,
            completion_tokens: None,
            deltas: 0,
            failed: None,
            done: false,
        };
        m.observe(first);
        m
    }

    fn observe(&mut self, out: &Output) {
        match out {
            Output::Delta(d) => {
                if !d.is_empty() {
                    self.deltas += 1;
                }
            }
            Output::Usage(u) => {
                self.prompt_tokens = Some(u.prompt_tokens);
                self.completion_tokens = Some(u.completion_tokens);
            }
        }
    }

    /// The final record, and the settlement it calls for: (admission, tokens, USD).
    fn close(
        &mut self,
        status: &str,
        http_status: u16,
    ) -> (UsageRecord, Option<(Admission, u64, f64)>) {
        self.done = true;
        let prompt = self.prompt_tokens.unwrap_or(0);
        // Without a usage report, each non-empty delta is taken as one token.
        let completion = self.completion_tokens.unwrap_or(self.deltas);
        let usd = if self.source.cached {
            0.0
        } else {
            price(&self.source.upstream, prompt, completion, Prior::default())
        };
        let settlement = self
            .admission
            .take()
            .map(|a| (a, (prompt + completion) as u64, usd));
        let mut r = std::mem::take(&mut self.record);
        r.prompt_tokens = prompt as i64;
        if self.source.cached {
            r.cached_tokens = prompt as i64;
        }
        r.completion_tokens = completion as i64;
        r.cost_usd = usd;
        r.status = status.into();
        r.http_status = i32::from(http_status);
        r.latency_ms = Some(elapsed_ms(self.started));
        r.finished_at = Some(now_ms());
        (r, settlement)
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if !self.done {
            let (r, settlement) = match self.failed {
                Some(status) => self.close("failed", status),
                // The client went away before the end.
                None => self.close("cancelled", 499),
            };
            if let Some((a, tokens, usd)) = settlement {
                self.acc.settle_later(a, tokens, usd);
            }
            self.acc.ledger.record(r);
        }
    }
}

/// `rest` with `meter` watching it.
pub fn metered(rest: OutputStream, meter: Meter) -> OutputStream {
    Box::pin(futures_util::stream::unfold(
        (rest, Some(meter)),
        |(mut rest, mut meter)| async move {
            let m = meter.as_mut()?;
            match rest.next().await {
                Some(Ok(out)) => {
                    m.observe(&out);
                    Some((Ok(out), (rest, meter)))
                }
                Some(Err(e)) => {
                    m.failed = Some(e.to_api_error().status.as_u16());
                    Some((Err(e), (rest, meter)))
                }
                None => {
                    let mut m = meter.take()?;
                    let (r, settlement) = match m.failed {
                        Some(status) => m.close("failed", status),
                        None => m.close("completed", 200),
                    };
                    let acc = Arc::clone(&m.acc);
                    drop(m);
                    if let Some((a, tokens, usd)) = settlement {
                        acc.settle(&a, tokens, usd).await;
                    }
                    acc.ledger.record_durably(r).await;
                    None
                }
            }
        },
    ))
}
