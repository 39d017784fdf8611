//! Tenants and the ledger end to end: real `tandem serve` processes (a pure gateway in front of
//! `tandem echo-upstream`) set up with `tandem admin`, a key used over HTTP, and `kill -9` under
//! load: every request a client saw complete is in the ledger exactly once, and what was in
//! flight is marked interrupted when the server starts again.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, echo, scratch_dir};
use control_plane::store::Store;
use control_plane::store::ledger::UsageFilter;
use serde_json::{Value, json};

const ADMIN: &str = "e2e-admin-key-0123456789";

/// Runs `tandem admin ARGS` against `base`; returns its JSON output.
fn admin(base: &str, args: &[&str]) -> Value {
    common::admin_cli(base, ADMIN, args)
}

fn serve(echo: &common::Echo, data: &std::path::Path) -> Server {
    Server::start_raw(
        &[
            "--upstream",
            &format!("echo={}", echo.url),
            "--admin-key",
            ADMIN,
            "--instance-id",
            "node-1",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    )
}

#[tokio::test]
async fn keys_from_the_command_line_and_a_complete_ledger_after_kill_9() {
    let echo = echo();
    let data = scratch_dir("ledger");
    let server = serve(&echo, &data);
    admin(
        &server.base,
        &[
            "tiers",
            "create",
            "pro",
            "--set",
            "requests_per_minute=100000",
        ],
    );
    admin(
        &server.base,
        &[
            "tenants", "create", "--id", "acme", "--tier", "pro", "--name", "Acme",
        ],
    );
    let created = admin(&server.base, &["keys", "create", "acme", "--name", "load"]);
    let key = created["key"].as_str().unwrap().to_owned();
    let listed = admin(&server.base, &["keys", "list", "acme"]);
    assert!(!listed.to_string().contains(&key));
    assert_eq!(admin(&server.base, &["upstreams"])["data"][0]["id"], "echo");

    // Without the key: OpenAI's 401.
    let (status, body) = server
        .post(
            "/v1/chat/completions",
            &json!({"model": "echo", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "invalid_api_key");

    // Load from 16 clients; the ids of the requests each saw complete are kept.
    let completed: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let client = server.client.clone();
        let url = server.url("/v1/chat/completions");
        let key = key.clone();
        let completed = Arc::clone(&completed);
        tasks.push(tokio::spawn(async move {
            loop {
                let body = json!({"model": "echo", "stream": i % 2 == 0,
                                  "messages": [{"role": "user", "content": "hi"}]});
                let Ok(resp) = client.post(&url).bearer_auth(&key).json(&body).send().await else {
                    return;
                };
                let id = resp
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let ok = resp.status().is_success();
                let Ok(text) = resp.text().await else { return };
                let whole = if i % 2 == 0 {
                    text.contains("data: [DONE]")
                } else {
                    text.contains("\"finish_reason\":\"stop\"")
                };
                if ok && whole {
                    completed.lock().unwrap().push(id.unwrap());
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    for t in tasks {
        let _ = t.await;
    }
    let completed = completed.lock().unwrap().clone();
    assert!(
        completed.len() > 50,
        "only {} requests completed",
        completed.len()
    );

    let db = control_plane::store::default_url(&data);
    let store = Store::open(&db).await.unwrap();
    let rows = store
        .usage_records(&UsageFilter::default(), 10_000_000)
        .await
        .unwrap();
    let by_id: std::collections::HashMap<&str, &control_plane::store::ledger::UsageRecord> =
        rows.iter().map(|r| (r.request_id.as_str(), r)).collect();
    assert_eq!(by_id.len(), rows.len());
    let distinct: HashSet<&String> = completed.iter().collect();
    assert_eq!(distinct.len(), completed.len());
    for id in &completed {
        let r = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("{id} completed but is not in the ledger"));
        assert_eq!(r.status, "completed", "{r:?}");
        assert_eq!(r.tenant_id.as_deref(), Some("acme"));
        assert_eq!((r.prompt_tokens, r.completion_tokens), (5, 2));
    }

    // Started again: what was in flight is now interrupted, nothing is left open.
    let again = serve(&echo, &data);
    assert!(
        again.log.lock().unwrap().contains("tandem: ledger in"),
        "{}",
        again.log.lock().unwrap()
    );
    let rows = store
        .usage_records(&UsageFilter::default(), 10_000_000)
        .await
        .unwrap();
    assert!(rows.iter().all(|r| r.status != "in_flight"));
    let usage = admin(
        &again.base,
        &["usage", "--tenant", "acme", "--group-by", "tenant"],
    );
    let requests = usage["data"][0]["requests"].as_i64().unwrap();
    assert!(requests >= completed.len() as i64);
    let csv = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["admin", "--url", &again.base, "--admin-key", ADMIN])
        .args(["usage", "--group-by", "route", "--format", "csv"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&csv.stdout).starts_with("group,requests,"));
    // A wrong admin key is refused by the command too.
    let refused = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args([
            "admin",
            "--url",
            &again.base,
            "--admin-key",
            "not-the-admin-key",
        ])
        .args(["tiers", "list"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let _ = std::fs::remove_dir_all(&data);
}
