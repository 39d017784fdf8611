//! The OpenAI-compatible API of the real `tandem serve` on the default model: wire format,
//! streaming, logprobs, batching invariance, disconnects, and clear errors for bad input.

mod common;

use common::{Server, chat_stream_text, user};
use serde_json::{Value, json};

#[tokio::test]
async fn chat_completion_wire_format_streamed_and_not() {
    let server = Server::start(&[]);
    let body = json!({
        "model": "SmolLM2-135M-Instruct.Q4_1",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": [{"type": "text", "text": "Why is the sky blue?"}]}
        ],
        "max_tokens": 24,
        "temperature": 0,
    });
    let (status, whole) = server.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{whole}");
    assert!(whole["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(whole["object"], "chat.completion");
    assert!(whole["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(whole["model"], "SmolLM2-135M-Instruct.Q4_1");
    assert!(
        whole["system_fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("fp_")
    );
    let choice = &whole["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    let text = choice["message"]["content"].as_str().unwrap();
    assert!(!text.is_empty() && !text.contains("<|im_"), "{text:?}");
    assert!(choice["logprobs"].is_null());
    let finish = choice["finish_reason"].as_str().unwrap();
    assert!(finish == "stop" || finish == "length");
    let usage = &whole["usage"];
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert!(completion > 0 && completion <= 24);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + completion
    );

    // The same request streamed, with usage.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let chunks = server.stream("/v1/chat/completions", &streamed).await;
    assert_eq!(chunks.last().unwrap(), "[DONE]");
    let chunks = &chunks[..chunks.len() - 1];
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    for c in chunks {
        assert_eq!(c["id"], id);
        assert_eq!(c["object"], "chat.completion.chunk");
        assert!(c["system_fingerprint"].is_string());
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"], whole["usage"]);
    let last_choice = &chunks[chunks.len() - 2]["choices"][0];
    assert_eq!(
        last_choice["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );
    assert_eq!(last_choice["delta"], json!({}));
    for c in &chunks[..chunks.len() - 2] {
        assert!(c["choices"][0]["finish_reason"].is_null());
        assert!(c["usage"].is_null() && c.as_object().unwrap().contains_key("usage"));
    }
    assert_eq!(chat_stream_text(chunks), text);

    // Without include_usage there is no usage chunk and no usage field.
    streamed["stream_options"] = json!(null);
    let chunks = server.stream("/v1/chat/completions", &streamed).await;
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c.get("usage").is_none() && c["choices"].as_array().unwrap().len() == 1)
    );
}

#[tokio::test]
async fn stop_strings_lengths_seeds_and_logprobs() {
    let server = Server::start(&[]);
    let ask = |extra: Value| {
        let mut body = json!({"messages": user("Count from 1 to 20, separated by commas."), "temperature": 0, "max_tokens": 40});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let (_, plain) = server.post("/v1/chat/completions", &ask(json!({}))).await;
    let plain_text = plain["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(plain_text.contains('5'), "{plain_text:?}");

    // A stop string cuts the text before it and finishes with `stop`.
    let (_, stopped) = server
        .post("/v1/chat/completions", &ask(json!({"stop": ["5"]})))
        .await;
    let text = stopped["choices"][0]["message"]["content"]
        .as_str()
        .unwrap();
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
    assert_eq!(text, &plain_text[..plain_text.find('5').unwrap()]);
    let (_, stopped) = server
        .post("/v1/chat/completions", &ask(json!({"stop": "5"})))
        .await;
    assert_eq!(stopped["choices"][0]["message"]["content"], text);

    // max_tokens reached: `length`, exactly that many tokens.
    let (_, short) = server
        .post(
            "/v1/chat/completions",
            &ask(json!({"max_completion_tokens": 3})),
        )
        .await;
    assert_eq!(short["choices"][0]["finish_reason"], "length");
    assert_eq!(short["usage"]["completion_tokens"], 3);

    // Seeded sampling is reproducible; another seed (almost surely) differs.
    let sample = |seed: u64| json!({"messages": user("Tell me a story about a dragon."), "temperature": 1.0, "top_p": 0.95, "seed": seed, "max_tokens": 32});
    let (_, a) = server.post("/v1/chat/completions", &sample(7)).await;
    let (_, b) = server.post("/v1/chat/completions", &sample(7)).await;
    let (_, c) = server.post("/v1/chat/completions", &sample(8)).await;
    assert_eq!(a["choices"][0]["message"], b["choices"][0]["message"]);
    assert_ne!(a["choices"][0]["message"], c["choices"][0]["message"]);

    // Logprobs: one entry per generated token, alternatives sorted, greedy picks the best.
    let (status, lp) = server
        .post(
            "/v1/chat/completions",
            &ask(json!({"logprobs": true, "top_logprobs": 3, "max_tokens": 6})),
        )
        .await;
    assert_eq!(status, 200, "{lp}");
    let content = lp["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 6);
    let mut joined = String::new();
    for entry in content {
        let top = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert_eq!(top[0]["token"], entry["token"]);
        assert!(
            (top[0]["logprob"].as_f64().unwrap() - entry["logprob"].as_f64().unwrap()).abs() < 1e-6
        );
        assert!(top[0]["logprob"].as_f64() >= top[1]["logprob"].as_f64());
        assert!(entry["logprob"].as_f64().unwrap() <= 0.0);
        let bytes: Vec<u8> = entry["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        joined.push_str(&String::from_utf8_lossy(&bytes));
    }
    assert_eq!(
        joined,
        lp["choices"][0]["message"]["content"].as_str().unwrap()
    );

    // logit_bias +100 forces a token.
    let (_, echo) = server
        .post(
            "/v1/completions",
            &json!({"prompt": [504], "max_tokens": 0, "echo": true}),
        )
        .await;
    let piece = echo["choices"][0]["text"].as_str().unwrap().to_owned();
    assert!(!piece.is_empty());
    let (status, forced) = server
        .post(
            "/v1/completions",
            &json!({"prompt": "Hello", "max_tokens": 3, "temperature": 0, "logit_bias": {"504": 100}}),
        )
        .await;
    assert_eq!(status, 200, "{forced}");
    assert_eq!(forced["choices"][0]["text"], piece.repeat(3));
}

#[tokio::test]
async fn completions_prompts_echo_and_prompt_logprobs() {
    let server = Server::start(&[]);
    // Text prompt, greedy: the same text as the token-id form of the prompt.
    let (status, by_text) = server
        .post(
            "/v1/completions",
            &json!({"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}),
        )
        .await;
    assert_eq!(status, 200, "{by_text}");
    assert_eq!(by_text["object"], "text_completion");
    assert!(by_text["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(by_text["usage"]["prompt_tokens"], 5);

    // Scoring as lm-evaluation-harness does: echo, logprobs, max_tokens 0.
    let (status, scored) = server
        .post(
            "/v1/completions",
            &json!({"prompt": "The capital of France is Paris", "max_tokens": 0, "echo": true, "logprobs": 1, "temperature": 0}),
        )
        .await;
    assert_eq!(status, 200, "{scored}");
    let choice = &scored["choices"][0];
    assert_eq!(choice["text"], "The capital of France is Paris");
    let lp = &choice["logprobs"];
    let tokens = lp["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 6);
    assert_eq!(scored["usage"]["completion_tokens"], 0);
    assert!(lp["token_logprobs"][0].is_null() && lp["top_logprobs"][0].is_null());
    let offsets: Vec<u64> = lp["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(offsets[0], 0);
    assert!(offsets.windows(2).all(|w| w[0] < w[1]));
    let joined: String = tokens.iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(joined, "The capital of France is Paris");
    for i in 1..tokens.len() {
        let l = lp["token_logprobs"][i].as_f64().unwrap();
        assert!(l <= 0.0);
        let top = lp["top_logprobs"][i].as_object().unwrap();
        // The scored token is always among the alternatives (as vLLM does).
        assert!(top.contains_key(tokens[i].as_str().unwrap()));
        assert!(top.values().all(|v| v.as_f64().unwrap() <= 0.0));
    }
    // " Paris" after "The capital of France is" is likely; " banana" is not.
    let (_, banana) = server
        .post(
            "/v1/completions",
            &json!({"prompt": "The capital of France is banana", "max_tokens": 0, "echo": true, "logprobs": 1}),
        )
        .await;
    let paris = lp["token_logprobs"][5].as_f64().unwrap();
    let ban = banana["choices"][0]["logprobs"]["token_logprobs"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_f64()
        .unwrap();
    assert!(paris > ban, "Paris {paris} vs banana {ban}");

    // Token-id prompts, several at once: one choice each, same results as one by one.
    let ids: Vec<Value> = (0..2).map(|i| json!([504 + i, 3458, 282])).collect();
    let (status, batch) = server
        .post(
            "/v1/completions",
            &json!({"prompt": ids, "max_tokens": 5, "temperature": 0, "echo": true, "logprobs": 2}),
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["choices"].as_array().unwrap().len(), 2);
    for (i, p) in ids.iter().enumerate() {
        let (_, one) = server
            .post(
                "/v1/completions",
                &json!({"prompt": p, "max_tokens": 5, "temperature": 0, "echo": true, "logprobs": 2}),
            )
            .await;
        assert_eq!(batch["choices"][i]["index"], i);
        assert_eq!(batch["choices"][i]["text"], one["choices"][0]["text"]);
        let n = batch["choices"][i]["logprobs"]["tokens"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(n, 3 + 5);
    }

    // Streaming completions with usage.
    let chunks = server
        .stream(
            "/v1/completions",
            &json!({"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}}),
        )
        .await;
    assert_eq!(chunks.last().unwrap(), "[DONE]");
    let usage = &chunks[chunks.len() - 2];
    assert_eq!(usage["usage"]["completion_tokens"], 6);
    assert_eq!(
        chunks[chunks.len() - 3]["choices"][0]["finish_reason"],
        "length"
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    let (_, whole) = server
        .post(
            "/v1/completions",
            &json!({"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0}),
        )
        .await;
    assert_eq!(whole["choices"][0]["text"], text);
}

fn prompt(i: usize) -> String {
    let topics = [
        "the ocean",
        "a robot",
        "winter",
        "coffee",
        "a library",
        "mountains",
        "the moon",
        "trains",
    ];
    format!(
        "Write two sentences about {} (#{i}).",
        topics[i % topics.len()]
    )
}

#[tokio::test]
async fn sixteen_concurrent_greedy_streams_match_single_requests() {
    let server = Server::start(&["--max-seqs", "16"]);
    let body = |i: usize| json!({"messages": user(&prompt(i)), "temperature": 0, "max_tokens": 24, "stream": true});
    let mut singles = Vec::new();
    for i in 0..16 {
        singles.push(chat_stream_text(
            &server.stream("/v1/chat/completions", &body(i)).await,
        ));
    }
    let server = std::sync::Arc::new(server);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let server = std::sync::Arc::clone(&server);
            tokio::spawn(async move {
                chat_stream_text(&server.stream("/v1/chat/completions", &body(i)).await)
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let together = t.await.unwrap();
        assert_eq!(together, singles[i], "stream {i} differs when batched");
    }
    assert!(server.metric("tandem_generation_tokens_total").await >= 32.0 * 16.0 * 0.5);
}

#[tokio::test]
async fn a_disconnect_mid_stream_frees_the_sequence() {
    let server = Server::start(&[]);
    let idle_kv = server.metric("tandem_kv_cache_usage_perc").await;
    assert_eq!(idle_kv, 0.0);
    let resp = server
        .client
        .post(server.url("/v1/chat/completions"))
        .json(&json!({"messages": user("Tell me a very long story."), "max_tokens": 1500, "ignore_eos": true, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut resp = resp;
    let mut got = 0;
    while got < 2000 {
        let chunk = resp.chunk().await.unwrap().expect("stream ended early");
        got += chunk.len();
    }
    assert_eq!(server.metric("tandem_num_requests_running").await, 1.0);
    assert!(server.metric("tandem_kv_cache_usage_perc").await > 0.0);
    drop(resp);
    // The engine frees it within a step; poll (bounded) until the gauges are back to idle.
    let mut idle = false;
    for _ in 0..200 {
        if server.metric("tandem_num_requests_running").await == 0.0
            && server.metric("tandem_kv_cache_usage_perc").await == idle_kv
        {
            idle = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(idle, "{}", server.get("/metrics").await.1);
    assert_eq!(server.metric("tandem_requests_aborted_total").await, 1.0);
    // And the server goes on answering.
    let (status, _) = server
        .post(
            "/v1/chat/completions",
            &json!({"messages": user("Hi"), "max_tokens": 2}),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_the_server_keeps_answering() {
    let server = Server::start(&["--body-limit", "65536", "--ctx-size", "256"]);
    let good = json!({"messages": user("Say hi."), "max_tokens": 2});
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("/v1/chat/completions", b"{\"messages\": [".to_vec(), 400, "not valid JSON"),
        ("/v1/chat/completions", b"".to_vec(), 400, "empty"),
        ("/v1/chat/completions", b"[1, 2]".to_vec(), 400, "JSON object"),
        ("/v1/chat/completions", br#"{"messages": "hello"}"#.to_vec(), 400, "invalid type"),
        ("/v1/chat/completions", br#"{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}"#.to_vec(), 400, "invalid type"),
        ("/v1/chat/completions", br#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}"#.to_vec(), 400, "invalid"),
        ("/v1/chat/completions", br#"{"messages": []}"#.to_vec(), 400, "at least one message"),
        ("/v1/chat/completions", br#"{"messages": [{"role": "wizard", "content": "x"}]}"#.to_vec(), 400, "wizard"),
        ("/v1/chat/completions", br#"{"messages": [{"role": "user", "content": "x"}], "n": 17}"#.to_vec(), 400, "between 1 and 16"),
        ("/v1/chat/completions", br#"{"messages": [{"role": "user", "content": "x"}], "temperature": 7}"#.to_vec(), 400, "temperature"),
        ("/v1/chat/completions", br#"{"messages": [{"role": "user", "content": "x"}], "top_p": 0}"#.to_vec(), 400, "top_p"),
        ("/v1/chat/completions", br#"{"messages": [{"role": "user", "content": "x"}], "logit_bias": {"abc": 1}}"#.to_vec(), 400, "logit_bias"),
        ("/v1/chat/completions", br#"{"messages": [{"role": "user", "content": "x"}], "logit_bias": {"99999999": 1}}"#.to_vec(), 400, "logit_bias"),
        ("/v1/chat/completions", br#"{"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}"#.to_vec(), 400, "logprobs"),
        ("/v1/chat/completions", br#"{"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21}"#.to_vec(), 400, "top_logprobs"),
        ("/v1/chat/completions", br#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1000}"#.to_vec(), 400, "maximum context length is 256"),
        ("/v1/completions", br#"{"prompt": "x", "logprobs": 6}"#.to_vec(), 400, "logprobs"),
        ("/v1/completions", br#"{"prompt": []}"#.to_vec(), 400, "empty"),
        ("/v1/completions", br#"{"prompt": [1, 999999]}"#.to_vec(), 400, "out of range"),
        ("/v1/completions", br#"{"prompt": {"a": 1}}"#.to_vec(), 400, "invalid"),
        ("/v1/completions", br#"{"max_tokens": 3}"#.to_vec(), 400, "prompt"),
    ];
    for (path, body, status, needle) in cases {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let (got, _, err) = server.post_raw(path, body).await;
        assert_eq!(got, status, "{shown} -> {err}");
        let e = &err["error"];
        assert!(
            e["type"].is_string()
                && e.as_object().unwrap().contains_key("param")
                && e.as_object().unwrap().contains_key("code"),
            "{err}"
        );
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{shown}: {msg:?} lacks {needle:?}");
        let (ok, _) = server.post("/v1/chat/completions", &good).await;
        assert_eq!(ok, 200, "the server stopped answering after {shown}");
    }

    // A prompt longer than the context: 400 with the numbers.
    let long = "word ".repeat(400);
    let (status, err) = server
        .post("/v1/chat/completions", &json!({"messages": user(&long)}))
        .await;
    assert_eq!(status, 400);
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("256 tokens") && msg.contains("the prompt has 4"),
        "{msg}"
    );
    assert_eq!(err["error"]["code"], "context_length_exceeded");

    // Unknown model: 404; unknown route: 404; wrong method: 405.
    let (status, err) = server
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-17", "messages": user("x")}),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "model_not_found");
    assert_eq!(server.get("/v1/models/gpt-17").await.0, 404);
    assert_eq!(server.get("/v1/nothing-here").await.0, 404);
    assert_eq!(server.get("/v1/chat/completions").await.0, 405);

    // A body over the limit: 413, and the next request works.
    let huge = format!(
        "{{\"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}",
        "a".repeat(200_000)
    );
    let (status, _, err) = server
        .post_raw("/v1/chat/completions", huge.into_bytes())
        .await;
    assert_eq!(status, 413, "{err}");
    assert_eq!(err["error"]["code"], "request_too_large");
    assert_eq!(server.post("/v1/chat/completions", &good).await.0, 200);

    // Unknown extra fields are ignored.
    let mut extra = good.clone();
    extra["frobnicate"] = json!({"deep": [1, 2]});
    extra["parallel_tool_calls"] = json!(false);
    extra["user"] = json!("someone");
    assert_eq!(server.post("/v1/chat/completions", &extra).await.0, 200);

    // No input ever made the server fail.
    let (_, metrics) = server.get("/metrics").await;
    assert!(!metrics.contains("status=\"500\""), "{metrics}");
    assert!(metrics.contains("status=\"400\""));
}

#[tokio::test]
async fn models_health_ready_metrics_and_the_demo_page() {
    let server = Server::start(&["--model-id", "smol", "--alias", "gpt-4o-mini,default"]);
    let (status, body) = server.get("/v1/models").await;
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["smol", "gpt-4o-mini", "default"]);
    for m in list["data"].as_array().unwrap() {
        assert_eq!(m["object"], "model");
        assert_eq!(m["owned_by"], "tandem");
    }
    let (status, one) = server.get("/v1/models/gpt-4o-mini").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&one).unwrap()["id"],
        "gpt-4o-mini"
    );
    let (status, reply) = server
        .post(
            "/v1/chat/completions",
            &json!({"model": "default", "messages": user("Hi"), "max_tokens": 2}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(reply["model"], "default");

    assert_eq!(server.get("/health").await.0, 200);
    let (status, ready) = server.get("/ready").await;
    assert_eq!((status, ready.contains("ready")), (200, true));

    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "tandem_requests_total",
        "tandem_time_to_first_token_seconds_bucket",
        "tandem_inter_token_latency_seconds_bucket",
        "tandem_e2e_request_latency_seconds_bucket",
        "tandem_prompt_tokens_total",
        "tandem_generation_tokens_total",
        "tandem_num_requests_running",
        "tandem_num_requests_waiting",
        "tandem_kv_cache_usage_perc",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {name}")) || metrics.contains(name),
            "{name} missing"
        );
    }
    assert!(
        server
            .metric("tandem_prompt_tokens_total{model_name=\"smol\"}")
            .await
            > 0.0
    );
    assert!(
        server
            .metric("tandem_time_to_first_token_seconds_count{model_name=\"smol\"}")
            .await
            >= 1.0
    );

    let (status, page) = server.get("/").await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>Tandem"));
    let (status, js) = server.get("/app.js").await;
    assert_eq!(status, 200);
    // The page runs on the npm package, which the build copies into web-demo/pkg/.
    assert!(js.contains("./pkg/index.js"));
}

#[tokio::test]
async fn the_model_file_is_offered_to_browsers_with_ranges_and_etags() {
    let server = Server::start(&["--model-id", "smol"]);
    // The SHA-256 is computed in the background after loading.
    let mut variant = Value::Null;
    for _ in 0..100 {
        let (_, body) = server.get("/v1/models/smol").await;
        let card: Value = serde_json::from_str(&body).unwrap();
        if let Some(v) = card["browser_variants"].get(0) {
            variant = v.clone();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let url = variant["url"].as_str().expect("a browser variant");
    assert!(url.starts_with("/models/smol/"), "{url}");
    let file = std::fs::read(common::default_model()).unwrap();
    assert_eq!(variant["bytes"], file.len() as u64);
    assert_eq!(variant["quantization"], "Q4_1");
    assert!(variant["memory_bytes"].as_u64().unwrap() > file.len() as u64);
    let sha: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&file)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    assert_eq!(variant["sha256"], sha);

    let resp = server
        .client
        .get(server.url(url))
        .header("range", "bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{sha}\""));
    assert!(
        resp.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"GGUF");
    let resp = server
        .client
        .get(server.url(url))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 304);
    let whole = server.client.get(server.url(url)).send().await.unwrap();
    assert_eq!(whole.status().as_u16(), 200);
    assert_eq!(whole.bytes().await.unwrap().len(), file.len());
    assert_eq!(server.get("/models/smol/other.gguf").await.0, 404);
}

#[tokio::test]
async fn an_assistant_message_is_continued_with_continue_final_message() {
    let server = Server::start(&[]);
    let question = "Why is the sky blue?";
    let (_, whole) = server
        .post(
            "/v1/chat/completions",
            &json!({"messages": user(question), "temperature": 0, "max_tokens": 24}),
        )
        .await;
    let text = whole["choices"][0]["message"]["content"].as_str().unwrap();
    // Cut after a few words, at a space (a token boundary for this tokenizer).
    let cut = text.match_indices(' ').nth(4).unwrap().0;
    let (head, tail) = text.split_at(cut);
    let continued = |extra: Value| {
        let mut body = json!({
            "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": head}],
            "temperature": 0,
            "max_tokens": 8,
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let (status, rest) = server
        .post(
            "/v1/chat/completions",
            &continued(json!({"continue_final_message": true, "add_generation_prompt": false})),
        )
        .await;
    assert_eq!(status, 200, "{rest}");
    let rest = rest["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!rest.is_empty());
    assert!(
        tail.starts_with(rest),
        "{rest:?} does not continue {head:?} as {tail:?}"
    );

    // Both flags on, or nothing to continue: a clear 400.
    let (status, err) = server
        .post(
            "/v1/chat/completions",
            &continued(json!({"continue_final_message": true, "add_generation_prompt": true})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["param"], "continue_final_message");
    let (status, _) = server
        .post(
            "/v1/chat/completions",
            &json!({"messages": user(question), "continue_final_message": true}),
        )
        .await;
    assert_eq!(status, 400);
}
