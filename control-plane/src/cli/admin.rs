//! `tandem admin`: the admin API from the command line, for scripts. Each command is one request
//! to a running server's `/admin/v1/`; answers are printed as JSON (CSV or HTML where asked).

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

/// Arguments of `tandem admin`.
#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    /// Base URL of the server.
    #[arg(long, env = "TANDEM_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The server's admin key.
    #[arg(long, env = "TANDEM_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: String,
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// `FIELD=VALUE` pairs (VALUE as JSON when it parses, else as a string; `null` removes).
#[derive(clap::Args, Debug, Default)]
pub struct Fields {
    /// A field: `requests_per_minute=600`, `allowed_models=["a","b"]`, `policy=cheapest`.
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    pub set: Vec<String>,
}

impl Fields {
    fn object(&self) -> Result<Map<String, Value>> {
        let mut m = Map::new();
        for s in &self.set {
            let (k, v) = s
                .split_once('=')
                .with_context(|| format!("--set wants FIELD=VALUE, got {s:?}"))?;
            let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
            m.insert(k.trim().to_owned(), v);
        }
        Ok(m)
    }
}

/// The body of a tenant's create or update: the string fields given, and the `--set` overrides
/// (always when `always_overrides`, else only when there are some).
fn tenant_body<const N: usize>(
    strings: [(&str, Option<String>); N],
    fields: &Fields,
    always_overrides: bool,
) -> Result<Value> {
    let mut m: Map<String, Value> = strings
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), Value::String(v))))
        .collect();
    if always_overrides || !fields.set.is_empty() {
        m.insert("overrides".into(), Value::Object(fields.object()?));
    }
    Ok(Value::Object(m))
}

/// The admin commands.
#[derive(clap::Subcommand, Debug)]
pub enum AdminCommand {
    /// Tiers: list, get, create, update, delete.
    #[command(subcommand)]
    Tiers(TierCommand),
    /// Tenants: list, get, create, update, delete.
    #[command(subcommand)]
    Tenants(TenantCommand),
    /// API keys: create (prints the key once), list, revoke.
    #[command(subcommand)]
    Keys(KeyCommand),
    /// Upstreams with their live health, breaker and load.
    Upstreams,
    /// Usage sums from the ledger.
    Usage {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// First day (YYYY-MM-DD).
        #[arg(long)]
        from: Option<String>,
        /// Last day (YYYY-MM-DD, included).
        #[arg(long)]
        to: Option<String>,
        /// day, model, upstream, route or tenant.
        #[arg(long, default_value = "day")]
        group_by: String,
        /// json or csv.
        #[arg(long, default_value = "json")]
        format: String,
    },
    /// A tenant's invoice for a month.
    Invoice {
        /// The tenant.
        tenant: String,
        /// The month (YYYY-MM).
        period: String,
        /// json or html.
        #[arg(long, default_value = "json")]
        format: String,
    },
}

/// Tier commands.
#[derive(clap::Subcommand, Debug)]
pub enum TierCommand {
    /// Every tier.
    List,
    /// One tier.
    Get {
        /// Its id.
        id: String,
    },
    /// A new tier with the given fields.
    Create {
        /// Its id.
        id: String,
        /// Its fields.
        #[command(flatten)]
        fields: Fields,
    },
    /// Changes fields of a tier.
    Update {
        /// Its id.
        id: String,
        /// The fields to change.
        #[command(flatten)]
        fields: Fields,
    },
    /// Deletes a tier no tenant is on.
    Delete {
        /// Its id.
        id: String,
    },
}

/// Tenant commands.
#[derive(clap::Subcommand, Debug)]
pub enum TenantCommand {
    /// Every tenant.
    List,
    /// One tenant.
    Get {
        /// Its id.
        id: String,
    },
    /// A new tenant on a tier (`--set` fields override the tier).
    Create {
        /// Its id (default: generated).
        #[arg(long)]
        id: Option<String>,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Its tier.
        #[arg(long)]
        tier: String,
        /// Overrides of the tier's fields.
        #[command(flatten)]
        fields: Fields,
    },
    /// Changes a tenant's name, tier or overrides.
    Update {
        /// Its id.
        id: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New tier.
        #[arg(long)]
        tier: Option<String>,
        /// Overrides to change (`FIELD=null` removes one).
        #[command(flatten)]
        fields: Fields,
    },
    /// Deletes a tenant and revokes its keys (its usage stays in the ledger).
    Delete {
        /// Its id.
        id: String,
    },
}

/// Key commands.
#[derive(clap::Subcommand, Debug)]
pub enum KeyCommand {
    /// A new key for a tenant; the answer holds the key, shown only this once.
    Create {
        /// The tenant.
        tenant: String,
        /// A label.
        #[arg(long)]
        name: Option<String>,
        /// The key's own limits (`requests_per_minute`, `tokens_per_minute`).
        #[command(flatten)]
        fields: Fields,
    },
    /// A tenant's keys (never the keys themselves).
    List {
        /// The tenant.
        tenant: String,
    },
    /// Revokes a key.
    Revoke {
        /// The key's id (`key_...`).
        id: String,
    },
}

/// Runs `tandem admin`.
pub async fn run(args: AdminArgs) -> Result<()> {
    use reqwest::Method;
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let (method, path, body): (Method, String, Option<Value>) = match args.command {
        AdminCommand::Tiers(c) => match c {
            TierCommand::List => (Method::GET, "tiers".into(), None),
            TierCommand::Get { id } => (Method::GET, format!("tiers/{}", enc(&id)), None),
            TierCommand::Create { id, fields } => {
                let mut m = fields.object()?;
                m.insert("id".into(), Value::String(id));
                (Method::POST, "tiers".into(), Some(Value::Object(m)))
            }
            TierCommand::Update { id, fields } => (
                Method::PATCH,
                format!("tiers/{}", enc(&id)),
                Some(Value::Object(fields.object()?)),
            ),
            TierCommand::Delete { id } => (Method::DELETE, format!("tiers/{}", enc(&id)), None),
        },
        AdminCommand::Tenants(c) => match c {
            TenantCommand::List => (Method::GET, "tenants".into(), None),
            TenantCommand::Get { id } => (Method::GET, format!("tenants/{}", enc(&id)), None),
            TenantCommand::Create {
                id,
                name,
                tier,
                fields,
            } => {
                let strings = [("id", id), ("name", name), ("tier", Some(tier))];
                let body = tenant_body(strings, &fields, true)?;
                (Method::POST, "tenants".into(), Some(body))
            }
            TenantCommand::Update {
                id,
                name,
                tier,
                fields,
            } => {
                let body = tenant_body([("name", name), ("tier", tier)], &fields, false)?;
                (Method::PATCH, format!("tenants/{}", enc(&id)), Some(body))
            }
            TenantCommand::Delete { id } => (Method::DELETE, format!("tenants/{}", enc(&id)), None),
        },
        AdminCommand::Keys(c) => match c {
            KeyCommand::Create {
                tenant,
                name,
                fields,
            } => {
                let mut m = fields.object()?;
                if let Some(n) = name {
                    m.insert("name".into(), Value::String(n));
                }
                (
                    Method::POST,
                    format!("tenants/{}/keys", enc(&tenant)),
                    Some(Value::Object(m)),
                )
            }
            KeyCommand::List { tenant } => {
                (Method::GET, format!("tenants/{}/keys", enc(&tenant)), None)
            }
            KeyCommand::Revoke { id } => (Method::DELETE, format!("keys/{}", enc(&id)), None),
        },
        AdminCommand::Upstreams => (Method::GET, "upstreams".into(), None),
        AdminCommand::Usage {
            tenant,
            from,
            to,
            group_by,
            format,
        } => {
            let mut q = vec![
                format!("group_by={}", enc(&group_by)),
                format!("format={}", enc(&format)),
            ];
            for (k, v) in [("tenant", tenant), ("from", from), ("to", to)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", enc(&v)));
                }
            }
            (Method::GET, format!("usage?{}", q.join("&")), None)
        }
        AdminCommand::Invoice {
            tenant,
            period,
            format,
        } => (
            Method::GET,
            format!(
                "invoices/{}/{}?format={}",
                enc(&tenant),
                enc(&period),
                enc(&format)
            ),
            None,
        ),
    };
    let url = format!("{}/admin/v1/{path}", args.url.trim_end_matches('/'));
    let client = reqwest::Client::new();
    let mut req = client.request(method, &url).bearer_auth(&args.admin_key);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let text = resp.text().await.context("reading the answer")?;
    if !status.is_success() {
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        bail!("{status}: {message}");
    }
    if is_json && let Ok(v) = serde_json::from_str::<Value>(&text) {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{text}");
    }
    Ok(())
}
