//! Prometheus metrics in the text exposition format, named after vLLM's with a `tandem_` prefix:
//! requests by endpoint and status, finished requests by reason, time to first token,
//! inter-token latency and end-to-end latency histograms, prompt and generation token counters,
//! and the engines' gauges (running and waiting sequences, KV-cache usage).

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

/// The server's metrics registry.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    models: Mutex<BTreeMap<String, ModelMetrics>>,
    /// Streams a client abandoned before they finished.
    aborted: AtomicU64,
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
        let mut map = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        *map.entry((endpoint.to_owned(), status)).or_insert(0) += 1;
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

    /// The text exposition of every metric; `engines` gives each model's engine gauges.
    pub fn render(&self, engines: &[(String, EngineStats)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP tandem_requests_total HTTP requests by endpoint and status code.\n");
        out.push_str("# TYPE tandem_requests_total counter\n");
        for ((endpoint, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "tandem_requests_total{{endpoint=\"{}\",status=\"{status}\"}} {n}",
                escape(endpoint)
            );
        }

        let gauges: [Family<EngineStats, f64>; 4] = [
            (
                "tandem_num_requests_running",
                "Sequences in the running batch.",
                |s| s.running as f64,
            ),
            (
                "tandem_num_requests_waiting",
                "Sequences waiting for a slot or for memory.",
                |s| (s.waiting + s.queued) as f64,
            ),
            (
                "tandem_kv_cache_usage_perc",
                "Fraction of KV-cache blocks in use (0 to 1).",
                |s| s.kv_usage,
            ),
            (
                "tandem_kv_cache_blocks_total",
                "KV-cache blocks in the pool.",
                |s| s.kv_blocks_total as f64,
            ),
        ];
        for (name, help, get) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (model, stats) in engines {
                let _ = writeln!(
                    out,
                    "{name}{{model_name=\"{}\"}} {}",
                    escape(model),
                    get(stats)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP tandem_num_preemptions_total Sequences preempted (freed and recomputed later).\n# TYPE tandem_num_preemptions_total counter"
        );
        for (model, stats) in engines {
            let _ = writeln!(
                out,
                "tandem_num_preemptions_total{{model_name=\"{}\"}} {}",
                escape(model),
                stats.preemptions
            );
        }

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
        out
    }
}

/// Escapes a label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
        let text = m.render(&[("smol".into(), stats)]);
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
