//! Tandem's control plane: the OpenAI-compatible API, the gateway over local engines and remote
//! upstreams (health, failover, cost-aware routing, `/v1/route` for browsers), configuration,
//! model loading and metrics. The `tandem` binary is a thin command-line front end over it; the
//! whole HTTP application can be built in-process with [`server::router`].

pub mod accounting;
pub mod api;
pub mod backends;
pub mod config;
pub mod errors;
pub mod gateway;
pub mod load;
pub mod memory;
pub mod metrics;
pub mod openai;
pub mod progress;
pub mod render;
pub mod response_cache;
pub mod server;
pub mod shutdown;
pub mod source;
pub mod state;
pub mod store;
pub mod tenants;
pub mod util;
