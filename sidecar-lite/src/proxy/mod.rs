//! The edge of the proxy: listeners and their connections, the framing guard, the header
//! rules every forwarded request and response follows, spans, and local replies. Below it,
//! [`crate::stack`] decides what happens to a request; above it, nothing.

mod access_log;
mod activity;
mod connection;
mod edge;
mod framing;
mod headers;
mod listener;
mod local_reply;
mod signals;
mod span;
mod state;

pub(crate) use access_log::AccessLog;
pub(crate) use edge::{EdgeBody, ListenerMetrics, edge};
pub(crate) use headers::InboundRules;
pub(crate) use listener::{ClientAddr, Listening, OpenConnections, serve};
pub use local_reply::local_reply;
pub(crate) use signals::{Point, Snapshot};
pub(crate) use span::EdgeTracer;
pub(crate) use state::{ListenerState, SharedListenerState};
