//! `cargo xtask bench gateway`: what the gateway adds. `tandem echo-upstream` answers every
//! request at once; `tandem throughput` measures requests per second and latency percentiles
//! against it directly and through a `tandem serve --upstream` gateway, streamed and not, in the
//! same run: first as fast as each answers (closed loop), then at fixed offered rates. After each
//! gateway row, the CPU time the gateway process used per request (from `/proc`) says what one
//! core of it sustains alone, apart from the load generator and the upstream that share the
//! machine.

use std::process::Command;

use anyhow::{Context, Result};

use crate::bench::{Running, free_port, wait_ready};
use crate::shell;

/// Connections of the closed-loop runs.
const CONNECTIONS: &str = "64";
/// Seconds per run.
const DURATION: &str = "5";
/// The offered rates of the fixed-rate runs: one the gateway sustains here, and the target.
const RATES: [&str; 2] = ["5000", "10000"];

/// Runs the benchmark.
pub fn bench() -> Result<()> {
    shell::run(shell::cargo().args(["build", "--release", "-p", "control-plane"]))?;
    let tandem = shell::root().join("target/release/tandem");
    let upstream_port = free_port()?;
    let mut upstream = Running(
        Command::new(&tandem)
            .args(["echo-upstream", "--port", &upstream_port.to_string()])
            .spawn()
            .context("starting tandem echo-upstream")?,
    );
    wait_ready(upstream_port, "/health", &mut upstream.0)?;
    let data = std::env::temp_dir().join(format!("tandem-bench-gateway-{}", std::process::id()));
    let upstream_flag = format!("fast=http://127.0.0.1:{upstream_port}");
    let start_gateway = |name: &str, extra: &[&str]| -> Result<(Running, u16)> {
        let port = free_port()?;
        let mut child = Running(
            Command::new(&tandem)
                .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--upstream", &upstream_flag])
                .arg("--data-dir")
                .arg(data.join(name))
                .args(extra)
                .env("TANDEM_LOG", "error")
                .spawn()
                .context("starting the gateway")?,
        );
        wait_ready(port, "/ready", &mut child.0)?;
        Ok((child, port))
    };
    // The gateway with its ledger (every request recorded, no tenants: the API is open) ...
    let (gateway, gateway_port) = start_gateway("open", &[])?;
    // ... and with tenants: API keys checked, per-minute limits counted (high enough never to
    // refuse), a monthly budget reserved and settled, and the ledger.
    let (auth_gateway, auth_port) = start_gateway("auth", &["--admin-key", ADMIN_KEY])?;
    let api_key = tenant_key(&tandem, auth_port, "bench", &[])?;
    println!(
        "## Gateway overhead (`tandem throughput`, {DURATION} s per row; an upstream that answers at once)\n"
    );
    let mut header = true;
    let mut cpu = Vec::new();
    let pids = [
        ("gateway", gateway.0.id()),
        ("gateway+auth", auth_gateway.0.id()),
    ];
    let mut loads: Vec<Vec<&str>> = vec![vec!["--connections", CONNECTIONS]];
    for rate in RATES {
        loads.push(vec!["--rate", rate, "--connections", "1024"]);
    }
    for load in &loads {
        for stream in [false, true] {
            for (label, port) in [
                ("direct", upstream_port),
                ("gateway", gateway_port),
                ("gateway+auth", auth_port),
            ] {
                let mut cmd = Command::new(&tandem);
                cmd.args(["throughput", "--url", &format!("http://127.0.0.1:{port}")])
                    .args(["--duration", DURATION, "--label", label])
                    .args(load);
                if label == "gateway+auth" {
                    cmd.args(["--api-key", &api_key]);
                }
                let pid = pids.iter().find(|(l, _)| *l == label).map(|(_, p)| *p);
                if stream {
                    cmd.arg("--stream");
                }
                if header {
                    cmd.arg("--header");
                    header = false;
                }
                let before = pid.and_then(cpu_seconds);
                let row = shell::output(&mut cmd)?;
                print!("{row}");
                if let (Some(b), Some(a), Some(n)) =
                    (before, pid.and_then(cpu_seconds), requests(&row))
                    && n > 0
                {
                    cpu.push(format!(
                        "{label}, stream {}, {}: {:.1} µs of CPU per request ({:.0} requests/s per core)",
                        if stream { "yes" } else { "no" },
                        load.join(" "),
                        (a - b) * 1e6 / n as f64,
                        n as f64 / (a - b).max(1e-9)
                    ));
                }
            }
        }
    }
    println!();
    for line in cpu {
        println!("- {line}");
    }
    // The ledger afterwards: every request the authenticated gateway answered is in it.
    let usage = shell::output(
        Command::new(&tandem)
            .args(["admin", "--url", &format!("http://127.0.0.1:{auth_port}")])
            .args([
                "--admin-key",
                ADMIN_KEY,
                "usage",
                "--group-by",
                "tenant",
                "--format",
                "csv",
            ]),
    )?;
    println!("\nLedger of gateway+auth (`tandem admin usage --group-by tenant --format csv`):\n");
    for line in usage.lines() {
        println!("    {line}");
    }
    drop((gateway, auth_gateway));
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

/// The admin key of the authenticated gateway.
pub const ADMIN_KEY: &str = "bench-admin-key-0123456789";

/// Sets up a tier and a tenant, both named `tenant` (limits high enough never to refuse, and
/// `tier_fields` as `FIELD=VALUE`), and a key, on the gateway at `port` with `tandem admin`;
/// returns the key.
pub fn tenant_key(
    tandem: &std::path::Path,
    port: u16,
    tenant: &str,
    tier_fields: &[&str],
) -> Result<String> {
    let admin = |args: &[&str]| -> Result<String> {
        shell::output(
            Command::new(tandem)
                .args(["admin", "--url", &format!("http://127.0.0.1:{port}")])
                .args(["--admin-key", ADMIN_KEY])
                .args(args),
        )
    };
    let mut tier = vec![
        "tiers",
        "create",
        tenant,
        "--set",
        "requests_per_minute=1000000000",
        "--set",
        "tokens_per_minute=1000000000",
        "--set",
        "monthly_budget_usd=1000000",
    ];
    for f in tier_fields {
        tier.extend(["--set", f]);
    }
    admin(&tier)?;
    admin(&["tenants", "create", "--id", tenant, "--tier", tenant])?;
    let created = admin(&["keys", "create", tenant, "--name", "bench"])?;
    // The answer holds the key's lookup prefix and the key itself, both starting `tdm-`: the
    // key is the longer.
    created
        .split('"')
        .filter(|s| s.starts_with("tdm-"))
        .max_by_key(|s| s.len())
        .map(str::to_owned)
        .context("no key in the answer of `tandem admin keys create`")
}

/// User + system CPU seconds a process has used so far (Linux `/proc/PID/stat`).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let ticks = shell::output(Command::new("getconf").arg("CLK_TCK"))
        .ok()
        .and_then(|t| t.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    Some((utime + stime) / ticks)
}

/// The request count of a `tandem throughput` row (its fourth column).
fn requests(row: &str) -> Option<u64> {
    row.lines().last()?.split('|').nth(4)?.trim().parse().ok()
}
