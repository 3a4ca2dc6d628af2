//! Mutual TLS with workload identities for tower and hyper services, built on rustls: SPIFFE
//! identities, authorization by identity, and certificate rotation without dropping connections.
//!
//! This crate is being built; see the workspace README for its status.
