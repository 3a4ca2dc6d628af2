//! The bottom of the request path: the clients that carry a request to a peer's sidecar or to
//! the app, and the one body type every response travels in.

mod app;
mod body;
mod client;
mod coalesce;
mod endpoint;
mod pool;
mod streams;
pub(crate) mod worker;

pub(crate) use app::AppClient;
pub use body::ProxyBody;
#[cfg(feature = "proxy")]
pub(crate) use body::boxed;
pub(crate) use body::{HeldUntilBodyEnd, StackBody, local_response};
pub(crate) use client::{FixedConnector, mtls_pool, origin_pool};
pub(crate) use coalesce::Coalesced;
pub(crate) use endpoint::EndpointTransport;
pub(crate) use pool::{Pool, PoolFuture, PooledBody, Protocol};
