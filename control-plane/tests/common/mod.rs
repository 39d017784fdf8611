//! Starting the real `tandem serve` binary on 127.0.0.1 and talking HTTP to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;

/// The default model (`$TANDEM_MODEL`, else the cache).
pub fn default_model() -> PathBuf {
    let cache = std::env::var_os("TANDEM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/tandem"));
    let path = std::env::var_os("TANDEM_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert!(
        path.exists(),
        "default model missing at {}: run `cargo xtask setup`",
        path.display()
    );
    path
}

/// Runs `tandem admin --url BASE --admin-key KEY ARGS`; returns its JSON output (Null when it
/// prints none).
pub fn admin_cli(base: &str, key: &str, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["admin", "--url", base, "--admin-key", key])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tandem admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// A fresh folder under the system's temporary folder.
pub fn scratch_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tandem-test-{what}-{}-{:016x}",
        std::process::id(),
        rand_u64()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

/// A running `tandem serve`; killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: Arc<Mutex<String>>,
    pub client: reqwest::Client,
}

impl Server {
    /// Starts a server on the default model with extra flags.
    pub fn start(extra: &[&str]) -> Server {
        let model = default_model();
        let mut args = vec!["--model", model.to_str().unwrap()];
        args.extend_from_slice(extra);
        Server::start_raw(&args, &[])
    }

    /// Starts `tandem serve ARGS` (port 0, two threads unless given) with extra environment
    /// variables, and waits until it is ready.
    pub fn start_raw(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
        cmd.arg("serve").args(["--host", "127.0.0.1"]);
        if !args.contains(&"--port") {
            cmd.args(["--port", "0"]);
        }
        if !args.contains(&"--threads") {
            cmd.args(["--threads", "2"]);
        }
        // Each server keeps its ledger apart from every other test's.
        if !args.contains(&"--data-dir") && !args.contains(&"--database") {
            cmd.arg("--data-dir").arg(scratch_dir("data"));
        }
        cmd.args(args);
        for key in [
            "TANDEM_MODEL",
            "TANDEM_PORT",
            "TANDEM_HOST",
            "TANDEM_CONFIG",
            "TANDEM_MAX_SEQS",
            "TANDEM_CTX_SIZE",
            "TANDEM_DATA_DIR",
            "TANDEM_DATABASE",
            "TANDEM_ADMIN_KEY",
        ] {
            cmd.env_remove(key);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tandem serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut addr = None;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log2.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    addr = rest.split_whitespace().next().map(str::to_owned);
                }
                if line.contains("tandem: ready") {
                    let _ = tx.send(addr.clone());
                }
            }
            let _ = tx.send(None);
        });
        let addr = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Some(addr)) => addr,
            _ => {
                let _ = child.kill();
                panic!("tandem serve did not start:\n{}", log.lock().unwrap());
            }
        };
        Server {
            child,
            base: format!("http://{addr}"),
            log,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()
                .unwrap(),
        }
    }

    /// `base + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs raw bytes; returns status, Retry-After and the body as JSON (Null if not JSON).
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Option<String>, Value) {
        let resp = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = resp.bytes().await.unwrap();
        (
            status,
            retry,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// POSTs JSON; returns status and the body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (s, _, v) = self.post_raw(path, serde_json::to_vec(body).unwrap()).await;
        (s, v)
    }

    /// GETs `path`; returns status and the body text.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = self.client.get(self.url(path)).send().await.expect("GET");
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// Streams a request: every `data:` payload in order (`[DONE]` included as a string).
    pub async fn stream(&self, path: &str, body: &Value) -> Vec<Value> {
        let resp = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request");
        assert_eq!(
            resp.status().as_u16(),
            200,
            "{}",
            resp.text().await.unwrap()
        );
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let text = resp.text().await.unwrap();
        parse_sse(&text)
    }

    /// A gauge or counter from `/metrics` (the first sample whose name and labels start with
    /// `prefix`).
    pub async fn metric(&self, prefix: &str) -> f64 {
        let (_, text) = self.get("/metrics").await;
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no metric {prefix} in:\n{text}"))
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `data:` payloads of an SSE body.
pub fn parse_sse(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            if data.is_empty() {
                return None;
            }
            let data = data.join("\n");
            Some(if data == "[DONE]" {
                Value::String(data)
            } else {
                serde_json::from_str(&data).expect("chunk is JSON")
            })
        })
        .collect()
}

/// The text of a streamed chat completion.
pub fn chat_stream_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// A user message.
pub fn user(text: &str) -> Value {
    serde_json::json!([{"role": "user", "content": text}])
}

/// `tandem echo-upstream` on a free port (an upstream that answers at once); killed on drop.
pub struct Echo {
    pub child: Child,
    pub url: String,
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tandem echo-upstream`.
pub fn echo() -> Echo {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["echo-upstream", "--port", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let url = line
        .split("listening on ")
        .nth(1)
        .expect("echo-upstream address")
        .trim()
        .to_owned();
    Echo { child, url }
}
