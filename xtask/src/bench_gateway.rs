//! `cargo xtask bench gateway`: what the gateway adds. `tandem echo-upstream` answers every
//! request at once; `tandem throughput` measures requests per second and latency percentiles
//! against it directly and through a `tandem serve --upstream` gateway, streamed and not, in the
//! same run: first as fast as each answers (closed loop), then at a fixed offered rate.

use std::process::Command;

use anyhow::{Context, Result};

use crate::bench::{Running, free_port, wait_ready};
use crate::shell;

/// Connections of the closed-loop runs.
const CONNECTIONS: &str = "64";
/// Seconds per run.
const DURATION: &str = "5";
/// The offered rate of the fixed-rate runs (the target).
const RATE: &str = "10000";

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
    let gateway_port = free_port()?;
    let mut gateway = Running(
        Command::new(&tandem)
            .args([
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                &gateway_port.to_string(),
            ])
            .arg("--upstream")
            .arg(format!("fast=http://127.0.0.1:{upstream_port}"))
            .env("TANDEM_LOG", "error")
            .spawn()
            .context("starting the gateway")?,
    );
    wait_ready(gateway_port, "/ready", &mut gateway.0)?;
    println!(
        "## Gateway overhead (`tandem throughput`, {DURATION} s per row; an upstream that answers at once)\n"
    );
    let mut header = true;
    for load in [
        &["--connections", CONNECTIONS][..],
        &["--rate", RATE, "--connections", "1024"][..],
    ] {
        for stream in [false, true] {
            for (label, port) in [("direct", upstream_port), ("gateway", gateway_port)] {
                let mut cmd = Command::new(&tandem);
                cmd.args(["throughput", "--url", &format!("http://127.0.0.1:{port}")])
                    .args(["--duration", DURATION, "--label", label])
                    .args(load);
                if stream {
                    cmd.arg("--stream");
                }
                if header {
                    cmd.arg("--header");
                    header = false;
                }
                shell::run(&mut cmd)?;
            }
        }
    }
    Ok(())
}
