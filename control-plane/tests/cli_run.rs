//! `tandem run` as a user runs it: the real binary on the default model, loaded from a path, from
//! a URL served on 127.0.0.1, and failing cleanly on bad sources.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

use common::default_model;

mod common;

fn tandem(args: &[&str], cache: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .env("TANDEM_CACHE", cache)
        .env_remove("TANDEM_MODEL")
        .output()
        .expect("run tandem")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tandem-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn answers_a_prompt_and_reports_timings() {
    let model = default_model();
    let cache = temp_dir("run");
    let out = tandem(
        &[
            "run",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "Why is the sky blue?",
            "--temperature",
            "0",
            "--max-tokens",
            "40",
        ],
        &cache,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(
        stdout.to_lowercase().contains("blue") || stdout.to_lowercase().contains("sky"),
        "reply: {stdout:?}"
    );
    assert!(
        !stdout.contains("<|im_end|>") && !stdout.contains("<|im_start|>"),
        "reply leaks template tokens: {stdout:?}"
    );
    for field in [
        "prompt tokens:",
        "TTFT:",
        "prefill:",
        "decode:",
        "peak memory:",
    ] {
        assert!(
            stderr.contains(field),
            "statistics line lacks {field:?}: {stderr}"
        );
    }
    // Greedy decoding is deterministic.
    let again = tandem(
        &[
            "run",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "Why is the sky blue?",
            "--temperature",
            "0",
            "--max-tokens",
            "40",
            "--quiet",
        ],
        &cache,
    );
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout);
    assert!(
        again.stderr.is_empty(),
        "--quiet printed: {}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn same_seed_same_sample() {
    let model = default_model();
    let cache = temp_dir("seed");
    let run = |seed: &str| {
        let out = tandem(
            &[
                "run",
                "--model",
                model.to_str().unwrap(),
                "--prompt",
                "Tell me a story.",
                "--temperature",
                "1.0",
                "--seed",
                seed,
                "--max-tokens",
                "24",
                "--quiet",
            ],
            &cache,
        );
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(run("7"), run("7"));
}

/// Serves `body` for every GET on 127.0.0.1; returns the URL base.
fn serve(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    format!("http://{addr}")
}

#[test]
fn loads_a_model_from_a_url_once() {
    let mut bytes = Vec::new();
    std::fs::File::open(default_model())
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    let base = serve(bytes);
    let cache = temp_dir("url");
    let url = format!("{base}/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let args = [
        "run",
        "--model",
        url.as_str(),
        "--prompt",
        "Hi",
        "--temperature",
        "0",
        "--max-tokens",
        "8",
        "--quiet",
    ];
    let out = tandem(&args, &cache);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty());
    let cached: Vec<_> = std::fs::read_dir(cache.join("models")).unwrap().collect();
    assert_eq!(cached.len(), 1, "one cached download expected");
}

#[test]
fn bad_sources_fail_cleanly() {
    let cache = temp_dir("bad");
    // A missing file.
    let out = tandem(
        &[
            "run",
            "--model",
            "/nonexistent/model.gguf",
            "--prompt",
            "hi",
        ],
        &cache,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    // A truncated GGUF.
    let bytes = std::fs::read(default_model()).unwrap();
    let truncated = cache.join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let out = tandem(
        &[
            "run",
            "--model",
            truncated.to_str().unwrap(),
            "--prompt",
            "hi",
        ],
        &cache,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("truncated") || stderr.contains("outside"),
        "{stderr}"
    );
    // Not a GGUF at all.
    let junk = cache.join("junk.gguf");
    std::fs::write(&junk, b"definitely not a model").unwrap();
    let out = tandem(
        &["run", "--model", junk.to_str().unwrap(), "--prompt", "hi"],
        &cache,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a GGUF file"));
    // A Hugging Face Hub that cannot be reached fails fast with a clear message.
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args([
            "run",
            "--model",
            "hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q4_1.gguf",
            "--prompt",
            "hi",
        ])
        .env("TANDEM_CACHE", &cache)
        .env("HF_HOME", cache.join("hf"))
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Hugging Face Hub"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed().as_secs() < 60,
        "the hub error took {:?}",
        started.elapsed()
    );
}

/// `tandem run` on `backend`: a short greedy answer to a fixed question.
fn answer_on(backend: &str) -> Output {
    let model = default_model();
    let cache = temp_dir(backend);
    tandem(
        &[
            "run",
            "--backend",
            backend,
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "What is 2+2?",
            "--temperature",
            "0",
            "--max-tokens",
            "8",
        ],
        &cache,
    )
}

#[test]
fn answers_on_the_webgpu_backend() {
    use engine_core::backend::webgpu::{WebGpuBackend, WebGpuOptions};
    if let Err(e) = WebGpuBackend::new_blocking(WebGpuOptions::default()) {
        assert!(
            std::env::var_os("TANDEM_REQUIRE_WEBGPU").is_none(),
            "no WebGPU adapter ({e}), and TANDEM_REQUIRE_WEBGPU is set"
        );
        eprintln!("no WebGPU adapter ({e}): skipped");
        return;
    }
    let out = answer_on("webgpu");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!out.stdout.is_empty());
    assert!(stderr.contains("decode:"), "{stderr}");
}

#[cfg(feature = "cuda")]
#[test]
fn the_cuda_backend_answers_where_there_is_a_gpu_and_says_why_not_elsewhere() {
    let out = answer_on("cuda");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    match engine_cuda::probe(0) {
        Ok(_) => {
            assert!(out.status.success(), "{stderr}");
            assert!(!out.stdout.is_empty());
        }
        Err(e) => {
            assert!(!out.status.success());
            assert!(stderr.contains(&e.to_string()), "{stderr}");
            if matches!(e, engine_cuda::CudaError::Unavailable(_)) {
                assert!(stderr.contains("CUDA not available"), "{stderr}");
            }
        }
    }
}
