//! The report of `tandem simulate-clients`, read from the server's ledger: per pass, the share
//! of requests served in browsers, time to first token per route, and server cost per request;
//! then what each device profile saw.

use anyhow::Result;
use control_plane::gateway::browser_route::BrowserPath;
use control_plane::store::Store;
use control_plane::store::ledger::{UsageFilter, UsageRecord};

use super::hybrid::{Observed, Outcome};
use super::profiles::Profile;
use super::workload::Session;

/// The ledger's records of one pass.
pub struct Pass {
    records: Vec<UsageRecord>,
}

impl Pass {
    /// The records that started in `[from, to)` (Unix milliseconds), of `tenant` if given.
    pub async fn read(store: &Store, tenant: Option<&str>, from: i64, to: i64) -> Result<Pass> {
        let filter = UsageFilter {
            tenant: tenant.map(str::to_owned),
            from_ms: Some(from),
            to_ms: Some(to),
            route: None,
        };
        Ok(Pass {
            records: store.usage_records(&filter, i64::MAX).await?,
        })
    }

    fn requests(&self) -> usize {
        self.records.len()
    }

    fn on(&self, route: &str) -> impl Iterator<Item = &UsageRecord> {
        self.records.iter().filter(move |r| r.route == route)
    }

    /// Times to first token (ms) of completed requests, of one route or all.
    fn ttfts(&self, route: Option<&str>) -> Vec<f64> {
        self.records
            .iter()
            .filter(|r| route.is_none_or(|x| r.route == x) && r.status == "completed")
            .filter_map(|r| r.ttft_ms.map(|t| t as f64))
            .collect()
    }

    fn errors(&self) -> usize {
        self.records
            .iter()
            .filter(|r| r.status != "completed")
            .count()
    }

    fn server_cost(&self) -> f64 {
        self.on("server").map(|r| r.cost_usd).sum()
    }

    fn savings(&self) -> f64 {
        self.records.iter().map(|r| r.savings_usd).sum()
    }

    fn cost_per_request(&self) -> f64 {
        self.server_cost() / self.requests().max(1) as f64
    }

    fn browser_share(&self) -> f64 {
        self.on("browser").count() as f64 / self.requests().max(1) as f64
    }
}

/// The `q`-quantile (nearest rank) of `values`, NaN when empty.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn p50_p99(values: &[f64]) -> String {
    if values.is_empty() {
        return "–".into();
    }
    format!(
        "{:.0} / {:.0}",
        quantile(values, 0.5),
        quantile(values, 0.99)
    )
}

/// Prints the report as Markdown.
pub fn print(
    baseline: &Pass,
    hybrid: &Pass,
    profiles: &[Profile],
    sessions: &[Session],
    observed: &[Observed],
) {
    println!(
        "| pass | requests | in browsers | TTFT ms p50 / p99, browser | server | all | server cost per request (USD) | savings (USD) | errors |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (label, pass) in [("server only", baseline), ("hybrid", hybrid)] {
        println!(
            "| {label} | {} | {:.1}% | {} | {} | {} | {:.8} | {:.6} | {} |",
            pass.requests(),
            pass.browser_share() * 100.0,
            p50_p99(&pass.ttfts(Some("browser"))),
            p50_p99(&pass.ttfts(Some("server"))),
            p50_p99(&pass.ttfts(None)),
            pass.cost_per_request(),
            pass.savings(),
            pass.errors(),
        );
    }
    let (b, h) = (baseline.ttfts(None), hybrid.ttfts(None));
    let ratio = |q: f64| quantile(&h, q) / quantile(&b, q);
    println!();
    println!(
        "- Served in browsers: {:.1}% of requests (target: at least 80%).",
        hybrid.browser_share() * 100.0
    );
    println!(
        "- Time to first token, hybrid over server only: {:.2}x at p50, {:.2}x at p99 (target: at most 1.2x).",
        ratio(0.5),
        ratio(0.99)
    );
    println!(
        "- Server cost per request, hybrid over server only: {:.1}% (target: at most 20%).",
        hybrid.cost_per_request() / baseline.cost_per_request().max(f64::MIN_POSITIVE) * 100.0
    );
    println!();
    println!("Per device profile (hybrid pass, as the clients saw it; TTFT includes `/v1/route`):");
    println!();
    println!(
        "| profile | sessions | requests | WebGPU | WASM CPU | server | failed over | TTFT ms p50 / p99 |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (i, p) in profiles.iter().enumerate() {
        let mine: Vec<&Observed> = observed.iter().filter(|o| o.profile == i).collect();
        let count = |want: Outcome| mine.iter().filter(|o| o.outcome == want).count();
        let ttfts: Vec<f64> = mine.iter().map(|o| super::millis(o.ttft)).collect();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            p.name,
            sessions.iter().filter(|s| s.profile == i).count(),
            mine.len(),
            count(Outcome::Browser(BrowserPath::Webgpu)),
            count(Outcome::Browser(BrowserPath::Cpu)),
            count(Outcome::Server),
            count(Outcome::Failover),
            p50_p99(&ttfts),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[3.0], 0.99), 3.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
