//! `tandem run`: answers one prompt through the chat template, streaming the reply to standard
//! output and the timings to standard error.

use std::io::Write;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Result, bail};
use std::future::Future;
use std::pin::Pin;

use control_plane::backends::{self, BackendKind, WithEngine};
use control_plane::{load, memory};
use engine_core::backend::Backend;
use engine_core::chat::ChatRequest;
use engine_core::engine::{Engine, EngineConfig, Event, Request};
use engine_core::sampler::SamplingParams;

/// Arguments of `tandem run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Model: a GGUF path, an http(s) URL, or hf:OWNER/REPO/FILE.gguf.
    #[arg(long, env = "TANDEM_MODEL")]
    pub model: String,
    /// The user's message.
    #[arg(long)]
    pub prompt: String,
    /// A system message (else the template's default).
    #[arg(long)]
    pub system: Option<String>,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Keep only the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Drop tokens less likely than this fraction of the most likely one.
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Repetition penalty (1 = none).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Random seed (else a fresh one).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Keep generating after the end-of-turn token, up to --max-tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// CPU threads (0 = all cores).
    #[arg(long, default_value_t = 0, env = "TANDEM_THREADS")]
    pub threads: usize,
    /// Context size in tokens (0 = the model's, at most 8192).
    #[arg(long, default_value_t = 0)]
    pub ctx_size: usize,
    /// Compute backend.
    #[arg(long, value_enum, default_value = "cpu", env = "TANDEM_BACKEND")]
    pub backend: BackendKind,
    /// Hide progress bars and the statistics line.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs the command.
pub async fn run(args: RunArgs) -> Result<()> {
    let progress = !args.quiet;
    let (_, path) = load::fetch(&args.model, progress).await?;
    let bar = control_plane::progress::spinner(progress, "loading model");
    let file = load::open(&path)?;
    let config = EngineConfig {
        context_size: args.ctx_size,
        max_seqs: 1,
        ..EngineConfig::default()
    };
    let answer = backends::with_engine(args.backend, args.threads, &file, config, Answer(&args))?;
    bar.finish_and_clear();
    answer.await
}

/// Answers the prompt on whichever engine the backend gives.
struct Answer<'a>(&'a RunArgs);

impl<'a> WithEngine for Answer<'a> {
    type Output = Pin<Box<dyn Future<Output = Result<()>> + 'a>>;
    fn run<B: Backend + 'static>(self, engine: Engine<B>) -> Self::Output {
        Box::pin(answer(engine, self.0))
    }
}

/// Renders the prompt, generates, and streams the reply and the statistics.
async fn answer<B: Backend>(mut engine: Engine<B>, args: &RunArgs) -> Result<()> {
    let engine = &mut engine;

    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(serde_json::json!({"role": "system", "content": system}));
    }
    messages.push(serde_json::json!({"role": "user", "content": args.prompt}));
    let tok = engine.tokenizer();
    let bos = tok
        .bos_id()
        .and_then(|id| tok.token_piece(id))
        .unwrap_or("")
        .to_owned();
    let eos = tok
        .eos_id()
        .and_then(|id| tok.token_piece(id))
        .unwrap_or("")
        .to_owned();
    let prompt_text = engine.template().render(&ChatRequest {
        messages: &messages,
        add_generation_prompt: true,
        bos_token: &bos,
        eos_token: &eos,
        tools: None,
    })?;
    let prompt = tok.encode(&prompt_text, tok.add_bos(), true);
    let prompt_tokens = prompt.len();

    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        min_p: args.min_p,
        repetition_penalty: args.repeat_penalty,
        seed: args.seed,
        ..SamplingParams::default()
    };
    let (tx, rx) = mpsc::channel();
    let request = Request {
        prompt,
        params,
        max_tokens: args.max_tokens,
        stop: Vec::new(),
        ignore_eos: args.ignore_eos,
        prompt_logprobs: None,
        fallback_seed: rand::random(),
        flow: None,
        embed: None,
        grammar: None,
    };
    let start = Instant::now();
    engine.add(request, Box::new(move |ev| tx.send(ev).is_ok()))?;

    let mut out = std::io::stdout().lock();
    let mut first_token = None;
    let mut generated = 0usize;
    let mut finished_at = None;
    while engine.has_work() {
        engine.step().await?;
        for ev in rx.try_iter() {
            match ev {
                Event::Token { text, .. } => {
                    first_token.get_or_insert_with(Instant::now);
                    generated += 1;
                    out.write_all(text.as_bytes())?;
                    out.flush()?;
                }
                Event::Finished {
                    text,
                    completion_tokens,
                    ..
                } => {
                    out.write_all(text.as_bytes())?;
                    writeln!(out)?;
                    out.flush()?;
                    generated = completion_tokens;
                    finished_at = Some(Instant::now());
                }
                Event::Failed(e) => bail!("generation failed: {e}"),
                Event::PromptLogprobs(_) | Event::Embedding(_) => {}
            }
        }
    }
    if !args.quiet {
        let end = finished_at.unwrap_or_else(Instant::now);
        let ttft = first_token.map(|t| t - start).unwrap_or_default();
        let decode_time = first_token.map(|t| end - t).unwrap_or_default();
        let decode_rate = if generated > 1 && decode_time.as_secs_f64() > 0.0 {
            (generated - 1) as f64 / decode_time.as_secs_f64()
        } else {
            0.0
        };
        eprintln!(
            "prompt tokens: {prompt_tokens} | TTFT: {:.1} ms | prefill: {:.1} tok/s | decode: {:.1} tok/s ({generated} tokens) | peak memory: {}",
            ttft.as_secs_f64() * 1e3,
            prompt_tokens as f64 / ttft.as_secs_f64().max(1e-9),
            decode_rate,
            memory::peak_rss()
                .map(memory::mib)
                .unwrap_or_else(|| "unknown".into()),
        );
    }
    Ok(())
}
