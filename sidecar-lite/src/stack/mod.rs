//! The only place that assembles layers: one outbound and one inbound stack, built from config
//! sections. [`outbound`] and [`inbound`] are public, so that library mode calls the very same
//! functions as the proxy.
//!
//! Outbound, outermost first (ARCHITECTURE.md): the rate limit if configured, load shedding
//! over a concurrency limit (fixed or adaptive), injected faults if configured (before the router, as Envoy's fault filter, so they are not retried),
//! the total timeout (deadline), retries, then either one endpoint behind a fail-fast breaker,
//! or a per-try timeout (it covers the wait for the balancer) over a p2c peak-EWMA balancer
//! per worker (`balancer`) over endpoints each behind a back-pressure breaker (the balancer
//! routes around open ones). Inside each breaker a per-try timeout runs (with a balancer, again, to the same
//! deadline: it reads the outer one from the request): polled first, it fires first, so an
//! attempt that times out on an endpoint counts against that endpoint, its breaker opens and
//! the balancer routes around it. The outer timeout alone would drop the call before the
//! breaker saw how it ended.
//! A `dns:` or `file:` source always gets the balancer, fed by [`crate::discovery`] as its set
//! changes.
//!
//! Inbound: load shedding over a concurrency limit (fixed or adaptive), the timeout,
//! authorization of the peer's identity, the rate limit if configured (per peer identity too),
//! then the pooled client to the app.

mod admission;
mod attempts;
mod balancer;
mod discovery;
#[cfg(feature = "dns")]
mod dns;
mod fail_fast;
mod fault;
mod inbound;
mod load;
mod outbound;

#[cfg(feature = "proxy")]
pub(crate) use attempts::Attempts;
pub(crate) use attempts::{NoteEndpoint, count_attempt};
pub(crate) use discovery::LiveEndpoints;
pub(crate) use fail_fast::{NoEndpointAvailable, NoEndpoints};
pub use inbound::inbound;
pub use outbound::outbound;
#[cfg(feature = "proxy")]
pub(crate) use outbound::outbound_with_endpoints;

pub(crate) use crate::transport::StackBody;
use crate::{config::ConfigProblem, transport::ProxyBody};
use http::{Request, Response};
use resilience_core::BoxError;
use std::fmt;
use tower::util::BoxCloneService;

/// The service a stack ends in: any request body in, a streaming body out, typed errors
/// (`Elapsed`, `BreakerOpen`, `Overloaded`, connect errors) for the caller to map, with
/// [`local_reply`](crate::local_reply) at an HTTP edge.
pub type StackService<B> = BoxCloneService<Request<B>, Response<ProxyBody>, BoxError>;

/// A config section that did not make a stack: the field, as a path (`retry.attempts`), and
/// what is wrong.
fn field_error(prefix: &str, field: &str, message: impl fmt::Display) -> ConfigProblem {
    ConfigProblem {
        field: format!("{prefix}.{field}"),
        line: None,
        message: message.to_string(),
    }
}
