//! `sidecar-lite`: a small proxy that runs beside an application and stacks the resilience
//! middleware crates (timeout, retry, circuit breaker, mutual TLS) from one config file.
//!
//! This crate is being built; see the workspace README for its status.
