//! The second pass: each client behaves as `@tandem-inference/web` under its `auto` policy in
//! an app that calls `tandem.load()` when the page opens. The engine becomes ready after the
//! download (when the model is not cached) and the load; until then the capability report lists
//! the variant as neither cached nor loaded, with the download's progress and rate while it
//! runs, and `/v1/route` decides with what it says. A
//! browser-routed request waits for the engine if it is still loading, then takes the profile's
//! prefill and decode time; it is reported through `/v1/usage/browser`. When the engine fails to
//! load, a request routed to the browser is completed by the server once the load has failed,
//! and the app sends the rest of the visit to the server. The browser engine keeps the KV cache
//! of the last conversation it served, so a later turn prefills only what follows it (the
//! earlier turns are a prefix of the next prompt); the route request says so
//! (`cached_prompt_tokens`) and that it streams, as the npm package's do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use control_plane::gateway::browser_route::{
    BrowserPath, Downloading, LOAD_BYTES_PER_SEC, LOAD_OVERHEAD_MS, RouteRequest,
};
use serde_json::{Value, json};

use super::client::{Client, Completion, Variant};
use super::messages;
use super::profiles::Profile;
use super::workload::Session;

/// Where a request of the hybrid pass ran, as its client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// In the browser, on this path.
    Browser(BrowserPath),
    /// On the server, as `/v1/route` said (or after a failed load, as the app decided).
    Server,
    /// Sent to the browser, whose engine failed to load; completed by the server.
    Failover,
}

/// One request of the hybrid pass.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The session's profile.
    pub profile: usize,
    /// Where it ran.
    pub outcome: Outcome,
    /// Time to first token as the user saw it, `/v1/route`'s round trip included.
    pub ttft: Duration,
    /// What `simulate-clients --trace` writes of it: the session and turn, what the route
    /// request said, `/v1/route`'s answer, and the time the browser would have taken.
    pub trace: Value,
}

/// Runs the pass; gives every request's observation.
pub async fn run(
    client: &Client,
    sessions: &Arc<Vec<Session>>,
    profiles: &Arc<Vec<Profile>>,
    answers: &Arc<Vec<Vec<Completion>>>,
    variant: &Variant,
) -> Result<Vec<Observed>> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for index in 0..sessions.len() {
        let (client, sessions, profiles, answers, variant) = (
            client.clone(),
            sessions.clone(),
            profiles.clone(),
            answers.clone(),
            variant.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let session = &sessions[index];
            let at = start + session.start;
            tokio::time::sleep_until(at.into()).await;
            visit(
                &client,
                index,
                session,
                &profiles[session.profile],
                &answers[index],
                &variant,
                at,
            )
            .await
            .with_context(|| format!("session {index}"))
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.extend(task.await??);
    }
    Ok(out)
}

/// One page visit, opened at `opened`.
#[allow(clippy::too_many_arguments)]
async fn visit(
    client: &Client,
    index: usize,
    session: &Session,
    profile: &Profile,
    answers: &[Completion],
    variant: &Variant,
    opened: Instant,
) -> Result<Vec<Observed>> {
    let download = if session.cached {
        0.0
    } else {
        profile.download_ms(variant.bytes)
    };
    let ready = download + LOAD_OVERHEAD_MS + variant.bytes as f64 / LOAD_BYTES_PER_SEC * 1e3;
    let sha = [variant.sha256.clone()];
    let mut measured: Option<BrowserPath> = None;
    // Tokens whose KV the browser engine holds: the prompt and answer of the last turn it served.
    let mut kept_tokens: u64 = 0;
    let mut out = Vec::new();
    // The model loads (from the cache or the network) while the user writes the first message.
    tokio::time::sleep(session.first_message).await;
    for (t, turn) in session.turns.iter().enumerate() {
        let msgs = messages(session, t, answers);
        let answer = &answers[t];
        let asked = Instant::now();
        let now = super::millis(opened.elapsed());
        let load_failed = session.load_fails && now >= ready;
        let cached = session.cached || now >= download;
        let loaded = !session.load_fails && now >= ready;
        let mut prompt_estimate = 0;
        let (path, answer_json) = if load_failed {
            (None, Value::Null)
        } else {
            let chars: usize = msgs
                .iter()
                .map(|m| m["content"].as_str().map_or(0, str::len))
                .sum();
            prompt_estimate = chars.div_ceil(4) as u64;
            let req = RouteRequest {
                model: Some(client.model.clone()),
                prompt_tokens: prompt_estimate,
                max_tokens: u64::from(turn.max_tokens),
                capabilities: profile.capabilities(
                    if cached { &sha } else { &[] },
                    if loaded { &sha } else { &[] },
                    // The download's progress, as the npm package reports it.
                    if cached {
                        Vec::new()
                    } else {
                        vec![Downloading {
                            sha256: variant.sha256.clone(),
                            received_bytes: (now / download).min(1.0) * variant.bytes as f64,
                            bytes_per_sec: Some(profile.download_bytes_per_sec()),
                        }]
                    },
                    measured,
                ),
                // What the engine keeps of the conversation, as the npm package says.
                cached_prompt_tokens: kept_tokens,
                // The chat streams, as the client shows it.
                stream: true,
            };
            client.route(&req).await?
        };
        let routed = asked.elapsed();
        let waiting = Duration::from_secs_f64((ready - now).max(0.0) / 1e3);
        // What the browser would have taken, wherever the request ran: on its faster path,
        // after the load, prefilling what its engine does not keep.
        let browser_path = if profile.gpu_decode_tok_s > 0.0 {
            BrowserPath::Webgpu
        } else {
            BrowserPath::Cpu
        };
        let (decode_if, prefill_if) = profile.speeds(browser_path);
        // The last prompt token is always computed (for the logits).
        let new_tokens = answer.prompt_tokens.saturating_sub(kept_tokens).max(1);
        let browser_ttft_if = (!session.load_fails)
            .then(|| routed + waiting + secs(new_tokens as f64 / prefill_if.max(0.1)));
        let mut trace = json!({
            "session": index,
            "turn": t,
            "profile": profile.name,
            "cached": cached,
            "loaded": loaded,
            "load_fails": session.load_fails,
            "prompt_tokens_estimate": prompt_estimate,
            "prompt_tokens": answer.prompt_tokens,
            "kept_tokens": kept_tokens,
            "completion_tokens": answer.completion_tokens,
            "max_tokens": turn.max_tokens,
            "route": answer_json,
            "browser_path_if": browser_path.as_str(),
            "browser_ttft_ms_if": browser_ttft_if.map(super::millis),
            "browser_tok_s_if": decode_if,
        });
        let (outcome, ttft) = match path {
            Some(_) if session.load_fails => {
                // The load fails when it would have finished; the server completes the request.
                tokio::time::sleep(waiting).await;
                let c = client.chat(&msgs, turn.max_tokens).await?;
                (Outcome::Failover, routed + waiting + c.ttft)
            }
            Some(path) => {
                let (decode, prefill) = profile.speeds(path);
                let ttft = routed + waiting + secs(new_tokens as f64 / prefill.max(0.1));
                let generation = secs(answer.completion_tokens as f64 / decode.max(0.1));
                tokio::time::sleep((ttft + generation).saturating_sub(asked.elapsed())).await;
                client
                    .report_browser(
                        path,
                        answer.prompt_tokens,
                        answer.completion_tokens,
                        ttft,
                        ttft + generation,
                    )
                    .await?;
                measured = Some(path);
                kept_tokens = answer.prompt_tokens + answer.completion_tokens;
                (Outcome::Browser(path), ttft)
            }
            None => {
                let c = client.chat(&msgs, turn.max_tokens).await?;
                (Outcome::Server, routed + c.ttft)
            }
        };
        trace["outcome"] = json!(format!("{outcome:?}"));
        trace["ttft_ms"] = json!(super::millis(ttft));
        out.push(Observed {
            profile: session.profile,
            outcome,
            ttft,
            trace,
        });
        tokio::time::sleep(turn.think).await;
    }
    Ok(out)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}
