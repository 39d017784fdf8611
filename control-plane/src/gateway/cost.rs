//! What a request costs the operator on an upstream: a price per million input and output
//! tokens (a hosted API), or a price per hour of the machine divided by its throughput (a
//! rented GPU).

use serde::Deserialize;

/// An upstream's cost model (USD).
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostModel {
    /// USD per million prompt tokens.
    #[serde(default)]
    pub input_per_1m: f64,
    /// USD per million generated tokens.
    #[serde(default)]
    pub output_per_1m: f64,
    /// USD per hour of the machine (the price per token is this over its throughput).
    #[serde(default)]
    pub per_hour: f64,
    /// The machine's aggregate throughput in tokens per second; when absent, the measured
    /// per-request decode speed times its concurrency.
    #[serde(default)]
    pub tokens_per_s: Option<f64>,
}

impl CostModel {
    /// The expected cost of `prompt` input and `output` generated tokens; `measured_tok_s` is
    /// the upstream's aggregate throughput as measured (for `per_hour`).
    pub fn cost(&self, prompt: usize, output: usize, measured_tok_s: f64) -> f64 {
        let mut usd =
            self.input_per_1m * prompt as f64 / 1e6 + self.output_per_1m * output as f64 / 1e6;
        if self.per_hour > 0.0 {
            let rate = self.tokens_per_s.unwrap_or(measured_tok_s).max(1.0);
            usd += self.per_hour / 3600.0 * (prompt + output) as f64 / rate;
        }
        if usd.is_finite() { usd.max(0.0) } else { 0.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_and_hourly_prices() {
        let c = CostModel {
            input_per_1m: 1.0,
            output_per_1m: 2.0,
            ..CostModel::default()
        };
        assert!((c.cost(1_000_000, 500_000, 0.0) - 2.0).abs() < 1e-12);
        let h = CostModel {
            per_hour: 3.6,
            tokens_per_s: Some(1000.0),
            ..CostModel::default()
        };
        // 3.6 USD/h = 0.001 USD/s; 1000 tokens at 1000 tok/s = 1 s.
        assert!((h.cost(500, 500, 0.0) - 0.001).abs() < 1e-12);
        let measured = CostModel {
            per_hour: 3.6,
            ..CostModel::default()
        };
        assert!((measured.cost(0, 100, 100.0) - 0.001).abs() < 1e-12);
        assert_eq!(CostModel::default().cost(10, 10, 0.0), 0.0);
    }
}
