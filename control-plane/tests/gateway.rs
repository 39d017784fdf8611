//! The gateway in-process: its HTTP app (driven with `oneshot`) over scripted fake upstreams on
//! 127.0.0.1: routing decisions, breaker transitions, retries before the first token, error
//! events after it, pass-through of fields and tool calls, usage, timeouts, `/v1/route`.

#[path = "common/fake.rs"]
mod fake;

use control_plane::gateway::Policy;
use control_plane::gateway::cost::CostModel;
use fake::{Behavior, FakeServer, app, call, handle, test_settings};
use serde_json::{Value, json};

fn chat(stream: bool) -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream,
           "stream_options": {"include_usage": true}})
}

/// The `data:` payloads of an SSE body.
fn events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(str::to_owned)
        })
        .collect()
}

fn stream_text(evs: &[String]) -> String {
    evs.iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// Two fakes serving `m`, behind a gateway with `policy`: (a, b, the app). `a` costs
/// `price_a` per million output tokens, `b` `price_b`.
async fn pair(
    a: Behavior,
    price_a: f64,
    b: Behavior,
    price_b: f64,
    policy: Policy,
) -> (FakeServer, FakeServer, axum::Router) {
    let fa = FakeServer::start(&["m"], a).await;
    let fb = FakeServer::start(&["m"], b).await;
    let (router, _) = app(
        vec![
            handle("a", &fa, test_settings(price(price_a))).await,
            handle("b", &fb, test_settings(price(price_b))).await,
        ],
        policy,
    );
    (fa, fb, router)
}

fn price(out: f64) -> CostModel {
    CostModel {
        output_per_1m: out,
        ..CostModel::default()
    }
}

#[tokio::test]
async fn answers_stream_and_whole_with_usage_through_the_gateway() {
    let a = FakeServer::start(&["m"], Behavior::Answer(vec!["Hel", "lo"])).await;
    let (app, _) = app(
        vec![handle("a", &a, test_settings(price(1.0))).await],
        Policy::Balanced,
    );
    let (s, body) = call(&app, "POST", "/v1/chat/completions", Some(chat(false))).await;
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 7);
    assert_eq!(v["usage"]["completion_tokens"], 2);
    assert_eq!(v["model"], "m");
    // A whole request goes whole; the upstream saw the forwarded headers.
    let sent = a.fake.last_body.lock().unwrap().clone();
    assert_eq!(sent["stream"], false);
    let headers = a.fake.last_headers.lock().unwrap().clone();
    assert!(headers.contains(&("authorization".into(), "Bearer secret".into())));
    assert!(headers.contains(&("x-llm-d-inference-objective".into(), "interactive".into())));

    let mut streamed = chat(true);
    streamed["stream_options"]["include_usage"] = json!(false);
    let (s, body) = call(&app, "POST", "/v1/chat/completions", Some(streamed)).await;
    assert_eq!(s, 200);
    // A streamed request is streamed with usage, whatever the client asked.
    let sent = a.fake.last_body.lock().unwrap().clone();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true);
    let evs = events(&body);
    assert_eq!(stream_text(&evs), "Hello");
    assert!(
        !body.contains("\"usage\":{"),
        "no usage chunk unless asked: {body}"
    );
    let (s, body) = call(&app, "POST", "/v1/chat/completions", Some(chat(true))).await;
    assert_eq!(s, 200);
    let evs = events(&body);
    assert_eq!(evs.last().unwrap(), "[DONE]");
    assert_eq!(stream_text(&evs), "Hello");
    let first: Value = serde_json::from_str(&evs[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let usage: Value = serde_json::from_str(&evs[evs.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["total_tokens"], 9);
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn unknown_fields_pass_through_and_tool_calls_come_back() {
    let a = FakeServer::start(&["m"], Behavior::ToolCalls).await;
    let (app, _) = app(
        vec![handle("a", &a, test_settings(price(1.0))).await],
        Policy::Balanced,
    );
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c0", "type": "function", "function": {"name": "x", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c0", "content": "sunny"}],
        "tools": tools, "tool_choice": "auto", "response_format": {"type": "json_object"}, "vendor_x": {"k": [1]}});
    let (s, text) = call(&app, "POST", "/v1/chat/completions", Some(body)).await;
    assert_eq!(s, 200, "{text}");
    let sent = a.fake.last_body.lock().unwrap().clone();
    assert_eq!(sent["tools"], tools);
    assert_eq!(sent["tool_choice"], "auto");
    assert_eq!(sent["response_format"]["type"], "json_object");
    assert_eq!(sent["vendor_x"]["k"][0], 1);
    assert_eq!(sent["messages"][2]["tool_call_id"], "c0");
    assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], "c0");
    let v: Value = serde_json::from_str(&text).unwrap();
    let msg = &v["choices"][0]["message"];
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(msg["tool_calls"][0]["id"], "call_1");
    assert_eq!(
        msg["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Oslo\"}"
    );
    assert!(msg["tool_calls"][0].get("index").is_none());
}

#[tokio::test]
async fn cheapest_and_fastest_pick_by_cost_and_measured_speed() {
    let a = FakeServer::start(&["m"], Behavior::Answer(vec!["a"])).await;
    let b = FakeServer::start(&["m"], Behavior::Answer(vec!["b"])).await;
    let ha = handle("a", &a, test_settings(price(10.0))).await;
    let hb = handle("b", &b, test_settings(price(0.1))).await;
    let (app, _) = app(vec![ha.clone(), hb.clone()], Policy::Cheapest);
    for _ in 0..5 {
        let (s, _) = call(&app, "POST", "/v1/chat/completions", Some(chat(false))).await;
        assert_eq!(s, 200);
    }
    assert_eq!(
        (a.hits(), b.hits()),
        (0, 5),
        "cheapest goes to the cheaper upstream"
    );

    // Fastest: b measured slow, a fast.
    ha.stats.observe_ttft(std::time::Duration::from_millis(5));
    for _ in 0..10 {
        hb.stats.observe_ttft(std::time::Duration::from_secs(3));
    }
    let (app, _) = fake::app(vec![ha, hb], Policy::Fastest);
    for _ in 0..5 {
        call(&app, "POST", "/v1/chat/completions", Some(chat(false))).await;
    }
    assert_eq!(a.hits(), 5, "fastest goes to the faster upstream");
}

#[tokio::test]
async fn equal_upstreams_share_the_load() {
    let (a, b, app) = pair(
        Behavior::Answer(vec!["a"]),
        1.0,
        Behavior::Answer(vec!["b"]),
        1.0,
        Policy::Balanced,
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            call(&app, "POST", "/v1/chat/completions", Some(chat(false)))
                .await
                .0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert!(
        a.hits() >= 8 && b.hits() >= 8,
        "{} / {}",
        a.hits(),
        b.hits()
    );
    let (_, metrics) = call(&app, "GET", "/metrics", None).await;
    assert!(metrics.contains("tandem_upstream_requests_total{upstream=\"a\",outcome=\"ok\"}"));
    assert!(metrics.contains("tandem_upstream_breaker_state{upstream=\"a\"} 0"));
}

#[tokio::test]
async fn failures_before_the_first_token_move_to_the_next_upstream_and_open_the_breaker() {
    let bad = FakeServer::start(&["m"], Behavior::Status(500)).await;
    let good = FakeServer::start(&["m"], Behavior::Answer(vec!["ok"])).await;
    bad.then(Behavior::CloseBeforeFirst)
        .then(Behavior::Status(503));
    let hb = handle("bad", &bad, test_settings(price(0.0))).await;
    let hg = handle("good", &good, test_settings(price(5.0))).await;
    // Cheapest prefers the failing one until its breaker opens.
    let (app, _) = app(vec![hb.clone(), hg], Policy::Cheapest);
    for i in 0..6 {
        let (s, body) = call(&app, "POST", "/v1/chat/completions", Some(chat(true))).await;
        assert_eq!(s, 200, "request {i}: {body}");
        assert_eq!(stream_text(&events(&body)), "ok", "request {i}");
    }
    assert_eq!(bad.hits(), 3, "the breaker opened after three failures");
    let (_, metrics) = call(&app, "GET", "/metrics", None).await;
    assert!(
        metrics.contains("tandem_upstream_breaker_state{upstream=\"bad\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("outcome=\"server_error\""));
    // After the cool-down a trial goes through; success closes the breaker.
    bad.set_default(Behavior::Answer(vec!["back"]));
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    let (_, body) = call(&app, "POST", "/v1/chat/completions", Some(chat(true))).await;
    assert_eq!(stream_text(&events(&body)), "back");
    assert_eq!(hb.breaker.state().name(), "closed");
}

#[tokio::test]
async fn a_failure_after_the_first_token_ends_the_stream_with_an_error_event() {
    let (_a, b, app) = pair(
        Behavior::BreakAfter(vec!["par", "tial"]),
        0.0,
        Behavior::Answer(vec!["never"]),
        9.0,
        Policy::Cheapest,
    )
    .await;
    let (s, body) = call(&app, "POST", "/v1/chat/completions", Some(chat(true))).await;
    assert_eq!(s, 200);
    let evs = events(&body);
    assert_eq!(stream_text(&evs), "partial");
    assert_eq!(evs.last().unwrap(), "[DONE]");
    let err: Value = serde_json::from_str(&evs[evs.len() - 2]).unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("broke off"),
        "{err}"
    );
    assert_eq!(b.hits(), 0, "no retry after the first token");
    // Not streamed: the error comes as an error response.
    let (s, body) = call(&app, "POST", "/v1/chat/completions", Some(chat(false))).await;
    assert_eq!(s, 502, "{body}");
}

#[tokio::test]
async fn client_errors_pass_through_and_429_tries_another() {
    let a = FakeServer::start(&["m"], Behavior::Status(400)).await;
    let b = FakeServer::start(&["m"], Behavior::Answer(vec!["b"])).await;
    let ha = handle("a", &a, test_settings(price(0.0))).await;
    let (app, _) = app(
        vec![ha.clone(), handle("b", &b, test_settings(price(9.0))).await],
        Policy::Cheapest,
    );
    for _ in 0..4 {
        let (s, body) = call(&app, "POST", "/v1/chat/completions", Some(chat(false))).await;
        assert_eq!(s, 400);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["message"], "fake says 400");
        assert_eq!(v["error"]["type"], "fake_error");
        assert_eq!(v["error"]["param"], "temperature");
        assert_eq!(v["error"]["code"], "fake_code");
    }
    assert_eq!(
        ha.breaker.state().name(),
        "closed",
        "client errors never count"
    );
    assert_eq!(b.hits(), 0);
    a.set_default(Behavior::Status(429));
    let (s, body) = call(&app, "POST", "/v1/chat/completions", Some(chat(false))).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(b.hits(), 1);
    assert_eq!(
        ha.breaker.state().name(),
        "closed",
        "429 is backpressure, not a failure"
    );
}

#[tokio::test]
async fn a_silent_upstream_times_out_and_the_next_one_answers() {
    let (_a, b, app) = pair(
        Behavior::Hang,
        0.0,
        Behavior::Answer(vec!["b"]),
        9.0,
        Policy::Cheapest,
    )
    .await;
    let t = std::time::Instant::now();
    let (s, body) = call(&app, "POST", "/v1/chat/completions", Some(chat(false))).await;
    assert_eq!(s, 200, "{body}");
    assert!(t.elapsed() >= std::time::Duration::from_millis(700));
    // Every upstream silent: 504.
    b.set_default(Behavior::Hang);
    let (s, body) = call(&app, "POST", "/v1/chat/completions", Some(chat(false))).await;
    assert!(s == 504 || s == 503, "{s} {body}");
}

#[tokio::test]
async fn models_unknown_names_and_route_answers() {
    let a = FakeServer::start(&["m", "n"], Behavior::Answer(vec!["a"])).await;
    let b = FakeServer::start(&["m"], Behavior::Answer(vec!["b"])).await;
    let (app, _) = app(
        vec![
            handle("a", &a, test_settings(price(1.0))).await,
            handle("b", &b, test_settings(price(1.0))).await,
        ],
        Policy::Balanced,
    );
    let (s, body) = call(&app, "GET", "/v1/models", None).await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["m", "n"]);
    assert_eq!(v["data"][0]["upstreams"], json!(["a", "b"]));
    let (s, body) = call(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]})),
    )
    .await;
    assert_eq!(s, 404, "{body}");
    // No browser variants: the server.
    let (s, body) = call(
        &app,
        "POST",
        "/v1/route",
        Some(json!({"model": "m", "prompt_tokens": 10, "max_tokens": 20, "capabilities": {"webgpu": null, "wasm_simd": true}})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["route"], "server");
    assert!(v["estimates"]["server"]["ttft_ms"].as_f64().unwrap() > 0.0);
    let (_, metrics) = call(&app, "GET", "/metrics", None).await;
    assert!(
        metrics.contains("tandem_route_decisions_total{route=\"server\""),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_shared_long_prefix_keeps_reaching_the_same_upstream() {
    let (a, b, app) = pair(
        Behavior::Answer(vec!["a"]),
        1.0,
        Behavior::Answer(vec!["b"]),
        1.0,
        Policy::Balanced,
    )
    .await;
    let system = "You are a careful assistant. ".repeat(60);
    for i in 0..8 {
        let body = json!({"model": "m", "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": format!("question {i}")}]});
        let (s, _) = call(&app, "POST", "/v1/chat/completions", Some(body)).await;
        assert_eq!(s, 200);
    }
    assert!(
        (a.hits(), b.hits()) == (8, 0) || (a.hits(), b.hits()) == (0, 8),
        "{} / {}",
        a.hits(),
        b.hits()
    );
    let (_, metrics) = call(&app, "GET", "/metrics", None).await;
    assert!(
        metrics.contains("reason=\"prefix_affinity\"} 8"),
        "{metrics}"
    );
}

#[tokio::test]
async fn fill_in_the_middle_reaches_a_remote_upstream_as_a_suffix() {
    let a = FakeServer::start(&["m"], Behavior::Answer(vec!["x + y"])).await;
    let (app, _) = app(
        vec![handle("a", &a, test_settings(price(1.0))).await],
        Policy::Balanced,
    );
    let body = json!({"model": "m", "prompt": "def add(x, y):\n    return ", "suffix": "\n"});
    let (s, text) = call(&app, "POST", "/v1/completions", Some(body)).await;
    assert_eq!(s, 200, "{text}");
    let sent = a.fake.last_body.lock().unwrap().clone();
    assert_eq!(sent["suffix"], "\n");
    assert_eq!(sent["prompt"], "def add(x, y):\n    return ");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["choices"][0]["text"], "x + y");
    // llama.cpp's /infill: the typed text joins the prefix, and the answer is in its shape.
    let body = json!({"model": "m", "input_prefix": "def add(x, y):\n    ", "prompt": "return ",
                      "input_suffix": "\n", "n_predict": 8, "n_indent": 4});
    let (s, text) = call(&app, "POST", "/infill", Some(body)).await;
    assert_eq!(s, 200, "{text}");
    let sent = a.fake.last_body.lock().unwrap().clone();
    assert_eq!(sent["prompt"], "def add(x, y):\n    return ");
    assert_eq!(sent["suffix"], "\n");
    assert_eq!(sent["max_tokens"], 8);
    assert!(sent.get("n_indent").is_none() && sent.get("input_extra").is_none());
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["content"], "x + y");
    assert_eq!(v["stop"], true);
}

#[tokio::test]
async fn embeddings_reach_remote_upstreams_with_failover_and_the_clients_format() {
    // Embeddings cost their input tokens: `a` is the cheaper.
    let input_price = |usd: f64| CostModel {
        input_per_1m: usd,
        ..CostModel::default()
    };
    let a = FakeServer::start(&["m"], Behavior::Answer(vec![])).await;
    let b = FakeServer::start(&["m"], Behavior::Answer(vec![])).await;
    let (app, _) = app(
        vec![
            handle("a", &a, test_settings(input_price(1.0))).await,
            handle("b", &b, test_settings(input_price(2.0))).await,
        ],
        Policy::Cheapest,
    );
    // The cheaper one fails with a 503: the other answers.
    a.then(Behavior::Status(503));
    let body = json!({"model": "m", "input": ["a", "bb"], "encoding_format": "base64",
                      "dimensions": 2, "user": "u1"});
    let (s, text) = call(&app, "POST", "/v1/embeddings", Some(body)).await;
    assert_eq!(s, 200, "{text}");
    assert_eq!((a.hits(), b.hits()), (1, 1));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "m");
    assert_eq!(v["usage"]["prompt_tokens"], 5);
    assert_eq!(v["usage"]["total_tokens"], 5);
    // In input order (the fake answers in reverse), as base64 of little-endian floats.
    let decode = |s: &str| -> Vec<f32> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    for i in 0..2 {
        assert_eq!(v["data"][i]["index"], i);
        assert_eq!(v["data"][i]["object"], "embedding");
        let got = decode(v["data"][i]["embedding"].as_str().unwrap());
        assert_eq!(got, vec![i as f32 + 1.0, 0.5]);
    }
    // The upstream is asked for floats, with the client's other fields and its user as the
    // fairness id.
    for f in [&a, &b] {
        let sent = f.fake.last_body.lock().unwrap().clone();
        assert_eq!(sent["encoding_format"], "float");
        assert_eq!(sent["dimensions"], 2);
        assert_eq!(sent["input"], json!(["a", "bb"]));
        let headers = f.fake.last_headers.lock().unwrap().clone();
        assert!(headers.contains(&("x-llm-d-inference-fairness-id".into(), "u1".into())));
    }

    // Floats by default; a client error from the upstream comes back as it was.
    let (s, text) = call(
        &app,
        "POST",
        "/v1/embeddings",
        Some(json!({"model": "m", "input": [1, 2, 3]})),
    )
    .await;
    assert_eq!(s, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["embedding"], json!([1.0, 0.5]));
    a.then(Behavior::Status(400));
    let (s, text) = call(
        &app,
        "POST",
        "/v1/embeddings",
        Some(json!({"model": "m", "input": "x"})),
    )
    .await;
    assert_eq!(s, 400, "{text}");
    assert!(text.contains("fake says 400"), "{text}");

    // What no upstream sees: bad fields and unknown models.
    for (body, param) in [
        (json!({"model": "m", "input": []}), "input"),
        (
            json!({"model": "m", "input": "x", "encoding_format": "int8"}),
            "encoding_format",
        ),
        (
            json!({"model": "m", "input": "x", "dimensions": 0}),
            "dimensions",
        ),
    ] {
        let (s, text) = call(&app, "POST", "/v1/embeddings", Some(body)).await;
        assert_eq!(s, 400, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["param"], param, "{text}");
    }
    let (s, text) = call(
        &app,
        "POST",
        "/v1/embeddings",
        Some(json!({"model": "nope", "input": "x"})),
    )
    .await;
    assert_eq!(s, 404, "{text}");
}
