//! Tiers, tenants and API keys as the admin API and the database hold them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::gateway::Policy;

/// The largest `ttft_target_ms` a plan takes: ten minutes.
pub const MAX_TTFT_TARGET_MS: u64 = 600_000;

/// What a tier allows. A tenant's overrides have the same fields; an absent field means "no
/// limit" on a tier and "as the tier says" in overrides. Unknown fields are refused.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    /// Tokens (prompt + completion) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Spending limit per calendar month (UTC), USD at the serving upstream's price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_budget_usd: Option<f64>,
    /// Token limit per calendar month (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_budget_tokens: Option<u64>,
    /// Weight in fair queueing (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// The models (public names) its tenants may use; absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_models: Option<Vec<String>>,
    /// Routing policy among upstreams (and for the browser).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// Whether requests may be served in the user's browser (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser_routing: Option<bool>,
    /// The first-token time, in milliseconds, that is good enough for its users' streamed
    /// requests: under `balanced`, the browser serves a streamed request whose first token it
    /// expects within this, or within the tolerance of the server's (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_target_ms: Option<u64>,
}

impl Plan {
    /// These values where set, else `base`'s.
    pub fn over(&self, base: &Plan) -> Plan {
        Plan {
            requests_per_minute: self.requests_per_minute.or(base.requests_per_minute),
            tokens_per_minute: self.tokens_per_minute.or(base.tokens_per_minute),
            monthly_budget_usd: self.monthly_budget_usd.or(base.monthly_budget_usd),
            monthly_budget_tokens: self.monthly_budget_tokens.or(base.monthly_budget_tokens),
            priority: self.priority.or(base.priority),
            allowed_models: self
                .allowed_models
                .clone()
                .or_else(|| base.allowed_models.clone()),
            policy: self.policy.or(base.policy),
            browser_routing: self.browser_routing.or(base.browser_routing),
            ttft_target_ms: self.ttft_target_ms.or(base.ttft_target_ms),
        }
    }

    /// Whether `model` (a public name) may be used.
    pub fn allows_model(&self, model: &str) -> bool {
        self.allowed_models
            .as_ref()
            .is_none_or(|m| m.iter().any(|a| a == model))
    }

    /// Checks the values are usable.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(b) = self.monthly_budget_usd
            && !(b.is_finite() && b >= 0.0)
        {
            return Err("monthly_budget_usd must be a number >= 0".into());
        }
        if self.priority == Some(0) {
            return Err("priority must be at least 1".into());
        }
        if self.ttft_target_ms.is_some_and(|t| t > MAX_TTFT_TARGET_MS) {
            return Err(format!(
                "ttft_target_ms must be at most {MAX_TTFT_TARGET_MS} (ten minutes)"
            ));
        }
        if self.requests_per_minute == Some(0) || self.tokens_per_minute == Some(0) {
            return Err("a per-minute limit must be at least 1 (leave it out for none)".into());
        }
        Ok(())
    }
}

/// A key's own limits (on top of its tenant's). Unknown fields are refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyLimits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    /// Tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
}

/// A tier.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Tier {
    /// Its id (`free`, `pro`, ...).
    pub id: String,
    /// What it allows.
    #[serde(flatten)]
    pub plan: Plan,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

/// A tenant.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Tenant {
    /// Its id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Its tier's id.
    pub tier: String,
    /// What differs from the tier.
    pub overrides: Plan,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

/// An API key as listed (never the key itself).
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ApiKeyInfo {
    /// Its id (`key_...`).
    pub id: String,
    /// The tenant it belongs to.
    pub tenant: String,
    /// A label.
    pub name: String,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    /// Its own limits.
    #[serde(flatten)]
    pub limits: KeyLimits,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Last request with it (Unix milliseconds), updated with the ledger.
    pub last_used_at: Option<i64>,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
}

/// A key with what authentication checks.
#[derive(Clone, Debug)]
pub struct StoredKey {
    /// What is listed.
    pub info: ApiKeyInfo,
    /// SHA-256 of the key, hex.
    pub hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_where_set() {
        let tier = Plan {
            requests_per_minute: Some(60),
            tokens_per_minute: Some(1000),
            allowed_models: Some(vec!["a".into()]),
            ..Plan::default()
        };
        let over = Plan {
            requests_per_minute: Some(600),
            ..Plan::default()
        };
        let p = over.over(&tier);
        assert_eq!(p.requests_per_minute, Some(600));
        assert_eq!(p.tokens_per_minute, Some(1000));
        assert!(p.allows_model("a") && !p.allows_model("b"));
        assert!(Plan::default().allows_model("b"));
        assert!(
            Plan {
                priority: Some(0),
                ..Plan::default()
            }
            .validate()
            .is_err()
        );
        assert!(serde_json::from_str::<Plan>(r#"{"rpm": 1}"#).is_err());
    }
}
