//! `tandem throughput`: requests per second and latency percentiles of short chat requests
//! against an OpenAI-compatible server. Closed loop (`--rate 0`: each connection sends its next
//! request when the last one ends, which measures the most a server takes) or open loop at a
//! fixed rate (latency counted from when each request was due, so a stalled server cannot hide
//! its queue).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use tokio::sync::Semaphore;

/// Arguments of `tandem throughput`.
#[derive(clap::Args, Debug)]
pub struct ThroughputArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Model name to request.
    #[arg(long, default_value = "echo")]
    pub model: String,
    /// Concurrent connections (closed loop), or most requests in flight (open loop).
    #[arg(short, long, default_value_t = 32)]
    pub connections: usize,
    /// Requests per second (0: closed loop, as fast as the server answers).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Seconds to measure (after one second of warm-up).
    #[arg(short, long, default_value_t = 5.0)]
    pub duration: f64,
    /// Stream the answers.
    #[arg(long)]
    pub stream: bool,
    /// Label of the row.
    #[arg(long, default_value = "server")]
    pub label: String,
    /// Print the table header.
    #[arg(long)]
    pub header: bool,
    /// API key sent as `Authorization: Bearer`.
    #[arg(long, env = "TANDEM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// One request; returns whether it succeeded.
async fn one(client: &reqwest::Client, url: &str, body: &'static [u8]) -> bool {
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    match resp {
        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
        Ok(r) => {
            let _ = r.bytes().await;
            false
        }
        Err(_) => false,
    }
}

/// Runs the command.
pub async fn run(args: ThroughputArgs) -> Result<()> {
    if args.connections == 0 || args.duration <= 0.0 {
        bail!("--connections and --duration must be positive");
    }
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(k) = &args.api_key {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {k}").parse()?,
        );
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections * 2)
        .tcp_nodelay(true)
        .default_headers(headers)
        .build()?;
    let url = format!("{}/v1/chat/completions", args.url.trim_end_matches('/'));
    let body: &'static [u8] = Box::leak(
        serde_json::to_vec(&serde_json::json!({
            "model": args.model,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 8,
            "stream": args.stream,
        }))?
        .into_boxed_slice(),
    );
    // Warm-up: open the connections.
    let warm_until = Instant::now() + Duration::from_secs(1);
    let mut warm = Vec::new();
    for _ in 0..args.connections {
        let (client, url) = (client.clone(), url.clone());
        warm.push(tokio::spawn(async move {
            while Instant::now() < warm_until {
                one(&client, &url, body).await;
            }
        }));
    }
    for w in warm {
        w.await?;
    }
    let duration = Duration::from_secs_f64(args.duration);
    let start = Instant::now();
    let end = start + duration;
    let mut latencies: Vec<Duration> = Vec::new();
    let mut errors = 0usize;
    if args.rate <= 0.0 {
        let mut tasks = Vec::new();
        for _ in 0..args.connections {
            let (client, url) = (client.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut err = 0;
                while Instant::now() < end {
                    let t = Instant::now();
                    if one(&client, &url, body).await {
                        lat.push(t.elapsed());
                    } else {
                        err += 1;
                    }
                }
                (lat, err)
            }));
        }
        for t in tasks {
            let (l, e) = t.await?;
            latencies.extend(l);
            errors += e;
        }
    } else {
        let limit = Arc::new(Semaphore::new(args.connections));
        let interval = Duration::from_secs_f64(1.0 / args.rate);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut i: u32 = 0;
        loop {
            let due = start + interval * i;
            if due >= end {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
            let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                // Too many in flight: counted as an error (the server fell behind).
                errors += 1;
                i += 1;
                continue;
            };
            let (client, url, tx) = (client.clone(), url.clone(), tx.clone());
            tokio::spawn(async move {
                let ok = one(&client, &url, body).await;
                let _ = tx.send((ok, due.elapsed()));
                drop(permit);
            });
            i += 1;
        }
        drop(tx);
        while let Some((ok, lat)) = rx.recv().await {
            if ok {
                latencies.push(lat);
            } else {
                errors += 1;
            }
        }
    }
    let wall = start.elapsed().as_secs_f64().max(args.duration);
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    if args.header {
        println!(
            "| target | stream | load | requests | req/s | p50 ms | p90 ms | p99 ms | errors |"
        );
        println!("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    }
    let load = if args.rate > 0.0 {
        format!("{} req/s offered", args.rate)
    } else {
        format!("{} connections", args.connections)
    };
    println!(
        "| {} | {} | {load} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {errors} |",
        args.label,
        if args.stream { "yes" } else { "no" },
        latencies.len(),
        latencies.len() as f64 / wall,
        pct(0.50),
        pct(0.90),
        pct(0.99),
    );
    Ok(())
}
