//! Embeddings through the gateway: the upstreams that serve the model and embed are tried in
//! the router's order until one answers (an embedding has no first token: the whole answer is
//! the unit), under the upstream's total time limit, its breaker and its concurrency count.

use std::sync::Arc;
use std::time::Instant;

use rand::RngExt;

use super::dispatch::{InFlight, RequestContext};
use super::router::{self, NoRoute};
use super::upstream::{EmbedRequest, Embeddings, FailureKind, UpstreamError};
use super::{Gateway, UpstreamHandle};
use crate::errors::ApiError;
use crate::openai::EmbeddingRequest;

/// An embeddings request an upstream answered.
pub struct Embedded {
    /// The vectors and their token count.
    pub embeddings: Embeddings,
    /// Which upstream.
    pub upstream: Arc<UpstreamHandle>,
    /// The model's public name.
    pub model: String,
}

impl Gateway {
    /// Routes an embeddings request and returns the first answer of its candidates.
    pub async fn embed(
        &self,
        mut body: EmbeddingRequest,
        ctx: RequestContext,
    ) -> Result<Embedded, ApiError> {
        let name = self.resolve_model(body.model.as_deref())?;
        body.model = Some(name.clone());
        let policy = ctx.policy.unwrap_or_else(|| self.policy(&name));
        let planned = {
            let mut rng = rand::rng();
            router::plan(self.candidates(&name), &ctx.needs, policy, None, &mut |n| {
                rng.random_range(0..n)
            })
        };
        let plan = planned.map_err(|no| match no {
            NoRoute::AllAtCapacity => ApiError {
                retry_after: Some(1),
                ..ApiError::busy(format!(
                    "Every upstream of `{name}` is at its concurrency limit."
                ))
            },
            NoRoute::ContextTooSmall(n) => ApiError {
                code: Some("context_length_exceeded".into()),
                ..ApiError::bad_param(
                    "input",
                    format!(
                        "This model's maximum context length is {n} tokens, and an input is longer. Please shorten the input."
                    ),
                )
            },
            NoRoute::AllUnhealthy => {
                ApiError::unavailable(format!("No upstream of `{name}` is healthy right now."))
            }
        })?;
        let mut last = None;
        for (i, cand) in plan.order.into_iter().enumerate() {
            let h = &cand.upstream;
            if !h.breaker.try_acquire() {
                continue;
            }
            self.metrics
                .upstream_selected(&h.id, if i == 0 { plan.reason } else { "fallback" });
            let _guard = InFlight::new(Arc::clone(h));
            let req = EmbedRequest {
                body: body.clone(),
                upstream_model: cand.model().upstream_name.clone(),
                headers: ctx.headers.clone(),
            };
            let start = Instant::now();
            let total = h.settings.timeouts.total;
            let answer = tokio::time::timeout(total, h.upstream.embed(req))
                .await
                .unwrap_or_else(|_| {
                    Err(UpstreamError::failed(
                        FailureKind::Timeout,
                        format!("{} did not answer within {} ms", h.id, total.as_millis()),
                    ))
                });
            match answer {
                Ok(embeddings) => {
                    h.breaker.success();
                    self.metrics.upstream_outcome(&h.id, "ok");
                    self.metrics.upstream_latency(&h.id, None, start.elapsed());
                    return Ok(Embedded {
                        embeddings,
                        upstream: Arc::clone(h),
                        model: name,
                    });
                }
                Err(UpstreamError::Rejected(e)) => {
                    self.record_failure(h, &UpstreamError::Rejected(e.clone()));
                    return Err(e);
                }
                Err(e) => {
                    self.record_failure(h, &e);
                    last = Some(e);
                }
            }
        }
        Err(last.map_or_else(
            || ApiError::unavailable(format!("No upstream of `{name}` could take the request.")),
            |e| e.to_api_error(),
        ))
    }
}
