//! What admits a request into a stack before anything else: the concurrency limit (fixed, or
//! adaptive) and the rate limit.

use super::field_error;
use crate::config::{ConcurrencyLimit, ConfigProblem};
use crate::transport::HeldUntilBodyEnd;
use http::Request;
use resilience_limit::{
    AdaptiveConcurrencyLayer, FixedConcurrencyLayer, RateLimitConfig, RateLimitLayer,
};
use tower::util::Either;

/// A concurrency limit, fixed or adaptive; both shed over it at once, never queueing (a
/// worker's stack is kept between requests, so a shed request must leave nothing queued in
/// it: the permit released next would go to that idle waiter). A request holds its place
/// until its response's body ends, as Envoy counts a request until its stream ends: a
/// stream (a download, server-sent events, a gRPC stream) counts for as long as it lasts.
/// The response leaves the limit boxed ([`HeldUntilBodyEnd`]).
pub(super) type ConcurrencyLayer =
    Either<AdaptiveConcurrencyLayer<HeldUntilBodyEnd>, FixedConcurrencyLayer<HeldUntilBodyEnd>>;

/// The concurrency limit of `limit`, named `name` in metrics; errors name `field`.
pub(super) fn concurrency(
    limit: &ConcurrencyLimit,
    name: &str,
    field: &str,
) -> Result<ConcurrencyLayer, ConfigProblem> {
    Ok(match limit {
        ConcurrencyLimit::Fixed(n) => Either::Right(fixed(*n)),
        ConcurrencyLimit::Adaptive(config) => Either::Left(
            config
                .layer()
                .map_err(|e| field_error(field, e.field(), &e))?
                .named(name.to_owned())
                .release(),
        ),
    })
}

/// A fixed limit of `limit` requests at once, shedding over it.
pub(super) fn fixed(limit: usize) -> FixedConcurrencyLayer<HeldUntilBodyEnd> {
    FixedConcurrencyLayer::new(limit).release()
}

/// The rate limit of a route, named `name` in metrics; errors name `field`.
pub(super) fn route_rate(
    config: Option<&RateLimitConfig>,
    name: &str,
    field: &str,
) -> Result<Option<RateLimitLayer>, ConfigProblem> {
    config
        .map(|config| {
            config
                .layer()
                .map(|layer| layer.named(name.to_owned()))
                .map_err(|e| field_error(field, e.field(), &e))
        })
        .transpose()
}

/// Tells the caller of an inbound request: the identity its certificate proved.
pub(super) type PeerOf<B> = fn(&Request<B>) -> Option<resilience_mtls::Identity>;

/// The inbound rate limit: over all callers and, with `per_caller`, per peer identity (a
/// caller without one is held to the limit over all callers only).
pub(super) fn inbound_rate<B>(
    config: Option<&RateLimitConfig>,
) -> Result<Option<RateLimitLayer<resilience_mtls::Identity, PeerOf<B>>>, ConfigProblem> {
    let peer: PeerOf<B> = |req| req.extensions().get::<resilience_mtls::Identity>().cloned();
    config
        .map(|config| {
            config
                .layer_per_caller(peer)
                .map(|layer| layer.named("inbound"))
                .map_err(|e| field_error("rate_limit", e.field(), &e))
        })
        .transpose()
}
