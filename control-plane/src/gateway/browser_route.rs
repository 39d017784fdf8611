//! Browser-or-server routing for `POST /v1/route`.
//!
//! A browser reports what it can do ([`Capabilities`]: its WebGPU adapter, features and limits,
//! WASM SIMD, memory, storage, the model files it has cached, and the speed it measured).
//! [`decide`] checks which of the model's [`BrowserVariant`]s it can run and on which path (WebGPU,
//! or the WASM-SIMD CPU engine), estimates the time to first token and the decode speed there,
//! and picks the browser or the server under a [`Policy`]. Pure logic: no I/O, no clock, and no
//! panic on any input (non-finite or negative numbers in a report count as absent).
//!
//! The model, the formulas and the default numbers are described in `ROUTING.md` next to this
//! file.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

// ------------------------------------------------------------------------------------------------
// Constants
// ------------------------------------------------------------------------------------------------

/// `max_tokens` when a request does not give one. 256 tokens is a typical chat answer; the
/// estimate of a request's total time counts this many decoded tokens.
pub const DEFAULT_MAX_TOKENS: u64 = 256;

/// Download bandwidth assumed for fetching a variant that is not cached, in bytes per second
/// (50 Mbit/s). Deliberately conservative: about half the global median fixed-broadband download
/// speed and close to the median mobile one, so that a first download is not under-estimated.
pub const DOWNLOAD_BYTES_PER_SEC: f64 = 6.25e6;

/// Rate at which a cached variant is read from browser storage (Cache Storage or OPFS), parsed
/// and uploaded to the engine, in bytes per second. A conservative figure for reading a local
/// file through the browser's storage APIs and copying it into WASM or GPU memory.
pub const LOAD_BYTES_PER_SEC: f64 = 500e6;

/// Fixed part of the load time, in milliseconds: instantiating the WASM module, creating the
/// WebGPU device and compiling its pipelines (or spawning the CPU workers).
pub const LOAD_OVERHEAD_MS: f64 = 500.0;

/// Effective memory bandwidth of one thread of the WASM-SIMD CPU engine during decode, in bytes
/// per second. Measured (`cargo xtask bench browser`, headless Chromium, the 98 MB Q4_1
/// SmolLM2-135M): Tandem's baseline SIMD128 build decodes 26.8 tok/s on one thread (2.6 GB/s)
/// and its relaxed-SIMD build 36.0 tok/s (3.5 GB/s); 3 GB/s lies between them.
pub const CPU_THREAD_BYTES_PER_SEC: f64 = 3.0e9;

/// Fraction of [`CPU_THREAD_BYTES_PER_SEC`] that each thread after the first adds. Measured in
/// the same benchmark: Tandem's threaded build decodes 68.7 tok/s on 2 threads against 36.0 on
/// one, 1.9 times, so 0.9 (assumed to hold up to [`CPU_MAX_THREADS`]).
pub const CPU_EXTRA_THREAD_GAIN: f64 = 0.9;

/// Most threads the CPU path is assumed to use. Decode is bound by memory bandwidth, which a few
/// cores saturate, and a tab shares the machine with the page and the rest of the browser.
pub const CPU_MAX_THREADS: u32 = 4;

/// Largest variant (file size, bytes) the CPU path runs: 1 GiB. The whole engine lives in one
/// wasm32 linear memory (at most [`WASM_MAX_MEMORY_BYTES`]), and at about
/// [`CPU_THREAD_BYTES_PER_SEC`] a larger model decodes at under 3 tokens per second on one
/// thread.
pub const CPU_MAX_VARIANT_BYTES: u64 = 1 << 30;

/// Largest memory the CPU path can address: a wasm32 linear memory holds at most 4 GiB. A
/// variant whose `memory_bytes` exceed it cannot run on the CPU path.
pub const WASM_MAX_MEMORY_BYTES: u64 = 4 << 30;

/// Effective decode bandwidth of the WebGPU path on a real (hardware) adapter, in bytes per
/// second. Conservative: an integrated GPU has 50 to 100 GB/s of memory bandwidth and WebGPU
/// matrix-vector kernels reach a fraction of it; discrete GPUs are much faster, which a client's
/// measurement (`measured.decode_tok_s`) reveals.
pub const WEBGPU_BYTES_PER_SEC: f64 = 20e9;

/// Effective decode bandwidth of the WebGPU path on a fallback adapter (SwiftShader, lavapipe:
/// the GPU emulated on the CPU), in bytes per second. Measured with Tandem's WebGPU backend on
/// lavapipe: 3.38 tok/s on the 98 MB SmolLM2-135M Q4_1 (0.33 GB/s) and 0.39 tok/s on a 663 MiB
/// 1B model (0.27 GB/s).
pub const WEBGPU_FALLBACK_BYTES_PER_SEC: f64 = 0.3e9;

/// `maxBufferSize` assumed when the report does not give it: the WebGPU specification's default
/// limit (256 MiB), which every adapter supports.
pub const WEBGPU_DEFAULT_MAX_BUFFER_SIZE: u64 = 256 << 20;

/// Prefill speed as a multiple of decode speed, when the client did not measure prefill. Prefill
/// processes many tokens per pass over the weights; Tandem measured 4.8 times (native CPU,
/// 1 thread, pp128 vs tg128) and 5.9 times (WebGPU on lavapipe) its decode speed, so 4 is a
/// conservative floor (real GPUs do far better).
pub const PREFILL_SPEEDUP: f64 = 4.0;

/// Largest `device_memory_gb` believed. `navigator.deviceMemory` is rounded and capped at 8 (GB)
/// by browsers, so larger reports are treated as 8.
pub const DEVICE_MEMORY_CAP_GB: f64 = 8.0;

/// `device_memory_gb` assumed when the report does not give it (Firefox and Safari do not expose
/// `navigator.deviceMemory`): 4 GB, a modest laptop or phone.
pub const DEFAULT_DEVICE_MEMORY_GB: f64 = 4.0;

/// Fraction of the device's memory a tab may use for the engine (weights, KV cache and scratch).
/// Half: the browser, the operating system and other tabs need the rest, and mobile browsers
/// kill tabs that grow past a similar share.
pub const TAB_MEMORY_FRACTION: f64 = 0.5;

/// `cheapest` policy: the browser is chosen (its tokens cost the operator nothing) unless its
/// expected total time is more than this many times the server's...
pub const CHEAPEST_MAX_SLOWDOWN: f64 = 10.0;

/// ...and also more than this many milliseconds (60 s). Together with
/// [`CHEAPEST_MAX_SLOWDOWN`]: the browser is refused under `cheapest` only when it would be
/// absurdly slow, both relatively and absolutely.
pub const CHEAPEST_MIN_BOUND_MS: f64 = 60_000.0;

/// `balanced` policy: the browser is chosen when its expected total time is at most
/// `(1 + BALANCED_TOLERANCE)` times the server's plus [`BALANCED_SLACK_MS`]. Saving the server
/// the work is worth up to 50% more latency.
pub const BALANCED_TOLERANCE: f64 = 0.5;

/// `balanced` policy: absolute slack added to the tolerance, in milliseconds, so that very short
/// requests (where 50% is a few milliseconds) can still go to the browser.
pub const BALANCED_SLACK_MS: f64 = 500.0;

/// `balanced` policy, streamed answers: the slowest decode, in tokens per second, that still
/// streams faster than people read. Silent reading runs at about 240 words a minute (Brysbaert
/// 2019, a meta-analysis of 190 studies), some 5 tokens a second; twice that leaves room for
/// skimming.
pub const READING_TOK_S: f64 = 10.0;

/// `balanced` policy, streamed answers: the first-token time that is good enough whatever the
/// server's, unless the tier sets its own (`ttft_target_ms`). One second is the limit for the
/// user's flow of thought to stay uninterrupted (Nielsen, Usability Engineering, 1993).
pub const DEFAULT_TTFT_TARGET_MS: f64 = 1000.0;

/// Ceiling on every time in an estimate, in milliseconds (about 31 years): absurd inputs give
/// large but finite numbers, so that answers always serialize as JSON numbers.
pub const MAX_TIME_MS: f64 = 1e12;

/// Ceiling on every speed in an estimate, in tokens per second.
pub const MAX_TOK_S: f64 = 1e9;

// ------------------------------------------------------------------------------------------------
// Variants and policies
// ------------------------------------------------------------------------------------------------

/// A model file a browser can download and run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrowserVariant {
    /// Where the browser downloads it from.
    pub url: String,
    /// SHA-256 of the file, lowercase hex; matched against `cached_variants` (case-insensitive).
    pub sha256: String,
    /// File size in bytes. Decode reads about this many bytes per token.
    pub bytes: u64,
    /// Quantization name (`Q4_1`, `Q8_0`, ...), for the client's information.
    pub quantization: String,
    /// WebGPU features the WebGPU path needs (`shader-f16`, ...). The CPU path ignores them.
    #[serde(default)]
    pub required_features: Vec<String>,
    /// Memory the engine needs for this variant at the request's context: weights + KV + scratch, bytes.
    pub memory_bytes: u64,
    /// Largest single tensor in bytes (a WebGPU buffer must hold it: maxBufferSize).
    pub max_tensor_bytes: u64,
}

/// How [`decide`] trades the operator's cost against the user's latency.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// The browser whenever it can run the model, unless it would be absurdly slow.
    Cheapest,
    /// Whichever is expected to finish the request first.
    Fastest,
    /// The browser when it is runnable and not much slower than the server.
    #[default]
    Balanced,
}

impl Policy {
    /// The policy's name, as in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Cheapest => "cheapest",
            Policy::Fastest => "fastest",
            Policy::Balanced => "balanced",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a request runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// In the user's browser.
    Browser,
    /// On a server upstream.
    Server,
}

impl Route {
    /// The route's name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Browser => "browser",
            Route::Server => "server",
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The engine a browser runs a variant on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrowserPath {
    /// WebGPU compute shaders.
    Webgpu,
    /// The WASM-SIMD CPU engine.
    Cpu,
}

impl BrowserPath {
    /// The path's name (`webgpu` or `cpu`).
    pub fn as_str(self) -> &'static str {
        match self {
            BrowserPath::Webgpu => "webgpu",
            BrowserPath::Cpu => "cpu",
        }
    }
}

impl fmt::Display for BrowserPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ------------------------------------------------------------------------------------------------
// Request
// ------------------------------------------------------------------------------------------------

/// The body of `POST /v1/route`. Every field is optional; a field of the wrong type counts as
/// absent; unknown fields are ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RouteRequest {
    /// The model asked for (the caller looks up its variants; [`decide`] does not read it).
    #[serde(default, deserialize_with = "lenient")]
    pub model: Option<String>,
    /// Tokens in the prompt (default 0). Negative counts as 0, fractions are rounded down.
    #[serde(default, deserialize_with = "count_or_zero")]
    pub prompt_tokens: u64,
    /// Tokens to generate (default [`DEFAULT_MAX_TOKENS`]).
    #[serde(
        default = "default_max_tokens",
        deserialize_with = "count_or_default_max"
    )]
    pub max_tokens: u64,
    /// What the browser can do.
    #[serde(default, deserialize_with = "lenient")]
    pub capabilities: Capabilities,
    /// Of `prompt_tokens`, those whose keys and values the browser's loaded engine still holds
    /// (the earlier turns of the conversation it served last; default 0): only the rest is
    /// prefilled there.
    #[serde(default, deserialize_with = "count_or_zero")]
    pub cached_prompt_tokens: u64,
    /// Whether the answer is streamed to a reader (default `false`). Under `balanced` a streamed
    /// answer is judged by its first token and by whether it streams faster than people read,
    /// an answer awaited whole by its total time.
    #[serde(default, deserialize_with = "lenient")]
    pub stream: bool,
}

impl Default for RouteRequest {
    fn default() -> Self {
        RouteRequest {
            model: None,
            prompt_tokens: 0,
            max_tokens: DEFAULT_MAX_TOKENS,
            capabilities: Capabilities::default(),
            cached_prompt_tokens: 0,
            stream: false,
        }
    }
}

/// What a browser reports about itself. Every field is optional (absent means unknown, or
/// "no" for the booleans); a field of the wrong type counts as absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Capabilities {
    /// The WebGPU adapter, or `None` when the browser has no WebGPU.
    #[serde(default, deserialize_with = "lenient")]
    pub webgpu: Option<WebGpuInfo>,
    /// Whether WebAssembly SIMD is available (the CPU path needs it).
    #[serde(default, deserialize_with = "lenient")]
    pub wasm_simd: bool,
    /// `crossOriginIsolated`: `SharedArrayBuffer`, hence threads, are available to the CPU path.
    #[serde(default, deserialize_with = "lenient")]
    pub cross_origin_isolated: bool,
    /// `navigator.hardwareConcurrency`.
    #[serde(default, deserialize_with = "lenient")]
    pub hardware_concurrency: Option<u32>,
    /// `navigator.deviceMemory`, in GB (browsers report 0.25 to 8).
    #[serde(default, deserialize_with = "lenient")]
    pub device_memory_gb: Option<f64>,
    /// Free storage for the origin (`quota - usage` from `navigator.storage.estimate()`), bytes.
    #[serde(default, deserialize_with = "lenient")]
    pub storage_available_bytes: Option<f64>,
    /// SHA-256s of the variants already in the browser's cache.
    #[serde(default, deserialize_with = "lenient_list")]
    pub cached_variants: Vec<String>,
    /// SHA-256s of the variants whose engine is loaded in the page right now (cached too, and
    /// nothing left to load: the time to the first token is the prompt's alone).
    #[serde(default, deserialize_with = "lenient_list")]
    pub loaded_variants: Vec<String>,
    /// Speeds the client measured for this model, if it has run it.
    #[serde(default, deserialize_with = "lenient")]
    pub measured: Option<Measured>,
    /// Variants whose download is under way in the page, with how far it has come: the time
    /// to the first token then counts only what is left to download.
    #[serde(default, deserialize_with = "lenient_list")]
    pub downloading: Vec<Downloading>,
}

/// A browser's WebGPU adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebGpuInfo {
    /// Whether an adapter was obtained (default true: only an explicit `false` disables WebGPU).
    #[serde(default = "yes", deserialize_with = "lenient_true")]
    pub available: bool,
    /// The adapter's identity.
    #[serde(default, deserialize_with = "lenient")]
    pub adapter: AdapterInfo,
    /// The adapter's features (`shader-f16`, `subgroups`, ...).
    #[serde(default, deserialize_with = "lenient_list")]
    pub features: Vec<String>,
    /// The adapter's numeric limits by WebGPU name (`maxBufferSize`, ...); non-numbers dropped.
    #[serde(default, deserialize_with = "lenient_limits")]
    pub limits: BTreeMap<String, f64>,
}

impl Default for WebGpuInfo {
    fn default() -> Self {
        WebGpuInfo {
            available: true,
            adapter: AdapterInfo::default(),
            features: Vec::new(),
            limits: BTreeMap::new(),
        }
    }
}

/// A WebGPU adapter's identity (`GPUAdapterInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AdapterInfo {
    /// The vendor (`intel`, `apple`, `google`, ...).
    #[serde(default, deserialize_with = "lenient")]
    pub vendor: String,
    /// The architecture (`gen-12lp`, `swiftshader`, ...).
    #[serde(default, deserialize_with = "lenient")]
    pub architecture: String,
    /// Whether it is a fallback adapter (a CPU emulation of a GPU).
    #[serde(default, deserialize_with = "lenient")]
    pub is_fallback: bool,
}

impl AdapterInfo {
    /// Whether this adapter emulates a GPU on the CPU: `is_fallback`, or a vendor or architecture
    /// naming SwiftShader, lavapipe or llvmpipe (which some browsers do not flag).
    pub fn is_software(&self) -> bool {
        let emulated = |s: &str| {
            let s = s.to_ascii_lowercase();
            ["swiftshader", "lavapipe", "llvmpipe"]
                .iter()
                .any(|name| s.contains(name))
        };
        self.is_fallback || emulated(&self.vendor) || emulated(&self.architecture)
    }
}

/// A download under way in the page.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Downloading {
    /// The variant's SHA-256.
    #[serde(default, deserialize_with = "lenient")]
    pub sha256: String,
    /// Bytes received so far.
    #[serde(default, deserialize_with = "lenient")]
    pub received_bytes: f64,
    /// The download's recent rate, bytes per second, as the page measures it (absent or 0: the
    /// assumed [`DOWNLOAD_BYTES_PER_SEC`]).
    #[serde(default, deserialize_with = "lenient")]
    pub bytes_per_sec: Option<f64>,
}

/// Speeds a client measured on this device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Measured {
    /// Decode speed, tokens per second.
    #[serde(default, deserialize_with = "lenient")]
    pub decode_tok_s: Option<f64>,
    /// Prefill speed, tokens per second.
    #[serde(default, deserialize_with = "lenient")]
    pub prefill_tok_s: Option<f64>,
}

// ------------------------------------------------------------------------------------------------
// Answer
// ------------------------------------------------------------------------------------------------

/// Expected performance and cost of running a request somewhere.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Estimate {
    /// Time to first token, milliseconds.
    pub ttft_ms: f64,
    /// Decode speed, tokens per second.
    pub tok_s: f64,
    /// The operator's cost of the request, USD.
    pub cost_usd: f64,
}

impl Estimate {
    /// Expected time for the whole request: `ttft_ms + max_tokens / tok_s` in milliseconds,
    /// capped at [`MAX_TIME_MS`] (and at the cap when `tok_s` is not positive and tokens are due).
    pub fn total_ms(&self, max_tokens: u64) -> f64 {
        cap_time(cap_time(self.ttft_ms) + ms_for(max_tokens as f64, self.tok_s))
    }
}

/// The variant a browser should run, as sent to the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VariantRef {
    /// Where to download it.
    pub url: String,
    /// Its SHA-256.
    pub sha256: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its quantization.
    pub quantization: String,
    /// WebGPU features it needs.
    pub required_features: Vec<String>,
}

impl From<&BrowserVariant> for VariantRef {
    fn from(v: &BrowserVariant) -> Self {
        VariantRef {
            url: v.url.clone(),
            sha256: v.sha256.clone(),
            bytes: v.bytes,
            quantization: v.quantization.clone(),
            required_features: v.required_features.clone(),
        }
    }
}

/// The estimates an answer compares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Estimates {
    /// The best runnable browser option, or `None` when the browser can run no variant.
    pub browser: Option<Estimate>,
    /// The server (as given to [`decide`], with invalid numbers replaced by 0).
    pub server: Estimate,
}

/// The answer of `POST /v1/route`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RouteAnswer {
    /// Where to run the request.
    pub route: Route,
    /// The variant to run when `route` is `browser`; `None` otherwise.
    pub variant: Option<VariantRef>,
    /// Short snake_case reasons for the decision, most general first.
    pub reasons: Vec<String>,
    /// The estimates the decision compared.
    pub estimates: Estimates,
    /// The path of the best runnable browser option (also when `route` is `server`); not part
    /// of the JSON answer (the `path_webgpu` or `path_cpu` reason carries it), for logs and
    /// metrics.
    #[serde(skip)]
    pub browser_path: Option<BrowserPath>,
}

// ------------------------------------------------------------------------------------------------
// Decision
// ------------------------------------------------------------------------------------------------

/// Decides where `req` runs: picks the best variant the browser can run (a cached one first,
/// then the lowest expected total time), on the faster of its runnable paths, estimates it, and
/// compares it with `server` (the gateway's estimate for its best server upstream) under
/// `policy`. `variants` are the browser builds of the requested model, with `memory_bytes` for
/// this request's context. Streamed requests under `balanced` take [`DEFAULT_TTFT_TARGET_MS`] as
/// their first-token target; [`decide_with_target`] takes a tier's.
pub fn decide(
    req: &RouteRequest,
    variants: &[BrowserVariant],
    server: Estimate,
    policy: Policy,
) -> RouteAnswer {
    decide_with_target(req, variants, server, policy, DEFAULT_TTFT_TARGET_MS)
}

/// [`decide`], with `ttft_target_ms` as the first-token time that is good enough for a streamed
/// request under `balanced`: the browser is chosen when its first token is expected within that
/// target or within the tolerance of the server's, and it decodes faster than people read.
pub fn decide_with_target(
    req: &RouteRequest,
    variants: &[BrowserVariant],
    server: Estimate,
    policy: Policy,
    ttft_target_ms: f64,
) -> RouteAnswer {
    let device = Device::new(&req.capabilities);
    let max_tokens = req.max_tokens;
    let mut reasons = Reasons::default();

    match &device.gpu {
        None => reasons.push("no_webgpu"),
        Some(gpu) if gpu.software => reasons.push("webgpu_fallback_adapter"),
        Some(_) => {}
    }
    if device.memory_unknown {
        reasons.push("device_memory_unknown");
    }

    let (server, server_valid) = sanitize_server(server, max_tokens);
    if !server_valid {
        reasons.push("server_estimate_invalid");
    }
    let server_total = server.total_ms(max_tokens);

    let mut best: Option<Candidate> = None;
    let mut blockers = Reasons::default();
    for (index, variant) in variants.iter().enumerate() {
        let cached = device.is_cached(&variant.sha256);
        let common = device.common_blockers(variant, cached);
        for path in [BrowserPath::Webgpu, BrowserPath::Cpu] {
            let mut blocked = common.clone();
            blocked.extend(device.path_blockers(variant, path));
            if !blocked.is_empty() {
                blockers.extend(blocked);
                continue;
            }
            let candidate = device.candidate(variant, index, path, req);
            if best.as_ref().is_none_or(|b| candidate.better_than(b)) {
                best = Some(candidate);
            }
        }
    }

    let Some(best) = best else {
        if variants.is_empty() {
            reasons.push("no_browser_variant");
        } else {
            reasons.extend(blockers.0);
            reasons.push("no_runnable_variant");
        }
        reasons.push(policy_reason(policy));
        return RouteAnswer {
            route: Route::Server,
            variant: None,
            reasons: reasons.0,
            estimates: Estimates {
                browser: None,
                server,
            },
            browser_path: None,
        };
    };

    // Why the chosen variant does not use its other path, if it cannot.
    let variant = &variants[best.index];
    let other = match best.path {
        BrowserPath::Webgpu => BrowserPath::Cpu,
        BrowserPath::Cpu => BrowserPath::Webgpu,
    };
    reasons.extend(device.path_blockers(variant, other));
    reasons.push(match best.path {
        BrowserPath::Webgpu => "path_webgpu",
        BrowserPath::Cpu => "path_cpu",
    });
    if best.path == BrowserPath::Cpu && !device.cross_origin_isolated {
        reasons.push("not_cross_origin_isolated");
    }
    reasons.push(if best.loaded {
        "variant_loaded"
    } else if best.cached {
        "variant_cached"
    } else {
        "download_required"
    });
    reasons.push(if device.decode.is_some() {
        "measured_speed"
    } else {
        "estimated_speed"
    });

    let browser_total = best.total_ms;
    reasons.push(if browser_total < server_total {
        "browser_faster"
    } else if browser_total > server_total {
        "server_faster"
    } else {
        "equal_speed"
    });
    reasons.push(policy_reason(policy));

    let to_browser = match policy {
        Policy::Cheapest => {
            let bound = (server_total * CHEAPEST_MAX_SLOWDOWN).max(CHEAPEST_MIN_BOUND_MS);
            let ok = browser_total <= bound;
            reasons.push(if ok {
                "zero_operator_cost"
            } else {
                "browser_too_slow"
            });
            ok
        }
        Policy::Fastest => browser_total <= server_total,
        Policy::Balanced if req.stream => {
            // What a reader of a stream waits for is the first token; after it, any speed
            // faster than reading keeps ahead of them.
            reasons.push("streamed");
            let relative = server.ttft_ms * (1.0 + BALANCED_TOLERANCE) + BALANCED_SLACK_MS;
            let target = if ttft_target_ms.is_finite() {
                ttft_target_ms.clamp(0.0, MAX_TIME_MS)
            } else {
                DEFAULT_TTFT_TARGET_MS
            };
            let readable = best.estimate.tok_s >= READING_TOK_S;
            let within_tolerance = best.estimate.ttft_ms <= relative;
            let within_target = best.estimate.ttft_ms <= target;
            reasons.push(if !readable {
                "slower_than_reading"
            } else if within_tolerance {
                "within_tolerance"
            } else if within_target {
                "within_ttft_target"
            } else {
                "beyond_tolerance"
            });
            readable && (within_tolerance || within_target)
        }
        Policy::Balanced => {
            let bound = server_total * (1.0 + BALANCED_TOLERANCE) + BALANCED_SLACK_MS;
            let ok = browser_total <= bound;
            reasons.push(if ok {
                "within_tolerance"
            } else {
                "beyond_tolerance"
            });
            ok
        }
    };

    RouteAnswer {
        route: if to_browser {
            Route::Browser
        } else {
            Route::Server
        },
        variant: to_browser.then(|| VariantRef::from(variant)),
        reasons: reasons.0,
        estimates: Estimates {
            browser: Some(best.estimate),
            server,
        },
        browser_path: Some(best.path),
    }
}

fn policy_reason(policy: Policy) -> &'static str {
    match policy {
        Policy::Cheapest => "policy_cheapest",
        Policy::Fastest => "policy_fastest",
        Policy::Balanced => "policy_balanced",
    }
}

/// Replaces non-finite or negative numbers by 0; says whether the estimate was usable.
fn sanitize_server(server: Estimate, max_tokens: u64) -> (Estimate, bool) {
    let clean = |x: f64, cap: f64| {
        if x.is_finite() && x >= 0.0 {
            (x.min(cap), true)
        } else {
            (0.0, false)
        }
    };
    let (ttft_ms, ttft_ok) = clean(server.ttft_ms, MAX_TIME_MS);
    let (tok_s, tok_ok) = clean(server.tok_s, MAX_TOK_S);
    let (cost_usd, cost_ok) = clean(server.cost_usd, f64::MAX);
    let speed_ok = tok_s > 0.0 || max_tokens == 0;
    let estimate = Estimate {
        ttft_ms,
        tok_s,
        cost_usd,
    };
    (estimate, ttft_ok && tok_ok && cost_ok && speed_ok)
}

/// Reasons in order, without duplicates.
#[derive(Clone, Default)]
struct Reasons(Vec<String>);

impl Reasons {
    fn push(&mut self, reason: impl Into<String>) {
        let reason = reason.into();
        if !self.0.contains(&reason) {
            self.0.push(reason);
        }
    }

    fn extend(&mut self, reasons: impl IntoIterator<Item = String>) {
        for reason in reasons {
            self.push(reason);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl IntoIterator for Reasons {
    type Item = String;
    type IntoIter = std::vec::IntoIter<String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// A browser's WebGPU adapter, as the decision sees it.
struct Gpu<'a> {
    features: &'a [String],
    max_buffer_size: f64,
    software: bool,
}

/// A browser's capabilities with every number sanitized.
struct Device<'a> {
    gpu: Option<Gpu<'a>>,
    wasm_simd: bool,
    cross_origin_isolated: bool,
    cpu_threads: u32,
    usable_memory: f64,
    memory_unknown: bool,
    storage: Option<f64>,
    cached: &'a [String],
    loaded: &'a [String],
    downloading: &'a [Downloading],
    decode: Option<f64>,
    prefill: Option<f64>,
}

/// A finite, positive number, else `None`.
fn positive(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite() && *v > 0.0)
}

/// A finite, non-negative number, else `None`.
fn non_negative(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite() && *v >= 0.0)
}

/// Clamps a time into `[0, MAX_TIME_MS]` (NaN becomes the cap).
fn cap_time(ms: f64) -> f64 {
    if ms.is_nan() {
        MAX_TIME_MS
    } else {
        ms.clamp(0.0, MAX_TIME_MS)
    }
}

/// Clamps a speed into `[0, MAX_TOK_S]` (NaN becomes 0).
fn cap_rate(tok_s: f64) -> f64 {
    if tok_s.is_nan() {
        0.0
    } else {
        tok_s.clamp(0.0, MAX_TOK_S)
    }
}

/// Whether a non-blank `sha256` is in `list` (compared case-insensitively, blanks trimmed).
fn listed(list: &[String], sha256: &str) -> bool {
    list.iter().any(|c| same_sha256(c, sha256))
}

/// Whether two SHA-256s are the same non-blank one (compared case-insensitively, blanks
/// trimmed).
fn same_sha256(a: &str, b: &str) -> bool {
    let b = b.trim();
    !b.is_empty() && a.trim().eq_ignore_ascii_case(b)
}

/// Milliseconds to process `count` tokens at `tok_s`.
fn ms_for(count: f64, tok_s: f64) -> f64 {
    if count.is_nan() || count <= 0.0 {
        0.0
    } else if !(tok_s.is_finite() && tok_s > 0.0) {
        MAX_TIME_MS
    } else {
        cap_time(count / tok_s * 1000.0)
    }
}

impl<'a> Device<'a> {
    fn new(caps: &'a Capabilities) -> Self {
        let gpu = caps.webgpu.as_ref().filter(|w| w.available).map(|w| Gpu {
            features: &w.features,
            max_buffer_size: non_negative(w.limits.get("maxBufferSize").copied())
                .unwrap_or(WEBGPU_DEFAULT_MAX_BUFFER_SIZE as f64),
            software: w.adapter.is_software(),
        });
        let cpu_threads = if caps.cross_origin_isolated {
            caps.hardware_concurrency
                .unwrap_or(1)
                .clamp(1, CPU_MAX_THREADS)
        } else {
            1
        };
        let reported = positive(caps.device_memory_gb);
        let memory_gb = reported
            .unwrap_or(DEFAULT_DEVICE_MEMORY_GB)
            .min(DEVICE_MEMORY_CAP_GB);
        let measured = caps.measured.unwrap_or_default();
        Device {
            gpu,
            wasm_simd: caps.wasm_simd,
            cross_origin_isolated: caps.cross_origin_isolated,
            cpu_threads,
            usable_memory: memory_gb * (1u64 << 30) as f64 * TAB_MEMORY_FRACTION,
            memory_unknown: reported.is_none(),
            storage: non_negative(caps.storage_available_bytes),
            cached: &caps.cached_variants,
            loaded: &caps.loaded_variants,
            downloading: &caps.downloading,
            decode: positive(measured.decode_tok_s).map(cap_rate),
            prefill: positive(measured.prefill_tok_s).map(cap_rate),
        }
    }

    fn is_cached(&self, sha256: &str) -> bool {
        listed(self.cached, sha256) || self.is_loaded(sha256)
    }

    fn is_loaded(&self, sha256: &str) -> bool {
        listed(self.loaded, sha256)
    }

    /// Milliseconds to download the variant: what is left of a download under way, at its
    /// measured rate where the page reports one, else the whole file at
    /// [`DOWNLOAD_BYTES_PER_SEC`].
    fn download_ms(&self, variant: &BrowserVariant) -> f64 {
        let bytes = variant.bytes.max(1) as f64;
        let under_way = self
            .downloading
            .iter()
            .find(|d| same_sha256(&d.sha256, &variant.sha256));
        let (left, rate) = match under_way {
            Some(d) => (
                bytes
                    - non_negative(Some(d.received_bytes))
                        .unwrap_or(0.0)
                        .min(bytes),
                positive(d.bytes_per_sec).unwrap_or(DOWNLOAD_BYTES_PER_SEC),
            ),
            None => (bytes, DOWNLOAD_BYTES_PER_SEC),
        };
        cap_time(left / rate * 1000.0)
    }

    /// Memory the variant needs: its `memory_bytes`, and never less than its file.
    fn memory_need(variant: &BrowserVariant) -> u64 {
        variant.memory_bytes.max(variant.bytes)
    }

    /// What stops the variant on every path: memory, and storage for a download.
    fn common_blockers(&self, variant: &BrowserVariant, cached: bool) -> Reasons {
        let mut blocked = Reasons::default();
        if Self::memory_need(variant) as f64 > self.usable_memory {
            blocked.push("insufficient_memory");
        }
        if !cached && self.storage.is_some_and(|free| variant.bytes as f64 > free) {
            blocked.push("insufficient_storage");
        }
        blocked
    }

    /// What stops the variant on one path, besides memory and storage.
    fn path_blockers(&self, variant: &BrowserVariant, path: BrowserPath) -> Reasons {
        let mut blocked = Reasons::default();
        match path {
            BrowserPath::Webgpu => match &self.gpu {
                None => blocked.push("no_webgpu"),
                Some(gpu) => {
                    for feature in &variant.required_features {
                        let feature = feature.trim();
                        if feature.is_empty() {
                            continue;
                        }
                        if !gpu
                            .features
                            .iter()
                            .any(|f| f.trim().eq_ignore_ascii_case(feature))
                        {
                            blocked.push(format!("missing_feature:{feature}"));
                        }
                    }
                    if variant.max_tensor_bytes as f64 > gpu.max_buffer_size {
                        blocked.push("buffer_limit");
                    }
                }
            },
            BrowserPath::Cpu => {
                if !self.wasm_simd {
                    blocked.push("no_wasm_simd");
                }
                if variant.bytes > CPU_MAX_VARIANT_BYTES {
                    blocked.push("variant_too_large_for_cpu");
                }
                if Self::memory_need(variant) > WASM_MAX_MEMORY_BYTES {
                    blocked.push("wasm_memory_limit");
                }
            }
        }
        blocked
    }

    /// Effective decode bandwidth of a path on this device, bytes per second.
    fn bandwidth(&self, path: BrowserPath) -> f64 {
        match path {
            BrowserPath::Webgpu => match &self.gpu {
                Some(gpu) if gpu.software => WEBGPU_FALLBACK_BYTES_PER_SEC,
                _ => WEBGPU_BYTES_PER_SEC,
            },
            BrowserPath::Cpu => {
                let extra = f64::from(self.cpu_threads.saturating_sub(1));
                CPU_THREAD_BYTES_PER_SEC * (1.0 + CPU_EXTRA_THREAD_GAIN * extra)
            }
        }
    }

    /// Estimates a runnable option.
    fn candidate(
        &self,
        variant: &BrowserVariant,
        index: usize,
        path: BrowserPath,
        req: &RouteRequest,
    ) -> Candidate {
        let cached = self.is_cached(&variant.sha256);
        let loaded = self.is_loaded(&variant.sha256);
        let bytes = variant.bytes.max(1) as f64;
        let estimated_decode = cap_rate(self.bandwidth(path) / bytes);
        let estimated_prefill = cap_rate(estimated_decode * PREFILL_SPEEDUP);
        let decode = self.decode.unwrap_or(estimated_decode);
        let prefill = self
            .prefill
            .unwrap_or_else(|| cap_rate(decode * PREFILL_SPEEDUP));

        let download_ms = if cached {
            0.0
        } else {
            self.download_ms(variant)
        };
        let load_ms = if loaded {
            0.0
        } else {
            cap_time(LOAD_OVERHEAD_MS + bytes / LOAD_BYTES_PER_SEC * 1000.0)
        };
        // A loaded engine that kept the conversation's earlier turns computes only the rest
        // (at least the last token, for the logits).
        let prompt = if loaded && req.cached_prompt_tokens > 0 {
            req.prompt_tokens
                .saturating_sub(req.cached_prompt_tokens)
                .max(1)
        } else {
            req.prompt_tokens
        } as f64;
        let ttft = |prefill: f64| cap_time(download_ms + load_ms + ms_for(prompt, prefill));

        let estimate = Estimate {
            ttft_ms: ttft(prefill),
            tok_s: decode,
            cost_usd: 0.0,
        };
        let estimated = Estimate {
            ttft_ms: ttft(estimated_prefill),
            tok_s: estimated_decode,
            cost_usd: 0.0,
        };
        Candidate {
            index,
            path,
            cached,
            loaded,
            bytes: variant.bytes,
            total_ms: estimate.total_ms(req.max_tokens),
            estimated_total_ms: estimated.total_ms(req.max_tokens),
            estimate,
        }
    }
}

/// A runnable (variant, path) option.
struct Candidate {
    index: usize,
    path: BrowserPath,
    cached: bool,
    /// Its engine is loaded in the page (implies `cached`).
    loaded: bool,
    bytes: u64,
    estimate: Estimate,
    /// Expected total time, with the client's measurements when given.
    total_ms: f64,
    /// Expected total time from the model alone (breaks ties between options that share a
    /// measurement).
    estimated_total_ms: f64,
}

impl Candidate {
    /// Loaded first, then cached, then the lowest expected total time, then the smaller file,
    /// then the earlier variant, then WebGPU.
    fn better_than(&self, other: &Candidate) -> bool {
        let path_rank = |p: BrowserPath| match p {
            BrowserPath::Webgpu => 0u8,
            BrowserPath::Cpu => 1,
        };
        (!self.loaded)
            .cmp(&!other.loaded)
            .then((!self.cached).cmp(&!other.cached))
            .then(self.total_ms.total_cmp(&other.total_ms))
            .then(self.estimated_total_ms.total_cmp(&other.estimated_total_ms))
            .then(self.bytes.cmp(&other.bytes))
            .then(self.index.cmp(&other.index))
            .then(path_rank(self.path).cmp(&path_rank(other.path)))
            .is_lt()
    }
}

// ------------------------------------------------------------------------------------------------
// Lenient deserialization
// ------------------------------------------------------------------------------------------------

fn yes() -> bool {
    true
}

fn default_max_tokens() -> u64 {
    DEFAULT_MAX_TOKENS
}

/// Deserializes `T`, or gives `T::default()` when the value has the wrong shape.
fn lenient<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    let value = serde_json::Value::deserialize(d)?;
    Ok(T::deserialize(value).unwrap_or_default())
}

/// A boolean that only an explicit `false` makes false.
fn lenient_true<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(value.as_bool().unwrap_or(true))
}

/// The elements of a list that read as `T` (others dropped); anything but a list gives an
/// empty list.
fn lenient_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = serde_json::Value::deserialize(d)?;
    Ok(match value {
        serde_json::Value::Array(items) => items
            .into_iter()
            .filter_map(|item| T::deserialize(item).ok())
            .collect(),
        _ => Vec::new(),
    })
}

/// The numeric entries of an object (other entries dropped).
fn lenient_limits<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(match value {
        serde_json::Value::Object(entries) => entries
            .into_iter()
            .filter_map(|(name, v)| v.as_f64().filter(|x| x.is_finite()).map(|x| (name, x)))
            .collect(),
        _ => BTreeMap::new(),
    })
}

/// A token count from any JSON number: negative gives 0, fractions round down, huge saturates.
fn count(value: &serde_json::Value) -> Option<u64> {
    let n = value.as_number()?;
    if let Some(u) = n.as_u64() {
        return Some(u);
    }
    if n.as_i64().is_some() {
        return Some(0); // a negative integer
    }
    let f = n.as_f64()?;
    // `as` saturates (and maps NaN to 0), so this cannot panic.
    f.is_finite().then(|| f.max(0.0) as u64)
}

fn count_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(count(&value).unwrap_or(0))
}

fn count_or_default_max<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(count(&value).unwrap_or(DEFAULT_MAX_TOKENS))
}

// ------------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SHA_SMALL: &str = "aa11";
    const SHA_BIG: &str = "bb22";

    /// SmolLM2-135M Q4_1: 98 MB, f16 shaders.
    fn small() -> BrowserVariant {
        BrowserVariant {
            url: "https://models.example/smol-q4_1.gguf".into(),
            sha256: SHA_SMALL.into(),
            bytes: 98_000_000,
            quantization: "Q4_1".into(),
            required_features: vec!["shader-f16".into()],
            memory_bytes: 160_000_000,
            max_tensor_bytes: 30_000_000,
        }
    }

    /// A 1.2 GB model: too large for the CPU path, with a 300 MB tensor.
    fn big() -> BrowserVariant {
        BrowserVariant {
            url: "https://models.example/big-q8_0.gguf".into(),
            sha256: SHA_BIG.into(),
            bytes: 1_200_000_000,
            quantization: "Q8_0".into(),
            required_features: vec!["shader-f16".into()],
            memory_bytes: 1_500_000_000,
            max_tensor_bytes: 300_000_000,
        }
    }

    fn server() -> Estimate {
        Estimate {
            ttft_ms: 300.0,
            tok_s: 50.0,
            cost_usd: 0.0004,
        }
    }

    fn gpu() -> WebGpuInfo {
        WebGpuInfo {
            available: true,
            adapter: AdapterInfo {
                vendor: "intel".into(),
                architecture: "gen-12lp".into(),
                is_fallback: false,
            },
            features: vec!["shader-f16".into(), "subgroups".into()],
            limits: BTreeMap::from([
                ("maxBufferSize".to_string(), 2_147_483_648.0),
                ("maxStorageBufferBindingSize".to_string(), 1_073_741_824.0),
            ]),
        }
    }

    fn caps() -> Capabilities {
        Capabilities {
            webgpu: Some(gpu()),
            wasm_simd: true,
            cross_origin_isolated: true,
            hardware_concurrency: Some(8),
            device_memory_gb: Some(8.0),
            storage_available_bytes: Some(10e9),
            cached_variants: vec![],
            loaded_variants: vec![],
            measured: None,
            downloading: vec![],
        }
    }

    fn request(capabilities: Capabilities) -> RouteRequest {
        RouteRequest {
            model: Some("smollm2-135m".into()),
            prompt_tokens: 100,
            max_tokens: 256,
            capabilities,
            cached_prompt_tokens: 0,
            stream: false,
        }
    }

    fn has(answer: &RouteAnswer, reason: &str) -> bool {
        answer.reasons.iter().any(|r| r == reason)
    }

    fn assert_finite(answer: &RouteAnswer) {
        let mut all = vec![answer.estimates.server];
        all.extend(answer.estimates.browser);
        for e in all {
            for x in [e.ttft_ms, e.tok_s, e.cost_usd] {
                assert!(x.is_finite() && x >= 0.0, "{e:?} in {answer:?}");
            }
        }
        let v = serde_json::to_value(answer).unwrap();
        for side in ["browser", "server"] {
            let e = &v["estimates"][side];
            if !e.is_null() {
                for field in ["ttft_ms", "tok_s", "cost_usd"] {
                    assert!(e[field].is_number(), "{v}");
                }
            }
        }
    }

    #[test]
    fn no_webgpu_and_no_simd_goes_to_server() {
        let mut c = caps();
        c.webgpu = None;
        c.wasm_simd = false;
        for policy in [Policy::Cheapest, Policy::Fastest, Policy::Balanced] {
            let a = decide(&request(c.clone()), &[small()], server(), policy);
            assert_eq!(a.route, Route::Server);
            assert!(a.variant.is_none());
            assert!(a.estimates.browser.is_none());
            assert!(has(&a, "no_webgpu") && has(&a, "no_wasm_simd"), "{a:?}");
            assert!(has(&a, "no_runnable_variant"));
            assert!(has(&a, policy_reason(policy)));
        }
    }

    #[test]
    fn no_variants_goes_to_server() {
        let a = decide(&request(caps()), &[], server(), Policy::Cheapest);
        assert_eq!(a.route, Route::Server);
        assert!(has(&a, "no_browser_variant"));
    }

    #[test]
    fn cpu_path_under_cheapest() {
        let mut c = caps();
        c.webgpu = None;
        c.cross_origin_isolated = false;
        let a = decide(&request(c), &[small()], server(), Policy::Cheapest);
        assert_eq!(a.route, Route::Browser, "{a:?}");
        assert_eq!(a.browser_path, Some(BrowserPath::Cpu));
        assert_eq!(a.variant.as_ref().unwrap().sha256, SHA_SMALL);
        for r in [
            "no_webgpu",
            "path_cpu",
            "not_cross_origin_isolated",
            "download_required",
            "estimated_speed",
            "policy_cheapest",
            "zero_operator_cost",
        ] {
            assert!(has(&a, r), "{r} missing from {:?}", a.reasons);
        }
        let b = a.estimates.browser.unwrap();
        // One thread: 3 GB/s over 98 MB.
        assert!((b.tok_s - CPU_THREAD_BYTES_PER_SEC / 98e6).abs() < 1e-9);
        assert_eq!(b.cost_usd, 0.0);
        // The download (98 MB at 6.25 MB/s) dominates the time to first token.
        assert!(b.ttft_ms > 98e6 / DOWNLOAD_BYTES_PER_SEC * 1000.0);
    }

    #[test]
    fn cpu_threads_need_cross_origin_isolation() {
        let mut c = caps();
        c.webgpu = None;
        let isolated = decide(&request(c.clone()), &[small()], server(), Policy::Cheapest);
        c.cross_origin_isolated = false;
        let single = decide(&request(c), &[small()], server(), Policy::Cheapest);
        let (fast, slow) = (
            isolated.estimates.browser.unwrap().tok_s,
            single.estimates.browser.unwrap().tok_s,
        );
        let expected = 1.0 + CPU_EXTRA_THREAD_GAIN * f64::from(CPU_MAX_THREADS - 1);
        assert!((fast / slow - expected).abs() < 1e-9);
        assert!(!has(&isolated, "not_cross_origin_isolated"));
    }

    #[test]
    fn too_little_memory_goes_to_server() {
        let mut c = caps();
        c.device_memory_gb = Some(0.25); // 128 MiB usable < 160 MB
        let a = decide(&request(c), &[small()], server(), Policy::Cheapest);
        assert_eq!(a.route, Route::Server);
        assert!(has(&a, "insufficient_memory"), "{a:?}");
        assert!(has(&a, "no_runnable_variant"));
    }

    #[test]
    fn device_memory_is_capped_and_defaulted() {
        let mut v = small();
        v.memory_bytes = 5 << 30; // more than half of the 8 GB cap
        let mut c = caps();
        c.device_memory_gb = Some(64.0);
        let a = decide(
            &request(c.clone()),
            std::slice::from_ref(&v),
            server(),
            Policy::Cheapest,
        );
        assert!(has(&a, "insufficient_memory"), "{a:?}");
        c.device_memory_gb = None;
        let a = decide(&request(c), &[small()], server(), Policy::Cheapest);
        assert!(has(&a, "device_memory_unknown"));
        assert_eq!(a.route, Route::Browser);
    }

    #[test]
    fn missing_feature() {
        let mut c = caps();
        c.webgpu.as_mut().unwrap().features = vec!["subgroups".into()];
        c.wasm_simd = false;
        let a = decide(&request(c.clone()), &[small()], server(), Policy::Cheapest);
        assert_eq!(a.route, Route::Server);
        assert!(has(&a, "missing_feature:shader-f16"), "{a:?}");
        assert!(has(&a, "no_wasm_simd"));

        // With WASM SIMD the CPU path takes over, and the reasons say why not WebGPU.
        c.wasm_simd = true;
        let a = decide(&request(c), &[small()], server(), Policy::Cheapest);
        assert_eq!(a.route, Route::Browser);
        assert_eq!(a.browser_path, Some(BrowserPath::Cpu));
        assert!(has(&a, "missing_feature:shader-f16") && has(&a, "path_cpu"));
    }

    #[test]
    fn buffer_limit() {
        let mut c = caps();
        c.webgpu.as_mut().unwrap().limits =
            BTreeMap::from([("maxBufferSize".to_string(), 268_435_456.0)]);
        let a = decide(&request(c.clone()), &[big()], server(), Policy::Cheapest);
        assert_eq!(a.route, Route::Server);
        assert!(has(&a, "buffer_limit"), "{a:?}");
        assert!(has(&a, "variant_too_large_for_cpu"));

        // An absent limit is the WebGPU default (256 MiB), too small for a 300 MB tensor.
        c.webgpu.as_mut().unwrap().limits.clear();
        let a = decide(&request(c), &[big()], server(), Policy::Cheapest);
        assert!(has(&a, "buffer_limit"));
    }

    #[test]
    fn cached_variant_has_no_download() {
        let mut c = caps();
        c.cached_variants = vec![SHA_SMALL.to_uppercase()];
        let cached = decide(&request(c), &[small()], server(), Policy::Fastest);
        let fresh = decide(&request(caps()), &[small()], server(), Policy::Fastest);
        assert!(has(&cached, "variant_cached") && !has(&cached, "download_required"));
        assert!(has(&fresh, "download_required"));
        let (c_ttft, f_ttft) = (
            cached.estimates.browser.unwrap().ttft_ms,
            fresh.estimates.browser.unwrap().ttft_ms,
        );
        let download = 98e6 / DOWNLOAD_BYTES_PER_SEC * 1000.0;
        assert!((f_ttft - c_ttft - download).abs() < 1e-6);
        // Load + prefill only: well under a second.
        assert!(c_ttft < 1000.0, "{c_ttft}");
    }

    #[test]
    fn loaded_variant_has_no_load_time() {
        let mut cached = caps();
        cached.cached_variants = vec![SHA_SMALL.into()];
        let mut loaded = caps();
        loaded.loaded_variants = vec![format!(" {} ", SHA_SMALL.to_uppercase())];
        let c = decide(&request(cached), &[small()], server(), Policy::Fastest);
        let l = decide(&request(loaded), &[small()], server(), Policy::Fastest);
        assert!(
            has(&l, "variant_loaded") && !has(&l, "variant_cached"),
            "{l:?}"
        );
        assert!(!has(&l, "download_required"));
        let load = LOAD_OVERHEAD_MS + 98e6 / LOAD_BYTES_PER_SEC * 1000.0;
        let (c_ttft, l_ttft) = (
            c.estimates.browser.unwrap().ttft_ms,
            l.estimates.browser.unwrap().ttft_ms,
        );
        assert!((c_ttft - l_ttft - load).abs() < 1e-6, "{c_ttft} {l_ttft}");
        // The prompt alone: 100 tokens at 4 x (20 GB/s / 98 MB).
        let prefill = 4.0 * 20e9 / 98e6;
        assert!((l_ttft - 100.0 / prefill * 1000.0).abs() < 1e-6, "{l_ttft}");
    }

    #[test]
    fn loaded_variant_is_preferred_over_a_cached_one() {
        let mut c = caps();
        c.cached_variants = vec![SHA_SMALL.into()];
        c.loaded_variants = vec![SHA_BIG.into()];
        let a = decide(&request(c), &[small(), big()], server(), Policy::Cheapest);
        assert_eq!(a.variant.as_ref().unwrap().sha256, SHA_BIG);
        assert!(has(&a, "variant_loaded"));
    }

    #[test]
    fn cached_variant_is_preferred() {
        let mut c = caps();
        c.cached_variants = vec![SHA_BIG.into()];
        let a = decide(&request(c), &[small(), big()], server(), Policy::Cheapest);
        assert_eq!(a.variant.as_ref().unwrap().sha256, SHA_BIG);
        assert!(has(&a, "variant_cached"));
        // Neither cached: the smaller, faster one.
        let a = decide(
            &request(caps()),
            &[big(), small()],
            server(),
            Policy::Cheapest,
        );
        assert_eq!(a.variant.unwrap().sha256, SHA_SMALL);
    }

    #[test]
    fn fast_measured_device_wins_under_fastest() {
        let mut c = caps();
        c.cached_variants = vec![SHA_SMALL.into()];
        c.measured = Some(Measured {
            decode_tok_s: Some(200.0),
            prefill_tok_s: Some(2000.0),
        });
        let a = decide(&request(c), &[small()], server(), Policy::Fastest);
        assert_eq!(a.route, Route::Browser, "{a:?}");
        assert!(has(&a, "browser_faster") && has(&a, "measured_speed"));
        assert_eq!(a.estimates.browser.unwrap().tok_s, 200.0);
    }

    #[test]
    fn slow_measured_device_loses_under_fastest() {
        let mut c = caps();
        c.cached_variants = vec![SHA_SMALL.into()];
        c.measured = Some(Measured {
            decode_tok_s: Some(2.0),
            prefill_tok_s: None,
        });
        let a = decide(&request(c.clone()), &[small()], server(), Policy::Fastest);
        assert_eq!(a.route, Route::Server, "{a:?}");
        assert!(a.variant.is_none());
        assert!(has(&a, "server_faster"));
        assert!(a.estimates.browser.is_some());
        // Balanced refuses it too: 128 s of decode against the server's 5.4 s.
        let a = decide(&request(c), &[small()], server(), Policy::Balanced);
        assert_eq!(a.route, Route::Server);
        assert!(has(&a, "beyond_tolerance"));
    }

    #[test]
    fn cheapest_refuses_only_absurd_slowness() {
        let mut c = caps();
        c.cached_variants = vec![SHA_SMALL.into()];
        c.measured = Some(Measured {
            decode_tok_s: Some(8.0), // 32 s for 256 tokens: 6x the server, under 60 s
            prefill_tok_s: None,
        });
        let a = decide(&request(c.clone()), &[small()], server(), Policy::Cheapest);
        assert_eq!(a.route, Route::Browser, "{a:?}");
        c.measured.as_mut().unwrap().decode_tok_s = Some(1.0); // 256 s
        let a = decide(&request(c), &[small()], server(), Policy::Cheapest);
        assert_eq!(a.route, Route::Server);
        assert!(has(&a, "browser_too_slow"));
    }

    #[test]
    fn balanced_tolerance() {
        let mut c = caps();
        c.cached_variants = vec![SHA_SMALL.into()];
        let s = server(); // 300 ms + 256 / 50 tok/s = 5420 ms
        let bound = s.total_ms(256) * (1.0 + BALANCED_TOLERANCE) + BALANCED_SLACK_MS;
        for (tok_s, browser) in [
            (40.0, true),
            (256_000.0 / (bound - 1500.0), true),
            (25.0, false),
        ] {
            c.measured = Some(Measured {
                decode_tok_s: Some(tok_s),
                prefill_tok_s: Some(1000.0),
            });
            let a = decide(&request(c.clone()), &[small()], s, Policy::Balanced);
            assert_eq!(a.route == Route::Browser, browser, "{tok_s}: {a:?}");
        }
    }

    #[test]
    fn balanced_judges_a_stream_by_its_first_token_and_reading_speed() {
        let mut c = caps();
        c.cached_variants = vec![SHA_SMALL.into()];
        c.loaded_variants = vec![SHA_SMALL.into()];
        let s = server(); // first token in 300 ms: the bound is 950 ms
        let bound = s.ttft_ms * (1.0 + BALANCED_TOLERANCE) + BALANCED_SLACK_MS;
        // 100 prompt tokens: prefill at 200 tok/s is 500 ms, at 80 tok/s 1,250 ms (beyond the
        // default first-token target of 1 s too).
        for (prefill, decode, browser, reason) in [
            (200.0, 20.0, true, "within_tolerance"),
            (80.0, 20.0, false, "beyond_tolerance"),
            (200.0, READING_TOK_S * 0.9, false, "slower_than_reading"),
        ] {
            c.measured = Some(Measured {
                decode_tok_s: Some(decode),
                prefill_tok_s: Some(prefill),
            });
            let mut req = request(c.clone());
            // Awaited whole, 256 tokens at 20 tok/s (12.8 s) lose to the server's 5.4 s.
            let a = decide(&req, &[small()], s, Policy::Balanced);
            assert_eq!(a.route, Route::Server, "{a:?}");
            req.stream = true;
            let a = decide(&req, &[small()], s, Policy::Balanced);
            assert_eq!(
                a.route == Route::Browser,
                browser,
                "{prefill} {decode}: {a:?}"
            );
            assert!(has(&a, "streamed") && has(&a, reason), "{a:?}");
            assert_eq!(
                a.estimates.browser.unwrap().ttft_ms <= bound,
                reason != "beyond_tolerance"
            );
        }
    }

    #[test]
    fn balanced_takes_a_stream_whose_first_token_meets_the_target() {
        let mut c = caps();
        c.cached_variants = vec![SHA_SMALL.into()];
        c.loaded_variants = vec![SHA_SMALL.into()];
        let s = server(); // first token in 300 ms: the tolerance's bound is 950 ms
        let mut req = request(c.clone());
        req.stream = true;
        // 100 prompt tokens at 40 tok/s: the first token in 2,500 ms.
        c.measured = Some(Measured {
            decode_tok_s: Some(20.0),
            prefill_tok_s: Some(40.0),
        });
        req.capabilities = c.clone();
        for (target, browser, reason) in [
            (DEFAULT_TTFT_TARGET_MS, false, "beyond_tolerance"),
            (2_400.0, false, "beyond_tolerance"),
            (2_500.0, true, "within_ttft_target"),
            (3_000.0, true, "within_ttft_target"),
            (f64::NAN, false, "beyond_tolerance"),
        ] {
            let a = decide_with_target(&req, &[small()], s, Policy::Balanced, target);
            assert_eq!(a.route == Route::Browser, browser, "{target}: {a:?}");
            assert!(has(&a, reason), "{target}: {a:?}");
        }
        // Still faster than reading, or not at all.
        c.measured.as_mut().unwrap().decode_tok_s = Some(READING_TOK_S * 0.9);
        req.capabilities = c;
        let a = decide_with_target(&req, &[small()], s, Policy::Balanced, 3_000.0);
        assert_eq!(a.route, Route::Server);
        assert!(has(&a, "slower_than_reading"));
        // Other policies and answers awaited whole ignore the target.
        req.stream = false;
        let a = decide_with_target(&req, &[small()], s, Policy::Balanced, 1e9);
        assert_eq!(a.route, Route::Server, "{a:?}");
        req.stream = true;
        let a = decide_with_target(&req, &[small()], s, Policy::Fastest, 1e9);
        assert_eq!(a.route, Route::Server, "{a:?}");
    }

    #[test]
    fn a_download_under_way_counts_only_what_is_left() {
        let mut c = caps();
        c.measured = Some(Measured {
            decode_tok_s: Some(50.0),
            prefill_tok_s: Some(100.0),
        });
        let v = small();
        let bytes = v.bytes as f64;
        let load = LOAD_OVERHEAD_MS + bytes / LOAD_BYTES_PER_SEC * 1e3;
        let prompt = 1000.0; // 100 prompt tokens at 100 tok/s
        let ttft = |c: &Capabilities| {
            decide(&request(c.clone()), &[small()], server(), Policy::Balanced)
                .estimates
                .browser
                .unwrap()
                .ttft_ms
        };
        let whole = bytes / DOWNLOAD_BYTES_PER_SEC * 1e3;
        assert!((ttft(&c) - (whole + load + prompt)).abs() < 1e-6);
        // Three quarters received at the assumed rate, then at a measured one.
        c.downloading = vec![Downloading {
            sha256: SHA_SMALL.to_uppercase(),
            received_bytes: bytes * 0.75,
            bytes_per_sec: None,
        }];
        assert!((ttft(&c) - (whole / 4.0 + load + prompt)).abs() < 1e-6);
        c.downloading[0].bytes_per_sec = Some(bytes / 4.0); // the rest in one second
        assert!((ttft(&c) - (1000.0 + load + prompt)).abs() < 1e-6);
        // Nonsense counts as nothing received, or everything; another variant's download as none.
        for (received, rate, left) in [
            (-5.0, Some(f64::NAN), whole),
            (f64::INFINITY, Some(-1.0), whole),
            (bytes * 2.0, Some(1.0), 0.0),
        ] {
            c.downloading[0].received_bytes = received;
            c.downloading[0].bytes_per_sec = rate;
            assert!(
                (ttft(&c) - (left + load + prompt)).abs() < 1e-6,
                "{received}"
            );
        }
        c.downloading[0].sha256 = "other".into();
        assert!((ttft(&c) - (whole + load + prompt)).abs() < 1e-6);
        // Cached: nothing to download, whatever is reported.
        c.cached_variants = vec![SHA_SMALL.into()];
        assert!((ttft(&c) - (load + prompt)).abs() < 1e-6);
        // From JSON, leniently.
        let r: RouteRequest = serde_json::from_value(serde_json::json!({
            "capabilities": {"downloading": [3, {"sha256": "ab", "received_bytes": 10, "bytes_per_sec": "x"}]}
        }))
        .unwrap();
        assert_eq!(r.capabilities.downloading.len(), 1);
        assert_eq!(r.capabilities.downloading[0].received_bytes, 10.0);
        assert_eq!(r.capabilities.downloading[0].bytes_per_sec, None);
        let r: RouteRequest =
            serde_json::from_value(serde_json::json!({"capabilities": {"downloading": 7}}))
                .unwrap();
        assert!(r.capabilities.downloading.is_empty());
    }

    #[test]
    fn a_loaded_engine_prefills_only_what_it_does_not_hold() {
        let mut c = caps();
        c.cached_variants = vec![SHA_SMALL.into()];
        c.measured = Some(Measured {
            decode_tok_s: Some(50.0),
            prefill_tok_s: Some(100.0),
        });
        let mut req = request(c.clone());
        req.cached_prompt_tokens = 80;
        // Not loaded: the kept keys and values are gone, the whole prompt is computed.
        let ttft = |req: &RouteRequest| {
            decide(req, &[small()], server(), Policy::Balanced)
                .estimates
                .browser
                .unwrap()
                .ttft_ms
        };
        let load = LOAD_OVERHEAD_MS + 98e6 / LOAD_BYTES_PER_SEC * 1e3;
        assert!((ttft(&req) - (load + 1000.0)).abs() < 1e-6);
        c.loaded_variants = vec![SHA_SMALL.into()];
        req.capabilities = c;
        assert!((ttft(&req) - 200.0).abs() < 1e-6);
        // At least the last token is computed.
        req.cached_prompt_tokens = 500;
        assert!((ttft(&req) - 10.0).abs() < 1e-6);
    }

    #[test]
    fn fallback_adapter_is_slow() {
        let mut c = caps();
        c.wasm_simd = false;
        c.webgpu.as_mut().unwrap().adapter = AdapterInfo {
            vendor: "google".into(),
            architecture: "swiftshader".into(),
            is_fallback: false,
        };
        let a = decide(&request(c.clone()), &[small()], server(), Policy::Fastest);
        assert!(has(&a, "webgpu_fallback_adapter") && has(&a, "path_webgpu"));
        let tok_s = a.estimates.browser.unwrap().tok_s;
        assert!((tok_s - WEBGPU_FALLBACK_BYTES_PER_SEC / 98e6).abs() < 1e-9);
        assert_eq!(a.route, Route::Server);
        // With WASM SIMD the CPU path is faster than the emulated GPU, and is chosen.
        c.wasm_simd = true;
        let a = decide(&request(c), &[small()], server(), Policy::Cheapest);
        assert_eq!(a.browser_path, Some(BrowserPath::Cpu));
    }

    #[test]
    fn storage_too_small_for_download() {
        let mut c = caps();
        c.storage_available_bytes = Some(50e6);
        let a = decide(&request(c.clone()), &[small()], server(), Policy::Cheapest);
        assert_eq!(a.route, Route::Server);
        assert!(has(&a, "insufficient_storage"), "{a:?}");
        // Already cached: no storage needed.
        c.cached_variants = vec![SHA_SMALL.into()];
        let a = decide(&request(c), &[small()], server(), Policy::Cheapest);
        assert_eq!(a.route, Route::Browser);
    }

    #[test]
    fn garbage_numbers_do_not_panic() {
        let bad = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.0,
            0.0,
            1e-300,
            1e300,
            f64::MAX,
            f64::MIN_POSITIVE,
        ];
        let variants = [
            small(),
            big(),
            BrowserVariant {
                url: String::new(),
                sha256: String::new(),
                bytes: u64::MAX,
                quantization: String::new(),
                required_features: vec![String::new()],
                memory_bytes: u64::MAX,
                max_tensor_bytes: u64::MAX,
            },
            BrowserVariant {
                bytes: 0,
                memory_bytes: 0,
                max_tensor_bytes: 0,
                ..small()
            },
        ];
        for &x in &bad {
            for &y in &bad {
                let mut c = caps();
                c.device_memory_gb = Some(x);
                c.storage_available_bytes = Some(y);
                c.hardware_concurrency = Some(u32::MAX);
                c.cached_variants = vec![String::new(), SHA_SMALL.into()];
                c.measured = Some(Measured {
                    decode_tok_s: Some(x),
                    prefill_tok_s: Some(y),
                });
                c.webgpu
                    .as_mut()
                    .unwrap()
                    .limits
                    .insert("maxBufferSize".into(), y);
                let mut req = request(c);
                req.prompt_tokens = u64::MAX;
                req.max_tokens = u64::MAX;
                let server = Estimate {
                    ttft_ms: x,
                    tok_s: y,
                    cost_usd: x,
                };
                for policy in [Policy::Cheapest, Policy::Fastest, Policy::Balanced] {
                    let a = decide(&req, &variants, server, policy);
                    assert_finite(&a);
                    let a = decide(&RouteRequest::default(), &variants, server, policy);
                    assert_finite(&a);
                }
            }
        }
    }

    #[test]
    fn garbage_json_is_lenient() {
        let body = json!({
            "model": 7,
            "prompt_tokens": -5,
            "max_tokens": 1e30,
            "capabilities": {
                "webgpu": {"available": "maybe", "adapter": 3, "features": ["shader-f16", 1, null],
                           "limits": {"maxBufferSize": "big", "maxComputeWorkgroupSizeX": 256}},
                "wasm_simd": "yes", "cross_origin_isolated": null, "hardware_concurrency": -2,
                "device_memory_gb": "8", "storage_available_bytes": [1],
                "cached_variants": "nope", "measured": {"decode_tok_s": "fast"},
                "something_new": {"x": 1}
            }
        });
        let req: RouteRequest = serde_json::from_value(body).unwrap();
        assert_eq!(req.model, None);
        assert_eq!(req.prompt_tokens, 0);
        assert_eq!(req.max_tokens, u64::MAX);
        let gpu = req.capabilities.webgpu.as_ref().unwrap();
        assert!(gpu.available);
        assert_eq!(gpu.features, vec!["shader-f16".to_string()]);
        assert_eq!(gpu.limits.len(), 1);
        assert!(!req.capabilities.wasm_simd);
        assert_eq!(req.capabilities.hardware_concurrency, None);
        assert!(req.capabilities.cached_variants.is_empty());
        assert_eq!(req.capabilities.measured, Some(Measured::default()));
        assert_finite(&decide(&req, &[small()], server(), Policy::Balanced));

        // Empty body, and a null capabilities object.
        let req: RouteRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(req, RouteRequest::default());
        assert_eq!(req.max_tokens, DEFAULT_MAX_TOKENS);
        let req: RouteRequest =
            serde_json::from_str(r#"{"capabilities": null, "max_tokens": null}"#).unwrap();
        assert_eq!(req, RouteRequest::default());
        let a = decide(&req, &[small()], server(), Policy::Balanced);
        assert_eq!(a.route, Route::Server);
        assert!(
            has(&a, "no_webgpu") && has(&a, "no_wasm_simd") && has(&a, "device_memory_unknown")
        );
    }

    #[test]
    fn request_round_trip() {
        let body = r#"{"model": "smollm2-135m", "prompt_tokens": 123, "max_tokens": 256,
         "capabilities": {
           "webgpu": {"available": true, "adapter": {"vendor": "intel", "architecture": "gen-12lp", "is_fallback": false},
                      "features": ["shader-f16", "subgroups"],
                      "limits": {"maxBufferSize": 268435456, "maxStorageBufferBindingSize": 134217728, "maxComputeWorkgroupSizeX": 256}},
           "wasm_simd": true, "cross_origin_isolated": false, "hardware_concurrency": 8,
           "device_memory_gb": 8, "storage_available_bytes": 1000000000,
           "cached_variants": ["aa11"],
           "measured": {"decode_tok_s": 40.0, "prefill_tok_s": 300.0}}}"#;
        let req: RouteRequest = serde_json::from_str(body).unwrap();
        assert_eq!(req.model.as_deref(), Some("smollm2-135m"));
        assert_eq!((req.prompt_tokens, req.max_tokens), (123, 256));
        let c = &req.capabilities;
        let gpu = c.webgpu.as_ref().unwrap();
        assert!(gpu.available && !gpu.adapter.is_fallback);
        assert_eq!(gpu.adapter.vendor, "intel");
        assert_eq!(gpu.features, vec!["shader-f16", "subgroups"]);
        assert_eq!(gpu.limits["maxBufferSize"], 268435456.0);
        assert_eq!(gpu.limits["maxStorageBufferBindingSize"], 134217728.0);
        assert_eq!(gpu.limits.len(), 3);
        assert!(c.wasm_simd && !c.cross_origin_isolated);
        assert_eq!(c.hardware_concurrency, Some(8));
        assert_eq!(c.device_memory_gb, Some(8.0));
        assert_eq!(c.storage_available_bytes, Some(1e9));
        assert_eq!(c.cached_variants, vec!["aa11"]);
        assert_eq!(
            c.measured,
            Some(Measured {
                decode_tok_s: Some(40.0),
                prefill_tok_s: Some(300.0)
            })
        );
        let again: RouteRequest =
            serde_json::from_str(&serde_json::to_string(&req).unwrap()).unwrap();
        assert_eq!(again, req);

        // `webgpu: null` is no WebGPU.
        let req: RouteRequest =
            serde_json::from_value(json!({"capabilities": {"webgpu": null, "measured": null}}))
                .unwrap();
        assert!(req.capabilities.webgpu.is_none() && req.capabilities.measured.is_none());
        let req: RouteRequest =
            serde_json::from_value(json!({"capabilities": {"webgpu": {"available": false}}}))
                .unwrap();
        assert!(
            decide(&req, &[small()], server(), Policy::Cheapest)
                .reasons
                .contains(&"no_webgpu".to_string())
        );
    }

    #[test]
    fn answer_shape() {
        let mut c = caps();
        c.cached_variants = vec![SHA_SMALL.into()];
        let a = decide(&request(c), &[small()], server(), Policy::Balanced);
        assert_eq!(a.route, Route::Browser);
        let v = serde_json::to_value(&a).unwrap();
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&v), ["estimates", "reasons", "route", "variant"]);
        assert_eq!(v["route"], "browser");
        assert_eq!(
            keys(&v["variant"]),
            [
                "bytes",
                "quantization",
                "required_features",
                "sha256",
                "url"
            ]
        );
        assert_eq!(v["variant"]["bytes"], 98_000_000);
        assert_eq!(v["variant"]["required_features"], json!(["shader-f16"]));
        assert_eq!(keys(&v["estimates"]), ["browser", "server"]);
        for side in ["browser", "server"] {
            assert_eq!(
                keys(&v["estimates"][side]),
                ["cost_usd", "tok_s", "ttft_ms"]
            );
        }
        assert_eq!(v["estimates"]["browser"]["cost_usd"], 0.0);
        assert_eq!(v["estimates"]["server"]["tok_s"], 50.0);
        assert!(
            v["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r.is_string())
        );
        let back: RouteAnswer = serde_json::from_value(v).unwrap();
        assert_eq!(
            (back.route, &back.variant, &back.reasons, back.browser_path),
            (a.route, &a.variant, &a.reasons, None)
        );
        let (b, s) = (back.estimates.browser.unwrap(), back.estimates.server);
        assert!((b.ttft_ms - a.estimates.browser.unwrap().ttft_ms).abs() < 1e-6);
        assert_eq!(s, a.estimates.server);

        // Server route: null variant and null browser estimate.
        let a = decide(
            &RouteRequest::default(),
            &[small()],
            server(),
            Policy::Fastest,
        );
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["route"], "server");
        assert!(v["variant"].is_null() && v["estimates"]["browser"].is_null());
    }

    #[test]
    fn reasons_are_snake_case() {
        let mut c = caps();
        c.webgpu.as_mut().unwrap().features.clear();
        c.device_memory_gb = None;
        let a = decide(&request(c), &[small(), big()], server(), Policy::Balanced);
        for r in &a.reasons {
            let (name, arg) = r.split_once(':').unwrap_or((r, ""));
            assert!(
                name.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'),
                "{r}"
            );
            assert!(name == "missing_feature" || arg.is_empty(), "{r}");
        }
        let mut sorted = a.reasons.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), a.reasons.len());
    }

    #[test]
    fn policy_names() {
        use clap::ValueEnum;
        for p in Policy::value_variants() {
            assert_eq!(p.to_string(), p.as_str());
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
            assert_eq!(Policy::from_str(p.as_str(), false), Ok(*p));
        }
        assert_eq!(Policy::default(), Policy::Balanced);
        assert_eq!(
            serde_json::from_str::<Policy>("\"cheapest\"").unwrap(),
            Policy::Cheapest
        );
    }
}
