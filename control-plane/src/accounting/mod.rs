//! Accounting for every generation request: admission (the tenant's model list, per-minute
//! limits, the monthly budget), the request's usage record (written durably when it is sent to
//! an upstream, completed when it ends however it ends) and settlement of its tokens and cost.
//! A tower middleware gives each request its id and records whatever was refused before it
//! reached an upstream.

pub mod budget;
pub mod ledger;
pub mod limits;
pub mod meter;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use budget::{Budgets, Reservation, ReserveError};
use ledger::Ledger;
use limits::{Check, LimitKey, Limiter, Scope, Unit, Verdict};

use crate::errors::ApiError;
use crate::state::SharedState;
use crate::store::ledger::UsageRecord;
use crate::store::{Store, StoreError, now_ms};
use crate::tenants::{Caller, Tenants};

/// Why accounting could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Redis.
    #[error("connecting to Redis: {0}")]
    Redis(redis::RedisError),
}

/// Completion tokens assumed at admission when a request sets no `max_tokens`.
pub const DEFAULT_COMPLETION_ESTIMATE: u64 = 256;

/// The response header carrying the request's id (also the ledger's key).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Everything accounting needs, shared by the handlers.
pub struct Accounting {
    /// The database.
    pub store: Store,
    /// Tenants and keys.
    pub tenants: Arc<Tenants>,
    /// Per-minute limits.
    pub limiter: Limiter,
    /// Monthly budgets.
    pub budgets: Budgets,
    /// The usage ledger.
    pub ledger: Ledger,
    /// The admin API's key (none: the admin API is off).
    pub admin_key: Option<String>,
}

/// A request's identity while it is handled.
pub struct RequestTag {
    /// Its id.
    pub id: String,
    /// When it arrived.
    pub started: Instant,
    /// Unix milliseconds it arrived.
    pub started_at: i64,
    /// The endpoint (`chat`, `completions`, `infill`).
    pub endpoint: &'static str,
    /// The model's public name, once known.
    pub model: Mutex<String>,
    /// Who sent it, once authenticated.
    pub caller: Mutex<Option<Caller>>,
    /// Set once the request's record is in the ledger's hands.
    pub claimed: AtomicBool,
}

impl RequestTag {
    fn new(endpoint: &'static str) -> RequestTag {
        RequestTag {
            id: crate::util::request_id("req_"),
            started: Instant::now(),
            started_at: now_ms(),
            endpoint,
            model: Mutex::new(String::new()),
            caller: Mutex::new(None),
            claimed: AtomicBool::new(false),
        }
    }

    /// Records the model's name.
    pub fn set_model(&self, name: &str) {
        *self.model.lock().unwrap_or_else(|p| p.into_inner()) = name.to_owned();
    }

    fn model(&self) -> String {
        self.model.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records who sent it.
    pub fn set_caller(&self, caller: &Caller) {
        *self.caller.lock().unwrap_or_else(|p| p.into_inner()) = Some(caller.clone());
    }

    /// Who sent it.
    pub fn caller(&self) -> Option<Caller> {
        self.caller
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A record of this request (for `caller`), before it has any counts.
    pub fn record(&self, caller: Option<&Caller>, status: &str, http_status: u16) -> UsageRecord {
        UsageRecord {
            request_id: self.id.clone(),
            instance: String::new(),
            tenant_id: caller.map(|c| c.tenant.clone()),
            key_id: caller.map(|c| c.key_id.clone()),
            endpoint: self.endpoint.to_owned(),
            model: self.model(),
            upstream: None,
            route: "server".into(),
            status: status.into(),
            http_status: i32::from(http_status),
            started_at: self.started_at,
            ..UsageRecord::default()
        }
    }
}

/// The endpoint name of a generation path.
fn endpoint_of(path: &str) -> &'static str {
    if path.ends_with("/chat/completions") {
        "chat"
    } else if path.ends_with("/infill") {
        "infill"
    } else if path.ends_with("/embeddings") {
        "embeddings"
    } else {
        "completions"
    }
}

/// Middleware of the generation endpoints: tags the request with an id (answered in
/// `x-request-id`) and, when nothing else recorded it (it was refused before reaching an
/// upstream, or it failed there before its first token), records it as rejected or failed.
pub async fn tag_requests(
    State(state): State<SharedState>,
    mut req: Request,
    next: Next,
) -> Response {
    let tag = Arc::new(RequestTag::new(endpoint_of(req.uri().path())));
    req.extensions_mut().insert(Arc::clone(&tag));
    // If the client goes away before an upstream answers, this future is dropped mid-way:
    // the guard records the request as cancelled.
    let mut guard = Unrecorded {
        state: Arc::clone(&state),
        tag: Arc::clone(&tag),
        status: None,
    };
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&tag.id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    guard.status = Some(resp.status().as_u16());
    drop(guard);
    resp
}

/// Records a request nothing else recorded, when dropped: with the status answered
/// (rejected, or failed for a 5xx), or as cancelled when no answer was produced.
struct Unrecorded {
    state: SharedState,
    tag: Arc<RequestTag>,
    status: Option<u16>,
}

impl Drop for Unrecorded {
    fn drop(&mut self) {
        let Some(acc) = &self.state.accounting else {
            return;
        };
        if self.tag.claimed.swap(true, Ordering::SeqCst) {
            return;
        }
        let (kind, status) = match self.status {
            Some(s) if s >= 500 => ("failed", s),
            Some(s) => ("rejected", s),
            None => ("cancelled", 499),
        };
        let mut r = self.tag.record(self.tag.caller().as_ref(), kind, status);
        r.finished_at = Some(now_ms());
        r.latency_ms = Some(elapsed_ms(self.tag.started));
        acc.ledger.record(r);
    }
}

/// Milliseconds since `t`.
pub fn elapsed_ms(t: Instant) -> i64 {
    i64::try_from(t.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// What admission charged a request, settled when it ends.
pub struct Admission {
    /// The limits charged (with their per-minute values) and the token estimate.
    pub token_limits: Vec<(LimitKey, u64)>,
    /// Tokens charged at admission.
    pub token_estimate: u64,
    /// The budget reservation.
    pub reservation: Option<Reservation>,
    /// The limits' state, for the response headers.
    pub verdict: Verdict,
}

impl Accounting {
    /// Opens the database at `url` (migrating it), marks `instance`'s requests left unfinished
    /// by a crash as interrupted, loads the tenants (reloaded in the background) and starts the
    /// ledger writer. Returns the accounting, the writer task and how many were interrupted.
    pub async fn open(
        url: &str,
        redis_url: Option<&str>,
        instance: String,
        admin_key: Option<String>,
    ) -> Result<(Arc<Accounting>, tokio::task::JoinHandle<()>, u64), OpenError> {
        let store = Store::open(url).await?;
        let interrupted = store.mark_interrupted(&instance).await?;
        let tenants = Tenants::load(store.clone()).await?;
        tenants.spawn_refresher();
        let (limiter, budgets) = match redis_url {
            Some(u) => {
                let client = redis::Client::open(u).map_err(OpenError::Redis)?;
                let conn = redis::aio::ConnectionManager::new(client)
                    .await
                    .map_err(OpenError::Redis)?;
                (
                    Limiter::Redis(limits::redis::RedisLimits::new(conn.clone())),
                    Budgets::Redis(budget::redis::RedisBudgets::new(store.clone(), conn)),
                )
            }
            None => (
                Limiter::Local(limits::local::LocalLimits::default()),
                Budgets::Local(budget::local::LocalBudgets::new(store.clone())),
            ),
        };
        let (ledger, task) = Ledger::start(store.clone(), instance);
        let acc = Accounting {
            budgets,
            limiter,
            tenants,
            ledger,
            store,
            admin_key,
        };
        Ok((Arc::new(acc), task, interrupted))
    }

    /// Admits a request of `caller` for `model` estimated at `tokens` (prompt + completion)
    /// and at most `usd`: checks the model is allowed, charges the per-minute limits and
    /// reserves the budget. A refusal is an error response with the limit headers.
    pub async fn admit(
        &self,
        caller: &Caller,
        model: &str,
        tokens: u64,
        usd: f64,
    ) -> Result<Admission, Box<(ApiError, Verdict)>> {
        if !caller.plan.allows_model(model) {
            return Err(Box::new((
                ApiError {
                    message: format!(
                        "The model `{model}` does not exist or you do not have access to it."
                    ),
                    ..ApiError::model_not_found(model)
                },
                Verdict::default(),
            )));
        }
        let mut checks = Vec::new();
        let mut add = |scope: Scope, unit, limit: Option<u64>, amount| {
            if let Some(limit) = limit {
                checks.push(Check {
                    key: LimitKey { scope, unit },
                    limit,
                    amount,
                });
            }
        };
        let k = Scope::Key(caller.key_id.clone());
        let t = Scope::Tenant(caller.tenant.clone());
        add(
            k.clone(),
            Unit::Requests,
            caller.key_limits.requests_per_minute,
            1,
        );
        add(
            t.clone(),
            Unit::Requests,
            caller.plan.requests_per_minute,
            1,
        );
        add(k, Unit::Tokens, caller.key_limits.tokens_per_minute, tokens);
        add(t, Unit::Tokens, caller.plan.tokens_per_minute, tokens);
        let verdict = match self.limiter.admit(&checks).await {
            Ok(v) => v,
            Err(refusal) => {
                let what = match refusal.unit {
                    Unit::Requests => "requests",
                    Unit::Tokens => "tokens",
                };
                let secs = refusal.retry_after_ms.div_ceil(1000);
                let e = ApiError {
                    kind: std::borrow::Cow::Borrowed(what),
                    ..ApiError::rate_limited(
                        format!(
                            "Rate limit reached for {what} per minute (limit {}). Please try again in {}.",
                            refusal.limit,
                            limits::reset_text(refusal.retry_after_ms)
                        ),
                        secs,
                    )
                };
                return Err(Box::new((e, refusal.states)));
            }
        };
        let token_limits: Vec<(LimitKey, u64)> = checks
            .into_iter()
            .filter(|c| c.key.unit == Unit::Tokens)
            .map(|c| (c.key, c.limit))
            .collect();
        let refused = match self
            .budgets
            .reserve(&caller.tenant, &caller.plan, usd, tokens as i64)
            .await
        {
            Ok(reservation) => {
                return Ok(Admission {
                    token_limits,
                    token_estimate: tokens,
                    reservation,
                    verdict,
                });
            }
            Err(ReserveError::Over(o)) => ApiError::insufficient_quota(o.0),
            Err(e) => {
                tracing::error!("reserving a budget: {e}");
                ApiError::unavailable(format!("The budget could not be checked: {e}"))
            }
        };
        // Refused: the tokens charged above are given back.
        for (k, l) in &token_limits {
            self.limiter.adjust(k, *l, -(tokens as i64)).await;
        }
        Err(Box::new((refused, verdict)))
    }

    /// Settles an admission with what the request used.
    pub async fn settle(&self, a: &Admission, tokens: u64, usd: f64) {
        let delta = tokens as i64 - a.token_estimate as i64;
        for (k, l) in &a.token_limits {
            self.limiter.adjust(k, *l, delta).await;
        }
        if let Some(r) = &a.reservation {
            self.budgets.settle(r, usd, tokens as i64).await;
        }
    }

    /// Settles an admission from a context that cannot wait (a dropped stream).
    pub fn settle_later(self: &Arc<Self>, a: Admission, tokens: u64, usd: f64) {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.settle(&a, tokens, usd).await });
    }
}

/// Adds OpenAI's `x-ratelimit-*` headers for `v`.
pub fn rate_limit_headers(headers: &mut HeaderMap, v: &Verdict) {
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    if let Some(s) = v.requests {
        put("x-ratelimit-limit-requests", s.limit.to_string());
        put("x-ratelimit-remaining-requests", s.remaining.to_string());
        put("x-ratelimit-reset-requests", limits::reset_text(s.reset_ms));
    }
    if let Some(s) = v.tokens {
        put("x-ratelimit-limit-tokens", s.limit.to_string());
        put("x-ratelimit-remaining-tokens", s.remaining.to_string());
        put("x-ratelimit-reset-tokens", limits::reset_text(s.reset_ms));
    }
}
