//! The inbound stack: peers' requests to the app.

use super::{NoteEndpoint, StackService, admission, count_attempt, field_error};
use crate::{
    config::{ConcurrencyLimit, ConfigProblem, InboundConfig},
    transport::AppClient,
};
use bytes::Bytes;
use http_body::Body;
use resilience_core::BoxError;
use resilience_mtls::AuthorizeLayer;
use tower::{ServiceBuilder, util::BoxCloneService};

/// Builds the inbound stack: peers' requests to the app at `inbound.app`.
pub fn inbound<B>(inbound: &InboundConfig) -> Result<StackService<B>, ConfigProblem>
where
    B: Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static,
{
    let timeout = inbound
        .timeout
        .layer()
        .map_err(|e| field_error("timeout", e.field(), &e))?
        .named("inbound");
    let allow = inbound.allow_list();
    let app_addr = inbound.app;
    let body_timeout = inbound
        .timeout
        .body_layer()
        .map_err(|e| field_error("timeout", e.field(), &e))?;
    let authorize = AuthorizeLayer::new(allow).enforcement(inbound.allow_mode);
    let app = NoteEndpoint::new(AppClient::new(app_addr, inbound.app_protocol), app_addr);

    if let (ConcurrencyLimit::Fixed(limit), None, None) = (
        &inbound.max_concurrent_requests,
        &inbound.rate_limit,
        &body_timeout,
    ) {
        // The usual inbound gets a stack of its own, without the levels that would pass its
        // requests by the layers it has not (see the outbound one).
        let service = ServiceBuilder::new()
            .layer(admission::fixed(*limit))
            .layer(timeout)
            .layer(authorize)
            .map_request(count_attempt)
            .service(app);
        return Ok(BoxCloneService::new(service));
    }

    let concurrency = admission::concurrency(
        &inbound.max_concurrent_requests,
        "inbound",
        "max_concurrent_requests",
    )?;
    let rate_limit = admission::inbound_rate(inbound.rate_limit.as_ref())?;
    let service = ServiceBuilder::new()
        .layer(concurrency)
        .layer(body_timeout.unwrap_or_default())
        .layer(timeout)
        .layer(authorize)
        // After authorization: a caller that may not call spends nobody's rate.
        .option_layer(rate_limit)
        // The one attempt, for the request's span and access-log line (no-ops without them).
        .map_request(count_attempt)
        .service(app);
    Ok(BoxCloneService::new(service))
}
