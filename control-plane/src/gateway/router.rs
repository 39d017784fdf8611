//! Choosing an upstream for a request. Candidates (the upstreams that serve the model) are
//! filtered by capability (breaker, concurrency limit, context length, features), scored by
//! expected latency and cost under the model's policy, and the near-best are split by prefix
//! affinity (rendezvous hashing of the prompt's leading block, unless that upstream is much
//! busier) or else by the power of two choices on load. The rest follow as fallbacks.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::UpstreamHandle;
use super::browser_route::Policy;
use super::upstream::{Features, ModelInfo};

/// Requests an upstream without a `max_concurrency` is assumed to serve at full speed each: the
/// expected latency grows by `load / slots` of itself (each request in flight there slows the
/// others; on a CPU engine batching gains little).
pub const DEFAULT_SLOTS: usize = 4;
/// Generated tokens assumed when a request does not say `max_tokens`.
pub const DEFAULT_MAX_TOKENS: usize = 256;
/// Candidates within this factor of the best score count as tied (measurements of equal
/// upstreams differ by this much from request to request).
pub const TIE_TOLERANCE: f64 = 1.25;
/// Below this many USD a cost difference counts as small, in the balanced policy.
pub const COST_FLOOR_USD: f64 = 1e-4;
/// The prefix-affine upstream is passed over when its load exceeds
/// `AFFINITY_LOAD_FACTOR * least + AFFINITY_LOAD_SLACK`.
pub const AFFINITY_LOAD_FACTOR: usize = 2;
/// See [`AFFINITY_LOAD_FACTOR`].
pub const AFFINITY_LOAD_SLACK: usize = 4;

/// What a request needs of an upstream.
#[derive(Clone, Debug, Default)]
pub struct Needs {
    /// Features it uses.
    pub features: Features,
    /// Its prompt's length in tokens, estimated.
    pub prompt_tokens: usize,
    /// A lower bound of the prompt's length (what rules out an upstream by context length).
    pub prompt_tokens_bound: usize,
    /// `max_tokens`, if it says.
    pub max_tokens: Option<u64>,
}

/// A model on an upstream.
#[derive(Clone)]
pub struct Candidate {
    /// The upstream.
    pub upstream: Arc<UpstreamHandle>,
    /// The upstream's models.
    pub models: Arc<Vec<ModelInfo>>,
    /// Which of them.
    pub index: usize,
}

impl Candidate {
    /// The model as the upstream lists it.
    pub fn model(&self) -> &ModelInfo {
        &self.models[self.index]
    }
}

/// Why no candidate could take a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoRoute {
    /// Every candidate's breaker is open.
    AllUnhealthy,
    /// Every healthy candidate is at its concurrency limit.
    AllAtCapacity,
    /// The prompt and `max_tokens` exceed every candidate's context (the smallest context).
    ContextTooSmall(usize),
}

/// An ordered list of candidates to try, and why the first was chosen.
pub struct Plan {
    /// Candidates in the order to try them.
    pub order: Vec<Candidate>,
    /// Why the first one: `policy`, `p2c`, `prefix_affinity`, `affinity_overridden`.
    pub reason: &'static str,
}

/// A candidate's estimates.
#[derive(Clone, Copy, Debug)]
pub struct Estimate {
    /// Expected time to first token, seconds.
    pub ttft_s: f64,
    /// Expected decode speed, tokens per second.
    pub tok_s: f64,
    /// Expected time to the last token, seconds.
    pub latency_s: f64,
    /// Expected cost, USD.
    pub cost_usd: f64,
    /// Requests in flight or queued there.
    pub load: usize,
}

/// Estimates a request on a candidate.
pub fn estimate(c: &Candidate, needs: &Needs) -> Estimate {
    let h = &c.upstream;
    let slots = h.settings.max_concurrency.unwrap_or(DEFAULT_SLOTS).max(1);
    let own = h.upstream.self_load().map_or(0, |l| l.running + l.waiting);
    let load = h.stats.in_flight().max(own);
    let slowdown = 1.0 + load as f64 / slots as f64;
    let ttft_s = h.stats.ttft_s() * slowdown;
    let tok_s = h.stats.tok_s().max(1e-3) / slowdown;
    let out = needs
        .max_tokens
        .map_or(DEFAULT_MAX_TOKENS, |m| {
            usize::try_from(m).unwrap_or(usize::MAX)
        })
        .min(1 << 20);
    let latency_s = ttft_s + out as f64 / tok_s;
    let cost_usd = h
        .settings
        .cost
        .cost(needs.prompt_tokens, out, h.stats.tok_s() * slots as f64);
    Estimate {
        ttft_s,
        tok_s,
        latency_s,
        cost_usd,
        load,
    }
}

/// Scores under `policy` (lower is better); `best` holds the best latency and cost of all.
fn score(e: &Estimate, best_latency: f64, best_cost: f64, policy: Policy) -> f64 {
    let lat = e.latency_s / best_latency.max(1e-9);
    let cost = (e.cost_usd - best_cost) / best_cost.max(COST_FLOOR_USD);
    match policy {
        Policy::Fastest => lat,
        Policy::Cheapest => 1.0 + cost * 1e3 + (lat - 1.0) * 1e-3,
        Policy::Balanced => (lat + 1.0 + cost) / 2.0,
    }
}

/// Orders the candidates for a request. `prefix_key` hashes the prompt's leading block (when
/// the prompt is long enough to share one); `rand` gives two random indices for the power of
/// two choices.
pub fn plan(
    candidates: Vec<Candidate>,
    needs: &Needs,
    policy: Policy,
    prefix_key: Option<u64>,
    rand: &mut dyn FnMut(usize) -> usize,
) -> Result<Plan, NoRoute> {
    let healthy: Vec<Candidate> = candidates
        .into_iter()
        .filter(|c| c.upstream.breaker.is_routable())
        .collect();
    if healthy.is_empty() {
        return Err(NoRoute::AllUnhealthy);
    }
    let fitting: Vec<Candidate> = healthy
        .iter()
        .filter(|c| fits_context(c, needs))
        .cloned()
        .collect();
    if fitting.is_empty() {
        let smallest = healthy
            .iter()
            .filter_map(|c| c.model().context_length)
            .min()
            .unwrap_or(0);
        return Err(NoRoute::ContextTooSmall(smallest));
    }
    let open: Vec<Candidate> = fitting
        .into_iter()
        .filter(|c| {
            c.upstream
                .settings
                .max_concurrency
                .is_none_or(|m| c.upstream.stats.in_flight() < m)
        })
        .collect();
    if open.is_empty() {
        return Err(NoRoute::AllAtCapacity);
    }
    // Keep the candidates that offer the features, when any does; otherwise let the first one
    // answer with its own reason.
    let capable: Vec<Candidate> = open
        .iter()
        .filter(|c| c.model().features.covers(&needs.features))
        .cloned()
        .collect();
    let pool = if capable.is_empty() { open } else { capable };

    let estimates: Vec<Estimate> = pool.iter().map(|c| estimate(c, needs)).collect();
    let best_latency = estimates
        .iter()
        .map(|e| e.latency_s)
        .fold(f64::INFINITY, f64::min);
    let best_cost = estimates
        .iter()
        .map(|e| e.cost_usd)
        .fold(f64::INFINITY, f64::min);
    let mut scored: Vec<(f64, usize, Candidate)> = pool
        .into_iter()
        .zip(&estimates)
        .map(|(c, e)| (score(e, best_latency, best_cost, policy), e.load, c))
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    let best = scored[0].0;
    let tied = scored
        .iter()
        .take_while(|(s, _, _)| *s <= best * TIE_TOLERANCE + 1e-12)
        .count();

    let (pick, reason) = choose(&scored[..tied], prefix_key, rand);
    let mut order = Vec::with_capacity(scored.len());
    let chosen = scored.remove(pick);
    order.push(chosen.2);
    order.extend(scored.into_iter().map(|(_, _, c)| c));
    Ok(Plan { order, reason })
}

/// Picks among tied candidates: the prefix-affine one unless it is much busier, else the less
/// loaded of two random ones.
fn choose(
    tied: &[(f64, usize, Candidate)],
    prefix_key: Option<u64>,
    rand: &mut dyn FnMut(usize) -> usize,
) -> (usize, &'static str) {
    if tied.len() == 1 {
        return (0, "policy");
    }
    let least = tied.iter().map(|t| t.1).min().unwrap_or(0);
    let mut overridden = false;
    if let Some(key) = prefix_key {
        let affine = (0..tied.len())
            .max_by_key(|&i| rendezvous(key, &tied[i].2.upstream.id))
            .unwrap_or(0);
        if tied[affine].1 <= AFFINITY_LOAD_FACTOR * least + AFFINITY_LOAD_SLACK {
            return (affine, "prefix_affinity");
        }
        overridden = true;
    }
    let a = rand(tied.len());
    let mut b = rand(tied.len() - 1);
    if b >= a {
        b += 1;
    }
    let pick = if tied[b].1 < tied[a].1 { b } else { a };
    (
        pick,
        if overridden {
            "affinity_overridden"
        } else {
            "p2c"
        },
    )
}

/// The rendezvous (highest random weight) hash of a prefix and an upstream.
fn rendezvous(key: u64, upstream: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    upstream.hash(&mut h);
    h.finish()
}

fn fits_context(c: &Candidate, needs: &Needs) -> bool {
    match c.model().context_length {
        None => true,
        Some(ctx) => {
            let out = needs
                .max_tokens
                .map_or(1, |m| usize::try_from(m).unwrap_or(usize::MAX));
            needs.prompt_tokens_bound.saturating_add(out) <= ctx
        }
    }
}

/// Bytes of the rendered prompt hashed for affinity: prompts shorter than this share no
/// prefix worth routing by.
pub const PREFIX_BLOCK_BYTES: usize = 1024;

/// The affinity key of a rendered prompt: a hash of its first [`PREFIX_BLOCK_BYTES`] bytes, or
/// none when it is shorter.
pub fn prefix_key(rendered: &str) -> Option<u64> {
    let bytes = rendered.as_bytes();
    if bytes.len() < PREFIX_BLOCK_BYTES {
        return None;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes[..PREFIX_BLOCK_BYTES].hash(&mut h);
    Some(h.finish())
}
