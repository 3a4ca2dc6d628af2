//! The proxy: listeners, the hyper server and client, and the rules every forwarded request
//! and response follows.

pub mod body;
pub mod client;
pub mod errors;
pub mod forward;
pub mod framing;
pub mod headers;
pub mod server;
pub mod span;
