//! `tandem simulate-clients` end to end against a real `tandem serve` on the default model with
//! a tenant and its ledger: both passes run the same requests, the hybrid one routes by the
//! real `/v1/route`, and the report agrees with the ledger.

mod common;

use std::process::Command;

use common::{Server, scratch_dir};
use control_plane::store::Store;
use control_plane::store::ledger::UsageFilter;
use serde_json::Value;

const ADMIN: &str = "simulate-admin-key-0123456789";

/// Runs `tandem admin ARGS` against `base`; returns its JSON output.
fn admin(base: &str, args: &[&str]) -> Value {
    common::admin_cli(base, ADMIN, args)
}

/// Two kinds of visitors: a fast GPU with the model cached (the browser wins once it is
/// loaded), and a device without WebGPU whose memory cannot hold the model (the server always
/// answers, whatever the server's own speed).
const PROFILES: &str = r#"
[[profiles]]
name = "cached-gpu"
share = 0.5
webgpu = { vendor = "nvidia", architecture = "ampere", features = ["shader-f16"], max_buffer_size = 4294967296 }
device_memory_gb = 8
hardware_concurrency = 8
cached_share = 1.0
download_mbit_s = 100
gpu_decode_tok_s = 200
gpu_prefill_tok_s = 1000
cpu_decode_tok_s = 10
cpu_prefill_tok_s = 20

[[profiles]]
name = "low-memory"
share = 0.5
device_memory_gb = 0.25
hardware_concurrency = 4
cached_share = 0.0
download_mbit_s = 50
gpu_decode_tok_s = 0
gpu_prefill_tok_s = 0
cpu_decode_tok_s = 10
cpu_prefill_tok_s = 20
"#;

#[tokio::test]
async fn both_passes_run_the_same_workload_and_the_report_matches_the_ledger() {
    let data = scratch_dir("simulate");
    let server = Server::start(&["--admin-key", ADMIN, "--data-dir", data.to_str().unwrap()]);
    admin(
        &server.base,
        &["tiers", "create", "sim", "--set", "ttft_target_ms=2000"],
    );
    admin(
        &server.base,
        &["tenants", "create", "--id", "web", "--tier", "sim"],
    );
    let key = admin(&server.base, &["keys", "create", "web"])["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let profiles = data.join("profiles.toml");
    std::fs::write(&profiles, PROFILES).unwrap();
    let database = format!("sqlite://{}", data.join("tandem.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["simulate-clients", "--url", &server.base, "--api-key", &key])
        .args(["--database", &database, "--tenant", "web"])
        .args(["--sessions", "6", "--window", "1", "--max-turns", "2"])
        .args(["--think", "0.5", "--seed", "5"])
        .arg("--profiles")
        .arg(&profiles)
        .arg("--trace")
        .arg(data.join("trace.jsonl"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let row = |label: &str| -> Vec<String> {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {label} |")))
            .unwrap_or_else(|| panic!("no {label} row in\n{stdout}"));
        line.split('|').map(|c| c.trim().to_owned()).collect()
    };
    let (baseline, hybrid) = (row("server only"), row("hybrid"));
    let requests: usize = baseline[2].parse().unwrap();
    assert!(requests >= 6, "{stdout}");
    assert_eq!(hybrid[2], baseline[2], "{stdout}");
    assert_eq!(baseline[3], "0.0%");

    // The ledger holds both passes: every request once, the hybrid's browser share as printed.
    let store = Store::open(&database).await.unwrap();
    let filter = UsageFilter {
        tenant: Some("web".into()),
        ..UsageFilter::default()
    };
    let records = store.usage_records(&filter, 10_000).await.unwrap();
    assert_eq!(records.len(), 2 * requests);
    assert!(records.iter().all(|r| r.status == "completed"));
    let browser: Vec<_> = records.iter().filter(|r| r.route == "browser").collect();
    let server_rows = records.len() - browser.len();
    assert!(!browser.is_empty() && server_rows > requests, "{stdout}");
    let share = format!("{:.1}%", browser.len() as f64 * 100.0 / requests as f64);
    assert_eq!(hybrid[3], share, "{stdout}");
    // Browser rows: free, with the server's price as savings, on WebGPU, with the time the
    // profile's engine takes.
    for r in &browser {
        assert_eq!(r.cost_usd, 0.0);
        assert_eq!(r.upstream.as_deref(), Some("browser-webgpu"));
        assert!(r.ttft_ms.is_some() && r.completion_tokens > 0);
    }
    // Every visitor of the first kind ran in its browser once its engine was loaded; the second
    // kind never did.
    let per_profile = |name: &str| -> Vec<String> {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap()
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let low = per_profile("low-memory");
    assert_eq!(low[4], "0", "{stdout}");
    assert_eq!(low[5], "0", "{stdout}");
    // The trace: a line per request of the hybrid pass, with `/v1/route`'s answer and where the
    // request ran, which agrees with the answer.
    let trace: Vec<Value> = std::fs::read_to_string(data.join("trace.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(trace.len(), requests);
    let in_browser = trace
        .iter()
        .filter(|t| t["outcome"].as_str().unwrap().starts_with("Browser"))
        .count();
    assert_eq!(in_browser, browser.len());
    for t in &trace {
        let routed = t["route"]["route"].as_str().unwrap();
        let ran = t["outcome"].as_str().unwrap();
        assert_eq!(routed == "browser", ran.starts_with("Browser"), "{t}");
        assert!(t["ttft_ms"].as_f64().unwrap() > 0.0, "{t}");
        if t["profile"] == "low-memory" {
            assert!(
                t["route"]["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r == "no_runnable_variant"),
                "{t}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&data);
}
