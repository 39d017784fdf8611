//! What a simulated web client sends: `GET /v1/models`, `POST /v1/route`, streamed chat
//! completions, and `POST /v1/usage/browser`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use control_plane::gateway::browser_route::{BrowserPath, RouteRequest};
use control_plane::gateway::remote::sse::SseParser;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// A client of one server, with one API key.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    key: String,
    /// The model asked for.
    pub model: String,
}

/// The browser variant of the model.
#[derive(Clone, Debug)]
pub struct Variant {
    /// Its SHA-256.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
}

/// A streamed completion as the client saw it.
#[derive(Clone, Debug)]
pub struct Completion {
    /// From sending the request to the first content.
    pub ttft: Duration,
    /// The whole answer's text.
    pub text: String,
    /// Prompt tokens (the final usage chunk).
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub completion_tokens: u64,
}

impl Client {
    /// A client of the server at `url` using `key`.
    pub fn new(http: reqwest::Client, url: &str, key: &str, model: &str) -> Client {
        Client {
            http,
            url: url.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
            model: model.to_owned(),
        }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
    }

    /// The model (the first with a browser variant when none was named) and its first browser
    /// variant, from `/v1/models`.
    pub async fn variant(&mut self) -> Result<Variant> {
        let list: Value = self
            .http
            .get(format!("{}/v1/models", self.url))
            .bearer_auth(&self.key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let models = list["data"].as_array().context("no model list")?;
        let model = models
            .iter()
            .find(|m| {
                (self.model.is_empty() || m["id"] == self.model.as_str())
                    && m["browser_variants"]
                        .as_array()
                        .is_some_and(|v| !v.is_empty())
            })
            .context("no model with a browser variant")?;
        self.model = model["id"].as_str().unwrap_or_default().to_owned();
        let v = &model["browser_variants"][0];
        Ok(Variant {
            sha256: v["sha256"].as_str().unwrap_or_default().to_owned(),
            bytes: v["bytes"].as_u64().unwrap_or(0),
        })
    }

    /// Asks where a request runs: the browser's path, or `None` for the server; and the whole
    /// answer.
    pub async fn route(&self, req: &RouteRequest) -> Result<(Option<BrowserPath>, Value)> {
        let answer: Value = self
            .post("/v1/route")
            .json(req)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let reasons: Vec<String> = answer["reasons"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let path = (answer["route"] == "browser").then(|| {
            if reasons.iter().any(|r| r == "path_cpu") {
                BrowserPath::Cpu
            } else {
                BrowserPath::Webgpu
            }
        });
        Ok((path, answer))
    }

    /// A streamed, greedy chat completion.
    pub async fn chat(&self, messages: &[Value], max_tokens: u32) -> Result<Completion> {
        let body = json!({
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let sent = Instant::now();
        let response = self.post("/v1/chat/completions").json(&body).send().await?;
        if !response.status().is_success() {
            let status = response.status();
            bail!("{status}: {}", response.text().await.unwrap_or_default());
        }
        let mut stream = response.bytes_stream();
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        let mut out = Completion {
            ttft: Duration::ZERO,
            text: String::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
        };
        let mut first = None;
        let mut done = false;
        while let Some(chunk) = stream.next().await {
            parser.feed(&chunk?, &mut events);
            for data in events.drain(..) {
                if data == b"[DONE]" {
                    done = true;
                    continue;
                }
                let v: Value = serde_json::from_slice(&data).context("a stream chunk")?;
                if let Some(text) = v["choices"][0]["delta"]["content"].as_str()
                    && !text.is_empty()
                {
                    first.get_or_insert_with(|| sent.elapsed());
                    out.text.push_str(text);
                }
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    out.prompt_tokens = u["prompt_tokens"].as_u64().unwrap_or(0);
                    out.completion_tokens = u["completion_tokens"].as_u64().unwrap_or(0);
                }
            }
        }
        if !done {
            bail!("the stream ended without [DONE]");
        }
        out.ttft = first.unwrap_or_else(|| sent.elapsed());
        Ok(out)
    }

    /// Reports tokens the browser generated.
    pub async fn report_browser(
        &self,
        path: BrowserPath,
        prompt_tokens: u64,
        completion_tokens: u64,
        ttft: Duration,
        duration: Duration,
    ) -> Result<()> {
        self.post("/v1/usage/browser")
            .json(&json!({
                "model": self.model,
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "route": "browser",
                "path": path.as_str(),
                "ttft_ms": ttft.as_millis() as u64,
                "duration_ms": duration.as_millis() as u64,
            }))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}
