//! Errors from the stack, turned into the local replies the proxy sends: each error names its
//! [`Reason`], which gives the status, the `x-sidecar-error` flag and `Retry-After`, as
//! Envoy's response flags do.

use crate::{
    stack::{NoEndpointAvailable, NoEndpoints},
    transport::{ProxyBody, local_response},
};
use http::Response;
use resilience_breaker::BreakerOpen;
use resilience_core::{BoxError, CallerBodyFailed, ConnectFailed, LocalReply, Reason};
use resilience_limit::RateLimited;
use resilience_timeout::Elapsed;
use std::{error::Error, io};
use tower::load_shed::error::Overloaded;

/// The response for an error that reached the edge of a stack: what sidecar-lite answers,
/// and what a library-mode service answers to look the same. The error's chain is searched
/// for the typed errors of the layers (`Elapsed`, `BreakerOpen`, `Overloaded`, `RateLimited`,
/// connect failures) and for the caller's body breaking off (`400`); anything else is
/// `502 upstream`. `grpc` says whether the request was a gRPC
/// call ([`resilience_core::is_grpc`] of its headers): then the reply is the reason's gRPC
/// status in a trailers-only response (`DEADLINE_EXCEEDED`, `UNAVAILABLE`, ...), with the
/// same `x-sidecar-error` flag.
pub fn local_reply(error: &BoxError, grpc: bool) -> Response<ProxyBody> {
    local_response(reply_for(error).grpc(grpc))
}

fn reply_for(error: &BoxError) -> LocalReply {
    let chain = || sources(error);
    if let Some(failed) = chain().find(|e| e.is::<CallerBodyFailed>()) {
        tracing::debug!(error = %failed, "the caller's request body failed");
        return LocalReply::new(Reason::BadRequest)
            .text("bad request: the request body was malformed or cut off before its end");
    }
    if chain().any(|e| e.is::<Elapsed>()) {
        return LocalReply::new(Reason::Timeout);
    }
    if let Some(open) = chain().find_map(|e| e.downcast_ref::<BreakerOpen>()) {
        return LocalReply::new(Reason::BreakerOpen).retry_after(open.retry_after());
    }
    if chain().any(|e| e.is::<NoEndpointAvailable>()) {
        return LocalReply::new(Reason::BreakerOpen)
            .text("service unavailable: every endpoint's circuit breaker is open");
    }
    if chain().any(|e| e.is::<NoEndpoints>()) {
        return LocalReply::new(Reason::NoEndpoints);
    }
    if chain().any(|e| e.is::<Overloaded>() || e.is::<resilience_limit::Overloaded>()) {
        return LocalReply::new(Reason::Overloaded);
    }
    if let Some(limited) = chain().find_map(|e| e.downcast_ref::<RateLimited>()) {
        return LocalReply::new(Reason::RateLimited).retry_after(Some(limited.retry_after()));
    }
    if chain().any(is_connect_failure) {
        return LocalReply::new(Reason::Connect);
    }
    tracing::debug!(error = %error, "upstream error");
    LocalReply::new(Reason::Upstream)
}
fn is_connect_failure(error: &(dyn Error + 'static)) -> bool {
    if error.is::<ConnectFailed>() {
        return true;
    }
    if let Some(err) = error.downcast_ref::<hyper_util::client::legacy::Error>() {
        return err.is_connect();
    }
    error
        .downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
}

/// The error and its chain of sources.
pub(super) fn sources(error: &BoxError) -> impl Iterator<Item = &(dyn Error + 'static)> {
    let first: &(dyn Error + 'static) = &**error;
    std::iter::successors(Some(first), |&e| e.source())
}
