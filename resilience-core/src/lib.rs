//! What the resilience crates share, so that each concept has one home: the boxed error type
//! every layer returns, the one [`ConfigError`], the [`RandomSource`] of jitter, the
//! [`duration`] syntax of config files (feature `serde`), and [`LocalReply`], the one way a
//! [`Reason`] becomes a status (or, to a gRPC caller, a gRPC status), an `x-sidecar-error`
//! flag and a `Retry-After` (feature `http`).
//!
//! ```
//! use resilience_core::{BoxError, ConfigError};
//!
//! fn attempts(n: u32) -> Result<u32, ConfigError> {
//!     if n == 0 {
//!         return Err(ConfigError::new("attempts", n, "must be at least 1"));
//!     }
//!     Ok(n)
//! }
//!
//! let err: BoxError = attempts(0).unwrap_err().into();
//! assert!(err.is::<ConfigError>());
//! assert_eq!(err.to_string(), "invalid `attempts` = 0: must be at least 1");
//! ```
//!
//! The crates re-export what their own signatures use, so most users never name this crate.
//! How the crates fit together: `ARCHITECTURE.md` at the root of the workspace's repository.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod deadline_drop;
mod enforcement;
mod error;
mod random;
mod retry_after;

#[cfg(feature = "serde")]
pub mod duration;

#[cfg(feature = "http")]
mod headers;
#[cfg(feature = "http")]
mod local_reply;
#[cfg(feature = "http")]
mod reply_layer;

pub use deadline_drop::{drop_at_deadline, dropped_at_deadline};
pub use enforcement::Enforcement;
pub use error::{BoxError, CallerBodyFailed, ConfigError, ConnectFailed, RefusedLocally};
pub use random::{RandomSource, ThreadRandom};
pub use retry_after::retry_after_secs;

#[cfg(feature = "http")]
pub use headers::header_value;
#[cfg(feature = "http")]
pub use local_reply::{
    GRPC_RETRY_PUSHBACK_MS, GRPC_STATUS, LocalReply, Reason, SIDECAR_ERROR, is_grpc, is_grpc_web,
};
#[cfg(feature = "http")]
pub use reply_layer::{
    LocalReplyBody, LocalReplyFuture, LocalReplyLayer, LocalReplyService, ReplyTo,
};

/// The README's example (the same as the first one above), compiled as a doctest so that it
/// cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
