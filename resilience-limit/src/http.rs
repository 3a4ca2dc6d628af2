//! [`LimitReplyLayer`]: the refusals of the limits as HTTP responses, for servers and proxies.

use crate::{Overloaded, RateLimited};
use resilience_core::{BoxError, LocalReply, LocalReplyLayer, Reason, ReplyTo};

/// Turns [`RateLimited`] into `429 Too Many Requests` with `Retry-After` and
/// `x-sidecar-error: rate-limited`, and [`Overloaded`] into `503` with `x-sidecar-error:
/// overloaded` (to a gRPC caller: `RESOURCE_EXHAUSTED` and `UNAVAILABLE`). Other errors pass
/// through.
///
/// ```
/// use resilience_limit::{LimitReplyLayer, Rate, RateLimitLayer};
/// use resilience_core::SIDECAR_ERROR;
/// use tower::{BoxError, Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// let service = tower::ServiceBuilder::new()
///     .layer(LimitReplyLayer::new())
///     .layer(RateLimitLayer::new(Rate::new(1.0, 1)?))
///     .service(service_fn(|_: http::Request<()>| async {
///         Ok::<_, BoxError>(http::Response::new(String::from("ok")))
///     }));
/// assert_eq!(service.clone().oneshot(http::Request::new(())).await?.status(), 200);
/// let refused = service.oneshot(http::Request::new(())).await?;
/// assert_eq!(refused.status(), 429);
/// assert_eq!(refused.headers()[SIDECAR_ERROR], "rate-limited");
/// assert_eq!(refused.headers()["retry-after"], "1");
/// # Ok(())
/// # }
/// ```
pub type LimitReplyLayer = LocalReplyLayer<LimitReply>;

/// What [`LimitReplyLayer`] answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitReply;

impl ReplyTo for LimitReply {
    fn reply_to(&self, error: &BoxError) -> Option<LocalReply> {
        reply_to(error)
    }
}

/// The local reply for a refusal of the limits, if `error` is one.
#[must_use]
pub fn reply_to(error: &BoxError) -> Option<LocalReply> {
    if let Some(limited) = error.downcast_ref::<RateLimited>() {
        return Some(LocalReply::new(Reason::RateLimited).retry_after(Some(limited.retry_after())));
    }
    error
        .is::<Overloaded>()
        .then(|| LocalReply::new(Reason::Overloaded))
}
