//! [`UnavailableLayer`]: a rejection by the breaker as an HTTP `503 Service Unavailable`
//! response, for servers and proxies.

use crate::{BoxError, BreakerOpen};
use resilience_core::{
    LocalReply, LocalReplyBody, LocalReplyFuture, LocalReplyLayer, LocalReplyService, Reason,
    ReplyTo,
};

/// Turns [`BreakerOpen`] errors from the inner stack into `503 Service Unavailable` responses.
///
/// The response is the [`LocalReply`] for [`Reason::BreakerOpen`]: `x-sidecar-error:
/// breaker-open` (or the header given to [`flag_header`](LocalReplyLayer::flag_header)),
/// `Retry-After` in whole seconds (rounded up, at least 1) when the breaker knows when it lets
/// the next probe through, none when it cannot tell (forced open, every probe in flight), and a
/// one-line plain-text body. Other errors pass through unchanged. Put it outside a fail-fast
/// [`CircuitBreaker`](crate::CircuitBreaker) at an HTTP edge; in library mode keep the typed
/// error instead.
pub type UnavailableLayer = LocalReplyLayer<BreakerReply>;

/// Answers [`BreakerOpen`] errors with `503 Service Unavailable`; see [`UnavailableLayer`].
pub type Unavailable<S> = LocalReplyService<S, BreakerReply>;

/// The response future of [`Unavailable`].
pub type UnavailableFuture<F> = LocalReplyFuture<F, BreakerReply>;

/// The response body of [`Unavailable`]: the inner body, or the short text of a 503.
pub type UnavailableBody<B> = LocalReplyBody<B>;

/// What [`UnavailableLayer`] answers: a [`BreakerOpen`] error, with a `503`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BreakerReply;

impl ReplyTo for BreakerReply {
    fn reply_to(&self, error: &BoxError) -> Option<LocalReply> {
        let open = error.downcast_ref::<BreakerOpen>()?;
        Some(LocalReply::new(Reason::BreakerOpen).retry_after(open.retry_after()))
    }
}
