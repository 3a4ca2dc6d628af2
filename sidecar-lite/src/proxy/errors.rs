//! Errors from the stack, turned into the responses the proxy sends, each flagged with
//! `x-sidecar-error` as Envoy flags its own responses.

use super::body::{ProxyBody, sidecar_response};
use crate::unavailable::{NoEndpointAvailable, NoEndpoints};
use http::{HeaderValue, Response, StatusCode, header::RETRY_AFTER};
use resilience_breaker::BreakerOpen;
use resilience_timeout::{BoxError, Elapsed};
use std::{error::Error, io};
use tower::load_shed::error::Overloaded;

/// The response for an error that reached the edge of the proxy.
pub fn error_response(error: &BoxError) -> Response<ProxyBody> {
    let chain = || sources(error);
    if chain().any(|e| e.is::<Elapsed>()) {
        return sidecar_response(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "gateway timeout: the upstream did not answer in time",
        );
    }
    if let Some(open) = chain().find_map(|e| e.downcast_ref::<BreakerOpen>()) {
        let mut response = sidecar_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "breaker-open",
            "service unavailable: the circuit breaker is open",
        );
        if let Some(seconds) = open.retry_after_secs() {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        return response;
    }
    if chain().any(|e| e.is::<NoEndpointAvailable>()) {
        return sidecar_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "breaker-open",
            "service unavailable: every endpoint's circuit breaker is open",
        );
    }
    if chain().any(|e| e.is::<NoEndpoints>()) {
        return sidecar_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-endpoints",
            "service unavailable: discovery found no endpoint for this route",
        );
    }
    if chain().any(|e| e.is::<Overloaded>()) {
        return sidecar_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "service unavailable: too many requests in flight",
        );
    }
    if chain().any(is_connect_failure) {
        return sidecar_response(
            StatusCode::BAD_GATEWAY,
            "connect",
            "bad gateway: cannot connect to the upstream",
        );
    }
    tracing::debug!(error = %error, "upstream error");
    sidecar_response(
        StatusCode::BAD_GATEWAY,
        "upstream",
        "bad gateway: the upstream connection failed",
    )
}

fn is_connect_failure(error: &(dyn Error + 'static)) -> bool {
    if let Some(err) = error.downcast_ref::<hyper_util::client::legacy::Error>() {
        return err.is_connect();
    }
    error
        .downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
}

/// The error and its chain of sources.
fn sources(error: &BoxError) -> impl Iterator<Item = &(dyn Error + 'static)> {
    let first: &(dyn Error + 'static) = &**error;
    std::iter::successors(Some(first), |&e| e.source())
}
