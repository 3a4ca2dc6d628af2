//! Circuit breaking for tower services, with the semantics of resilience4j: count-based and
//! time-based sliding windows, failure-rate and slow-call-rate thresholds, half-open probes, and
//! one breaker per endpoint.
//!
//! This crate is being built; see the workspace README for its status.
