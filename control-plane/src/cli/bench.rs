//! `tandem bench`: prefill and decode throughput, time to first token and peak memory, printed as
//! a table in the style of llama.cpp's `llama-bench`.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use std::future::Future;
use std::pin::Pin;

use control_plane::backends::{self, BackendKind, WithEngine};
use control_plane::{load, memory};
use engine_core::backend::Backend;
use engine_core::constraint::Grammar;
use engine_core::engine::{Engine, EngineConfig, Event, Request};
use rand::{RngExt, SeedableRng};

/// Arguments of `tandem bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Model: a GGUF path, an http(s) URL, or hf:OWNER/REPO/FILE.gguf.
    #[arg(long, env = "TANDEM_MODEL")]
    pub model: String,
    /// Thread counts to measure.
    #[arg(short, long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Prompt lengths for the prefill tests (0: none).
    #[arg(short = 'p', long, value_delimiter = ',', default_value = "128,512")]
    pub prompt: Vec<usize>,
    /// Tokens to generate in the decode test.
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Context depths of the decode test: each is measured after a prompt of that many tokens
    /// (`tgN @ dD`, as llama-bench's `-d`; 0 is a one-token prompt).
    #[arg(
        short = 'd',
        long = "depth",
        value_delimiter = ',',
        default_value = "0"
    )]
    pub depth: Vec<usize>,
    /// Compute backend.
    #[arg(long, value_enum, default_value = "cpu", env = "TANDEM_BACKEND")]
    pub backend: BackendKind,
    /// Repetitions of each test (after one warm-up).
    #[arg(short, long, default_value_t = 3)]
    pub reps: usize,
    /// Length of a shared prefix for the prefix-cache test (0: none): the time to the first
    /// token of a prompt of this many tokens plus a 16-token question, cold (the prefix never
    /// seen) and warm (the same prefix, another question).
    #[arg(long, default_value_t = 0)]
    pub prefix_cache: usize,
    /// Also decode under a JSON schema (structured output) after the same prompts, and print
    /// its rate beside the unconstrained one: the token masks' cost per token.
    #[arg(long)]
    pub structured: bool,
}

/// The schema of the structured-output decode test: an object holding a list of at least 128
/// short strings, so that every measured token is generated under a live grammar (keys,
/// punctuation and free text, as in real JSON answers).
const BENCH_SCHEMA: &str = r#"{"type": "object", "properties": {"notes": {"type": "array", "minItems": 128, "items": {"type": "string", "maxLength": 24}}}, "required": ["notes"]}"#;

/// Tokens after the shared prefix in the prefix-cache test.
const QUESTION_TOKENS: usize = 16;

/// Runs the command.
pub async fn bench(args: BenchArgs) -> Result<()> {
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    println!("| model | size | params | backend | threads | test | t/s | TTFT ms |");
    println!("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |");
    let (source, path) = load::fetch(&args.model, false).await?;
    let file = load::open(&path)?;
    let file_size = file.bytes().len() as u64;
    let params: u64 = file.gguf().tensors.iter().map(|t| t.n_elements()).sum();
    let mut device = String::new();
    for &threads in &args.threads {
        let config = EngineConfig {
            max_seqs: 1,
            context_size: args
                .prompt
                .iter()
                .copied()
                .max()
                .unwrap_or(0)
                .max(args.n_gen + 1 + args.depth.iter().copied().max().unwrap_or(0))
                .max(args.prefix_cache + QUESTION_TOKENS + 1)
                + 16,
            ..EngineConfig::default()
        };
        let table = Table {
            args: &args,
            name: source.display_name(),
            file_size,
            params,
        };
        device = backends::with_engine(args.backend, threads, &file, config, table)?.await?;
    }
    println!();
    println!("device: {device}");
    println!(
        "peak RSS: {} (model file {})",
        memory::peak_rss()
            .map(memory::mib)
            .unwrap_or_else(|| "unknown".into()),
        memory::mib(file_size)
    );
    Ok(())
}

/// The rows of one engine (one thread count); gives the device's name.
struct Table<'a> {
    args: &'a BenchArgs,
    name: String,
    file_size: u64,
    params: u64,
}

impl<'a> WithEngine for Table<'a> {
    type Output = Pin<Box<dyn Future<Output = Result<String>> + 'a>>;
    fn run<B: Backend + 'static>(self, engine: Engine<B>) -> Self::Output {
        Box::pin(self.rows(engine))
    }
}

impl Table<'_> {
    async fn rows<B: Backend>(self, mut engine: Engine<B>) -> Result<String> {
        let args = self.args;
        let info = engine.backend().info();
        let row = |test: &str, rate: f64, ttft: Option<f64>| {
            println!(
                "| {} | {:.2} MiB | {:.2} M | {} | {} | {test} | {rate:.2} | {} |",
                self.name,
                self.file_size as f64 / 1048576.0,
                self.params as f64 / 1e6,
                info.name,
                info.threads,
                ttft.map(|t| format!("{t:.1}")).unwrap_or_default()
            )
        };
        let vocab = engine.model_config().vocab_size as u32;
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        for &n in args.prompt.iter().filter(|&&n| n > 0) {
            let mut times = Vec::new();
            for rep in 0..=args.reps {
                let prompt: Vec<u32> = (0..n).map(|_| rng.random_range(32..vocab)).collect();
                let (ttft, _) = generate_greedy(&mut engine, prompt, 1).await?;
                if rep > 0 {
                    times.push(ttft);
                }
            }
            let mean = mean_secs(&times);
            row(&format!("pp{n}"), n as f64 / mean, Some(mean * 1e3));
        }
        if args.prefix_cache > 0 {
            let n = args.prefix_cache;
            let random = |rng: &mut rand::rngs::StdRng, k: usize| -> Vec<u32> {
                (0..k).map(|_| rng.random_range(32..vocab)).collect()
            };
            engine.set_prefix_caching(true);
            let (mut cold, mut warm) = (Vec::new(), Vec::new());
            for rep in 0..=args.reps {
                let prefix = random(&mut rng, n);
                let ask = |rng: &mut rand::rngs::StdRng| {
                    let mut p = prefix.clone();
                    p.extend(random(rng, QUESTION_TOKENS));
                    p
                };
                let (c, _) = generate_greedy(&mut engine, ask(&mut rng), 1).await?;
                let (w, _) = generate_greedy(&mut engine, ask(&mut rng), 1).await?;
                if rep > 0 {
                    cold.push(c);
                    warm.push(w);
                }
            }
            engine.set_prefix_caching(false);
            let m = n + QUESTION_TOKENS;
            let (c, w) = (mean_secs(&cold), mean_secs(&warm));
            row(&format!("pp{m} cold"), m as f64 / c, Some(c * 1e3));
            row(
                &format!("pp{m} warm ({n} cached)"),
                m as f64 / w,
                Some(w * 1e3),
            );
            println!("| | | | | | warm TTFT / cold | {:.1}% | |", w / c * 100.0);
        }
        let schema: serde_json::Value = serde_json::from_str(BENCH_SCHEMA)?;
        for &depth in args.depth.iter().filter(|_| args.n_gen > 0) {
            let (mut rates, mut constrained, mut constrained_tokens) = (Vec::new(), Vec::new(), 0);
            let (mut mask_time, mut masked) = (Duration::ZERO, 0);
            for rep in 0..=args.reps {
                let prompt: Vec<u32> = (0..depth.max(1))
                    .map(|_| rng.random_range(32..vocab))
                    .collect();
                let mut req = Request::greedy(prompt.clone(), args.n_gen + 1);
                req.ignore_eos = true;
                let (ttft, total, _) = generate(&mut engine, req).await?;
                if rep > 0 {
                    rates.push(args.n_gen as f64 / (total - ttft).as_secs_f64());
                }
                if args.structured {
                    // The rate counts the tokens it took, should the JSON end first.
                    let grammar = Grammar::JsonSchema(schema.clone());
                    let mut req = Request::greedy(prompt, args.n_gen + 1);
                    req.grammar = Some(grammar.clone());
                    let (ttft, total, ids) = generate(&mut engine, req).await?;
                    let tokens = ids.len();
                    if rep > 0 && tokens > 1 {
                        constrained.push((tokens - 1) as f64 / (total - ttft).as_secs_f64());
                        constrained_tokens += tokens;
                        // The masks alone: the same tokens again through a fresh matcher.
                        let mut c = engine.compile_grammar(&grammar)?;
                        let mut logits = vec![0.0f32; vocab as usize];
                        let t = Instant::now();
                        for &id in &ids {
                            c.mask(&mut logits)?;
                            c.accept(id)?;
                        }
                        mask_time += t.elapsed();
                        masked += tokens;
                    }
                }
            }
            let test = match depth {
                0 => format!("tg{}", args.n_gen),
                d => format!("tg{} @ d{d}", args.n_gen),
            };
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            let free = mean(&rates);
            row(&test, free, None);
            if !constrained.is_empty() {
                let json = mean(&constrained);
                let avg = constrained_tokens / constrained.len();
                row(&format!("{test} json schema ({avg} tokens)"), json, None);
                println!(
                    "| | | | | | structured-output overhead per token | {:.1}% | |",
                    (free / json - 1.0) * 100.0
                );
                let mask_us = mask_time.as_secs_f64() * 1e6 / masked as f64;
                println!(
                    "| | | | | | token mask per token | {mask_us:.0} µs ({:.1}% of a decode step) | |",
                    mask_us * free / 1e4
                );
            }
        }
        Ok(info.device.clone())
    }
}

fn mean_secs(times: &[Duration]) -> f64 {
    times.iter().map(Duration::as_secs_f64).sum::<f64>() / times.len() as f64
}

/// Generates `max_tokens` greedy tokens (ignoring end-of-turn); returns the time to the first
/// token and to the last.
async fn generate_greedy<B: Backend>(
    engine: &mut Engine<B>,
    prompt: Vec<u32>,
    max_tokens: usize,
) -> Result<(Duration, Duration)> {
    let mut req = Request::greedy(prompt, max_tokens);
    req.ignore_eos = true;
    let (ttft, total, _) = generate(engine, req).await?;
    Ok((ttft, total))
}

/// Runs `req` alone; returns the time to the first token, to the last, and the tokens.
async fn generate<B: Backend>(
    engine: &mut Engine<B>,
    req: Request,
) -> Result<(Duration, Duration, Vec<u32>)> {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    engine.add(req, Box::new(move |ev| tx.send(ev).is_ok()))?;
    let mut first = None;
    let mut tokens = Vec::new();
    while engine.has_work() {
        engine.step().await?;
        for ev in rx.try_iter() {
            match ev {
                Event::Token { token, .. } => {
                    tokens.push(token.id);
                    first.get_or_insert_with(|| start.elapsed());
                }
                Event::Failed(e) => bail!("generation failed: {e}"),
                _ => {}
            }
        }
    }
    let total = start.elapsed();
    Ok((first.unwrap_or(total), total, tokens))
}
