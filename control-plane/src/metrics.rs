//! Prometheus metrics in the text exposition format, named after vLLM's with a `tandem_` prefix:
//! requests by endpoint and status, finished requests by reason, time to first token,
//! inter-token latency and end-to-end latency histograms, prompt and generation token counters,
//! the engines' gauges (running and waiting sequences, KV-cache usage and geometry; under vLLM's
//! own names with `--metrics-names vllm`, so an llm-d endpoint picker reads them), and the
//! gateway's: per upstream requests by outcome, routing choices by reason, in-flight requests,
//! breaker state and TTFT/latency histograms, and `/v1/route` decisions by route and reason.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use engine_core::engine::EngineStats;

/// Bucket bounds (seconds) of the time-to-first-token histogram.
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
];
/// Bucket bounds (seconds) of the inter-token latency histogram.
const ITL_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
    0.4, 0.5, 0.75, 1.0, 2.5,
];
/// Bucket bounds (seconds) of the end-to-end latency histogram.
const E2E_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0,
];

/// A metric's name, help text and how to read it from `T`.
type Family<T, V> = (&'static str, &'static str, fn(&T) -> V);

/// A histogram's name, help text, buckets and where it lives in [`ModelMetrics`].
type HistFamily = (
    &'static str,
    &'static str,
    &'static [f64],
    fn(&ModelMetrics) -> &Histogram,
);

/// A cumulative histogram.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// Per-model latency histograms and token counters.
#[derive(Debug)]
struct ModelMetrics {
    ttft: Histogram,
    itl: Histogram,
    e2e: Histogram,
    prompt_tokens: u64,
    generation_tokens: u64,
    finished: BTreeMap<&'static str, u64>,
}

impl ModelMetrics {
    fn new() -> ModelMetrics {
        ModelMetrics {
            ttft: Histogram::new(TTFT_BUCKETS),
            itl: Histogram::new(ITL_BUCKETS),
            e2e: Histogram::new(E2E_BUCKETS),
            prompt_tokens: 0,
            generation_tokens: 0,
            finished: BTreeMap::new(),
        }
    }
}

/// Which names the engine gauges take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MetricsNames {
    /// `tandem_num_requests_running`, ...
    #[default]
    Tandem,
    /// vLLM's: `vllm:num_requests_running`, `vllm:num_requests_waiting`,
    /// `vllm:kv_cache_usage_perc` (and the older `vllm:gpu_cache_usage_perc`),
    /// `vllm:cache_config_info`.
    Vllm,
}

/// One engine's gauges, as `/metrics` shows them.
#[derive(Clone, Debug)]
pub struct EngineGauges {
    /// The model's id.
    pub model: String,
    /// The engine's gauges and counters.
    pub stats: EngineStats,
    /// Tokens per KV block.
    pub block_size: usize,
}

/// One upstream's live state, as `/metrics` shows it.
#[derive(Clone, Debug)]
pub struct UpstreamGauges {
    /// Its id.
    pub id: String,
    /// Requests the gateway has in flight there.
    pub in_flight: usize,
    /// Breaker state: 0 closed, 1 half-open, 2 open.
    pub breaker: u8,
    /// The router's moving average of its time to first token, seconds.
    pub ttft_ewma: f64,
    /// The router's moving average of its decode speed per request, tokens per second.
    pub tok_s_ewma: f64,
}

/// Counts by upstream and one more label.
type LabelledCounts = Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>;

/// Per-upstream histograms.
#[derive(Debug)]
struct UpstreamMetrics {
    ttft: Histogram,
    latency: Histogram,
}

/// The server's metrics registry.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
    models: Mutex<BTreeMap<String, ModelMetrics>>,
    /// Streams a client abandoned before they finished.
    aborted: AtomicU64,
    /// Upstream attempts by (upstream, outcome).
    outcomes: LabelledCounts,
    /// Upstream choices by (upstream, reason).
    selected: LabelledCounts,
    /// `/v1/route` decisions by (route, reason).
    decisions: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    upstreams: Mutex<BTreeMap<String, UpstreamMetrics>>,
}

/// Adds one to a counter in a labelled map (a key is allocated only the first time it is seen).
fn bump<K: Ord>(map: &Mutex<BTreeMap<String, BTreeMap<K, u64>>>, first: &str, second: K) {
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    let inner = match map.get_mut(first) {
        Some(inner) => inner,
        None => map.entry(first.to_owned()).or_default(),
    };
    *inner.entry(second).or_insert(0) += 1;
}

/// Everything about one finished sequence that the metrics record.
#[derive(Clone, Debug, Default)]
pub struct SequenceTimings {
    /// Time from the request's arrival to its first token.
    pub ttft: Option<Duration>,
    /// Gaps between consecutive tokens.
    pub itl: Vec<Duration>,
    /// Time from arrival to the end.
    pub e2e: Duration,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub generation_tokens: usize,
    /// `stop`, `length` or `abort`.
    pub reason: &'static str,
}

impl Metrics {
    /// A registry with nothing recorded.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Counts an HTTP response.
    pub fn record_request(&self, endpoint: &str, status: u16) {
        bump(&self.requests, endpoint, status);
    }

    /// Counts an attempt on an upstream by its outcome (`ok`, `client_error`, `busy`,
    /// `connect_error`, `timeout`, ...).
    pub fn upstream_outcome(&self, upstream: &str, outcome: &'static str) {
        bump(&self.outcomes, upstream, outcome);
    }

    /// Counts the router choosing an upstream, by reason.
    pub fn upstream_selected(&self, upstream: &str, reason: &'static str) {
        bump(&self.selected, upstream, reason);
    }

    /// Records a finished request's time to first token (when it streamed) and total time on
    /// an upstream.
    pub fn upstream_latency(&self, upstream: &str, ttft: Option<Duration>, total: Duration) {
        let mut map = self
            .upstreams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let m = map
            .entry(upstream.to_owned())
            .or_insert_with(|| UpstreamMetrics {
                ttft: Histogram::new(TTFT_BUCKETS),
                latency: Histogram::new(E2E_BUCKETS),
            });
        if let Some(t) = ttft {
            m.ttft.observe(t.as_secs_f64());
        }
        m.latency.observe(total.as_secs_f64());
    }

    /// Counts a `/v1/route` decision by route and each of its reasons.
    pub fn route_decision(&self, route: &str, reasons: &[String]) {
        for r in reasons {
            bump(&self.decisions, route, r.clone());
        }
        if reasons.is_empty() {
            bump(&self.decisions, route, String::new());
        }
    }

    /// Records a finished (or abandoned) sequence of `model`.
    pub fn record_sequence(&self, model: &str, t: &SequenceTimings) {
        let mut map = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        let m = map
            .entry(model.to_owned())
            .or_insert_with(ModelMetrics::new);
        if let Some(ttft) = t.ttft {
            m.ttft.observe(ttft.as_secs_f64());
        }
        for gap in &t.itl {
            m.itl.observe(gap.as_secs_f64());
        }
        m.e2e.observe(t.e2e.as_secs_f64());
        m.prompt_tokens += t.prompt_tokens as u64;
        m.generation_tokens += t.generation_tokens as u64;
        *m.finished.entry(t.reason).or_insert(0) += 1;
        if t.reason == "abort" {
            self.aborted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The text exposition of every metric: each local engine's gauges (under `names`) and
    /// each upstream's state.
    pub fn render(
        &self,
        engine_gauges: &[EngineGauges],
        upstreams: &[UpstreamGauges],
        names: MetricsNames,
    ) -> String {
        let engines: Vec<(String, EngineStats)> = engine_gauges
            .iter()
            .map(|e| (e.model.clone(), e.stats.clone()))
            .collect();
        let engines = engines.as_slice();
        let mut out = String::new();
        out.push_str("# HELP tandem_requests_total HTTP requests by endpoint and status code.\n");
        out.push_str("# TYPE tandem_requests_total counter\n");
        let requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        for ((endpoint, status), n) in requests
            .iter()
            .flat_map(|(e, inner)| inner.iter().map(move |(s, n)| ((e, s), n)))
        {
            let _ = writeln!(
                out,
                "tandem_requests_total{{endpoint=\"{}\",status=\"{status}\"}} {n}",
                escape(endpoint)
            );
        }

        let prefixed = |tandem: &'static str, vllm: &'static str| match names {
            MetricsNames::Tandem => tandem,
            MetricsNames::Vllm => vllm,
        };
        let mut gauges: Vec<Family<EngineStats, f64>> = vec![
            (
                prefixed("tandem_num_requests_running", "vllm:num_requests_running"),
                "Sequences in the running batch.",
                |s| s.running as f64,
            ),
            (
                prefixed("tandem_num_requests_waiting", "vllm:num_requests_waiting"),
                "Sequences waiting for a slot or for memory.",
                |s| (s.waiting + s.queued) as f64,
            ),
            (
                prefixed("tandem_kv_cache_usage_perc", "vllm:kv_cache_usage_perc"),
                "Fraction of KV-cache blocks in use (0 to 1).",
                |s| s.kv_usage,
            ),
            (
                "tandem_kv_cache_blocks_total",
                "KV-cache blocks in the pool.",
                |s| s.kv_blocks_total as f64,
            ),
        ];
        if names == MetricsNames::Vllm {
            gauges.push((
                "vllm:gpu_cache_usage_perc",
                "Fraction of KV-cache blocks in use (0 to 1; vLLM's older name).",
                |s| s.kv_usage,
            ));
        }
        engine_families(&mut out, "gauge", gauges, engines);
        let info = prefixed("tandem_cache_config_info", "vllm:cache_config_info");
        let _ = writeln!(
            out,
            "# HELP {info} KV-cache geometry (the value is 1).\n# TYPE {info} gauge"
        );
        for e in engine_gauges {
            let _ = writeln!(
                out,
                "{info}{{model_name=\"{}\",block_size=\"{}\",num_gpu_blocks=\"{}\"}} 1",
                escape(&e.model),
                e.block_size,
                e.stats.kv_blocks_total
            );
        }
        let engine_counters: [Family<EngineStats, u64>; 4] = [
            (
                "tandem_num_preemptions_total",
                "Sequences preempted (freed and recomputed later).",
                |s| s.preemptions,
            ),
            (
                "tandem_abandoned_steps_total",
                "Steps abandoned part way so that a tenant's first request starts at once.",
                |s| s.abandoned_steps,
            ),
            (
                prefixed(
                    "tandem_prefix_cache_queries_total",
                    "vllm:prefix_cache_queries_total",
                ),
                "Prompt tokens looked up in the prefix cache.",
                |s| s.prefix_cache_queries,
            ),
            (
                prefixed(
                    "tandem_prefix_cache_hits_total",
                    "vllm:prefix_cache_hits_total",
                ),
                "Prompt tokens found in the prefix cache (not computed again).",
                |s| s.prefix_cache_hits,
            ),
        ];
        engine_families(&mut out, "counter", engine_counters, engines);

        let models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        let counters: [Family<ModelMetrics, u64>; 2] = [
            (
                "tandem_prompt_tokens_total",
                "Prompt tokens of finished requests.",
                |m| m.prompt_tokens,
            ),
            (
                "tandem_generation_tokens_total",
                "Tokens generated for finished requests.",
                |m| m.generation_tokens,
            ),
        ];
        for (name, help, get) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (model, _) in engines {
                let v = models.get(model).map_or(0, get);
                let _ = writeln!(out, "{name}{{model_name=\"{}\"}} {v}", escape(model));
            }
        }
        let _ = writeln!(
            out,
            "# HELP tandem_request_success_total Finished requests by finish reason.\n# TYPE tandem_request_success_total counter"
        );
        for (model, m) in models.iter() {
            for (reason, n) in &m.finished {
                let _ = writeln!(
                    out,
                    "tandem_request_success_total{{model_name=\"{}\",finished_reason=\"{reason}\"}} {n}",
                    escape(model)
                );
            }
        }
        let hists: [HistFamily; 3] = [
            (
                "tandem_time_to_first_token_seconds",
                "Time from a request's arrival to its first token.",
                TTFT_BUCKETS,
                |m| &m.ttft,
            ),
            (
                "tandem_inter_token_latency_seconds",
                "Time between consecutive tokens of a request.",
                ITL_BUCKETS,
                |m| &m.itl,
            ),
            (
                "tandem_e2e_request_latency_seconds",
                "Time from a request's arrival to its end.",
                E2E_BUCKETS,
                |m| &m.e2e,
            ),
        ];
        for (name, help, bounds, get) in hists {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (model, _) in engines {
                let labels = format!("model_name=\"{}\"", escape(model));
                match models.get(model) {
                    Some(m) => get(m).render(&mut out, name, &labels),
                    None => Histogram::new(bounds).render(&mut out, name, &labels),
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP tandem_requests_aborted_total Streams the client left before they finished.\n# TYPE tandem_requests_aborted_total counter\ntandem_requests_aborted_total {}",
            self.aborted.load(Ordering::Relaxed)
        );
        self.render_gateway(&mut out, upstreams);
        out
    }

    fn render_gateway(&self, out: &mut String, upstreams: &[UpstreamGauges]) {
        let counters: [(&str, &str, &str, &LabelledCounts); 2] = [
            (
                "tandem_upstream_requests_total",
                "Requests sent to each upstream, by outcome.",
                "outcome",
                &self.outcomes,
            ),
            (
                "tandem_upstream_selected_total",
                "Times the router chose each upstream, by reason.",
                "reason",
                &self.selected,
            ),
        ];
        for (name, help, label, map) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let map = map.lock().unwrap_or_else(PoisonError::into_inner);
            for ((up, value), n) in map
                .iter()
                .flat_map(|(up, inner)| inner.iter().map(move |(v, n)| ((up, v), n)))
            {
                let _ = writeln!(
                    out,
                    "{name}{{upstream=\"{}\",{label}=\"{value}\"}} {n}",
                    escape(up)
                );
            }
        }
        let gauges: [Family<UpstreamGauges, f64>; 4] = [
            (
                "tandem_upstream_in_flight",
                "Requests in flight on each upstream.",
                |u| u.in_flight as f64,
            ),
            (
                "tandem_upstream_breaker_state",
                "Circuit breaker of each upstream: 0 closed, 1 half-open, 2 open.",
                |u| f64::from(u.breaker),
            ),
            (
                "tandem_upstream_ttft_ewma_seconds",
                "The router's moving average of each upstream's time to first token.",
                |u| u.ttft_ewma,
            ),
            (
                "tandem_upstream_decode_tokens_per_second",
                "The router's moving average of each upstream's decode speed per request.",
                |u| u.tok_s_ewma,
            ),
        ];
        for (name, help, get) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for u in upstreams {
                let _ = writeln!(out, "{name}{{upstream=\"{}\"}} {}", escape(&u.id), get(u));
            }
        }
        let hists = self
            .upstreams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (name, help, bounds, get) in [
            (
                "tandem_upstream_ttft_seconds",
                "Time to first token on each upstream.",
                TTFT_BUCKETS,
                (|m: &UpstreamMetrics| &m.ttft) as fn(&UpstreamMetrics) -> &Histogram,
            ),
            (
                "tandem_upstream_request_duration_seconds",
                "Time from sending a request to an upstream to its last token.",
                E2E_BUCKETS,
                |m: &UpstreamMetrics| &m.latency,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for u in upstreams {
                let labels = format!("upstream=\"{}\"", escape(&u.id));
                match hists.get(&u.id) {
                    Some(m) => get(m).render(out, name, &labels),
                    None => Histogram::new(bounds).render(out, name, &labels),
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP tandem_route_decisions_total Decisions of /v1/route, by route and reason.\n# TYPE tandem_route_decisions_total counter"
        );
        let decisions = self
            .decisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for ((route, reason), n) in decisions
            .iter()
            .flat_map(|(r, inner)| inner.iter().map(move |(why, n)| ((r, why), n)))
        {
            let _ = writeln!(
                out,
                "tandem_route_decisions_total{{route=\"{}\",reason=\"{}\"}} {n}",
                escape(route),
                escape(reason)
            );
        }
    }
}

/// Escapes a label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes each family (`kind`: `gauge` or `counter`) with one sample per engine.
fn engine_families<V: std::fmt::Display>(
    out: &mut String,
    kind: &str,
    families: impl IntoIterator<Item = Family<EngineStats, V>>,
    engines: &[(String, EngineStats)],
) {
    for (name, help, get) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (model, stats) in engines {
            let _ = writeln!(
                out,
                "{name}{{model_name=\"{}\"}} {}",
                escape(model),
                get(stats)
            );
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_histograms_counters_and_gauges() {
        let m = Metrics::new();
        m.record_request("/v1/completions", 200);
        m.record_request("/v1/completions", 400);
        m.record_sequence(
            "smol",
            &SequenceTimings {
                ttft: Some(Duration::from_millis(30)),
                itl: vec![Duration::from_millis(8), Duration::from_millis(12)],
                e2e: Duration::from_millis(60),
                prompt_tokens: 5,
                generation_tokens: 3,
                reason: "stop",
            },
        );
        let stats = EngineStats {
            running: 2,
            kv_usage: 0.25,
            ..EngineStats::default()
        };
        let gauges = [EngineGauges {
            model: "smol".into(),
            stats,
            block_size: 16,
        }];
        let text = m.render(&gauges, &[], MetricsNames::Tandem);
        let vllm = m.render(&gauges, &[], MetricsNames::Vllm);
        assert!(vllm.contains("vllm:num_requests_running{model_name=\"smol\"} 2"));
        assert!(vllm.contains("vllm:kv_cache_usage_perc{model_name=\"smol\"} 0.25"));
        assert!(vllm.contains("vllm:gpu_cache_usage_perc{model_name=\"smol\"} 0.25"));
        assert!(vllm.contains(
            "vllm:cache_config_info{model_name=\"smol\",block_size=\"16\",num_gpu_blocks=\"0\"} 1"
        ));
        assert!(!vllm.contains("tandem_num_requests_running"));
        assert!(
            text.contains("tandem_requests_total{endpoint=\"/v1/completions\",status=\"400\"} 1")
        );
        assert!(text.contains("tandem_num_requests_running{model_name=\"smol\"} 2"));
        assert!(text.contains("tandem_kv_cache_usage_perc{model_name=\"smol\"} 0.25"));
        assert!(text.contains("tandem_prompt_tokens_total{model_name=\"smol\"} 5"));
        assert!(text.contains("tandem_generation_tokens_total{model_name=\"smol\"} 3"));
        assert!(text.contains(
            "tandem_time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"0.04\"} 1"
        ));
        assert!(text.contains(
            "tandem_time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"0.02\"} 0"
        ));
        assert!(text.contains("tandem_inter_token_latency_seconds_count{model_name=\"smol\"} 2"));
        assert!(text.contains(
            "tandem_request_success_total{model_name=\"smol\",finished_reason=\"stop\"} 1"
        ));
    }
}
