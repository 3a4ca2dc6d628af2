//! The edge of the proxy: listeners and their connections, the framing guard, the header
//! rules every forwarded request and response follows, spans, and local replies. Below it,
//! [`crate::stack`] decides what happens to a request; above it, nothing. Without the `proxy`
//! feature only the local replies are here, for library mode.

mod local_reply;

pub use local_reply::local_reply;

#[cfg(feature = "proxy")]
mod access_log;
#[cfg(feature = "proxy")]
mod activity;
#[cfg(feature = "proxy")]
mod admission;
#[cfg(feature = "proxy")]
mod connection;
#[cfg(feature = "proxy")]
mod edge;
#[cfg(feature = "proxy")]
mod framing;
#[cfg(feature = "proxy")]
mod headers;
#[cfg(feature = "proxy")]
mod listener;
#[cfg(feature = "proxy")]
mod per_thread;
#[cfg(feature = "proxy")]
mod signals;
#[cfg(feature = "proxy")]
mod span;
#[cfg(feature = "proxy")]
mod state;
#[cfg(feature = "proxy")]
mod stream_tasks;
#[cfg(feature = "proxy")]
mod upgrade;

#[cfg(feature = "proxy")]
pub(crate) use access_log::AccessLog;
#[cfg(feature = "proxy")]
pub(crate) use admission::Admission;
#[cfg(feature = "proxy")]
pub(crate) use edge::{EdgeBody, ListenerMetrics, edge};
#[cfg(feature = "proxy")]
pub(crate) use headers::InboundRules;
#[cfg(feature = "proxy")]
pub(crate) use listener::{ClientAddr, Listening, OnClosed, OpenConnections, serve};
#[cfg(feature = "proxy")]
pub(crate) use signals::{Point, Snapshot};
#[cfg(feature = "proxy")]
pub(crate) use span::EdgeTracer;
#[cfg(feature = "proxy")]
pub(crate) use state::{ListenerState, SharedListenerState};
