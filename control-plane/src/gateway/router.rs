//! Choosing an upstream for a request. Candidates (the upstreams that serve the model) are
//! filtered by capability (breaker, concurrency limit, context length, features), scored by
//! expected latency and cost under the model's policy, and the near-best are split by prefix
//! affinity (rendezvous hashing of the prompt's leading block, unless that upstream is much
//! busier) or else by the power of two choices on load. The rest follow as fallbacks.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::UpstreamHandle;
use super::browser_route::Policy;
use super::stats::{DEFAULT_TOK_S, DEFAULT_TTFT_S};
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
    /// Choices per prompt (`n`; 0 counts as 1).
    pub choices: u32,
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

/// What an upstream without measurements is assumed to do: the mean of the measured
/// candidates (so a new upstream gets its share and is measured), else the defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct Prior {
    /// Time to first token, seconds.
    pub ttft_s: Option<f64>,
    /// Decode speed, tokens per second.
    pub tok_s: Option<f64>,
}

impl Prior {
    /// The mean of what the candidates measured.
    pub fn of(candidates: &[Candidate]) -> Prior {
        let mean =
            |xs: Vec<f64>| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
        let measured: Vec<(Option<f64>, Option<f64>)> = candidates
            .iter()
            .map(|c| c.upstream.stats.measured())
            .collect();
        Prior {
            ttft_s: mean(measured.iter().filter_map(|m| m.0).collect()),
            tok_s: mean(measured.iter().filter_map(|m| m.1).collect()),
        }
    }
}

/// Estimates a request on a candidate.
pub fn estimate(c: &Candidate, needs: &Needs, prior: Prior) -> Estimate {
    let h = &c.upstream;
    let slots = h.settings.max_concurrency.unwrap_or(DEFAULT_SLOTS).max(1);
    let own = h.upstream.self_load().map_or(0, |l| l.running + l.waiting);
    let load = h.stats.in_flight().max(own);
    let (ttft, tok_s) = h.stats.measured();
    let ttft = ttft.or(prior.ttft_s).unwrap_or(DEFAULT_TTFT_S);
    let base_tok_s = tok_s.or(prior.tok_s).unwrap_or(DEFAULT_TOK_S).max(1e-3);
    let slowdown = 1.0 + load as f64 / slots as f64;
    let ttft_s = ttft * slowdown;
    let tok_s = base_tok_s / slowdown;
    let out = needs
        .max_tokens
        .map_or(DEFAULT_MAX_TOKENS, |m| {
            usize::try_from(m).unwrap_or(usize::MAX)
        })
        .min(1 << 20);
    let latency_s = ttft_s + out as f64 / tok_s;
    let cost_usd = price(h, needs.prompt_tokens, out, prior);
    Estimate {
        ttft_s,
        tok_s,
        latency_s,
        cost_usd,
        load,
    }
}

/// What `prompt` input and `completion` generated tokens cost on an upstream (an hourly price
/// spread over its measured throughput, else `prior`'s, else the default).
pub fn price(h: &UpstreamHandle, prompt: usize, completion: usize, prior: Prior) -> f64 {
    let slots = h.settings.max_concurrency.unwrap_or(DEFAULT_SLOTS).max(1);
    let tok_s = h
        .stats
        .measured()
        .1
        .or(prior.tok_s)
        .unwrap_or(DEFAULT_TOK_S)
        .max(1e-3);
    h.settings
        .cost
        .cost(prompt, completion, tok_s * slots as f64)
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
    // Keep the candidates that offer the features and as many choices, when any does; otherwise
    // let the first one answer with its own reason.
    let capable: Vec<Candidate> = open
        .iter()
        .filter(|c| {
            let m = c.model();
            m.features.covers(&needs.features)
                && m.max_choices.is_none_or(|most| needs.choices <= most)
        })
        .cloned()
        .collect();
    let pool = if capable.is_empty() { open } else { capable };

    let prior = Prior::of(&pool);
    let estimates: Vec<Estimate> = pool.iter().map(|c| estimate(c, needs, prior)).collect();
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::FutureExt;
    use futures_util::future::BoxFuture;

    use super::*;
    use crate::gateway::upstream::{
        FailureKind, GenerateRequest, Generation, Upstream, UpstreamError,
    };
    use crate::gateway::{UpstreamSettings, cost::CostModel};

    /// An upstream that only lists one model (routing never calls it).
    struct Listed(Arc<Vec<ModelInfo>>);

    impl Upstream for Listed {
        fn kind(&self) -> &'static str {
            "listed"
        }
        fn models(&self) -> Arc<Vec<ModelInfo>> {
            Arc::clone(&self.0)
        }
        fn probe(&self) -> BoxFuture<'_, Result<(), UpstreamError>> {
            async { Ok(()) }.boxed()
        }
        fn generate(&self, _: GenerateRequest) -> BoxFuture<'_, Result<Generation, UpstreamError>> {
            async { Err(UpstreamError::failed(FailureKind::Unavailable, "not here")) }.boxed()
        }
    }

    fn cand(id: &str, context: Option<usize>, settings: UpstreamSettings) -> Candidate {
        let models = Arc::new(vec![ModelInfo {
            name: "m".into(),
            upstream_name: "m".into(),
            aliases: vec![],
            context_length: context,
            features: Features::ALL,
            max_choices: None,
            browser_variants: vec![],
            created: 0,
        }]);
        Candidate {
            upstream: Arc::new(UpstreamHandle::new(
                id.into(),
                Box::new(Listed(Arc::clone(&models))),
                settings,
            )),
            models,
            index: 0,
        }
    }

    fn first(
        cands: &[Candidate],
        needs: &Needs,
        policy: Policy,
        key: Option<u64>,
    ) -> (String, &'static str) {
        let mut n = 0;
        let p = plan(cands.to_vec(), needs, policy, key, &mut |m| {
            n += 1;
            n % m
        })
        .unwrap();
        (p.order[0].upstream.id.clone(), p.reason)
    }

    #[test]
    fn more_choices_than_an_upstream_allows_go_to_one_that_allows_them() {
        let mut local = cand("local", None, UpstreamSettings::default());
        let mut info = local.models[0].clone();
        info.max_choices = Some(16);
        local.models = Arc::new(vec![info]);
        let remote = cand("remote", None, UpstreamSettings::default());
        let cands = [local, remote];
        for (choices, want) in [(17, vec!["remote"]), (16, vec!["local", "remote"])] {
            let needs = Needs {
                choices,
                ..Needs::default()
            };
            let p = plan(cands.to_vec(), &needs, Policy::Balanced, None, &mut |_| 0).unwrap();
            let mut got: Vec<&str> = p.order.iter().map(|c| c.upstream.id.as_str()).collect();
            got.sort_unstable();
            assert_eq!(got, want, "n = {choices}");
        }
    }

    #[test]
    fn filters_say_why_nothing_is_left() {
        let needs = Needs {
            prompt_tokens: 900,
            prompt_tokens_bound: 900,
            max_tokens: Some(200),
            ..Needs::default()
        };
        let small = cand("small", Some(1024), UpstreamSettings::default());
        assert_eq!(
            plan(
                vec![small.clone()],
                &needs,
                Policy::Balanced,
                None,
                &mut |_| 0
            )
            .err(),
            Some(NoRoute::ContextTooSmall(1024))
        );
        let full = cand(
            "full",
            None,
            UpstreamSettings {
                max_concurrency: Some(1),
                ..UpstreamSettings::default()
            },
        );
        full.upstream.stats.begin();
        assert_eq!(
            plan(vec![full], &needs, Policy::Balanced, None, &mut |_| 0).err(),
            Some(NoRoute::AllAtCapacity)
        );
        for _ in 0..3 {
            small.upstream.breaker.failure();
        }
        assert_eq!(
            plan(vec![small], &needs, Policy::Balanced, None, &mut |_| 0).err(),
            Some(NoRoute::AllUnhealthy)
        );
    }

    #[test]
    fn policies_weigh_cost_and_speed() {
        let priced = |id: &str, out: f64| {
            cand(
                id,
                None,
                UpstreamSettings {
                    cost: CostModel {
                        output_per_1m: out,
                        ..CostModel::default()
                    },
                    ..UpstreamSettings::default()
                },
            )
        };
        let cheap = priced("cheap", 0.1);
        let dear = priced("dear", 100.0);
        cheap.upstream.stats.observe_ttft(Duration::from_secs(2));
        dear.upstream.stats.observe_ttft(Duration::from_millis(10));
        let cands = vec![dear.clone(), cheap.clone()];
        let needs = Needs::default();
        assert_eq!(first(&cands, &needs, Policy::Cheapest, None).0, "cheap");
        assert_eq!(first(&cands, &needs, Policy::Fastest, None).0, "dear");
    }

    #[test]
    fn a_new_upstream_is_assumed_as_fast_as_the_measured_ones() {
        let old = cand("old", None, UpstreamSettings::default());
        let new = cand("new", None, UpstreamSettings::default());
        for _ in 0..5 {
            old.upstream.stats.observe_ttft(Duration::from_millis(20));
            old.upstream
                .stats
                .observe_decode(101, Duration::from_millis(500));
        }
        let cands = vec![old, new];
        let picks: Vec<String> = (0..20)
            .map(|_| first(&cands, &Needs::default(), Policy::Fastest, None).0)
            .collect();
        assert!(picks.iter().any(|p| p == "new"), "{picks:?}");
    }

    #[test]
    fn affinity_holds_until_the_upstream_is_much_busier() {
        // Many slots: load barely changes the scores, so the three stay tied.
        let wide = UpstreamSettings {
            max_concurrency: Some(10_000),
            ..UpstreamSettings::default()
        };
        let cands: Vec<Candidate> = ["a", "b", "c"]
            .iter()
            .map(|id| cand(id, None, wide.clone()))
            .collect();
        let key = prefix_key(&"x".repeat(2000));
        let (chosen, why) = first(&cands, &Needs::default(), Policy::Balanced, key);
        assert_eq!(why, "prefix_affinity");
        for _ in 0..5 {
            assert_eq!(
                first(&cands, &Needs::default(), Policy::Balanced, key).0,
                chosen
            );
        }
        let h = &cands
            .iter()
            .find(|c| c.upstream.id == chosen)
            .unwrap()
            .upstream;
        for _ in 0..AFFINITY_LOAD_SLACK {
            h.stats.begin();
        }
        assert_eq!(
            first(&cands, &Needs::default(), Policy::Balanced, key).0,
            chosen
        );
        h.stats.begin();
        let (other, why) = first(&cands, &Needs::default(), Policy::Balanced, key);
        assert_eq!(why, "affinity_overridden");
        assert_ne!(other, chosen);
        assert!(prefix_key("short").is_none());
    }
}
