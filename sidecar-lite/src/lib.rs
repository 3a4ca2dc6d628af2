//! `sidecar-lite`: a small proxy that runs beside an application and stacks the resilience
//! middleware crates (timeout, retry, circuit breaker, mutual TLS) from one config file.
//!
//! The flow of the code follows the flow of a request: [`config`] (parse and validate, nothing
//! else) feeds [`stack`] (the only place that assembles layers, public so library mode calls
//! the same functions), which [`proxy`] serves on its listeners; [`run`] ties them together
//! for the binary. With `[tracing]`, [`proxy::span`] gives each request a span and
//! [`telemetry`] exports them.

pub mod admin;
pub mod certs;
pub mod config;
pub mod discovery;
pub mod fault;
pub mod proxy;
pub mod run;
pub mod stack;
pub mod telemetry;
pub mod unavailable;
