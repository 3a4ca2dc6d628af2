//! Retries for tower services that are safe to turn on everywhere: exponential backoff with
//! jitter, a retry budget that bounds amplification, replay of request bodies up to a cap, and
//! `Retry-After`.
//!
//! This crate is being built; see the workspace README for its status.
