//! Operating `tandem serve`: configuration precedence (file < environment < flags), a full
//! queue answered 429 with Retry-After, SIGTERM draining in-flight streams, and the API served
//! on the WebGPU backend.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Server, default_model, user};
use serde_json::{Value, json};

#[tokio::test]
async fn config_file_environment_and_flags_in_that_order() {
    let dir = std::env::temp_dir().join(format!("tandem-serve-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tandem.toml");
    std::fs::write(
        &file,
        format!(
            "ctx_size = 512\nmax_seqs = 3\n\n[[models]]\nid = \"smol\"\nsource = {:?}\naliases = [\"gpt-4o-mini\"]\n",
            default_model().to_str().unwrap()
        ),
    )
    .unwrap();
    let config = file.to_str().unwrap();
    let context = |server: &Server| {
        let server_url = server.url("/v1/models/smol");
        let client = server.client.clone();
        async move {
            let v: Value = client
                .get(server_url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["max_model_len"].as_u64().unwrap()
        }
    };
    // The file alone.
    let server = Server::start_raw(&["--config", config], &[]);
    assert_eq!(context(&server).await, 512);
    let (_, models) = server.get("/v1/models").await;
    assert!(models.contains("gpt-4o-mini"));
    drop(server);
    // The environment overrides the file.
    let server = Server::start_raw(
        &[],
        &[("TANDEM_CONFIG", config), ("TANDEM_CTX_SIZE", "1024")],
    );
    assert_eq!(context(&server).await, 1024);
    drop(server);
    // A flag overrides the environment.
    let server = Server::start_raw(
        &["--ctx-size", "768"],
        &[("TANDEM_CONFIG", config), ("TANDEM_CTX_SIZE", "1024")],
    );
    assert_eq!(context(&server).await, 768);
    drop(server);

    // A bad file is a clear error, not a panic.
    std::fs::write(&file, "prot = 8080\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["serve", "--config", config])
        .env_remove("TANDEM_MODEL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("prot") && stderr.contains("tandem.toml"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether a WebGPU adapter exists here; without one the WebGPU test says so and passes, unless
/// `TANDEM_REQUIRE_WEBGPU` is set (CI has Mesa's software Vulkan driver).
fn webgpu_adapter() -> bool {
    use engine_core::backend::webgpu::{WebGpuBackend, WebGpuOptions};
    match WebGpuBackend::new_blocking(WebGpuOptions::default()) {
        Ok(_) => true,
        Err(e) => {
            assert!(
                std::env::var_os("TANDEM_REQUIRE_WEBGPU").is_none(),
                "no WebGPU adapter ({e}), and TANDEM_REQUIRE_WEBGPU is set"
            );
            eprintln!("no WebGPU adapter ({e}): skipped");
            false
        }
    }
}

#[tokio::test]
async fn serves_the_api_on_the_webgpu_backend() {
    if !webgpu_adapter() {
        return;
    }
    let server = Server::start(&[
        "--backend",
        "webgpu",
        "--ctx-size",
        "256",
        "--max-seqs",
        "2",
    ]);
    let (status, body) = server
        .post(
            "/v1/chat/completions",
            &json!({"messages": user("Say hi."), "max_tokens": 6, "temperature": 0}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 6, "{body}");
    assert!(
        !body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    let (_, metrics) = server.get("/metrics").await;
    assert!(metrics.contains("tandem_requests_total"));
    assert!(
        server.log.lock().unwrap().contains("webgpu"),
        "{}",
        server.log.lock().unwrap()
    );
}

#[test]
fn an_unknown_backend_is_a_usage_error() {
    let model = default_model();
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["serve", "--backend", "tpu", "--model"])
        .arg(&model)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cpu"));
}

/// A long stream that holds the only slot (already answering).
async fn hog(server: &Server) -> reqwest::Response {
    let mut hog = server
        .client
        .post(server.url("/v1/chat/completions"))
        .json(&json!({"messages": user("Tell me a long story."), "max_tokens": 1500, "ignore_eos": true, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(hog.status(), 200);
    hog.chunk().await.unwrap();
    hog
}

#[tokio::test]
async fn a_full_queue_is_429_with_retry_after() {
    let server = Server::start(&["--max-seqs", "1", "--max-waiting", "0"]);
    let hog = hog(&server).await;
    let (status, retry, err) = server
        .post_raw(
            "/v1/chat/completions",
            serde_json::to_vec(&json!({"messages": user("Hi"), "max_tokens": 2})).unwrap(),
        )
        .await;
    assert_eq!(status, 429, "{err}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(err["error"]["type"], "rate_limit_error");
    drop(hog);
    let mut answered = false;
    for _ in 0..200 {
        let (status, _) = server
            .post(
                "/v1/chat/completions",
                &json!({"messages": user("Hi"), "max_tokens": 2}),
            )
            .await;
        if status == 200 {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered, "the slot was not freed after the client left");
}

#[tokio::test]
async fn a_request_queued_past_the_queue_timeout_is_503_with_retry_after() {
    // Long enough for the hog's own first token on a machine busy with the other tests.
    let server = Server::start(&["--max-seqs", "1", "--queue-timeout", "3"]);
    let hog = hog(&server).await;
    let start = std::time::Instant::now();
    let (status, retry, err) = server
        .post_raw(
            "/v1/chat/completions",
            serde_json::to_vec(&json!({"messages": user("Hi"), "max_tokens": 2})).unwrap(),
        )
        .await;
    assert_eq!(status, 503, "{err}");
    assert_eq!(err["error"]["code"], "queue_timeout");
    assert_eq!(retry.as_deref(), Some("5"));
    assert!(start.elapsed() < Duration::from_secs(15));
    // The queued request is withdrawn (within a few engine steps): only the hog runs.
    let mut waiting = 1.0;
    for _ in 0..100 {
        waiting = server.metric("tandem_num_requests_waiting").await;
        if waiting == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(waiting, 0.0);
    drop(hog);
}

#[tokio::test]
async fn sigterm_lets_in_flight_streams_finish_then_exits_zero() {
    let mut server = Server::start(&[]);
    let mut resp = server
        .client
        .post(server.url("/v1/chat/completions"))
        .json(&json!({"messages": user("Tell me a story."), "max_tokens": 48, "ignore_eos": true, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = String::from_utf8(resp.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    server.terminate();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    let chunks = common::parse_sse(&body);
    assert_eq!(chunks.last().unwrap(), "[DONE]", "{body}");
    let finish = &chunks[chunks.len() - 2]["choices"][0]["finish_reason"];
    assert_eq!(finish, "length", "the stream was cut: {body}");
    let mut status = None;
    for _ in 0..600 {
        if let Some(s) = server.child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = status.unwrap_or_else(|| panic!("still running:\n{}", server.log.lock().unwrap()));
    assert!(
        status.success(),
        "exit {status:?}:\n{}",
        server.log.lock().unwrap()
    );
    assert!(server.log.lock().unwrap().contains("shutting down"));
}
