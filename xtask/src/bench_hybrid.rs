//! `cargo xtask bench hybrid`: what the hybrid saves. Starts `tandem serve` on the default model
//! with tenants, a ledger and an hourly machine price, then runs `tandem simulate-clients`: a
//! population of web clients (device profiles with their sources in
//! `control-plane/src/cli/simulate/profiles.toml`) sends the same chat workload first to the
//! server alone, then routed by the real `/v1/route` as `@tandem-inference/web` does, once per
//! tier (routing policy and first-token target). The report comes from the server's ledger.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::bench::{Running, free_port, wait_ready};
use crate::bench_gateway::{ADMIN_KEY, tenant_key};
use crate::shell;

/// What the server costs to run: an on-demand 2-vCPU cloud machine, USD per hour.
const PER_HOUR_USD: f64 = 0.10;
/// Its aggregate throughput, tokens per second (pinned, so both passes pay the same per token).
const TOKENS_PER_S: f64 = 200.0;
/// The population: as many page visits as keep the server 70% busy when it serves them alone
/// (sized to the server's measured capacity, as an operator sizes a server to its traffic), the
/// window they start in (s), turns per visit at most, and the mean pause to read and write a
/// message, before the first and between turns (s).
const SIMULATION: [(&str, &str); 4] = [
    ("--utilization", "0.7"),
    ("--window", "90"),
    ("--max-turns", "4"),
    ("--think", "10"),
];

/// The tiers measured, each by a tenant of its own (name, tier fields): `balanced` as it comes
/// (first-token target 1 s), `balanced` for an operator who takes 3 s to the first token as fast
/// enough (what their server alone gives at this load is 1 to 8 s at p99), and `cheapest` (the
/// browser whenever it can run the model in reasonable time).
const TIERS: [(&str, &[&str]); 3] = [
    ("balanced", &["policy=balanced"]),
    ("balanced-3s", &["policy=balanced", "ttft_target_ms=3000"]),
    ("cheapest", &["policy=cheapest"]),
];

/// Runs the benchmark.
pub fn bench(model: &Path) -> Result<()> {
    shell::run(shell::cargo().args(["build", "--release", "-p", "control-plane"]))?;
    let tandem = shell::root().join("target/release/tandem");
    let dir = std::env::temp_dir().join(format!("tandem-bench-hybrid-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("tandem.toml");
    std::fs::write(
        &config,
        format!(
            "[[upstreams]]\nid = \"local\"\nkind = \"local\"\nsource = {:?}\n\
             cost = {{ per_hour = {PER_HOUR_USD}, tokens_per_s = {TOKENS_PER_S} }}\n\
             [[upstreams.models]]\nname = \"smollm2\"\n",
            model.display().to_string()
        ),
    )?;
    let port = free_port()?;
    let data = dir.join("data");
    let mut server = Running(
        Command::new(&tandem)
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .args(["--admin-key", ADMIN_KEY])
            .env("TANDEM_LOG", "error")
            .spawn()
            .context("starting tandem serve")?,
    );
    wait_ready(port, "/ready", &mut server.0)?;
    let database = format!("sqlite://{}", data.join("tandem.db").display());
    // One tenant per tier, each with the whole workload: the policy and the first-token target
    // are the operator's trade between the server's work and the users' waiting.
    for (name, fields) in TIERS {
        let tenant = format!("bench-{name}");
        let key = tenant_key(&tandem, port, &tenant, fields)?;
        println!(
            "## What the hybrid saves, tier `{}` (`tandem simulate-clients {}`; server: `tandem serve`, \
             default model, {PER_HOUR_USD} USD/h at {TOKENS_PER_S} tok/s)\n",
            fields.join(" "),
            SIMULATION
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut sim = Command::new(&tandem);
        sim.args([
            "simulate-clients",
            "--url",
            &format!("http://127.0.0.1:{port}"),
        ])
        .args([
            "--api-key",
            &key,
            "--database",
            &database,
            "--tenant",
            &tenant,
        ]);
        for (k, v) in SIMULATION {
            sim.args([k, v]);
        }
        shell::run(&mut sim)?;
        println!();
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
