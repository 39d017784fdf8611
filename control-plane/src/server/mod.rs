//! `tandem serve`: binds the listener at once (so `/health` answers while models load), loads
//! each local model onto its backend, sets up the remote upstreams (discovering their models),
//! puts them all behind the gateway, serves the API and the web demo, and on SIGTERM/SIGINT
//! stops accepting, lets in-flight streams finish up to the drain timeout, and returns.

pub mod app;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::accounting::Accounting;
use crate::backends::EngineLimits;
use crate::config::{ServeConfig, UpstreamEntry};
use crate::gateway::breaker::BreakerConfig;
use crate::gateway::local::{LocalSpec, LocalUpstream};
use crate::gateway::remote::{RemoteConfig, RemoteUpstream};
use crate::gateway::upstream::{Features, ModelInfo};
use crate::gateway::{
    Gateway, RetryConfig, RoutingConfig, Timeouts, UpstreamHandle, UpstreamSettings, probe,
};
use crate::response_cache::ResponseCache;
use crate::state::{AppState, Loaded, LocalModel, SharedState};

pub use app::{router, web_root};

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The listener could not be bound.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A local model could not be loaded.
    #[error(transparent)]
    Load(#[from] crate::load::LoadError),
    /// Something else.
    #[error("{0}")]
    Other(String),
}

/// Runs `tandem serve`.
pub async fn run(args: crate::config::ServeArgs) -> Result<(), ServeError> {
    let cfg = ServeConfig::load(args)?;
    serve(cfg).await
}

/// Serves until a shutdown signal, then drains.
pub async fn serve(cfg: ServeConfig) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind((cfg.host.as_str(), cfg.port))
        .await
        .map_err(|source| ServeError::Bind {
            addr: format!("{}:{}", cfg.host, cfg.port),
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServeError::Other(e.to_string()))?;
    let instance = cfg
        .instance_id
        .clone()
        .unwrap_or_else(|| format!("{}:{}", hostname(), addr.port()));
    let (accounting, ledger_task) = open_accounting(&cfg, instance).await?;
    let mut state =
        AppState::new(cfg.body_limit, cfg.metrics_names).with_accounting(Arc::clone(&accounting));
    if cfg.response_cache_bytes > 0 {
        state = state.with_response_cache(Arc::new(ResponseCache::new(
            cfg.response_cache_bytes,
            cfg.response_cache_ttl,
        )));
    }
    let state: SharedState = Arc::new(state);
    let root = web_root(cfg.web_root.as_deref());
    let app = router(Arc::clone(&state), &cfg.cors_origins, root.as_deref());
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    // No Nagle: a stream's last events (written after its usage record is committed) must not
    // wait for the client's delayed acknowledgement.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    });
    let mut server_task = tokio::spawn(async move { server.await });
    let what = if cfg.models.is_empty() {
        "gateway".to_owned()
    } else {
        format!("{} backend", cfg.backend.name())
    };
    eprintln!("tandem: listening on http://{addr} ({what})");
    match &root {
        Some(r) => eprintln!("tandem: web demo at http://{addr}/ (from {})", r.display()),
        None => eprintln!("tandem: no web-demo folder found; / answers 404"),
    }

    let server_failed = |r: Result<Result<(), std::io::Error>, tokio::task::JoinError>| {
        ServeError::Other(match r {
            Ok(Ok(())) => "the server stopped unexpectedly".into(),
            Ok(Err(e)) => format!("serving: {e}"),
            Err(e) => format!("the server task failed: {e}"),
        })
    };
    tokio::select! {
        loaded = start_upstreams(&cfg, &state) => {
            let loaded = loaded?;
            let names: Vec<String> =
                loaded.gateway.models().into_iter().map(|(m, _)| m.name).collect();
            // Ready only once requests can see the models.
            let _ = state.loaded.set(loaded);
            eprintln!("tandem: ready, serving {}", names.join(", "));
        }
        () = crate::shutdown::signal() => {
            let _ = stop_tx.send(true);
            return Ok(());
        }
        r = &mut server_task => return Err(server_failed(r)),
    }

    tokio::select! {
        () = crate::shutdown::signal() => {}
        r = &mut server_task => return Err(server_failed(r)),
    }
    eprintln!(
        "tandem: shutting down; in-flight requests have {}s to finish",
        cfg.drain_timeout.as_secs()
    );
    state.shutting_down.store(true, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(cfg.drain_timeout, &mut server_task)
        .await
        .is_err()
    {
        eprintln!("tandem: drain timeout reached; cancelling what is left");
        if let Some(l) = state.loaded.get() {
            for m in &l.locals {
                m.handle.service.cancel_all();
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut server_task).await;
    }
    // Every request's record is written before the process ends.
    accounting.ledger.flush().await;
    drop(state);
    drop(accounting);
    let _ = tokio::time::timeout(Duration::from_secs(10), ledger_task).await;
    eprintln!("tandem: stopped");
    Ok(())
}

/// This machine's name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Opens the accounting (database, tenants, ledger) and says what it found.
async fn open_accounting(
    cfg: &ServeConfig,
    instance: String,
) -> Result<(Arc<Accounting>, tokio::task::JoinHandle<()>), ServeError> {
    let (acc, task, interrupted) = Accounting::open(
        &cfg.database,
        cfg.redis.as_deref(),
        instance.clone(),
        cfg.admin_key.clone(),
    )
    .await
    .map_err(|e| ServeError::Other(format!("opening the database: {e}")))?;
    if interrupted > 0 {
        eprintln!(
            "tandem: {interrupted} requests were in flight when {instance} last stopped; recorded as interrupted"
        );
    }
    let what = if acc.tenants.enabled() {
        "API keys required"
    } else {
        "no tenants: the API is open"
    };
    eprintln!(
        "tandem: ledger in {} ({what}; limits and budgets {}; admin API {})",
        redact(&cfg.database),
        cfg.redis.as_deref().map_or_else(
            || "in this process".to_owned(),
            |r| format!("in {}", redact(r))
        ),
        if cfg.admin_key.is_some() { "on" } else { "off" }
    );
    Ok((acc, task))
}

/// A database URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Routing settings from the configuration.
fn routing_config(cfg: &ServeConfig) -> RoutingConfig {
    let r = &cfg.routing;
    let d = RetryConfig::default();
    RoutingConfig {
        policy: r.policy.unwrap_or_default(),
        model_policies: cfg
            .model_policies
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        retry: RetryConfig {
            attempts: r.attempts.unwrap_or(d.attempts),
            backoff: r.retry_backoff_ms.map_or(d.backoff, Duration::from_millis),
        },
    }
}

/// An upstream's settings from its entry (or the defaults of its kind).
fn settings(cfg: &ServeConfig, entry: Option<&UpstreamEntry>, base: Timeouts) -> UpstreamSettings {
    let r = &cfg.routing;
    let db = BreakerConfig::default();
    let ms = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_millis);
    UpstreamSettings {
        max_concurrency: entry.and_then(|e| e.max_concurrency),
        timeouts: Timeouts {
            connect: ms(entry.and_then(|e| e.connect_timeout_ms), base.connect),
            first_token: ms(
                entry.and_then(|e| e.first_token_timeout_ms),
                base.first_token,
            ),
            idle: ms(entry.and_then(|e| e.idle_timeout_ms), base.idle),
            total: ms(entry.and_then(|e| e.total_timeout_ms), base.total),
        },
        cost: entry.map(|e| e.cost).unwrap_or_default(),
        breaker: BreakerConfig {
            failures_to_open: r.breaker_failures.unwrap_or(db.failures_to_open).max(1),
            cooldown: ms(r.breaker_cooldown_ms, db.cooldown),
            successes_to_close: r.breaker_successes.unwrap_or(db.successes_to_close).max(1),
        },
        probe_interval: ms(r.health_interval_ms, Duration::from_secs(5))
            .max(Duration::from_millis(50)),
    }
}

/// A remote upstream from its entry.
fn remote(cfg: &ServeConfig, e: &UpstreamEntry) -> Result<UpstreamHandle, ServeError> {
    let id = e.id.clone().unwrap_or_else(|| "upstream".into());
    let settings = settings(cfg, Some(e), Timeouts::REMOTE);
    let api_key = match &e.api_key_env {
        Some(var) => Some(std::env::var(var).map_err(|_| {
            ServeError::Other(format!(
                "upstream {id}: the environment variable {var} (api_key_env) is not set"
            ))
        })?),
        None => None,
    };
    let now = crate::util::unix_now();
    let models = e
        .models
        .iter()
        .map(|m| ModelInfo {
            name: m.name.clone(),
            upstream_name: m.upstream_name.clone().unwrap_or_else(|| m.name.clone()),
            aliases: m.aliases.clone(),
            context_length: m.context_length,
            features: Features::ALL,
            max_choices: None,
            browser_variants: m.browser_variants.clone(),
            created: now,
        })
        .collect();
    let upstream = RemoteUpstream::new(RemoteConfig {
        base_url: crate::gateway::remote::base_url(e.url.as_deref().unwrap_or_default()),
        api_key,
        headers: e
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        models,
        connect_timeout: settings.timeouts.connect,
        probe_timeout: Duration::from_secs(2),
    })
    .map_err(|err| ServeError::Other(format!("upstream {id}: {err}")))?;
    Ok(UpstreamHandle::new(id, Box::new(upstream), settings))
}

/// Loads the local models and sets up the remote upstreams (their first probe discovers their
/// models) concurrently; returns the gateway over all of them.
async fn start_upstreams(cfg: &ServeConfig, state: &SharedState) -> Result<Loaded, ServeError> {
    let mut remotes = Vec::new();
    for e in &cfg.upstreams {
        remotes.push(Arc::new(remote(cfg, e)?));
    }
    let discovery = futures_util::future::join_all(remotes.iter().map(|h| async move {
        if !probe::probe_once(h).await {
            eprintln!(
                "tandem: upstream {} does not answer yet; it joins once its probes succeed",
                h.id
            );
        }
    }));
    let limits = EngineLimits {
        ctx_size: cfg.ctx_size,
        max_seqs: cfg.max_seqs,
        max_batch_tokens: cfg.max_batch_tokens,
        kv_blocks: cfg.kv_blocks,
    };
    let load_locals = async {
        let mut out = Vec::new();
        for spec in &cfg.models {
            let local = LocalSpec {
                id: spec.id.clone(),
                source: spec.source.clone(),
                aliases: spec.aliases.clone(),
                backend: cfg.backend,
                threads: cfg.threads,
                limits,
                max_waiting: cfg.max_waiting,
                prefix_caching: cfg.prefix_caching,
            };
            let variants = spec
                .upstream
                .as_ref()
                .and_then(|e| e.models.first())
                .map(|m| m.browser_variants.clone())
                .unwrap_or_default();
            let up = LocalUpstream::load(&local, Arc::clone(&state.metrics))
                .await?
                .with_variants(variants);
            out.push((spec.upstream.clone(), up));
        }
        Ok::<_, ServeError>(out)
    };
    let (_, locals) = tokio::join!(discovery, load_locals);
    let mut handles: Vec<Arc<UpstreamHandle>> = Vec::new();
    let mut local_models = Vec::new();
    for (entry, up) in locals? {
        let id = entry
            .as_ref()
            .and_then(|e| e.id.clone())
            .unwrap_or_else(|| up.handle().id.clone());
        local_models.push(LocalModel {
            handle: Arc::clone(up.handle()),
            variant: Arc::clone(up.variant()),
        });
        let settings = settings(
            cfg,
            entry.as_ref(),
            Timeouts {
                first_token: cfg.queue_timeout,
                ..Timeouts::LOCAL
            },
        );
        handles.push(Arc::new(UpstreamHandle::new(id, Box::new(up), settings)));
    }
    handles.extend(remotes);
    let mut ids = std::collections::HashSet::new();
    for h in &handles {
        if !ids.insert(h.id.as_str()) {
            return Err(ServeError::Other(format!(
                "two upstreams have the id {:?}",
                h.id
            )));
        }
    }
    // Local models are this server's own: each name (id or alias) selects one of them.
    let mut names = std::collections::HashSet::new();
    for h in handles.iter().filter(|h| h.upstream.kind() == "local") {
        for m in h.upstream.models().iter() {
            for name in std::iter::once(&m.name).chain(&m.aliases) {
                if !names.insert(name.clone()) {
                    return Err(ServeError::Other(format!(
                        "two models answer to the name {name:?}"
                    )));
                }
            }
        }
    }
    for h in &handles {
        probe::spawn_prober(h);
    }
    let gateway = Gateway::new(handles, routing_config(cfg), Arc::clone(&state.metrics));
    Ok(Loaded {
        gateway: Arc::new(gateway),
        locals: local_models,
    })
}
