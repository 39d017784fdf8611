//! Monthly budgets per tenant (USD and tokens, calendar months in UTC). A request reserves its
//! worst case at admission (prompt + max_tokens at the dearest candidate's price) and settles
//! the actual cost at the end; a tenant is admitted while what it spent plus what is reserved
//! is below its budget, so concurrent requests overspend by at most one reservation. The
//! amounts live in this process ([`local`]) or, shared by replicas, in Redis ([`redis`]); both
//! start a month from what the ledger says was spent in it.

pub mod local;
pub mod redis;

use crate::store::StoreError;
use crate::tenants::model::Plan;

/// Sums of prices are not exact in binary: amounts this close to the budget count as reaching
/// it (the same margin is in the Redis script).
pub const USD_EPSILON: f64 = 1e-9;

/// What a request holds until it settles.
#[derive(Clone, Debug, PartialEq)]
pub struct Reservation {
    /// The tenant.
    pub tenant: String,
    /// The month it was taken in (its start, Unix milliseconds).
    pub month_start: i64,
    /// USD held.
    pub usd: f64,
    /// Tokens held.
    pub tokens: i64,
}

/// The tenant's budget is spent.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct OverBudget(pub String);

fn over_usd(b: f64) -> OverBudget {
    OverBudget(format!(
        "You exceeded your current quota: this month's budget of {b} USD is spent."
    ))
}

fn over_tokens(b: u64) -> OverBudget {
    OverBudget(format!(
        "You exceeded your current quota: this month's budget of {b} tokens is spent."
    ))
}

/// Why a reservation was not made.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    /// The budget is spent.
    #[error(transparent)]
    Over(#[from] OverBudget),
    /// The ledger could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The shared store could not be reached.
    #[error("the budget store is unavailable: {0}")]
    Shared(String),
}

/// Where the amounts live.
pub enum Budgets {
    /// In this process.
    Local(local::LocalBudgets),
    /// In Redis, shared by every replica.
    Redis(redis::RedisBudgets),
}

impl Budgets {
    /// Reserves `usd` and `tokens` for a request of `tenant` under `plan`; `None` when the plan
    /// has no budget.
    pub async fn reserve(
        &self,
        tenant: &str,
        plan: &Plan,
        usd: f64,
        tokens: i64,
    ) -> Result<Option<Reservation>, ReserveError> {
        if plan.monthly_budget_usd.is_none() && plan.monthly_budget_tokens.is_none() {
            return Ok(None);
        }
        match self {
            Budgets::Local(b) => b.reserve(tenant, plan, usd, tokens).await,
            Budgets::Redis(b) => b.reserve(tenant, plan, usd, tokens).await,
        }
    }

    /// Releases a reservation and books what the request actually used.
    pub async fn settle(&self, r: &Reservation, usd: f64, tokens: i64) {
        match self {
            Budgets::Local(b) => b.settle(r, usd, tokens),
            Budgets::Redis(b) => {
                if let Err(e) = b.settle(r, usd, tokens).await {
                    tracing::error!("settling a budget in Redis: {e}");
                }
            }
        }
    }

    /// (spent, reserved) USD of a tenant this month.
    pub async fn current(&self, tenant: &str) -> (f64, f64) {
        match self {
            Budgets::Local(b) => b.current(tenant),
            Budgets::Redis(b) => b.current(tenant).await.unwrap_or((0.0, 0.0)),
        }
    }
}
