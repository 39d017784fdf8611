//! Budgets kept in this process (one replica).

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Reservation, ReserveError, over_tokens, over_usd};
use crate::store::ledger::month_bounds;
use crate::store::{Store, StoreError, now_ms};
use crate::tenants::model::Plan;

/// One tenant's month.
#[derive(Clone, Copy, Debug, Default)]
struct Month {
    start_ms: i64,
    end_ms: i64,
    spent_usd: f64,
    spent_tokens: i64,
    reserved_usd: f64,
    reserved_tokens: i64,
}

/// Budgets of this process's tenants (spent amounts come from the ledger at the first request
/// of a month, then are kept here).
pub struct LocalBudgets {
    store: Store,
    months: Mutex<HashMap<String, Month>>,
}

impl LocalBudgets {
    /// Budgets over the ledger in `store`.
    pub fn new(store: Store) -> LocalBudgets {
        LocalBudgets {
            store,
            months: Mutex::new(HashMap::new()),
        }
    }

    async fn ensure_month(&self, tenant: &str, now: i64) -> Result<(), StoreError> {
        let current = {
            let m = self.months.lock().unwrap_or_else(|p| p.into_inner());
            m.get(tenant)
                .is_some_and(|m| (m.start_ms..m.end_ms).contains(&now))
        };
        if current {
            return Ok(());
        }
        let (start, end) = month_bounds(now);
        let (usd, tokens) = self.store.spent_since(tenant, start).await?;
        let mut m = self.months.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(tenant.to_owned()).or_default();
        if e.start_ms != start {
            *e = Month {
                start_ms: start,
                end_ms: end,
                spent_usd: usd,
                spent_tokens: tokens,
                ..Month::default()
            };
        }
        Ok(())
    }

    /// Reserves `usd` and `tokens` for a request of `tenant` under `plan` (which has a budget).
    pub async fn reserve(
        &self,
        tenant: &str,
        plan: &Plan,
        usd: f64,
        tokens: i64,
    ) -> Result<Option<Reservation>, ReserveError> {
        let now = now_ms();
        self.ensure_month(tenant, now).await?;
        let mut months = self.months.lock().unwrap_or_else(|p| p.into_inner());
        let m = months.entry(tenant.to_owned()).or_default();
        if let Some(b) = plan.monthly_budget_usd
            && m.spent_usd + m.reserved_usd >= b - super::USD_EPSILON
        {
            return Err(ReserveError::Over(over_usd(b)));
        }
        if let Some(b) = plan.monthly_budget_tokens
            && m.spent_tokens + m.reserved_tokens >= i64::try_from(b).unwrap_or(i64::MAX)
        {
            return Err(ReserveError::Over(over_tokens(b)));
        }
        m.reserved_usd += usd;
        m.reserved_tokens += tokens;
        Ok(Some(Reservation {
            tenant: tenant.to_owned(),
            month_start: m.start_ms,
            usd,
            tokens,
        }))
    }

    /// Releases a reservation and books what the request actually used.
    pub fn settle(&self, r: &Reservation, usd: f64, tokens: i64) {
        let mut months = self.months.lock().unwrap_or_else(|p| p.into_inner());
        let Some(m) = months.get_mut(&r.tenant) else {
            return;
        };
        if m.start_ms == r.month_start {
            m.reserved_usd = (m.reserved_usd - r.usd).max(0.0);
            m.reserved_tokens = (m.reserved_tokens - r.tokens).max(0);
        }
        m.spent_usd += usd;
        m.spent_tokens += tokens;
    }

    /// (spent, reserved) USD of a tenant this month, as this process knows it.
    pub fn current(&self, tenant: &str) -> (f64, f64) {
        let months = self.months.lock().unwrap_or_else(|p| p.into_inner());
        months
            .get(tenant)
            .map_or((0.0, 0.0), |m| (m.spent_usd, m.reserved_usd))
    }
}
