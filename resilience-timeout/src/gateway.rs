//! [`GatewayTimeoutLayer`]: a timeout as an HTTP `504 Gateway Timeout` response, for servers and
//! proxies.

use crate::{BoxError, Elapsed};
use resilience_core::{
    LocalReply, LocalReplyBody, LocalReplyFuture, LocalReplyLayer, LocalReplyService, Reason,
    ReplyTo,
};

/// Turns [`Elapsed`] errors from the inner stack into `504 Gateway Timeout` responses.
///
/// The response is the [`LocalReply`] for [`Reason::Timeout`]: `x-sidecar-error: timeout` (or
/// the header given to [`flag_header`](LocalReplyLayer::flag_header)) and a one-line
/// plain-text body. Other errors pass through unchanged. Put it outside a
/// [`Timeout`](crate::Timeout) at an HTTP edge; in library mode keep the typed error instead.
pub type GatewayTimeoutLayer = LocalReplyLayer<TimeoutReply>;

/// Answers [`Elapsed`] errors with `504 Gateway Timeout`; see [`GatewayTimeoutLayer`].
pub type GatewayTimeout<S> = LocalReplyService<S, TimeoutReply>;

/// The response future of [`GatewayTimeout`].
pub type GatewayTimeoutFuture<F> = LocalReplyFuture<F, TimeoutReply>;

/// The response body of [`GatewayTimeout`]: the inner body, or the short text of a 504.
pub type GatewayTimeoutBody<B> = LocalReplyBody<B>;

/// What [`GatewayTimeoutLayer`] answers: an [`Elapsed`] error, with a `504`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimeoutReply;

impl ReplyTo for TimeoutReply {
    fn reply_to(&self, error: &BoxError) -> Option<LocalReply> {
        error
            .is::<Elapsed>()
            .then(|| LocalReply::new(Reason::Timeout))
    }
}
