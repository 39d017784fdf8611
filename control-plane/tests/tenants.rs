//! Tenants, keys, limits, budgets and the usage ledger in-process: the HTTP app (driven with
//! `oneshot`) over scripted fake upstreams. Every case runs twice: on SQLite in a scratch folder
//! with limits and budgets in the process, and on a real PostgreSQL server with them in a real
//! Redis server.

#[path = "common/fake.rs"]
mod fake;
#[path = "common/services.rs"]
mod services;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use control_plane::accounting::Accounting;
use control_plane::gateway::cost::CostModel;
use control_plane::gateway::{Gateway, Policy, RetryConfig, RoutingConfig, UpstreamHandle};
use control_plane::metrics::MetricsNames;
use control_plane::response_cache::ResponseCache;
use control_plane::state::{AppState, Loaded};
use control_plane::store::ledger::{UsageFilter, UsageRecord};
use fake::{Behavior, FakeServer, handle, test_settings};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const ADMIN: &str = "admin-key-0123456789";

struct App {
    router: Router,
    acc: Arc<Accounting>,
    fake: FakeServer,
}

/// Where a case keeps its data.
#[derive(Clone, Copy, Debug)]
enum Backing {
    /// SQLite, limits and budgets in the process.
    Sqlite,
    /// PostgreSQL, limits and budgets in Redis.
    PostgresRedis,
}

/// A database (and Redis) of one case.
struct Place {
    db: String,
    redis: Option<services::Redis>,
    dir: Option<std::path::PathBuf>,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Place {
    async fn new(b: Backing) -> Place {
        match b {
            Backing::Sqlite => {
                let dir = std::env::temp_dir().join(format!(
                    "tandem-tenants-{}-{:016x}",
                    std::process::id(),
                    rand::random::<u64>()
                ));
                Place {
                    db: format!("sqlite://{}", dir.join("tandem.db").display()),
                    redis: None,
                    dir: Some(dir),
                }
            }
            Backing::PostgresRedis => Place {
                db: services::Postgres::shared().fresh_database().await,
                redis: Some(services::Redis::start()),
                dir: None,
            },
        }
    }

    fn redis(&self) -> Option<&str> {
        self.redis.as_ref().map(|r| r.url.as_str())
    }
}

/// Each case, on both backings.
macro_rules! on_both {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Backing::Sqlite).await
            })*
        }
        mod postgres_redis {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Backing::PostgresRedis).await
            })*
        }
    };
}

on_both!(
    an_open_server_records_every_request_once,
    keys_are_required_once_tenants_exist_and_revocation_takes_effect,
    per_minute_limits_answer_429_with_openais_headers_and_keep_tenants_apart,
    a_spent_budget_answers_insufficient_quota,
    allowed_models_and_browser_routing_follow_the_tier,
    browser_usage_reports_and_invoices_come_from_the_ledger,
    a_client_that_goes_away_is_recorded_as_cancelled,
    requests_left_in_flight_are_marked_interrupted_at_the_next_start,
    the_response_cache_replays_deterministic_answers_within_a_tenant,
    embeddings_are_keyed_limited_and_recorded_like_generations,
);

/// The app over one fake serving `m` at `price` USD per million output tokens.
async fn app_with(place: &Place, price: f64, behavior: Behavior) -> App {
    app_with_cache(place, price, behavior, false).await
}

/// The same, with a response cache if `cache`.
async fn app_with_cache(place: &Place, price: f64, behavior: Behavior, cache: bool) -> App {
    let fake = FakeServer::start(&["m"], behavior).await;
    let h = handle(
        "a",
        &fake,
        test_settings(CostModel {
            output_per_1m: price,
            ..CostModel::default()
        }),
    )
    .await;
    let (acc, _task, _) = Accounting::open(
        &place.db,
        place.redis(),
        "test-1".into(),
        Some(ADMIN.into()),
    )
    .await
    .unwrap();
    App {
        router: router(vec![h], Arc::clone(&acc), cache),
        acc,
        fake,
    }
}

fn router(handles: Vec<Arc<UpstreamHandle>>, acc: Arc<Accounting>, cache: bool) -> Router {
    let mut state = AppState::new(1 << 20, MetricsNames::Tandem).with_accounting(acc);
    if cache {
        state = state.with_response_cache(Arc::new(ResponseCache::new(
            1 << 20,
            Duration::from_secs(60),
        )));
    }
    let state = Arc::new(state);
    let gateway = Gateway::new(
        handles,
        RoutingConfig {
            policy: Policy::Balanced,
            model_policies: Default::default(),
            retry: RetryConfig {
                attempts: 1,
                backoff: Duration::from_millis(10),
            },
        },
        Arc::clone(&state.metrics),
    );
    let _ = state.loaded.set(Loaded {
        gateway: Arc::new(gateway),
        locals: Vec::new(),
    });
    control_plane::server::router(state, &[], None)
}

struct Answer {
    status: u16,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn send(
    app: &App,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn admin(app: &App, method: &str, path: &str, body: Option<Value>) -> Value {
    let a = send(app, method, path, Some(ADMIN), body).await;
    assert!(a.status < 300, "{method} {path}: {} {}", a.status, a.body);
    a.json()
}

fn chat(stream: bool) -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream,
           "max_tokens": 16})
}

/// A tier, a tenant on it and a key: returns the key.
async fn tenant_with_key(app: &App, tenant: &str, tier: Value) -> String {
    let tier_id = tier["id"].as_str().unwrap().to_owned();
    if send(
        app,
        "GET",
        &format!("/admin/v1/tiers/{tier_id}"),
        Some(ADMIN),
        None,
    )
    .await
    .status
        == 404
    {
        admin(app, "POST", "/admin/v1/tiers", Some(tier)).await;
    }
    admin(
        app,
        "POST",
        "/admin/v1/tenants",
        Some(json!({"id": tenant, "name": tenant.to_uppercase(), "tier": tier_id})),
    )
    .await;
    let k = admin(
        app,
        "POST",
        &format!("/admin/v1/tenants/{tenant}/keys"),
        Some(json!({"name": "ci"})),
    )
    .await;
    k["key"].as_str().unwrap().to_owned()
}

async fn records(app: &App) -> Vec<UsageRecord> {
    app.acc.ledger.flush().await;
    app.acc
        .store
        .usage_records(&UsageFilter::default(), 100_000)
        .await
        .unwrap()
}

async fn an_open_server_records_every_request_once(b: Backing) {
    let place = Place::new(b).await;
    let app = app_with(&place, 1.0, Behavior::Answer(vec!["Hel", "lo"])).await;
    let a = send(
        &app,
        "POST",
        "/v1/chat/completions",
        None,
        Some(chat(false)),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let id = a.header("x-request-id").unwrap().to_owned();
    // The record is committed before the answer is complete.
    let r = app.acc.store.usage_record(&id).await.unwrap().unwrap();
    assert_eq!(r.status, "completed");
    assert_eq!((r.prompt_tokens, r.completion_tokens), (7, 2));
    assert_eq!(r.upstream.as_deref(), Some("a"));
    assert_eq!(r.tenant_id, None);
    assert!(r.ttft_ms.is_some() && r.latency_ms.is_some());
    let s = send(&app, "POST", "/v1/chat/completions", None, Some(chat(true))).await;
    assert_eq!(s.status, 200);
    assert!(s.body.contains("[DONE]"));
    let bad = send(
        &app,
        "POST",
        "/v1/chat/completions",
        None,
        Some(json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]})),
    )
    .await;
    assert_eq!(bad.status, 404);
    let garbage = send(&app, "POST", "/v1/completions", None, Some(json!([1]))).await;
    assert_eq!(garbage.status, 400);
    let all = records(&app).await;
    assert_eq!(all.len(), 4, "{all:#?}");
    let statuses: Vec<(&str, i32)> = all
        .iter()
        .map(|r| (r.status.as_str(), r.http_status))
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| s.0 == "completed").count(),
        2,
        "{statuses:?}"
    );
    assert!(statuses.contains(&("rejected", 404)) && statuses.contains(&("rejected", 400)));
    // Without tenants nobody's usage is anybody's to read.
    let usage = send(&app, "GET", "/v1/usage", None, None).await;
    assert_eq!(usage.status, 404, "{}", usage.body);
}

async fn keys_are_required_once_tenants_exist_and_revocation_takes_effect(b: Backing) {
    let place = Place::new(b).await;
    let app = app_with(&place, 1.0, Behavior::Answer(vec!["ok"])).await;
    // The admin API wants the admin key, never an API key.
    assert_eq!(
        send(&app, "GET", "/admin/v1/tiers", None, None)
            .await
            .status,
        401
    );
    assert_eq!(
        send(
            &app,
            "GET",
            "/admin/v1/tiers",
            Some("wrong-admin-key-xxxx"),
            None
        )
        .await
        .status,
        401
    );
    let key = tenant_with_key(
        &app,
        "acme",
        json!({"id": "free", "requests_per_minute": 100}),
    )
    .await;
    assert!(key.starts_with("tdm-"));
    assert_eq!(
        send(&app, "GET", "/admin/v1/tiers", Some(&key), None)
            .await
            .status,
        401
    );
    // Keys are stored hashed: the listing never shows one.
    let listed = admin(&app, "GET", "/admin/v1/tenants/acme/keys", None).await;
    assert!(!listed.to_string().contains(&key));
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);

    let missing = send(
        &app,
        "POST",
        "/v1/chat/completions",
        None,
        Some(chat(false)),
    )
    .await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json()["error"]["code"], "invalid_api_key");
    let mut wrong = key.clone();
    wrong.replace_range(wrong.len() - 3.., "AAA");
    let wrong = send(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(&wrong),
        Some(chat(false)),
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(
        send(&app, "GET", "/v1/models", None, None).await.status,
        401
    );

    let ok = send(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(&key),
        Some(chat(false)),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.header("x-ratelimit-limit-requests"), Some("100"));
    assert_eq!(ok.header("x-ratelimit-remaining-requests"), Some("99"));
    assert!(ok.header("x-ratelimit-reset-requests").is_some());
    let id = ok.header("x-request-id").unwrap().to_owned();
    let r = app.acc.store.usage_record(&id).await.unwrap().unwrap();
    assert_eq!(r.tenant_id.as_deref(), Some("acme"));
    let key_id = listed["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(r.key_id.as_deref(), Some(key_id.as_str()));

    admin(&app, "DELETE", &format!("/admin/v1/keys/{key_id}"), None).await;
    let revoked = send(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(&key),
        Some(chat(false)),
    )
    .await;
    assert_eq!(revoked.status, 401);
    // The key's last use was recorded with the ledger.
    records(&app).await;
    let listed = admin(&app, "GET", "/admin/v1/tenants/acme/keys", None).await;
    assert!(listed["data"][0]["last_used_at"].is_i64());
    assert!(listed["data"][0]["revoked_at"].is_i64());
    // Unauthorized attempts are in the ledger too.
    let all = records(&app).await;
    assert_eq!(all.iter().filter(|r| r.http_status == 401).count(), 3);
}

async fn per_minute_limits_answer_429_with_openais_headers_and_keep_tenants_apart(b: Backing) {
    let place = Place::new(b).await;
    let app = app_with(&place, 1.0, Behavior::Answer(vec!["ok"])).await;
    let a = tenant_with_key(&app, "a", json!({"id": "tiny", "requests_per_minute": 2})).await;
    let b = tenant_with_key(&app, "b", json!({"id": "tiny"})).await;
    for _ in 0..2 {
        let r = send(
            &app,
            "POST",
            "/v1/chat/completions",
            Some(&a),
            Some(chat(false)),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let limited = send(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(&a),
        Some(chat(false)),
    )
    .await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["error"]["code"], "rate_limit_exceeded");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert_eq!(limited.header("x-ratelimit-remaining-requests"), Some("0"));
    // Tenant b has its own allowance.
    let other = send(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(&b),
        Some(chat(false)),
    )
    .await;
    assert_eq!(other.status, 200);

    // Tokens per minute, per key: the estimate (prompt + max_tokens) is charged up front.
    tenant_with_key(&app, "c", json!({"id": "open"})).await;
    let k = admin(
        &app,
        "POST",
        "/admin/v1/tenants/c/keys",
        Some(json!({"tokens_per_minute": 40})),
    )
    .await;
    let k = k["key"].as_str().unwrap();
    let first = send(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(k),
        Some(chat(false)),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.header("x-ratelimit-limit-tokens"), Some("40"));
    // The real count (7 + 1) replaced the estimate, so a second request of that size fits
    // but a third does not.
    let second = send(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(k),
        Some(chat(false)),
    )
    .await;
    assert_eq!(second.status, 200, "{}", second.body);
    let big =
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 39});
    let third = send(&app, "POST", "/v1/chat/completions", Some(k), Some(big)).await;
    assert_eq!(third.status, 429, "{}", third.body);
    assert_eq!(third.json()["error"]["type"], "tokens");
    let all = records(&app).await;
    assert_eq!(all.iter().filter(|r| r.http_status == 429).count(), 2);
}

async fn a_spent_budget_answers_insufficient_quota(b: Backing) {
    // 0.01 USD per output token: each answer of one token costs 0.01 USD; a reservation of
    // 16 tokens costs 0.16 USD.
    let place = Place::new(b).await;
    let app = app_with(&place, 10_000.0, Behavior::Answer(vec!["ok"])).await;
    let key = tenant_with_key(
        &app,
        "t",
        json!({"id": "paid", "monthly_budget_usd": 0.025}),
    )
    .await;
    let mut ok = 0;
    for _ in 0..5 {
        let r = send(
            &app,
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat(false)),
        )
        .await;
        match r.status {
            200 => ok += 1,
            429 => {
                assert_eq!(r.json()["error"]["code"], "insufficient_quota");
                assert_eq!(r.json()["error"]["type"], "insufficient_quota");
            }
            s => panic!("{s}: {}", r.body),
        }
    }
    // 0.01 USD each: three fit under 0.025 (the third starts at 0.02 spent).
    assert_eq!(ok, 3);
    let t = admin(&app, "GET", "/admin/v1/tenants/t", None).await;
    assert!(
        (t["month_spent_usd"].as_f64().unwrap() - 0.03).abs() < 1e-9,
        "{t}"
    );
    assert_eq!(t["month_reserved_usd"].as_f64().unwrap(), 0.0);
    // Raising the budget lets the tenant in again.
    admin(
        &app,
        "PATCH",
        "/admin/v1/tenants/t",
        Some(json!({"overrides": {"monthly_budget_usd": 1.0}})),
    )
    .await;
    let r = send(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(&key),
        Some(chat(false)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn allowed_models_and_browser_routing_follow_the_tier(b: Backing) {
    let place = Place::new(b).await;
    let app = app_with(&place, 1.0, Behavior::Answer(vec!["ok"])).await;
    let key = tenant_with_key(
        &app,
        "t",
        json!({"id": "narrow", "allowed_models": ["other"], "browser_routing": false}),
    )
    .await;
    let r = send(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(&key),
        Some(chat(false)),
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("do not have access"));
    admin(
        &app,
        "PATCH",
        "/admin/v1/tiers/narrow",
        Some(json!({"allowed_models": null})),
    )
    .await;
    let r = send(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(&key),
        Some(chat(false)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let route = send(
        &app,
        "POST",
        "/v1/route",
        Some(&key),
        Some(json!({"model": "m", "prompt_tokens": 10, "max_tokens": 10, "capabilities": {}})),
    )
    .await;
    assert_eq!(route.status, 200, "{}", route.body);
    assert_eq!(route.json()["route"], "server");
    assert_eq!(route.json()["reasons"][0], "tier_disallows_browser");
    // A tier with tenants cannot be deleted; an unused one can.
    assert_eq!(
        send(&app, "DELETE", "/admin/v1/tiers/narrow", Some(ADMIN), None)
            .await
            .status,
        409
    );
    admin(
        &app,
        "POST",
        "/admin/v1/tiers",
        Some(json!({"id": "spare"})),
    )
    .await;
    admin(&app, "DELETE", "/admin/v1/tiers/spare", None).await;
    let bad = send(
        &app,
        "POST",
        "/admin/v1/tiers",
        Some(ADMIN),
        Some(json!({"id": "x", "rpm": 3})),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    // The first-token target of `balanced`: kept as given, bounded.
    let tier = admin(
        &app,
        "POST",
        "/admin/v1/tiers",
        Some(json!({"id": "patient", "policy": "balanced", "ttft_target_ms": 3000})),
    )
    .await;
    assert_eq!(tier["ttft_target_ms"], 3000, "{tier}");
    let bad = send(
        &app,
        "PATCH",
        "/admin/v1/tiers/patient",
        Some(ADMIN),
        Some(json!({"ttft_target_ms": 3_600_000})),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("ttft_target_ms"), "{}", bad.body);
}

async fn browser_usage_reports_and_invoices_come_from_the_ledger(b: Backing) {
    let place = Place::new(b).await;
    let app = app_with(&place, 2.0, Behavior::Answer(vec!["a", "b", "c"])).await;
    let key = tenant_with_key(&app, "shop", json!({"id": "pro"})).await;
    let other = tenant_with_key(&app, "rival", json!({"id": "pro"})).await;
    for _ in 0..2 {
        let r = send(
            &app,
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat(false)),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let r = send(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(&other),
        Some(chat(false)),
    )
    .await;
    assert_eq!(r.status, 200);
    let report = json!({"model": "m", "prompt_tokens": 100, "completion_tokens": 500_000,
                        "route": "browser", "path": "webgpu", "duration_ms": 1200});
    let b = send(
        &app,
        "POST",
        "/v1/usage/browser",
        Some(&key),
        Some(report.clone()),
    )
    .await;
    assert_eq!(b.status, 200, "{}", b.body);
    // 500k output tokens at 2 USD per million.
    assert!((b.json()["savings_usd"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    assert_eq!(
        send(&app, "POST", "/v1/usage/browser", None, Some(report))
            .await
            .status,
        401
    );
    let silly = json!({"model": "m", "prompt_tokens": 1, "completion_tokens": 1e12});
    assert_eq!(
        send(&app, "POST", "/v1/usage/browser", Some(&key), Some(silly))
            .await
            .status,
        400
    );
    records(&app).await;

    let by_route = admin(
        &app,
        "GET",
        "/admin/v1/usage?tenant=shop&group_by=route",
        None,
    )
    .await;
    let groups = by_route["data"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{by_route}");
    let server = groups.iter().find(|g| g["group"] == "server").unwrap();
    assert_eq!(server["requests"], 2);
    assert_eq!(server["completion_tokens"], 6);
    let browser = groups.iter().find(|g| g["group"] == "browser").unwrap();
    assert_eq!(browser["completion_tokens"], 500_000);

    // Each tenant reads its own usage with its key, whatever tenant the query names.
    let own = send(
        &app,
        "GET",
        "/v1/usage?group_by=route&tenant=rival",
        Some(&key),
        None,
    )
    .await;
    assert_eq!(own.status, 200, "{}", own.body);
    let own = own.json();
    assert_eq!(own["tenant"], "shop");
    let mine: i64 = own["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["requests"].as_i64().unwrap())
        .sum();
    assert_eq!(mine, 3, "{own}");
    let theirs = send(&app, "GET", "/v1/usage?format=csv", Some(&other), None).await;
    assert_eq!(theirs.status, 200);
    let lines: Vec<&str> = theirs.body.lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[1].contains(",1,0,7,3,"), "{lines:?}");
    assert_eq!(send(&app, "GET", "/v1/usage", None, None).await.status, 401);

    let csv = send(
        &app,
        "GET",
        "/admin/v1/usage?group_by=tenant&format=csv",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let lines: Vec<&str> = csv.body.lines().collect();
    assert!(lines[0].starts_with("group,requests,"));
    assert!(
        lines.iter().any(|l| l.starts_with("rival,1,0,7,3,")),
        "{lines:?}"
    );

    let period = {
        let d = admin(
            &app,
            "GET",
            "/admin/v1/usage?tenant=shop&group_by=day",
            None,
        )
        .await;
        d["data"][0]["group"].as_str().unwrap()[..7].to_owned()
    };
    let inv = admin(
        &app,
        "GET",
        &format!("/admin/v1/invoices/shop/{period}"),
        None,
    )
    .await;
    assert_eq!(inv["lines"][0]["model"], "m");
    assert_eq!(inv["lines"][0]["requests"], 2);
    assert!(
        (inv["total_usd"].as_f64().unwrap() - 12e-6).abs() < 1e-12,
        "{inv}"
    );
    assert_eq!(inv["browser_requests"], 1);
    assert!((inv["savings_usd"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    let html = send(
        &app,
        "GET",
        &format!("/admin/v1/invoices/shop/{period}?format=html"),
        Some(ADMIN),
        None,
    )
    .await;
    assert!(html.body.contains("<h1>Invoice") && html.body.contains("SHOP"));
    assert_eq!(
        send(
            &app,
            "GET",
            "/admin/v1/invoices/nobody/2026-01",
            Some(ADMIN),
            None
        )
        .await
        .status,
        404
    );
}

async fn a_client_that_goes_away_is_recorded_as_cancelled(b: Backing) {
    let place = Place::new(b).await;
    let app = app_with(&place, 1.0, Behavior::Hang).await;
    let req = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(chat(true).to_string()))
        .unwrap();
    // The upstream never answers: the first-token timeout fails the request (a record), and a
    // client giving up earlier leaves a record too.
    let fut = app.router.clone().oneshot(req);
    let _ = tokio::time::timeout(Duration::from_millis(200), fut).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let all = records(&app).await;
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0].status, "cancelled");
    assert_eq!(all[0].http_status, 499);

    let place2 = Place::new(b).await;
    let app2 = app_with(&place2, 1.0, Behavior::BreakAfter(vec!["a", "b"])).await;
    let req = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(chat(true).to_string()))
        .unwrap();
    let resp = app2.router.clone().oneshot(req).await.unwrap();
    let mut body = resp.into_body().into_data_stream();
    let _first = body.next().await;
    drop(body);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let all = records(&app2).await;
    assert_eq!(all.len(), 1);
    assert!(
        ["cancelled", "failed"].contains(&all[0].status.as_str()),
        "{all:#?}"
    );
}

async fn requests_left_in_flight_are_marked_interrupted_at_the_next_start(b: Backing) {
    let place = Place::new(b).await;
    let app = app_with(&place, 1.0, Behavior::Hang).await;
    let req = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(chat(false).to_string()))
        .unwrap();
    let pending = app.router.clone().oneshot(req);
    let task = tokio::spawn(pending);
    tokio::time::sleep(Duration::from_millis(200)).await;
    records(&app).await;
    // Killed: the request never ends (its task is forgotten, not dropped).
    std::mem::forget(task);
    // The same instance starts again over the same database.
    let (_acc, _task, interrupted) = Accounting::open(&place.db, None, "test-1".into(), None)
        .await
        .unwrap();
    assert_eq!(interrupted, 1);
    // Another instance's rows are not its business.
    let (_acc, _task, n) = Accounting::open(&place.db, None, "test-2".into(), None)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

async fn the_response_cache_replays_deterministic_answers_within_a_tenant(b: Backing) {
    let place = Place::new(b).await;
    let app = app_with_cache(&place, 1.0, Behavior::Answer(vec!["Hel", "lo"]), true).await;
    let a = tenant_with_key(&app, "a", json!({"id": "t"})).await;
    let b = tenant_with_key(&app, "b", json!({"id": "t"})).await;
    let greedy = |stream: bool| {
        json!({"model": "m", "temperature": 0, "stream": stream,
               "messages": [{"role": "user", "content": "hi"}]})
    };
    let first = send(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(&a),
        Some(greedy(false)),
    )
    .await;
    assert_eq!(first.header("x-tandem-cache"), Some("miss"));
    assert_eq!(app.fake.hits(), 1);
    // The same request again, streamed this time: replayed, the upstream not asked.
    let again = send(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(&a),
        Some(greedy(true)),
    )
    .await;
    assert_eq!(again.header("x-tandem-cache"), Some("hit"));
    assert!(
        again.body.contains("\"content\":\"Hello\"") && again.body.contains("data: [DONE]"),
        "{}",
        again.body
    );
    assert_eq!(app.fake.hits(), 1);
    // Never across tenants.
    let other = send(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(&b),
        Some(greedy(false)),
    )
    .await;
    assert_eq!(other.header("x-tandem-cache"), Some("miss"));
    assert_eq!(app.fake.hits(), 2);
    assert_eq!(other.json()["choices"][0]["message"]["content"], "Hello");
    // Sampled requests are not cached.
    let sampled = json!({"model": "m", "temperature": 0.7,
                         "messages": [{"role": "user", "content": "hi"}]});
    let s = send(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(&a),
        Some(sampled),
    )
    .await;
    assert_eq!(s.header("x-tandem-cache"), None);
    // The hit is in the ledger at no cost.
    let id = again.header("x-request-id").unwrap().to_owned();
    records(&app).await;
    let r = app.acc.store.usage_record(&id).await.unwrap().unwrap();
    assert_eq!(r.upstream.as_deref(), Some("cache"));
    assert_eq!((r.cost_usd, r.cached_tokens), (0.0, 7));
    let metrics = send(&app, "GET", "/metrics", None, None).await;
    assert!(
        metrics.body.contains("tandem_response_cache_hits_total 1"),
        "{}",
        metrics.body
    );
}

async fn embeddings_are_keyed_limited_and_recorded_like_generations(b: Backing) {
    let place = Place::new(b).await;
    let app = app_with(&place, 1.0, Behavior::Answer(vec!["unused"])).await;
    let body = json!({"model": "m", "input": ["a", "b"]});
    let open = send(&app, "POST", "/v1/embeddings", None, Some(body.clone())).await;
    assert_eq!(open.status, 200, "{}", open.body);
    let id = open.header("x-request-id").unwrap().to_owned();
    let r = app.acc.store.usage_record(&id).await.unwrap().unwrap();
    assert_eq!(r.endpoint, "embeddings");
    assert_eq!(r.status, "completed");
    assert_eq!((r.prompt_tokens, r.completion_tokens), (5, 0));
    assert_eq!(r.upstream.as_deref(), Some("a"));

    let key = tenant_with_key(&app, "a", json!({"id": "one", "requests_per_minute": 1})).await;
    let refused = send(&app, "POST", "/v1/embeddings", None, Some(body.clone())).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    let ok = send(
        &app,
        "POST",
        "/v1/embeddings",
        Some(&key),
        Some(body.clone()),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let limited = send(&app, "POST", "/v1/embeddings", Some(&key), Some(body)).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.json()["error"]["code"], "rate_limit_exceeded");
    let id = ok.header("x-request-id").unwrap().to_owned();
    let r = app.acc.store.usage_record(&id).await.unwrap().unwrap();
    assert_eq!(r.tenant_id.as_deref(), Some("a"));
    assert_eq!((r.endpoint.as_str(), r.prompt_tokens), ("embeddings", 5));
    let all = records(&app).await;
    let embeddings: Vec<(&str, i32)> = all
        .iter()
        .filter(|r| r.endpoint == "embeddings")
        .map(|r| (r.status.as_str(), r.http_status))
        .collect();
    assert_eq!(embeddings.len(), 4, "{embeddings:?}");
    assert_eq!(embeddings.iter().filter(|s| s.0 == "completed").count(), 2);
}
