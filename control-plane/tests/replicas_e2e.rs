//! Two `tandem serve` replicas sharing a real PostgreSQL database and a real Redis server in
//! front of `tandem echo-upstream`: a key created on one works on the other, they enforce one
//! per-minute limit between them, and 200 concurrent requests against a budget spend at most
//! the budget plus one request's reservation.

mod common;
#[path = "common/services.rs"]
mod services;

use common::{Server, echo, scratch_dir};
use control_plane::store::Store;
use control_plane::store::ledger::UsageFilter;
use serde_json::{Value, json};

const ADMIN: &str = "replica-admin-key-0123456789";

async fn admin(s: &Server, method: reqwest::Method, path: &str, body: Value) -> Value {
    let resp = s
        .client
        .request(method, s.url(&format!("/admin/v1/{path}")))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

/// Sends `n` concurrent chat requests with `key`, alternating between the replicas; returns
/// how many succeeded.
async fn burst(replicas: &[&Server], key: &str, n: usize) -> usize {
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = replicas[i % replicas.len()];
        let (client, url, key) = (
            s.client.clone(),
            s.url("/v1/chat/completions"),
            key.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"model": "echo", "max_tokens": 2,
                              "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap();
            let ok = r.status().is_success();
            let code = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            assert!(ok || code == 429, "{code}: {body}");
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }
    ok
}

#[tokio::test]
async fn two_replicas_share_keys_limits_and_one_budget() {
    let pg = services::Postgres::shared();
    let db = pg.fresh_database().await;
    let redis = services::Redis::start();
    let echo = echo();
    let dir = scratch_dir("replicas");
    let config = dir.join("tandem.toml");
    // 1,000 USD per million output tokens: the echo's 2 tokens cost 0.002 USD, and a request
    // with max_tokens 2 reserves as much.
    std::fs::write(
        &config,
        format!(
            "[[upstreams]]\nid = \"echo\"\nurl = \"{}\"\ncost = {{ output_per_1m = 1000.0 }}\n",
            echo.url
        ),
    )
    .unwrap();
    let start = |id: &str| {
        Server::start_raw(
            &[
                "--config",
                config.to_str().unwrap(),
                "--database",
                &db,
                "--redis",
                &redis.url,
                "--admin-key",
                ADMIN,
                "--instance-id",
                id,
            ],
            &[],
        )
    };
    let a = start("replica-a");
    let b = start("replica-b");
    use reqwest::Method;
    admin(
        &a,
        Method::POST,
        "tiers",
        json!({"id": "budget", "monthly_budget_usd": 0.1}),
    )
    .await;
    admin(
        &a,
        Method::POST,
        "tiers",
        json!({"id": "rpm", "requests_per_minute": 30}),
    )
    .await;
    admin(
        &a,
        Method::POST,
        "tenants",
        json!({"id": "spender", "tier": "budget"}),
    )
    .await;
    admin(
        &a,
        Method::POST,
        "tenants",
        json!({"id": "chatty", "tier": "rpm"}),
    )
    .await;
    let spender = admin(&a, Method::POST, "tenants/spender/keys", json!({})).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    // Created on replica a, used on replica b at once.
    let chatty = admin(&b, Method::POST, "tenants/chatty/keys", json!({})).await["key"]
        .as_str()
        .unwrap()
        .to_owned();

    // One per-minute limit across both replicas: 30 of 100 (one more may refill meanwhile).
    let ok = burst(&[&a, &b], &chatty, 100).await;
    eprintln!("per-minute limit of 30 over two replicas: {ok} of 100 passed");
    assert!(
        (30..=32).contains(&ok),
        "{ok} requests passed a limit of 30 per minute"
    );

    // One budget across both replicas: 200 at once against 50 requests' worth.
    let ok = burst(&[&a, &b], &spender, 200).await;
    assert!(
        (45..=50).contains(&ok),
        "{ok} requests passed a budget for 50"
    );
    // Whatever is left is spent by the next ones, never more.
    let mut more = 0;
    for _ in 0..5 {
        more += burst(&[&a, &b], &spender, 20).await;
    }
    let store = Store::open(&db).await.unwrap();
    // Both replicas' ledgers are written (each flushes within a moment).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let rows = store
        .usage_records(
            &UsageFilter {
                tenant: Some("spender".into()),
                ..UsageFilter::default()
            },
            100_000,
        )
        .await
        .unwrap();
    let spent: f64 = rows.iter().map(|r| r.cost_usd).sum();
    let completed = rows.iter().filter(|r| r.status == "completed").count();
    eprintln!(
        "budget of 0.1 USD over two replicas: {ok} of 200 concurrent passed, {more} later; {completed} completed, {spent:.4} USD spent"
    );
    assert_eq!(completed, ok + more);
    assert!(
        spent <= 0.1 + 0.002 + 1e-9,
        "spent {spent} USD of a 0.1 USD budget"
    );
    assert!(
        spent >= 0.1 - 1e-9,
        "only {spent} USD of the budget was used"
    );
    let instances: std::collections::HashSet<&str> =
        rows.iter().map(|r| r.instance.as_str()).collect();
    assert_eq!(instances.len(), 2, "both replicas served: {instances:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
