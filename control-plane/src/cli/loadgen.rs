//! `tandem load`: a load generator for OpenAI-compatible servers (Tandem's own or llama.cpp's
//! `llama-server`). At each concurrency level it keeps that many streaming chat completions in
//! flight and reports time to first token (p50, p99) and decode throughput, aggregate and per
//! stream.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use control_plane::gateway::remote::sse::SseParser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Arguments of `tandem load`.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Model name to request.
    #[arg(long, default_value = "")]
    pub model: String,
    /// Concurrent streams per level.
    #[arg(short, long, value_delimiter = ',', default_value = "1,4,16")]
    pub concurrency: Vec<usize>,
    /// Tokens generated per request (end-of-turn is ignored).
    #[arg(short = 'n', long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Requests each stream sends in turn, per level.
    #[arg(short, long, default_value_t = 2)]
    pub rounds: usize,
    /// Label of the server in the table.
    #[arg(long, default_value = "tandem")]
    pub label: String,
    /// Print the table header.
    #[arg(long)]
    pub header: bool,
}

/// One request's measurements.
#[derive(Clone, Copy, Debug)]
struct Sample {
    ttft: Duration,
    /// Time from the first token to the last.
    decode: Duration,
    tokens: usize,
}

const TOPICS: &[&str] = &[
    "a lighthouse keeper",
    "the history of bread",
    "a journey to Mars",
    "how rivers form",
    "a talking cat",
    "the first computer",
    "a storm at sea",
    "a mountain village",
];

/// Runs the command.
pub async fn load(args: LoadArgs) -> Result<()> {
    if args.rounds == 0 || args.concurrency.contains(&0) {
        bail!("--rounds and every --concurrency level must be at least 1");
    }
    // Warm-up (retried: a server may accept connections a moment before it serves them).
    let mut warm = one(&args, 0).await;
    for _ in 0..5 {
        if warm.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        warm = one(&args, 0).await;
    }
    warm.context("warm-up request")?;
    if args.header {
        println!(
            "| server | streams | requests | aggregate decode tok/s | per-stream decode tok/s | TTFT p50 ms | TTFT p99 ms |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    }
    for &c in &args.concurrency {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for s in 0..c {
            let args_model = args.model.clone();
            let url = args.url.clone();
            let (n, rounds) = (args.max_tokens, args.rounds);
            tasks.push(tokio::spawn(async move {
                let a = LoadArgs {
                    url,
                    model: args_model,
                    concurrency: vec![],
                    max_tokens: n,
                    rounds,
                    label: String::new(),
                    header: false,
                };
                let mut out = Vec::new();
                for r in 0..rounds {
                    out.push(one(&a, s * rounds + r + 1).await?);
                }
                anyhow::Ok(out)
            }));
        }
        let mut samples = Vec::new();
        for t in tasks {
            samples.extend(t.await??);
        }
        let wall = started.elapsed().as_secs_f64();
        let tokens: usize = samples.iter().map(|s| s.tokens).sum();
        let decode_tokens: usize = samples.iter().map(|s| s.tokens.saturating_sub(1)).sum();
        let decode_time: f64 = samples.iter().map(|s| s.decode.as_secs_f64()).sum();
        let mut ttfts: Vec<f64> = samples.iter().map(|s| s.ttft.as_secs_f64() * 1e3).collect();
        ttfts.sort_by(f64::total_cmp);
        println!(
            "| {} | {c} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            args.label,
            samples.len(),
            tokens as f64 / wall,
            decode_tokens as f64 / decode_time.max(1e-9),
            percentile(&ttfts, 0.50),
            percentile(&ttfts, 0.99),
        );
    }
    Ok(())
}

/// The `q` quantile of sorted values (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Sends one streaming chat completion and measures it.
///
/// Speaks HTTP/1.1 over a plain TCP connection (`Connection: close`, chunked or plain body), so
/// that the measurement depends on nothing but the server: llama.cpp's `llama-server` and some
/// HTTP client libraries disagree about its streamed responses.
async fn one(args: &LoadArgs, i: usize) -> Result<Sample> {
    let body = serde_json::json!({
        "model": args.model,
        "messages": [{"role": "user", "content": format!("Write a long story about {} (story {i}).", TOPICS[i % TOPICS.len()])}],
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "ignore_eos": true,
        // llama-server reuses a slot's cached prompt prefix unless told not to; Tandem has no
        // prefix cache, so both compute every prompt in full.
        "cache_prompt": false,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
    .to_string();
    let hostport = args
        .url
        .trim_end_matches('/')
        .strip_prefix("http://")
        .context("--url must be http://HOST:PORT")?
        .to_owned();
    let start = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(&hostport)
        .await
        .with_context(|| format!("connecting to {hostport}"))?;
    stream.set_nodelay(true)?;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;

    let mut raw = Vec::new();
    let mut buf = vec![0u8; 16384];
    let mut body_start = None;
    let mut chunked = false;
    let mut decoder = ChunkDecoder::default();
    let mut body = Vec::new();
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    let (mut first, mut last) = (None, None);
    let mut chunks = 0usize;
    let mut usage_tokens = None;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if body_start.is_none() {
            let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let status = head.split_whitespace().nth(1).unwrap_or("");
            if status != "200" {
                bail!(
                    "the server answered {status}: {}",
                    String::from_utf8_lossy(&raw)
                );
            }
            chunked = head.contains("transfer-encoding: chunked");
            body_start = Some(end + 4);
        }
        let Some(at) = body_start else { continue };
        let fresh = raw.split_off(at);
        body_start = Some(0);
        raw.clear();
        if chunked {
            decoder.push(&fresh, &mut body);
        } else {
            body.extend_from_slice(&fresh);
        }
        parser.feed(&body, &mut events);
        body.clear();
        for data in events.drain(..) {
            if data == b"[DONE]" {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(&data).with_context(|| {
                format!("parsing the chunk {:?}", String::from_utf8_lossy(&data))
            })?;
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                usage_tokens = Some(n as usize);
            }
            let content = v["choices"][0]["delta"]["content"].as_str().unwrap_or("");
            if !content.is_empty() {
                let now = Instant::now();
                first.get_or_insert(now);
                last = Some(now);
                chunks += 1;
            }
        }
    }
    let first = first.context("the stream had no content")?;
    let last = last.unwrap_or(first);
    Ok(Sample {
        ttft: first - start,
        decode: last - first,
        tokens: usage_tokens.unwrap_or(chunks),
    })
}

/// Decodes an HTTP/1.1 chunked body incrementally.
#[derive(Default)]
struct ChunkDecoder {
    pending: Vec<u8>,
    /// Bytes left in the current chunk (plus its trailing CRLF).
    left: usize,
}

impl ChunkDecoder {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.pending.extend_from_slice(bytes);
        loop {
            if self.left > 0 {
                let take = self.left.min(self.pending.len());
                if take == 0 {
                    return;
                }
                // The chunk's data, then its CRLF (which is not data).
                let data_left = self.left.saturating_sub(2);
                let data = take.min(data_left);
                out.extend_from_slice(&self.pending[..data]);
                self.pending.drain(..take);
                self.left -= take;
                continue;
            }
            let Some(pos) = self.pending.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size_line = String::from_utf8_lossy(&self.pending[..pos]).into_owned();
            self.pending.drain(..pos + 2);
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or(0);
            if size == 0 {
                self.pending.clear();
                return;
            }
            self.left = size + 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode_across_reads() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for split in 0..body.len() {
            let mut d = ChunkDecoder::default();
            let mut out = Vec::new();
            d.push(&body[..split], &mut out);
            d.push(&body[split..], &mut out);
            assert_eq!(out, b"hello, world", "split at {split}");
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
    }
}
