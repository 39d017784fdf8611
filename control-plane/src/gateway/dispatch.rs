//! Sending a request through the gateway: plan the candidates, try them until one produces its
//! first output (the only point up to which a failure may move the request elsewhere), then
//! hand the caller that first output and the rest of the stream, tracked for idle and total
//! timeouts, measurements, the circuit breaker and metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::RngExt;

use super::router::{self, Needs, NoRoute};
use super::upstream::{FailureKind, GenerateRequest, Output, OutputStream, UpstreamError};
use super::{Gateway, UpstreamHandle};
use crate::errors::ApiError;
use crate::openai::ApiRequest;

/// Seconds a client is told to wait after a queue timeout.
pub const QUEUE_RETRY_AFTER_S: u64 = 5;

/// What the handler knows of a request besides its body.
#[derive(Clone, Debug, Default)]
pub struct RequestContext {
    /// The routing policy of the caller's tier (else the model's).
    pub policy: Option<super::Policy>,
    /// Headers to forward to the upstream.
    pub headers: Vec<(String, String)>,
    /// Affinity key of the prompt's leading block.
    pub prefix_key: Option<u64>,
    /// What the request needs.
    pub needs: Needs,
}

/// A request an upstream has started answering.
pub struct Dispatched {
    /// The upstream's first output.
    pub first: Output,
    /// The rest.
    pub rest: OutputStream,
    /// Which upstream.
    pub upstream: Arc<UpstreamHandle>,
    /// The model's public name.
    pub model: String,
    /// The upstream's fingerprint (or one derived from its id).
    pub fingerprint: String,
}

impl Gateway {
    /// Routes `body` and waits for the first output, trying candidates in turn.
    pub async fn dispatch(
        &self,
        mut body: ApiRequest,
        ctx: RequestContext,
    ) -> Result<Dispatched, ApiError> {
        let name = self.resolve_model(body.model())?;
        body.set_model(&name);
        let policy = ctx.policy.unwrap_or_else(|| self.policy(&name));
        let retry = self.routing.retry;
        let mut last: Option<UpstreamError> = None;
        for pass in 0..retry.attempts.max(1) {
            if pass > 0 {
                tokio::time::sleep(retry.backoff * 2u32.saturating_pow(pass - 1)).await;
            }
            let planned = {
                let mut rng = rand::rng();
                router::plan(
                    self.candidates(&name),
                    &ctx.needs,
                    policy,
                    ctx.prefix_key,
                    &mut |n| rng.random_range(0..n),
                )
            };
            let plan = match planned {
                Ok(p) => p,
                Err(NoRoute::ContextTooSmall(ctx_len)) => {
                    return Err(ApiError {
                        code: Some("context_length_exceeded".into()),
                        ..ApiError::bad_param(
                            "messages",
                            format!(
                                "This model's maximum context length is {ctx_len} tokens, but the request needs at least {} ({} in the prompt, {} for the completion). Please reduce the length of the prompt or the completion.",
                                ctx.needs
                                    .prompt_tokens_bound
                                    .saturating_add(ctx.needs.max_tokens.unwrap_or(1) as usize),
                                ctx.needs.prompt_tokens_bound,
                                ctx.needs.max_tokens.unwrap_or(1)
                            ),
                        )
                    });
                }
                Err(no) => {
                    if last.is_none() {
                        last = Some(match no {
                            NoRoute::AllAtCapacity => UpstreamError::Busy {
                                message: format!(
                                    "Every upstream of `{name}` is at its concurrency limit."
                                ),
                                retry_after: Some(1),
                            },
                            _ => UpstreamError::failed(
                                FailureKind::Unavailable,
                                format!("No upstream of `{name}` is healthy right now."),
                            ),
                        });
                    }
                    continue;
                }
            };
            for (i, cand) in plan.order.into_iter().enumerate() {
                let reason = if i == 0 { plan.reason } else { "fallback" };
                match self.attempt(&cand, &body, &ctx, &name, reason).await {
                    Ok(d) => return Ok(d),
                    Err(UpstreamError::Rejected(e)) => return Err(e),
                    Err(e) => last = Some(e),
                }
            }
        }
        Err(last.map_or_else(
            || ApiError::unavailable(format!("No upstream of `{name}` could take the request.")),
            |e| e.to_api_error(),
        ))
    }

    /// One try on one candidate: the request up to its first output.
    async fn attempt(
        &self,
        cand: &router::Candidate,
        body: &ApiRequest,
        ctx: &RequestContext,
        name: &str,
        reason: &'static str,
    ) -> Result<Dispatched, UpstreamError> {
        let h = &cand.upstream;
        if !h.breaker.try_acquire() {
            return Err(UpstreamError::failed(
                FailureKind::Unavailable,
                format!("the circuit breaker of {} is open", h.id),
            ));
        }
        self.metrics.upstream_selected(&h.id, reason);
        let guard = InFlight::new(Arc::clone(h));
        let timeouts = h.settings.timeouts;
        let start = Instant::now();
        let deadline = start + timeouts.total;
        let req = GenerateRequest {
            body: body.clone(),
            upstream_model: cand.model().upstream_name.clone(),
            headers: ctx.headers.clone(),
        };
        let first_wait = timeouts.first_token.min(timeouts.total);
        let started = tokio::time::timeout(first_wait, async {
            let generation = h.upstream.generate(req).await?;
            let mut stream = generation.stream;
            match stream.next().await {
                Some(Ok(first)) => Ok((first, stream, generation.fingerprint)),
                Some(Err(e)) => Err(e),
                None => Err(UpstreamError::failed(
                    FailureKind::Protocol,
                    "the upstream ended the stream without any output",
                )),
            }
        })
        .await
        .unwrap_or_else(|_| {
            // A local engine's first token waits for a slot: its timeout is a queue timeout.
            Err(if h.upstream.kind() == "local" {
                UpstreamError::QueueTimeout {
                    message: format!(
                        "The request waited {} ms in the queue of {} without starting; the server is busy.",
                        first_wait.as_millis(),
                        h.id
                    ),
                    retry_after: QUEUE_RETRY_AFTER_S,
                }
            } else {
                UpstreamError::failed(
                    FailureKind::Timeout,
                    format!(
                        "{} gave no first token within {} ms",
                        h.id,
                        first_wait.as_millis()
                    ),
                )
            })
        });
        match started {
            Ok((first, rest, fingerprint)) => {
                let ttft = start.elapsed();
                // A whole answer's first output is its last: no time to first token to learn.
                let streamed = body.sampling().stream();
                if streamed {
                    h.stats.observe_ttft(ttft);
                }
                if h.breaker.success() {
                    tracing::info!(upstream = %h.id, "circuit breaker closed");
                }
                let fingerprint = fingerprint.unwrap_or_else(|| fingerprint_of(&h.id));
                let tracked = track(
                    rest,
                    guard,
                    Arc::clone(&self.metrics),
                    Timing {
                        start,
                        ttft,
                        deadline,
                        idle: timeouts.idle,
                        streamed,
                    },
                );
                Ok(Dispatched {
                    first,
                    rest: tracked,
                    upstream: Arc::clone(h),
                    model: name.to_owned(),
                    fingerprint,
                })
            }
            Err(e) => {
                self.record_failure(h, &e);
                Err(e)
            }
        }
    }

    /// Counts a failure (and feeds the breaker when the upstream is at fault).
    pub(super) fn record_failure(&self, h: &UpstreamHandle, e: &UpstreamError) {
        self.metrics.upstream_outcome(&h.id, e.label());
        if e.counts_against_upstream() {
            tracing::warn!(upstream = %h.id, "upstream failed: {e}");
            if h.breaker.failure() {
                tracing::warn!(upstream = %h.id, "circuit breaker opened");
            }
        } else {
            h.breaker.release();
        }
    }
}

/// A fingerprint for an upstream that gives none.
fn fingerprint_of(id: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    format!("fp_{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// Counts a request in flight on an upstream while it lives; records its end.
pub(super) struct InFlight {
    handle: Arc<UpstreamHandle>,
}

impl InFlight {
    pub(super) fn new(handle: Arc<UpstreamHandle>) -> InFlight {
        handle.stats.begin();
        InFlight { handle }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.handle.stats.end();
    }
}

/// When a tracked request started and its limits.
struct Timing {
    start: Instant,
    ttft: Duration,
    deadline: Instant,
    idle: Duration,
    /// Whether the upstream streamed (only then are TTFT and decode speed measured).
    streamed: bool,
}

/// The rest of a stream, with idle and total timeouts; at its end the decode speed, the
/// outcome and the latency are recorded, and a failure feeds the breaker.
fn track(
    rest: OutputStream,
    guard: InFlight,
    metrics: Arc<crate::metrics::Metrics>,
    timing: Timing,
) -> OutputStream {
    struct St {
        rest: OutputStream,
        guard: InFlight,
        metrics: Arc<crate::metrics::Metrics>,
        timing: Timing,
        tokens: usize,
        done: bool,
    }
    let st = St {
        rest,
        guard,
        metrics,
        timing,
        tokens: 1,
        done: false,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let t = &st.timing;
        let until = (Instant::now() + t.idle).min(t.deadline);
        let h = Arc::clone(&st.guard.handle);
        match tokio::time::timeout_at(until.into(), st.rest.next()).await {
            Ok(Some(Ok(out))) => {
                match &out {
                    Output::Delta(d) if !d.text.is_empty() => st.tokens += 1,
                    Output::Usage(u) if u.completion_tokens > 0 => st.tokens = u.completion_tokens,
                    _ => {}
                }
                Some((Ok(out), st))
            }
            Ok(None) => {
                st.done = true;
                let total = st.timing.start.elapsed();
                let ttft = st.timing.ttft;
                st.metrics.upstream_outcome(&h.id, "ok");
                if st.timing.streamed {
                    h.stats
                        .observe_decode(st.tokens, total.saturating_sub(ttft));
                    st.metrics.upstream_latency(&h.id, Some(ttft), total);
                } else {
                    st.metrics.upstream_latency(&h.id, None, total);
                }
                None
            }
            Ok(Some(Err(e))) => {
                st.done = true;
                st.metrics.upstream_outcome(&h.id, e.label());
                if e.counts_against_upstream() && h.breaker.failure() {
                    tracing::warn!(upstream = %h.id, "circuit breaker opened");
                }
                Some((Err(e), st))
            }
            Err(_) => {
                st.done = true;
                let what = if Instant::now() >= st.timing.deadline {
                    "the request's total time limit"
                } else {
                    "the idle limit between tokens"
                };
                let e = UpstreamError::failed(
                    FailureKind::Timeout,
                    format!("{} exceeded {what}", h.id),
                );
                st.metrics.upstream_outcome(&h.id, e.label());
                if h.breaker.failure() {
                    tracing::warn!(upstream = %h.id, "circuit breaker opened");
                }
                Some((Err(e), st))
            }
        }
    })
    .boxed()
}
