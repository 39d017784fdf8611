//! `tandem serve`'s configuration: a `tandem.toml` file, `TANDEM_*` environment variables and
//! command-line flags. Flags override the environment, which overrides the file, which overrides
//! the defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::backends::BackendKind;
use crate::gateway::Policy;
use crate::gateway::cost::CostModel;
use crate::metrics::MetricsNames;
use crate::openai::VariantCard;

/// Default listening port.
pub const DEFAULT_PORT: u16 = 8080;

/// Flags (and their environment variables) of `tandem serve`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// Model: a GGUF path, an http(s) URL, or hf:OWNER/REPO/FILE.gguf (replaces the file's models).
    #[arg(long, env = "TANDEM_MODEL")]
    pub model: Option<String>,
    /// The id clients use for --model (default: the file name without .gguf).
    #[arg(long, env = "TANDEM_MODEL_ID")]
    pub model_id: Option<String>,
    /// More names for --model (comma-separated).
    #[arg(long, env = "TANDEM_MODEL_ALIASES", value_delimiter = ',')]
    pub alias: Vec<String>,
    /// Address to listen on.
    #[arg(long, env = "TANDEM_HOST")]
    pub host: Option<String>,
    /// Port to listen on (0 = any free port; the chosen one is logged).
    #[arg(long, env = "TANDEM_PORT")]
    pub port: Option<u16>,
    /// Compute backend: cpu or webgpu.
    #[arg(long, env = "TANDEM_BACKEND")]
    pub backend: Option<BackendKind>,
    /// CPU threads (0 = all cores).
    #[arg(long, env = "TANDEM_THREADS")]
    pub threads: Option<usize>,
    /// Context size per sequence in tokens (0 = the model's, at most 8192).
    #[arg(long, env = "TANDEM_CTX_SIZE")]
    pub ctx_size: Option<usize>,
    /// Most sequences decoded together.
    #[arg(long, env = "TANDEM_MAX_SEQS")]
    pub max_seqs: Option<usize>,
    /// Most tokens per forward pass (decodes plus prefill chunks).
    #[arg(long, env = "TANDEM_MAX_BATCH_TOKENS")]
    pub max_batch_tokens: Option<usize>,
    /// KV-cache blocks of 16 tokens shared by all sequences (0 = 4 full contexts).
    #[arg(long, env = "TANDEM_KV_BLOCKS")]
    pub kv_blocks: Option<usize>,
    /// Most requests waiting for a slot; more are answered 429.
    #[arg(long, env = "TANDEM_MAX_WAITING")]
    pub max_waiting: Option<usize>,
    /// Do not keep full KV blocks for later requests that start with the same tokens.
    #[arg(long, env = "TANDEM_NO_PREFIX_CACHING")]
    pub no_prefix_caching: bool,
    /// Largest request body in bytes.
    #[arg(long, env = "TANDEM_BODY_LIMIT")]
    pub body_limit: Option<usize>,
    /// Origins allowed by CORS (comma-separated; `*` for any).
    #[arg(long, env = "TANDEM_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Folder served at `/` (default: the workspace's web-demo/).
    #[arg(long, env = "TANDEM_WEB_ROOT")]
    pub web_root: Option<PathBuf>,
    /// Seconds in-flight requests may take to finish after SIGTERM/SIGINT.
    #[arg(long, env = "TANDEM_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<u64>,
    /// A remote OpenAI-compatible server to route to, as [ID=]URL (repeatable); its models are
    /// discovered from its /v1/models. With only upstreams, no model is loaded here.
    #[arg(long = "upstream", env = "TANDEM_UPSTREAMS", value_delimiter = ',')]
    pub upstreams: Vec<String>,
    /// The routing policy among upstreams: cheapest, fastest or balanced.
    #[arg(long, env = "TANDEM_POLICY")]
    pub policy: Option<Policy>,
    /// Names of the engine gauges in /metrics: tandem, or vllm (for llm-d's endpoint picker).
    #[arg(long, env = "TANDEM_METRICS_NAMES")]
    pub metrics_names: Option<MetricsNames>,
    /// Folder for the server's own data (the SQLite database); default
    /// $XDG_DATA_HOME/tandem or ~/.local/share/tandem.
    #[arg(long, env = "TANDEM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database of tenants, keys and the usage ledger: sqlite://PATH or postgres://... (default:
    /// SQLite in the data folder).
    #[arg(long, env = "TANDEM_DATABASE")]
    pub database: Option<String>,
    /// Redis shared by replicas for rate limits and budgets: redis://HOST:PORT (default: kept
    /// in this process).
    #[arg(long, env = "TANDEM_REDIS")]
    pub redis: Option<String>,
    /// Key of the admin API under /admin/v1/ (off without one); never an API key.
    #[arg(long, env = "TANDEM_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// This replica's name in the ledger (default HOST:PORT); a restarted replica marks its own
    /// unfinished requests as interrupted.
    #[arg(long, env = "TANDEM_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Seconds a request may wait in a local engine's queue before it is answered 503 with
    /// Retry-After (default 600).
    #[arg(long, env = "TANDEM_QUEUE_TIMEOUT")]
    pub queue_timeout: Option<u64>,
    /// Megabytes of whole answers of deterministic requests (temperature 0 or a seed) to keep
    /// and replay (0: no response cache).
    #[arg(long, env = "TANDEM_RESPONSE_CACHE_MB")]
    pub response_cache_mb: Option<usize>,
    /// Seconds a cached answer stays valid.
    #[arg(long, env = "TANDEM_RESPONSE_CACHE_TTL")]
    pub response_cache_ttl: Option<u64>,
    /// A tandem.toml file.
    #[arg(long, env = "TANDEM_CONFIG")]
    pub config: Option<PathBuf>,
}

/// What kind of upstream an `[[upstreams]]` entry is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    /// A model loaded by this process (`source`).
    Local,
    /// A remote OpenAI-compatible server (`url`).
    #[default]
    Openai,
}

/// A model entry of an `[[upstreams]]` entry.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamModelEntry {
    /// The public name clients send.
    pub name: String,
    /// What the upstream calls it (default: `name`).
    pub upstream_name: Option<String>,
    /// Other public names.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Context size in tokens.
    pub context_length: Option<usize>,
    /// The routing policy of this model.
    pub policy: Option<Policy>,
    /// Files a browser can run it from.
    #[serde(default)]
    pub browser_variants: Vec<VariantCard>,
}

/// One `[[upstreams]]` entry.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamEntry {
    /// Its id in logs, metrics and `/v1/models`.
    pub id: Option<String>,
    /// `local` or `openai`.
    #[serde(default)]
    pub kind: UpstreamKind,
    /// Base URL of a remote server (`/v1` is appended when missing).
    pub url: Option<String>,
    /// A local model's path, URL or `hf:` source.
    pub source: Option<String>,
    /// The environment variable holding the remote server's API key.
    pub api_key_env: Option<String>,
    /// Its models (a remote server's are discovered from `/v1/models` when none are given).
    #[serde(default)]
    pub models: Vec<UpstreamModelEntry>,
    /// Most requests in flight there.
    pub max_concurrency: Option<usize>,
    /// Connect timeout, milliseconds.
    pub connect_timeout_ms: Option<u64>,
    /// Time to the first token, milliseconds.
    pub first_token_timeout_ms: Option<u64>,
    /// Time between tokens, milliseconds.
    pub idle_timeout_ms: Option<u64>,
    /// Time for the whole request, milliseconds.
    pub total_timeout_ms: Option<u64>,
    /// What requests cost there.
    #[serde(default)]
    pub cost: CostModel,
    /// Headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The `[routing]` table.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RoutingEntry {
    /// The default policy.
    pub policy: Option<Policy>,
    /// Passes over the candidates before giving up.
    pub attempts: Option<u32>,
    /// Backoff before the second pass, milliseconds (doubled after).
    pub retry_backoff_ms: Option<u64>,
    /// Consecutive failures that open an upstream's breaker.
    pub breaker_failures: Option<u32>,
    /// How long a breaker stays open, milliseconds.
    pub breaker_cooldown_ms: Option<u64>,
    /// Successes in half-open that close it.
    pub breaker_successes: Option<u32>,
    /// Interval of health probes, milliseconds.
    pub health_interval_ms: Option<u64>,
}

/// One model entry of `tandem.toml`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The id clients send as `model`.
    pub id: Option<String>,
    /// Where the model comes from (path, URL or hf:).
    pub source: String,
    /// Other names that select it.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The routing policy of this model.
    pub policy: Option<Policy>,
}

/// The contents of `tandem.toml`; every field is optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on.
    pub host: Option<String>,
    /// Port to listen on.
    pub port: Option<u16>,
    /// Compute backend.
    pub backend: Option<BackendKind>,
    /// CPU threads.
    pub threads: Option<usize>,
    /// Context size.
    pub ctx_size: Option<usize>,
    /// Most sequences decoded together.
    pub max_seqs: Option<usize>,
    /// Most tokens per forward pass.
    pub max_batch_tokens: Option<usize>,
    /// KV-cache blocks.
    pub kv_blocks: Option<usize>,
    /// Most waiting requests.
    pub max_waiting: Option<usize>,
    /// Automatic prefix caching (default on).
    pub prefix_caching: Option<bool>,
    /// Largest request body in bytes.
    pub body_limit: Option<usize>,
    /// CORS origins.
    pub cors_origins: Option<Vec<String>>,
    /// Folder served at `/`.
    pub web_root: Option<PathBuf>,
    /// Drain timeout in seconds.
    pub drain_timeout: Option<u64>,
    /// Names of the engine gauges in `/metrics`.
    pub metrics_names: Option<MetricsNames>,
    /// Folder for the server's own data.
    pub data_dir: Option<PathBuf>,
    /// Database URL.
    pub database: Option<String>,
    /// Redis URL.
    pub redis: Option<String>,
    /// This replica's name in the ledger.
    pub instance_id: Option<String>,
    /// Seconds a request may wait in a local engine's queue.
    pub queue_timeout: Option<u64>,
    /// Megabytes of the response cache.
    pub response_cache_mb: Option<usize>,
    /// Seconds a cached answer stays valid.
    pub response_cache_ttl: Option<u64>,
    /// The local models to serve; the first is the default.
    #[serde(default)]
    pub models: Vec<ModelEntry>,
    /// Upstreams: local models and remote servers.
    #[serde(default)]
    pub upstreams: Vec<UpstreamEntry>,
    /// Routing settings.
    #[serde(default)]
    pub routing: RoutingEntry,
}

/// A resolved model to serve.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// The id clients send (`None`: derive it from the source).
    pub id: Option<String>,
    /// Path, URL or hf: source.
    pub source: String,
    /// Other names.
    pub aliases: Vec<String>,
    /// Its upstream settings (from an `[[upstreams]]` entry of kind `local`).
    pub upstream: Option<UpstreamEntry>,
}

/// The resolved configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ServeConfig {
    /// Address to listen on.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Models; the first is the default.
    pub models: Vec<ModelSpec>,
    /// Compute backend.
    pub backend: BackendKind,
    /// CPU threads (0 = all).
    pub threads: usize,
    /// Context size (0 = the model's, capped).
    pub ctx_size: usize,
    /// Most running sequences.
    pub max_seqs: usize,
    /// Token budget per step.
    pub max_batch_tokens: usize,
    /// KV blocks (0 = four full contexts).
    pub kv_blocks: usize,
    /// Most waiting requests.
    pub max_waiting: usize,
    /// Automatic prefix caching.
    pub prefix_caching: bool,
    /// Largest body in bytes.
    pub body_limit: usize,
    /// CORS origins.
    pub cors_origins: Vec<String>,
    /// Folder served at `/`, if any.
    pub web_root: Option<PathBuf>,
    /// How long in-flight requests may run after a shutdown signal.
    pub drain_timeout: Duration,
    /// Remote upstreams (each with an id).
    pub upstreams: Vec<UpstreamEntry>,
    /// Routing settings (the policy resolved from the flag and the file).
    pub routing: RoutingEntry,
    /// Policies of particular models.
    pub model_policies: BTreeMap<String, Policy>,
    /// Names of the engine gauges in `/metrics`.
    pub metrics_names: MetricsNames,
    /// The database URL.
    pub database: String,
    /// Redis for limits and budgets shared by replicas.
    pub redis: Option<String>,
    /// The admin API's key.
    pub admin_key: Option<String>,
    /// This replica's name in the ledger (none: HOST:PORT once bound).
    pub instance_id: Option<String>,
    /// How long a request may wait in a local engine's queue.
    pub queue_timeout: Duration,
    /// Bytes of the response cache (0: off).
    pub response_cache_bytes: usize,
    /// How long a cached answer stays valid.
    pub response_cache_ttl: Duration,
}

/// The default data folder: `$XDG_DATA_HOME/tandem`, else `~/.local/share/tandem`, else
/// `./tandem-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("tandem");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h).join(".local/share/tandem"),
        None => PathBuf::from("tandem-data"),
    }
}

/// Parses `--upstream [ID=]URL`.
pub fn parse_upstream_flag(spec: &str, index: usize) -> Result<UpstreamEntry, ConfigError> {
    let spec = spec.trim();
    let (id, url) = match spec.split_once('=') {
        Some((id, url)) if !id.contains("://") && !id.is_empty() => (id.to_owned(), url),
        _ => (format!("upstream-{}", index + 1), spec),
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ConfigError::Invalid(format!(
            "--upstream wants [ID=]URL with an http(s) URL, got {spec:?}"
        )));
    }
    Ok(UpstreamEntry {
        id: Some(id),
        kind: UpstreamKind::Openai,
        url: Some(url.to_owned()),
        ..UpstreamEntry::default()
    })
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("parsing {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A value is out of range or missing.
    #[error("{0}")]
    Invalid(String),
}

/// Reads a `tandem.toml`.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_file(&text).map_err(|message| ConfigError::Parse {
        path: path.to_owned(),
        message,
    })
}

/// Parses the text of a `tandem.toml`.
pub fn parse_file(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

impl ServeConfig {
    /// Resolves flags/environment over the file over the defaults.
    pub fn resolve(args: ServeArgs, file: FileConfig) -> Result<ServeConfig, ConfigError> {
        let mut model_policies = BTreeMap::new();
        let mut models: Vec<ModelSpec> = match args.model {
            Some(source) => vec![ModelSpec {
                id: args.model_id,
                source,
                aliases: args.alias,
                upstream: None,
            }],
            None => file
                .models
                .into_iter()
                .map(|m| {
                    if let (Some(id), Some(p)) = (&m.id, m.policy) {
                        model_policies.insert(id.clone(), p);
                    }
                    ModelSpec {
                        id: m.id,
                        source: m.source,
                        aliases: m.aliases,
                        upstream: None,
                    }
                })
                .collect(),
        };
        let mut upstreams = Vec::new();
        for (i, u) in file.upstreams.into_iter().enumerate() {
            for m in &u.models {
                if let Some(p) = m.policy {
                    model_policies.insert(m.name.clone(), p);
                }
            }
            match u.kind {
                UpstreamKind::Local => {
                    let source = u.source.clone().ok_or_else(|| {
                        ConfigError::Invalid(format!(
                            "upstream {} is local and needs a source (a GGUF path, URL or hf:)",
                            u.id.as_deref().unwrap_or("?")
                        ))
                    })?;
                    let first = u.models.first();
                    models.push(ModelSpec {
                        id: first.map(|m| m.name.clone()).or_else(|| u.id.clone()),
                        source,
                        aliases: first.map(|m| m.aliases.clone()).unwrap_or_default(),
                        upstream: Some(u),
                    });
                }
                UpstreamKind::Openai => {
                    if u.url.is_none() {
                        return Err(ConfigError::Invalid(format!(
                            "upstream {} needs a url",
                            u.id.as_deref().unwrap_or("?")
                        )));
                    }
                    upstreams.push(UpstreamEntry {
                        id: Some(
                            u.id.clone()
                                .unwrap_or_else(|| format!("upstream-{}", i + 1)),
                        ),
                        ..u
                    });
                }
            }
        }
        let offset = upstreams.len();
        for (i, spec) in args.upstreams.iter().enumerate() {
            upstreams.push(parse_upstream_flag(spec, offset + i)?);
        }
        if models.is_empty() && upstreams.is_empty() {
            return Err(ConfigError::Invalid(
                "nothing to serve: pass --model PATH|URL|hf:OWNER/REPO/FILE (or TANDEM_MODEL, or [[models]] in tandem.toml) and/or --upstream [ID=]URL".into(),
            ));
        }
        let mut routing = file.routing;
        routing.policy = args.policy.or(routing.policy);
        let cfg = ServeConfig {
            host: args
                .host
                .or(file.host)
                .unwrap_or_else(|| "127.0.0.1".into()),
            port: args.port.or(file.port).unwrap_or(DEFAULT_PORT),
            models,
            backend: args.backend.or(file.backend).unwrap_or(BackendKind::Cpu),
            threads: args.threads.or(file.threads).unwrap_or(0),
            ctx_size: args.ctx_size.or(file.ctx_size).unwrap_or(2048),
            max_seqs: args.max_seqs.or(file.max_seqs).unwrap_or(16),
            max_batch_tokens: args
                .max_batch_tokens
                .or(file.max_batch_tokens)
                .unwrap_or(512),
            kv_blocks: args.kv_blocks.or(file.kv_blocks).unwrap_or(0),
            max_waiting: args.max_waiting.or(file.max_waiting).unwrap_or(64),
            prefix_caching: !args.no_prefix_caching && file.prefix_caching.unwrap_or(true),
            body_limit: args
                .body_limit
                .or(file.body_limit)
                .unwrap_or(4 * 1024 * 1024),
            cors_origins: if args.cors_origins.is_empty() {
                file.cors_origins.unwrap_or_default()
            } else {
                args.cors_origins
            },
            web_root: args.web_root.or(file.web_root),
            drain_timeout: Duration::from_secs(
                args.drain_timeout.or(file.drain_timeout).unwrap_or(30),
            ),
            upstreams,
            routing,
            model_policies,
            metrics_names: args
                .metrics_names
                .or(file.metrics_names)
                .unwrap_or_default(),
            database: args.database.or(file.database).unwrap_or_else(|| {
                crate::store::default_url(
                    &args
                        .data_dir
                        .or(file.data_dir)
                        .unwrap_or_else(default_data_dir),
                )
            }),
            redis: args.redis.or(file.redis),
            admin_key: args.admin_key.filter(|k| !k.is_empty()),
            instance_id: args.instance_id.or(file.instance_id),
            queue_timeout: Duration::from_secs(
                args.queue_timeout
                    .or(file.queue_timeout)
                    .unwrap_or(600)
                    .max(1),
            ),
            response_cache_bytes: args
                .response_cache_mb
                .or(file.response_cache_mb)
                .unwrap_or(0)
                .saturating_mul(1 << 20),
            response_cache_ttl: Duration::from_secs(
                args.response_cache_ttl
                    .or(file.response_cache_ttl)
                    .unwrap_or(600),
            ),
        };
        if cfg.admin_key.as_ref().is_some_and(|k| k.len() < 16) {
            return Err(ConfigError::Invalid(
                "the admin key must be at least 16 characters".into(),
            ));
        }
        if cfg.max_seqs == 0 {
            return Err(ConfigError::Invalid("max_seqs must be at least 1".into()));
        }
        if cfg.max_batch_tokens == 0 {
            return Err(ConfigError::Invalid(
                "max_batch_tokens must be at least 1".into(),
            ));
        }
        if cfg.body_limit < 1024 {
            return Err(ConfigError::Invalid(
                "body_limit must be at least 1024 bytes".into(),
            ));
        }
        Ok(cfg)
    }

    /// Loads the file named by `--config` (if any) and resolves everything.
    pub fn load(args: ServeArgs) -> Result<ServeConfig, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        ServeConfig::resolve(args, file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
host = "0.0.0.0"
port = 9000
threads = 2
max_seqs = 8
cors_origins = ["http://localhost:3000"]

[[models]]
id = "smollm2"
source = "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
aliases = ["default", "gpt-4o-mini"]

[[models]]
source = "hf:owner/repo/other.gguf"
"#;

    #[test]
    fn file_values_apply_and_flags_override_them() {
        let file = parse_file(EXAMPLE).unwrap();
        let cfg = ServeConfig::resolve(ServeArgs::default(), file.clone()).unwrap();
        assert_eq!(cfg.host, "0.0.0.0");
        assert_eq!(cfg.port, 9000);
        assert_eq!(cfg.threads, 2);
        assert_eq!(cfg.max_seqs, 8);
        assert_eq!(cfg.models.len(), 2);
        assert_eq!(cfg.models[0].id.as_deref(), Some("smollm2"));
        assert_eq!(cfg.models[0].aliases, ["default", "gpt-4o-mini"]);
        assert_eq!(cfg.cors_origins, ["http://localhost:3000"]);
        assert_eq!(cfg.max_batch_tokens, 512);

        let args = ServeArgs {
            port: Some(1234),
            model: Some("m.gguf".into()),
            cors_origins: vec!["*".into()],
            ..ServeArgs::default()
        };
        let cfg = ServeConfig::resolve(args, file).unwrap();
        assert_eq!(cfg.port, 1234);
        assert_eq!(cfg.host, "0.0.0.0");
        assert_eq!(cfg.models.len(), 1);
        assert_eq!(cfg.models[0].source, "m.gguf");
        assert_eq!(cfg.cors_origins, ["*"]);
    }

    #[test]
    fn upstreams_come_from_flags_and_the_file() {
        let file = parse_file(
            r#"
[routing]
policy = "cheapest"
breaker_cooldown_ms = 500

[[upstreams]]
id = "vllm"
url = "http://10.0.0.5:8000/v1"
api_key_env = "VLLM_KEY"
max_concurrency = 64
cost = { input_per_1m = 0.1, output_per_1m = 0.4 }
headers = { "x-team" = "a" }
[[upstreams.models]]
name = "llama"
upstream_name = "meta-llama/Llama-3.1-8B-Instruct"
aliases = ["gpt-4o"]
policy = "fastest"

[[upstreams]]
id = "engine"
kind = "local"
source = "/m/smol.gguf"
[[upstreams.models]]
name = "smol"
aliases = ["small"]
"#,
        )
        .unwrap();
        let args = ServeArgs {
            upstreams: vec!["http://127.0.0.1:9/".into(), "b=https://x".into()],
            ..ServeArgs::default()
        };
        let cfg = ServeConfig::resolve(args, file).unwrap();
        assert_eq!(cfg.models.len(), 1);
        assert_eq!(cfg.models[0].id.as_deref(), Some("smol"));
        assert_eq!(cfg.models[0].aliases, ["small"]);
        let ids: Vec<_> = cfg
            .upstreams
            .iter()
            .map(|u| u.id.clone().unwrap())
            .collect();
        assert_eq!(ids, ["vllm", "upstream-2", "b"]);
        assert_eq!(cfg.upstreams[0].max_concurrency, Some(64));
        assert_eq!(cfg.upstreams[0].cost.output_per_1m, 0.4);
        assert_eq!(cfg.routing.policy, Some(Policy::Cheapest));
        assert_eq!(cfg.model_policies["llama"], Policy::Fastest);
        assert!(parse_upstream_flag("ftp://x", 0).is_err());
        assert!(parse_file("[[upstreams]]\nkind = \"remote\"").is_err());
        // Only upstreams: a pure gateway.
        let args = ServeArgs {
            upstreams: vec!["http://127.0.0.1:9".into()],
            ..ServeArgs::default()
        };
        let cfg = ServeConfig::resolve(args, FileConfig::default()).unwrap();
        assert!(cfg.models.is_empty());
    }

    #[test]
    fn the_deploy_example_is_valid() {
        let file = parse_file(include_str!("../../deploy/tandem.toml")).unwrap();
        let cfg = ServeConfig::resolve(ServeArgs::default(), file).unwrap();
        assert_eq!(cfg.models.len(), 1);
        assert_eq!(cfg.models[0].id.as_deref(), Some("smollm2"));
        assert_eq!(cfg.upstreams.len(), 2);
        assert_eq!(cfg.model_policies["llama-3.1-8b"], Policy::Fastest);
    }

    #[test]
    fn unknown_keys_and_missing_models_are_errors() {
        assert!(parse_file("prot = 1").is_err());
        assert!(parse_file("backend = \"tpu\"").is_err());
        assert!(matches!(
            ServeConfig::resolve(ServeArgs::default(), FileConfig::default()),
            Err(ConfigError::Invalid(_))
        ));
    }
}
