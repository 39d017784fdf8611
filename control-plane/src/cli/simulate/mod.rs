//! `tandem simulate-clients`: what the hybrid saves. A simulated population of web clients
//! (device profiles with their sources in `profiles.toml`) sends the same mixed chat workload
//! twice to a real `tandem serve`: first every request to the server, then as
//! `@tandem-inference/web` would under its `auto` policy: each request asks the real
//! `/v1/route`, server-routed requests run on the server, and browser-routed ones are charged
//! the time the profile's engine would take and reported through `POST /v1/usage/browser`.
//! The report comes from the server's ledger: the share served in browsers, time to first token
//! per route, and server cost per request against the server-only pass.

mod capacity;
mod client;
mod hybrid;
mod profiles;
mod report;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use client::{Client, Completion};
use workload::{Session, Shape};

/// Arguments of `tandem simulate-clients`.
#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key sent as `Authorization: Bearer` (when the server has tenants).
    #[arg(long, default_value = "")]
    pub api_key: String,
    /// The model (default: the first with a browser variant).
    #[arg(long, default_value = "")]
    pub model: String,
    /// The server's ledger (`sqlite://...` or `postgres://...`), read for the report.
    #[arg(long)]
    pub database: String,
    /// Only this tenant's records (the key's), when others use the server too.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Page visits in each pass.
    #[arg(long, default_value_t = 40)]
    pub sessions: usize,
    /// Instead of `--sessions`: as many visits as keep the server this busy (0 to 1) when it
    /// serves them alone, from its capacity measured first (chat requests per second with 16
    /// clients sending the workload's first turns back to back for 20 s). Sizes the population
    /// to the server, as its operator would, whatever the machine.
    #[arg(long)]
    pub utilization: Option<f64>,
    /// Seconds over which the visits start.
    #[arg(long, default_value_t = 60.0)]
    pub window: f64,
    /// Most chat turns per visit.
    #[arg(long, default_value_t = 4)]
    pub max_turns: usize,
    /// Mean pause to read and write a message (before the first and between turns), seconds.
    #[arg(long, default_value_t = 5.0)]
    pub think: f64,
    /// Seed of the population.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Device profiles (TOML, as the built-in `profiles.toml`).
    #[arg(long)]
    pub profiles: Option<PathBuf>,
    /// Writes every request of the hybrid pass to this file, a JSON object per line: its
    /// session, turn and profile, what the route request said, `/v1/route`'s answer, where it
    /// ran, its time to first token, and the time the browser would have taken wherever it ran.
    #[arg(long)]
    pub trace: Option<PathBuf>,
}

/// A duration in milliseconds.
fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The system prompt of every conversation.
const SYSTEM: &str = "You are a helpful assistant.";

/// Runs the command.
pub async fn run(args: SimulateArgs) -> Result<()> {
    let profiles = Arc::new(profiles::load(args.profiles.as_deref())?);
    let mut shape = Shape {
        sessions: args.sessions,
        window: Duration::from_secs_f64(args.window.max(0.0)),
        max_turns: args.max_turns,
        mean_think: Duration::from_secs_f64(args.think.max(0.0)),
        seed: args.seed,
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let mut client = Client::new(http, &args.url, &args.api_key, &args.model);
    // A local model's variant is listed once its file's SHA-256 is known (hashed in the
    // background after the server is ready).
    let mut tries = 0;
    let variant = loop {
        match client.variant().await {
            Ok(v) => break v,
            Err(e) if tries >= 120 => {
                return Err(e.context("reading the model's browser variant"));
            }
            Err(_) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    if let Some(utilization) = args.utilization {
        shape.sessions = sized_to_capacity(&client, &shape, &profiles, utilization).await?;
    }
    let sessions = Arc::new(shape.sessions(&profiles));
    let turns: usize = sessions.iter().map(|s| s.turns.len()).sum();
    eprintln!(
        "{} sessions, {turns} requests per pass, model {} (browser variant {} bytes)",
        sessions.len(),
        client.model,
        variant.bytes
    );

    let started = control_plane::store::now_ms();
    let answers = Arc::new(server_only(&client, &sessions).await?);
    let middle = control_plane::store::now_ms();
    let observed = hybrid::run(&client, &sessions, &profiles, &answers, &variant).await?;
    let ended = control_plane::store::now_ms() + 1;
    if let Some(path) = &args.trace {
        let mut lines = String::new();
        for o in &observed {
            lines.push_str(&o.trace.to_string());
            lines.push('\n');
        }
        std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))?;
    }

    let store = control_plane::store::Store::open(&args.database)
        .await
        .context("opening the ledger")?;
    let tenant = args.tenant.as_deref();
    let baseline = report::Pass::read(&store, tenant, started, middle).await?;
    let with_browsers = report::Pass::read(&store, tenant, middle, ended).await?;
    report::print(&baseline, &with_browsers, &profiles, &sessions, &observed);
    Ok(())
}

/// The number of sessions that keeps the server `utilization` busy: each session sends its turns
/// while it lasts, so in the steady state sessions start at `sessions / window` per second and
/// send `mean turns` requests each; that rate is set to `utilization` times the capacity.
async fn sized_to_capacity(
    client: &Client,
    shape: &Shape,
    profiles: &[profiles::Profile],
    utilization: f64,
) -> Result<usize> {
    let probe = Shape {
        sessions: 64,
        ..*shape
    }
    .sessions(profiles);
    let firsts: Vec<(Vec<Value>, u32)> = probe
        .iter()
        .map(|s| (messages(s, 0, &[]), s.turns[0].max_tokens))
        .collect();
    let mean_turns =
        probe.iter().map(|s| s.turns.len()).sum::<usize>() as f64 / probe.len().max(1) as f64;
    let rps = capacity::requests_per_second(client, Arc::new(firsts), 16, Duration::from_secs(20))
        .await
        .context("measuring the server's capacity")?;
    let sessions =
        (utilization.clamp(0.0, 1.0) * rps * shape.window.as_secs_f64() / mean_turns).round();
    eprintln!(
        "capacity: {rps:.2} requests/s; {sessions} sessions of {mean_turns:.2} turns on average \
         over {:.0} s keep the server {:.0}% busy",
        shape.window.as_secs_f64(),
        utilization * 100.0
    );
    Ok((sessions as usize).max(1))
}

/// The messages of a turn: the system prompt, the earlier turns with their answers, the user's
/// message.
fn messages(session: &Session, turn: usize, answers: &[Completion]) -> Vec<Value> {
    let mut out = vec![json!({"role": "system", "content": SYSTEM})];
    for (t, a) in session.turns[..turn].iter().zip(answers) {
        out.push(json!({"role": "user", "content": t.user}));
        out.push(json!({"role": "assistant", "content": a.text}));
    }
    out.push(json!({"role": "user", "content": session.turns[turn].user}));
    out
}

/// The first pass: every request on the server. Gives each turn's answer, whose text builds the
/// next turns' history in both passes (greedy answers are the same in the browser, which runs
/// the same engine) and whose token counts the browser reports in the second.
async fn server_only(
    client: &Client,
    sessions: &Arc<Vec<Session>>,
) -> Result<Vec<Vec<Completion>>> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for index in 0..sessions.len() {
        let (client, sessions) = (client.clone(), sessions.clone());
        tasks.push(tokio::spawn(async move {
            let session = &sessions[index];
            tokio::time::sleep_until((start + session.start + session.first_message).into()).await;
            let mut answers = Vec::new();
            for (t, turn) in session.turns.iter().enumerate() {
                let msgs = messages(session, t, &answers);
                let answer = client
                    .chat(&msgs, turn.max_tokens)
                    .await
                    .with_context(|| format!("session {index}, turn {t}"))?;
                answers.push(answer);
                tokio::time::sleep(turn.think).await;
            }
            anyhow::Ok(answers)
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await??);
    }
    Ok(out)
}
