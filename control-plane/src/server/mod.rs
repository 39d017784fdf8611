//! `tandem serve`: binds the listener at once (so `/health` answers while models load), loads
//! each model onto its backend as an engine service, serves the API and the web demo, and on
//! SIGTERM/SIGINT stops accepting, lets in-flight streams finish up to the drain timeout, and
//! returns.

pub mod state;

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use engine_core::chat::ChatTemplate;
use engine_core::engine::{EngineConfig, ServiceOptions};
use engine_core::model::ModelConfig;
use engine_core::tokenizer::Tokenizer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;

use crate::api::errors::ApiError;
use crate::api::{chat, completions, health, models};
use crate::backends;
use crate::config::{ModelSpec, ServeArgs, ServeConfig};
use crate::load;
use crate::source::ModelSource;
use state::{AppState, ModelHandle};

/// The state handlers share.
pub type SharedState = Arc<AppState>;

/// KV blocks hold this many tokens.
const BLOCK_SIZE: usize = 16;

/// Runs `tandem serve`.
pub async fn run(args: ServeArgs) -> Result<()> {
    let cfg = ServeConfig::load(args)?;
    serve(cfg).await
}

/// Builds the router: API routes, then the web demo (or a JSON 404) for everything else.
pub fn router(state: SharedState, cfg: &ServeConfig, web_root: Option<&Path>) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(chat::handle))
        .route("/v1/completions", post(completions::handle))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{*id}", get(models::get))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            count_requests,
        ))
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() });
    let api = match web_root {
        Some(root) => api
            .fallback_service(ServeDir::new(root).not_found_service(axum::routing::any(not_found))),
        None => api.fallback(not_found),
    };
    let mut app = api.layer(TraceLayer::new_for_http()).with_state(state);
    if let Some(cors) = cors(&cfg.cors_origins) {
        app = app.layer(cors);
    }
    app
}

async fn not_found(req: Request) -> ApiError {
    ApiError::route_not_found(req.uri().path())
}

/// Counts responses by route and status for `/metrics`.
async fn count_requests(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    state
        .metrics
        .record_request(&endpoint, resp.status().as_u16());
    resp
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new().allow_methods(Any).allow_headers(Any);
    Some(if origins.iter().any(|o| o == "*") {
        layer.allow_origin(Any)
    } else {
        layer.allow_origin(AllowOrigin::list(
            origins.iter().filter_map(|o| o.parse().ok()),
        ))
    })
}

/// The folder served at `/`: the configured one, else `web-demo/` of the workspace found
/// relative to the binary (`target/<profile>/tandem`) or the working directory.
pub fn web_root(configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = configured {
        if p.is_dir() {
            return Some(p.to_owned());
        }
        tracing::warn!("web root {} is not a directory", p.display());
        return None;
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).take(4).map(|d| d.join("web-demo")));
    }
    if let Ok(cwd) = std::env::current_dir() {
        candidates.push(cwd.join("web-demo"));
    }
    candidates
        .into_iter()
        .find(|c| c.join("index.html").is_file())
}

/// Serves until a shutdown signal, then drains.
pub async fn serve(cfg: ServeConfig) -> Result<()> {
    let state: SharedState = Arc::new(AppState::new(cfg.body_limit));
    let listener = tokio::net::TcpListener::bind((cfg.host.as_str(), cfg.port))
        .await
        .with_context(|| format!("listening on {}:{}", cfg.host, cfg.port))?;
    let addr = listener.local_addr()?;
    let root = web_root(cfg.web_root.as_deref());
    let app = router(Arc::clone(&state), &cfg, root.as_deref());
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    });
    let mut server_task = tokio::spawn(async move { server.await });
    eprintln!(
        "tandem: listening on http://{addr} ({} backend)",
        cfg.backend.name()
    );
    match &root {
        Some(r) => eprintln!("tandem: web demo at http://{addr}/ (from {})", r.display()),
        None => eprintln!("tandem: no web-demo folder found; / answers 404"),
    }

    tokio::select! {
        loaded = load_models(&cfg) => {
            let models = loaded?;
            let ids: Vec<String> = models.iter().map(|m| m.id.clone()).collect();
            // Ready only once requests can see the models.
            let _ = state.models.set(models);
            eprintln!("tandem: ready, serving {}", ids.join(", "));
        }
        () = crate::shutdown::signal() => {
            let _ = stop_tx.send(true);
            return Ok(());
        }
        r = &mut server_task => {
            r.context("the server task failed")?.context("serving")?;
            bail!("the server stopped unexpectedly");
        }
    }

    tokio::select! {
        () = crate::shutdown::signal() => {}
        r = &mut server_task => {
            r.context("the server task failed")?.context("serving")?;
            bail!("the server stopped unexpectedly");
        }
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
        for m in state.models().map(<[_]>::to_vec).unwrap_or_default() {
            m.service.cancel_all();
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut server_task).await;
    }
    eprintln!("tandem: stopped");
    Ok(())
}

/// Loads every configured model.
async fn load_models(cfg: &ServeConfig) -> Result<Vec<Arc<ModelHandle>>> {
    let mut out: Vec<Arc<ModelHandle>> = Vec::new();
    for spec in &cfg.models {
        let handle = load_model(cfg, spec).await?;
        for name in std::iter::once(&handle.id).chain(&handle.aliases) {
            if out.iter().any(|m| m.answers_to(name)) {
                bail!("two models answer to the name {name:?}");
            }
        }
        out.push(Arc::new(handle));
    }
    Ok(out)
}

async fn load_model(cfg: &ServeConfig, spec: &ModelSpec) -> Result<ModelHandle> {
    let opts = load::LoadOptions {
        model: spec.source.clone(),
        threads: cfg.threads,
        engine: EngineConfig::default(),
        progress: false,
    };
    let (source, path) = load::fetch(&opts).await?;
    let id = spec.id.clone().unwrap_or_else(|| source_id(&source));
    let cfg = cfg.clone();
    let aliases = spec.aliases.clone();
    tokio::task::spawn_blocking(move || -> Result<ModelHandle> {
        let file = load::open(&path)?;
        let meta = file.metadata();
        let model_config = ModelConfig::from_metadata(meta)
            .with_context(|| format!("reading {}", path.display()))?;
        let context = if cfg.ctx_size == 0 {
            model_config.context_length.min(8192)
        } else {
            cfg.ctx_size
        };
        let kv_tokens = if cfg.kv_blocks == 0 {
            4 * context
        } else {
            cfg.kv_blocks * BLOCK_SIZE
        };
        let engine_config = EngineConfig {
            context_size: context,
            max_seqs: cfg.max_seqs,
            max_batch_tokens: cfg.max_batch_tokens,
            block_size: BLOCK_SIZE,
            kv_tokens,
            ..EngineConfig::default()
        };
        let tokenizer = Tokenizer::from_metadata(meta).context("building the tokenizer")?;
        let template = ChatTemplate::from_metadata(meta).context("compiling the chat template")?;
        let service = backends::start_engine(
            cfg.backend,
            cfg.threads,
            &file,
            engine_config,
            ServiceOptions {
                max_waiting: cfg.max_waiting,
            },
        )
        .with_context(|| format!("loading {}", path.display()))?;
        let info = service.info().clone();
        eprintln!(
            "tandem: model {id} on the {} backend ({})",
            info.backend.name, info.backend.device
        );
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            &info.backend.name,
            &info.backend.device,
            info.backend.threads,
            info.config.context_size,
            info.config.max_seqs,
            info.config.kv_tokens,
            env!("CARGO_PKG_VERSION"),
        )
            .hash(&mut h);
        Ok(ModelHandle {
            id,
            aliases,
            created: crate::api::generate::unix_now(),
            tokenizer,
            template,
            context: info.config.context_size,
            vocab: info.model.vocab_size,
            fingerprint: format!("fp_{:012x}", h.finish() & 0xffff_ffff_ffff),
            service,
        })
    })
    .await
    .context("the loading task failed")?
}

/// The default id of a model: its file name without `.gguf`.
fn source_id(source: &ModelSource) -> String {
    source.display_name()
}
