-- Tiers, tenants, API keys and the usage ledger. Portable between SQLite and PostgreSQL:
-- text ids, integer Unix milliseconds, JSON kept as text.

CREATE TABLE tiers (
    id TEXT PRIMARY KEY,
    plan TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tier_id TEXT NOT NULL REFERENCES tiers (id),
    overrides TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    prefix TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL,
    limits TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);

CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE usage (
    request_id TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    tenant_id TEXT,
    key_id TEXT,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    upstream TEXT,
    route TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    savings_usd DOUBLE PRECISION NOT NULL,
    ttft_ms BIGINT,
    latency_ms BIGINT,
    status TEXT NOT NULL,
    http_status INTEGER NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT
);

CREATE INDEX usage_tenant_started ON usage (tenant_id, started_at);
-- Only requests in flight, found again after a crash.
CREATE INDEX usage_in_flight ON usage (instance) WHERE status = 'in_flight';
