//! Tiers, tenants and API keys in the database.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_ms};
use crate::tenants::model::{ApiKeyInfo, KeyLimits, Plan, StoredKey, Tenant, Tier};

fn json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Malformed(e.to_string()))
}

fn text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

fn tier(row: &AnyRow) -> Result<Tier, StoreError> {
    Ok(Tier {
        id: row.try_get("id")?,
        plan: json(&row.try_get::<String, _>("plan")?)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn tenant(row: &AnyRow) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        tier: row.try_get("tier_id")?,
        overrides: json(&row.try_get::<String, _>("overrides")?)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn key(row: &AnyRow) -> Result<StoredKey, StoreError> {
    Ok(StoredKey {
        info: ApiKeyInfo {
            id: row.try_get("id")?,
            tenant: row.try_get("tenant_id")?,
            name: row.try_get("name")?,
            prefix: row.try_get("prefix")?,
            limits: json(&row.try_get::<String, _>("limits")?)?,
            created_at: row.try_get("created_at")?,
            last_used_at: row.try_get("last_used_at")?,
            revoked_at: row.try_get("revoked_at")?,
        },
        hash: row.try_get("hash")?,
    })
}

const KEY_COLUMNS: &str =
    "id, tenant_id, name, prefix, hash, limits, created_at, last_used_at, revoked_at";
const TENANT_COLUMNS: &str = "id, name, tier_id, overrides, created_at, updated_at";

impl Store {
    /// Every tier.
    pub async fn tiers(&self) -> Result<Vec<Tier>, StoreError> {
        let rows = sqlx::query("SELECT id, plan, created_at, updated_at FROM tiers ORDER BY id")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(tier).collect()
    }

    /// One tier.
    pub async fn tier(&self, id: &str) -> Result<Option<Tier>, StoreError> {
        let row = sqlx::query("SELECT id, plan, created_at, updated_at FROM tiers WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(tier).transpose()
    }

    /// Creates a tier; false if the id is taken.
    pub async fn create_tier(&self, id: &str, plan: &Plan) -> Result<bool, StoreError> {
        let now = now_ms();
        let r = sqlx::query(
            "INSERT INTO tiers (id, plan, created_at, updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(text(plan))
        .bind(now)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Replaces a tier's plan; false if there is no such tier.
    pub async fn update_tier(&self, id: &str, plan: &Plan) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE tiers SET plan = $1, updated_at = $2 WHERE id = $3")
            .bind(text(plan))
            .bind(now_ms())
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// How many live tenants are on a tier.
    pub async fn tenants_on_tier(&self, id: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM tenants WHERE tier_id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .fetch_one(self.pool())
        .await?)
    }

    /// Deletes a tier no live tenant is on; false if there is no such tier.
    pub async fn delete_tier(&self, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "DELETE FROM tiers WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM tenants WHERE tier_id = $1)",
        )
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Every live tenant.
    pub async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE deleted_at IS NULL ORDER BY id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(tenant).collect()
    }

    /// One live tenant.
    pub async fn tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1 AND deleted_at IS NULL"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(tenant).transpose()
    }

    /// Creates a tenant; false if the id was ever used.
    pub async fn create_tenant(
        &self,
        id: &str,
        name: &str,
        tier: &str,
        overrides: &Plan,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let r = sqlx::query(
            "INSERT INTO tenants (id, name, tier_id, overrides, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(name)
        .bind(tier)
        .bind(text(overrides))
        .bind(now)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Replaces a live tenant's fields; false if there is none.
    pub async fn update_tenant(&self, t: &Tenant) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE tenants SET name = $1, tier_id = $2, overrides = $3, updated_at = $4 WHERE id = $5 AND deleted_at IS NULL",
        )
        .bind(&t.name)
        .bind(&t.tier)
        .bind(text(&t.overrides))
        .bind(now_ms())
        .bind(&t.id)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Deletes a tenant (kept for its usage records) and revokes its keys; false if there is
    /// no live tenant with that id.
    pub async fn delete_tenant(&self, id: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let r =
            sqlx::query("UPDATE tenants SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    /// Stores a new key.
    pub async fn create_key(
        &self,
        id: &str,
        tenant: &str,
        name: &str,
        prefix: &str,
        hash: &str,
        limits: &KeyLimits,
    ) -> Result<ApiKeyInfo, StoreError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, hash, limits, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(tenant)
        .bind(name)
        .bind(prefix)
        .bind(hash)
        .bind(text(limits))
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(ApiKeyInfo {
            id: id.to_owned(),
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            limits: *limits,
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        })
    }

    /// Every key (revoked ones too).
    pub async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(key).collect()
    }

    /// The key with a lookup prefix.
    pub async fn key_by_prefix(&self, prefix: &str) -> Result<Option<StoredKey>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE prefix = $1"
        ))
        .bind(prefix)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(key).transpose()
    }

    /// Revokes a key; false if there is no live key with that id.
    pub async fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        let r =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id)
                .execute(self.pool())
                .await?;
        Ok(r.rows_affected() == 1)
    }
}
