//! What both generation endpoints share: parse (done by the extractor) -> validate the fields
//! every upstream must see well-formed -> work out what the request needs and where it would
//! benefit from going (features, size, prompt prefix, forwarded headers) -> route through the
//! gateway -> render.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::accounting::meter::{Meter, Source, metered};
use crate::accounting::{
    Accounting, Admission, DEFAULT_COMPLETION_ESTIMATE, RequestTag, rate_limit_headers,
};
use crate::gateway::Gateway;
use crate::gateway::dispatch::Dispatched;
use crate::response_cache::{self, ResponseCache};
use crate::tenants::Caller;

use crate::errors::ApiError;
use crate::gateway::dispatch::RequestContext;
use crate::gateway::router::{self, Needs};
use crate::gateway::upstream::Features;
use crate::openai::{ApiRequest, MessageContent, PromptInput};
use crate::render::{self, RenderSpec};
use crate::state::SharedState;

/// Request headers forwarded to upstreams (the inference gateway's fairness, objective and
/// latency-target headers, under llm-d's names and the Gateway API Inference Extension's).
pub const FORWARDED_HEADERS: &[&str] = &[
    "x-llm-d-inference-fairness-id",
    "x-gateway-inference-fairness-id",
    "x-llm-d-inference-objective",
    "x-gateway-inference-objective",
    "x-llm-d-slo-ttft-ms",
    "x-llm-d-slo-tpot-ms",
    crate::gateway::FAIRNESS_WEIGHT_HEADER,
];

/// The fairness id headers (llm-d's, the Inference Extension's) and the weight header.
const FAIRNESS_HEADERS: [&str; 3] = [
    FORWARDED_HEADERS[0],
    FORWARDED_HEADERS[1],
    crate::gateway::FAIRNESS_WEIGHT_HEADER,
];

/// The response header naming the upstream that answered.
pub const UPSTREAM_HEADER: &str = "x-tandem-upstream";

/// Most choices per request.
pub const MAX_N: u32 = 128;
/// Bytes per token assumed when estimating a prompt's length from its text.
pub const BYTES_PER_TOKEN: usize = 4;
/// Bytes per token of the lower bound used to rule out upstreams by context length.
pub const BYTES_PER_TOKEN_BOUND: usize = 8;

/// The response header saying whether the response cache answered (`hit`) or not (`miss`).
pub const CACHE_HEADER: &str = "x-tandem-cache";

/// Handles a generation request of either endpoint: `tag` identifies it (and, once
/// authenticated, its caller).
pub async fn handle(
    state: &SharedState,
    headers: &HeaderMap,
    tag: Option<&RequestTag>,
    req: ApiRequest,
) -> Result<Response, ApiError> {
    let spec = RenderSpec::of(&req);
    handle_rendered(state, headers, tag, req, spec).await
}

/// [`handle`], answering as `spec` says (llama.cpp's shape for `/infill`).
pub async fn handle_rendered(
    state: &SharedState,
    headers: &HeaderMap,
    tag: Option<&RequestTag>,
    req: ApiRequest,
    spec: RenderSpec,
) -> Result<Response, ApiError> {
    let gateway = state.gateway_for_generation()?;
    validate(&req)?;
    let mut ctx = context(&req, headers);
    let caller = tag.and_then(RequestTag::caller);
    let name = req
        .model()
        .map(str::to_owned)
        .or_else(|| gateway.default_model())
        .unwrap_or_default();
    if let Some(c) = &caller {
        as_tenant(&mut ctx, c);
    }
    let accounting = state.accounting.as_ref().zip(tag);
    let mut admission = None;
    let mut start_written = None;
    if let Some((acc, tag)) = accounting {
        tag.set_model(&name);
        if let Some(c) = &caller {
            let (tokens, usd) = estimate(gateway, &name, &ctx);
            match admit(acc, c, &name, tokens, usd).await {
                Ok(a) => admission = Some(a),
                Err(refused) => return Ok(refused),
            }
        }
        // Left in flight until the answer completes it (found interrupted after a crash). A
        // stream waits for it below; a whole answer waits for its final record instead.
        let start = tag.record(caller.as_ref(), "in_flight", 0);
        if spec.stream {
            start_written = Some(acc.ledger.record_acked(start));
        } else {
            acc.ledger.record(start);
        }
    }
    let cache = state.response_cache.as_ref().and_then(|c| {
        let key = ResponseCache::key(caller.as_ref().map(|c| c.tenant.as_str()), &name, &req)?;
        Some((c, key))
    });
    let hit = cache.and_then(|(c, key)| c.get(&key));
    let from_cache = hit.is_some();
    let dispatched = match hit {
        Some(hit) => response_cache::replay(hit),
        None => match gateway.dispatch(req, ctx).await {
            Ok(d) => match cache {
                Some((c, key)) => response_cache::capture(d, Arc::clone(c), key),
                None => d,
            },
            Err(e) => {
                if let (Some((acc, _)), Some(a)) = (accounting, &admission) {
                    acc.settle(a, 0, 0.0).await;
                }
                return Err(e);
            }
        },
    };
    // A stream shows its request id before it ends: its record is durable before the first
    // byte. (A whole answer's final record is written before the answer is sent.)
    if let Some(written) = start_written {
        written.await;
    }
    let upstream = HeaderValue::from_str(&dispatched.upstream.id).ok();
    let verdict = admission.as_ref().map(|a| a.verdict);
    let dispatched = match accounting {
        Some((acc, tag)) => {
            let mut record = tag.record(caller.as_ref(), "in_flight", 0);
            record.model.clone_from(&dispatched.model);
            let meter = Meter::new(
                Arc::clone(acc),
                admission,
                record,
                Source {
                    upstream: Arc::clone(&dispatched.upstream),
                    cached: from_cache,
                },
                tag.started,
                &dispatched.first,
            );
            tag.claimed.store(true, Ordering::SeqCst);
            Dispatched {
                rest: metered(dispatched.rest, meter),
                ..dispatched
            }
        }
        None => dispatched,
    };
    let mut resp = render::respond(spec, dispatched).await;
    if let Some(id) = upstream {
        resp.headers_mut().insert(UPSTREAM_HEADER, id);
    }
    if cache.is_some() {
        resp.headers_mut().insert(
            CACHE_HEADER,
            HeaderValue::from_static(if from_cache { "hit" } else { "miss" }),
        );
    }
    if let Some(v) = verdict {
        rate_limit_headers(resp.headers_mut(), &v);
    }
    Ok(resp)
}

/// Admits a tenant's request charged `tokens` and `usd` against its limits and budget; a
/// refusal is the response to send (429 or 402 with the rate-limit headers).
pub async fn admit(
    acc: &Accounting,
    caller: &Caller,
    model: &str,
    tokens: u64,
    usd: f64,
) -> Result<Admission, Response> {
    acc.admit(caller, model, tokens, usd)
        .await
        .map_err(|refused| {
            let (e, verdict) = *refused;
            let mut resp = e.into_response();
            rate_limit_headers(resp.headers_mut(), &verdict);
            resp
        })
}

/// Routes a tenant's request as its own: its tier's policy, and its own flow in fair queueing
/// with its tier's priority as weight (what the client sent is not trusted).
pub fn as_tenant(ctx: &mut RequestContext, c: &Caller) {
    ctx.policy = c.plan.policy;
    ctx.headers
        .retain(|(k, _)| !FAIRNESS_HEADERS.contains(&k.as_str()));
    for name in &FAIRNESS_HEADERS[..2] {
        ctx.headers.push(((*name).to_owned(), c.tenant.clone()));
    }
    ctx.headers.push((
        FAIRNESS_HEADERS[2].to_owned(),
        c.plan.priority.unwrap_or(1).to_string(),
    ));
}

/// What admission charges a request: (tokens, USD), its prompt estimate plus its completion
/// limit, at the dearest upstream that serves the model.
pub fn estimate(gateway: &Gateway, model: &str, ctx: &RequestContext) -> (u64, f64) {
    let completion = ctx.needs.max_tokens.unwrap_or(DEFAULT_COMPLETION_ESTIMATE);
    let prompt = ctx.needs.prompt_tokens as u64;
    let candidates = gateway.candidates(model);
    let prior = router::Prior::of(&candidates);
    let usd = candidates
        .iter()
        .map(|c| {
            router::price(
                &c.upstream,
                prompt as usize,
                usize::try_from(completion).unwrap_or(usize::MAX),
                prior,
            )
        })
        .fold(0.0, f64::max);
    (prompt.saturating_add(completion), usd)
}

/// Checks what no upstream should have to: OpenAI's own limits.
pub fn validate(req: &ApiRequest) -> Result<(), ApiError> {
    let s = req.sampling();
    if let Some(n) = s.n
        && !(1..=MAX_N).contains(&n)
    {
        return Err(ApiError::bad_param(
            "n",
            format!("n must be in [1, {MAX_N}], got {n}."),
        ));
    }
    if let Some(t) = s.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(ApiError::bad_param(
            "temperature",
            format!("temperature must be in [0, 2], got {t}."),
        ));
    }
    if let ApiRequest::Chat(r) = req
        && r.messages.is_empty()
    {
        return Err(ApiError::bad_param(
            "messages",
            "messages must contain at least one message.",
        ));
    }
    Ok(())
}

/// The prompt as text, for the affinity key and the size estimate (chat messages as
/// `role: content` lines).
pub fn rendered_prompt(req: &ApiRequest) -> String {
    match req {
        ApiRequest::Chat(r) => {
            let mut s = String::new();
            for m in &r.messages {
                s.push_str(&m.role);
                s.push_str(": ");
                if let Some(c) = &m.content {
                    s.push_str(&c.text());
                }
                s.push('\n');
            }
            s
        }
        ApiRequest::Completion(r) => match &r.prompt {
            PromptInput::Text(t) => t.clone(),
            PromptInput::Texts(t) => t.first().cloned().unwrap_or_default(),
            PromptInput::Tokens(ids) => ids_text(ids),
            PromptInput::TokenLists(l) => l.first().map(|ids| ids_text(ids)).unwrap_or_default(),
        },
    }
}

fn ids_text(ids: &[u32]) -> String {
    ids.iter().map(|i| format!("{i},")).collect()
}

/// What the request needs of an upstream.
pub fn needs(req: &ApiRequest, rendered: &str) -> Needs {
    let s = req.sampling();
    let mut f = Features {
        multiple_choices: s.n.is_some_and(|n| n > 1),
        structured_outputs: s.structured(),
        ..Features::default()
    };
    let (prompt_tokens, bound) = match req {
        ApiRequest::Chat(r) => {
            f.logprobs = r.logprobs.unwrap_or(false);
            f.tools = r.tools.as_ref().is_some_and(|t| !t.is_empty());
            f.passthrough = !r.extra.is_empty()
                || r.messages.iter().any(|m| {
                    !m.extra.is_empty()
                        || matches!(&m.content, Some(MessageContent::Parts(p)) if p.iter().any(|p| p.kind != "text"))
                });
            (
                rendered.len() / BYTES_PER_TOKEN,
                rendered.len() / BYTES_PER_TOKEN_BOUND,
            )
        }
        ApiRequest::Completion(r) => {
            f.logprobs = r.logprobs.is_some();
            f.prompt_logprobs = r.logprobs.is_some() && r.echo.unwrap_or(false);
            f.token_prompts = r.prompt.has_token_ids();
            f.multiple_choices |= r.best_of.is_some_and(|b| b > 1);
            f.passthrough = !r.extra.is_empty();
            f.fill_in_middle =
                r.infill.is_some() || r.suffix.as_deref().is_some_and(|s| !s.is_empty());
            match &r.prompt {
                PromptInput::Tokens(ids) => (ids.len(), ids.len()),
                PromptInput::TokenLists(l) => {
                    let n = l.iter().map(Vec::len).max().unwrap_or(0);
                    (n, n)
                }
                _ => (
                    rendered.len() / BYTES_PER_TOKEN,
                    rendered.len() / BYTES_PER_TOKEN_BOUND,
                ),
            }
        }
    };
    Needs {
        features: f,
        prompt_tokens,
        prompt_tokens_bound: bound,
        max_tokens: req.max_tokens(),
        choices: s.n.unwrap_or(1),
    }
}

/// The routing context of a request: what it needs, its affinity key and the headers to
/// forward (the OpenAI `user` becomes the fairness id when the client sent none).
pub fn context(req: &ApiRequest, headers: &HeaderMap) -> RequestContext {
    let rendered = rendered_prompt(req);
    RequestContext {
        policy: None,
        headers: forwarded_headers(headers, req.sampling().user.as_deref()),
        prefix_key: router::prefix_key(&rendered),
        needs: needs(req, &rendered),
    }
}

/// The headers forwarded to upstreams ([`FORWARDED_HEADERS`]); the OpenAI `user` becomes the
/// fairness id when the client sent none.
pub fn forwarded_headers(headers: &HeaderMap, user: Option<&str>) -> Vec<(String, String)> {
    let mut forwarded: Vec<(String, String)> = FORWARDED_HEADERS
        .iter()
        .filter_map(|name| {
            let v = headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), v.to_owned()))
        })
        .collect();
    let has_fairness = forwarded.iter().any(|(k, _)| k.ends_with("fairness-id"));
    if !has_fairness && let Some(user) = user.filter(|u| !u.is_empty()) {
        for name in &FORWARDED_HEADERS[..2] {
            forwarded.push(((*name).to_owned(), user.to_owned()));
        }
    }
    forwarded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(json: serde_json::Value) -> ApiRequest {
        ApiRequest::Chat(serde_json::from_value(json).unwrap())
    }

    #[test]
    fn needs_follow_the_fields() {
        let r = chat(
            serde_json::json!({"messages": [{"role": "user", "content": "hi"}], "logprobs": true, "n": 2}),
        );
        let n = needs(&r, &rendered_prompt(&r));
        assert!(n.features.logprobs && n.features.multiple_choices && !n.features.passthrough);
        let r = chat(
            serde_json::json!({"messages": [{"role": "user", "content": "hi"}], "tools": [{}], "x_vendor": 1}),
        );
        let n = needs(&r, "").features;
        assert!(n.tools && n.passthrough);
        let r = ApiRequest::Completion(
            serde_json::from_value(
                serde_json::json!({"prompt": [1, 2, 3], "echo": true, "logprobs": 1}),
            )
            .unwrap(),
        );
        let n = needs(&r, &rendered_prompt(&r));
        assert!(n.features.token_prompts && n.features.prompt_logprobs);
        assert_eq!(n.prompt_tokens, 3);
    }

    #[test]
    fn user_becomes_the_fairness_id_unless_a_header_says() {
        let r = chat(
            serde_json::json!({"messages": [{"role": "user", "content": "hi"}], "user": "alice"}),
        );
        let ctx = context(&r, &HeaderMap::new());
        assert!(
            ctx.headers
                .contains(&("x-llm-d-inference-fairness-id".into(), "alice".into()))
        );
        let mut h = HeaderMap::new();
        h.insert("x-gateway-inference-fairness-id", "team-b".parse().unwrap());
        h.insert("x-llm-d-inference-objective", "batch".parse().unwrap());
        let ctx = context(&r, &h);
        assert_eq!(ctx.headers.len(), 2);
        assert!(ctx.headers.iter().all(|(_, v)| v != "alice"));
        let long = "x".repeat(2000);
        let r = chat(
            serde_json::json!({"messages": [{"role": "system", "content": long}, {"role": "user", "content": "a"}]}),
        );
        let r2 = chat(
            serde_json::json!({"messages": [{"role": "system", "content": long}, {"role": "user", "content": "b"}]}),
        );
        let k1 = context(&r, &HeaderMap::new()).prefix_key;
        assert!(k1.is_some());
        assert_eq!(k1, context(&r2, &HeaderMap::new()).prefix_key);
    }

    #[test]
    fn openai_limits_are_checked() {
        assert!(validate(&chat(serde_json::json!({"messages": []}))).is_err());
        assert!(validate(&chat(serde_json::json!({"messages": [{"role": "user", "content": "x"}], "temperature": 3}))).is_err());
        assert!(
            validate(&chat(
                serde_json::json!({"messages": [{"role": "user", "content": "x"}], "n": 0})
            ))
            .is_err()
        );
    }
}
