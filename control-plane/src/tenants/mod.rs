//! Tenants, their tiers and their API keys: a snapshot of the database held in memory so that
//! authenticating a request costs a hash and a map lookup. The snapshot is reloaded after every
//! admin change and every few seconds (so replicas sharing a database see each other's
//! changes); a key this replica has not seen yet is looked up in the database directly.

pub mod keys;
pub mod model;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use model::{KeyLimits, Plan, StoredKey, Tenant, Tier};

use crate::store::{Store, StoreError};

/// Who sent a request.
#[derive(Clone, Debug, PartialEq)]
pub struct Caller {
    /// The tenant.
    pub tenant: String,
    /// The key's id.
    pub key_id: String,
    /// The tenant's effective plan (its tier with its overrides).
    pub plan: Plan,
    /// The key's own limits.
    pub key_limits: KeyLimits,
}

/// Why a request's key was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error(
        "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
    )]
    Missing,
    /// Unknown, malformed or revoked.
    #[error("Incorrect API key provided. You can find your API key in your account settings.")]
    Invalid,
}

#[derive(Default)]
struct Snapshot {
    tiers: HashMap<String, Tier>,
    tenants: HashMap<String, Tenant>,
    keys: HashMap<String, StoredKey>,
}

/// How often the snapshot is reloaded without an admin change.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// The directory of tenants and keys.
pub struct Tenants {
    store: Store,
    snapshot: RwLock<Arc<Snapshot>>,
}

impl Tenants {
    /// Loads the directory from `store`.
    pub async fn load(store: Store) -> Result<Arc<Tenants>, StoreError> {
        let t = Arc::new(Tenants {
            store,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
        });
        t.refresh().await?;
        Ok(t)
    }

    /// Reloads the snapshot every [`REFRESH_INTERVAL`] while the directory is alive.
    pub fn spawn_refresher(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH_INTERVAL).await;
                let Some(t) = weak.upgrade() else { return };
                if let Err(e) = t.refresh().await {
                    tracing::warn!("reloading tenants: {e}");
                }
            }
        });
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn current(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reloads everything from the database.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let tiers = self.store.tiers().await?;
        let tenants = self.store.tenants().await?;
        let keys = self.store.keys().await?;
        let snap = Snapshot {
            tiers: tiers.into_iter().map(|t| (t.id.clone(), t)).collect(),
            tenants: tenants.into_iter().map(|t| (t.id.clone(), t)).collect(),
            keys: keys
                .into_iter()
                .map(|k| (k.info.prefix.clone(), k))
                .collect(),
        };
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snap);
        Ok(())
    }

    /// Whether any tenant exists (then `/v1/*` requires a key).
    pub fn enabled(&self) -> bool {
        !self.current().tenants.is_empty()
    }

    /// The effective plan of a tenant.
    pub fn plan(&self, tenant: &str) -> Option<Plan> {
        let snap = self.current();
        let t = snap.tenants.get(tenant)?;
        let base = snap
            .tiers
            .get(&t.tier)
            .map(|t| t.plan.clone())
            .unwrap_or_default();
        Some(t.overrides.over(&base))
    }

    /// Who a bearer token belongs to.
    pub async fn authenticate(&self, bearer: Option<&str>) -> Result<Caller, AuthError> {
        let token = bearer.ok_or(AuthError::Missing)?;
        let prefix = keys::lookup_prefix(token).ok_or(AuthError::Invalid)?;
        let snap = self.current();
        let stored = match snap.keys.get(prefix) {
            Some(k) => k.clone(),
            // Created on another replica since the last reload?
            None => match self.store.key_by_prefix(prefix).await {
                Ok(Some(k)) => {
                    if let Err(e) = self.refresh().await {
                        tracing::warn!("reloading tenants: {e}");
                    }
                    k
                }
                Ok(None) => return Err(AuthError::Invalid),
                Err(e) => {
                    tracing::error!("looking up a key: {e}");
                    return Err(AuthError::Invalid);
                }
            },
        };
        if !keys::verify(token, &stored.hash) || stored.info.revoked_at.is_some() {
            return Err(AuthError::Invalid);
        }
        let plan = self.plan(&stored.info.tenant).ok_or(AuthError::Invalid)?;
        Ok(Caller {
            tenant: stored.info.tenant,
            key_id: stored.info.id,
            plan,
            key_limits: stored.info.limits,
        })
    }
}
