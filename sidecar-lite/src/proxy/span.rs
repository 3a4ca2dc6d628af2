//! The span of each proxied request, when `[tracing]` is on: a server span on the inbound
//! listener, a client span on outbound routes, with the HTTP semantic-convention attributes.
//!
//! The span is the child of the request's `traceparent` (W3C Trace Context), and the request
//! goes on with a `traceparent` naming the span, so the next hop's span is its child. Sampling
//! is decided when the span starts (parent-based: a caller's sampled flag is honoured); an
//! unsampled span records nothing, but its `traceparent` still goes on, flagged unsampled.

use super::headers::{TRACEPARENT, ensure_traceparent, traceparent, traceparent_value};
use crate::stack::Attempts;
use http::{Method, Request, Response, Version, header::HOST, uri::Authority};
use opentelemetry::{
    Context, KeyValue, Value,
    trace::{
        Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags,
        TraceId, TraceState, Tracer as _,
    },
};
use opentelemetry_sdk::trace::{SdkTracer, Span};
use resilience_mtls::{AllowList, Identity};
use std::{net::SocketAddr, sync::Arc};

/// How one listener traces its requests: the tracer, the kind of span, and what the listener
/// knows of its peers.
#[derive(Debug, Clone)]
pub(crate) struct EdgeTracer {
    tracer: SdkTracer,
    kind: SpanKind,
    listener: Arc<str>,
    /// On an outbound route, the identity the peers must present, or the name a route to a
    /// server outside the mesh checks its certificate for.
    peer: Option<Arc<str>>,
    /// On the inbound listener, the callers whose sampling decision is honoured: those let in.
    trusted: Option<Arc<AllowList>>,
}

/// The longest attribute value a span keeps, in bytes: a path or a name past it is cut, so a
/// caller cannot make a span, or the export queue, hold what it sends.
const MAX_ATTRIBUTE: usize = 1024;

/// `text`, cut to at most [`MAX_ATTRIBUTE`] bytes at a character boundary.
fn bounded(text: &str) -> String {
    if text.len() <= MAX_ATTRIBUTE {
        return text.to_owned();
    }
    let mut end = MAX_ATTRIBUTE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

impl EdgeTracer {
    /// Server spans, for the inbound listener. The caller's identity, when it presented one,
    /// becomes `sidecar.peer.identity`. Only a caller that `trusted` lets in with an identity
    /// decides whether its trace is sampled: an anonymous or refused one cannot make the
    /// sidecar record and export what it sends.
    #[must_use]
    pub(crate) fn inbound(tracer: SdkTracer, listener: Arc<str>, trusted: AllowList) -> Self {
        Self {
            tracer,
            kind: SpanKind::Server,
            listener,
            peer: None,
            trusted: Some(Arc::new(trusted)),
        }
    }

    /// Client spans, for an outbound route whose peers must present `server_identity`.
    #[must_use]
    pub(crate) fn outbound(
        tracer: SdkTracer,
        listener: Arc<str>,
        server_identity: Option<&str>,
    ) -> Self {
        Self {
            tracer,
            kind: SpanKind::Client,
            listener,
            peer: server_identity.map(Arc::from),
            trusted: None,
        }
    }

    /// Starts the span of `req`, the child of its `traceparent` if it has a valid one, and
    /// sets `traceparent` to name the new span. Call before the request is rewritten for
    /// forwarding: it reads the method, path, authority and protocol version; `client` is the
    /// address of the connection it came on.
    pub(crate) fn start<B>(&self, req: &mut Request<B>, client: SocketAddr) -> RequestSpan {
        let identity = req.extensions().get::<Identity>();
        let trusted = match &self.trusted {
            Some(allow) => identity.is_some() && allow.is_allowed(identity),
            // Outbound, the caller is the app beside us.
            None => true,
        };
        let parent = match traceparent(req.headers()) {
            Some(tp) => match (
                TraceId::from_hex(tp.trace_id),
                SpanId::from_hex(tp.parent_id),
            ) {
                (Ok(trace_id), Ok(span_id)) => {
                    // An untrusted caller's trace goes on, unsampled: its flag decides nothing.
                    let flags = if trusted {
                        TraceFlags::new(tp.flags)
                    } else {
                        TraceFlags::default()
                    };
                    Context::new().with_remote_span_context(SpanContext::new(
                        trace_id,
                        span_id,
                        flags,
                        true,
                        TraceState::default(),
                    ))
                }
                _ => Context::new(),
            },
            None => Context::new(),
        };
        let (method, name) = method_attribute(req.method());
        let mut attributes = Vec::with_capacity(12);
        attributes.push(KeyValue::new("http.request.method", method));
        if name == "HTTP" {
            attributes.push(KeyValue::new(
                "http.request.method_original",
                bounded(req.method().as_str()),
            ));
        }
        attributes.push(KeyValue::new("url.path", bounded(req.uri().path())));
        let tls = match self.kind {
            SpanKind::Server => identity.is_some(),
            _ => self.peer.is_some(),
        };
        attributes.push(KeyValue::new(
            "url.scheme",
            if tls { "https" } else { "http" },
        ));
        if let Some(authority) = authority(req) {
            attributes.push(KeyValue::new("server.address", bounded(authority.host())));
            if let Some(port) = authority.port_u16() {
                attributes.push(KeyValue::new("server.port", i64::from(port)));
            }
        }
        if let Some(version) = protocol_version(req.version()) {
            attributes.push(KeyValue::new("network.protocol.version", version));
        }
        if self.kind == SpanKind::Server {
            attributes.push(KeyValue::new("client.address", client.ip().to_string()));
            attributes.push(KeyValue::new("client.port", i64::from(client.port())));
        }
        // The listener's own names are shared with the span, not copied into it.
        let peer: Option<Value> = match self.kind {
            SpanKind::Server => identity.map(|id| bounded(id.as_str()).into()),
            _ => self.peer.clone().map(Value::from),
        };
        if let Some(peer) = peer {
            attributes.push(KeyValue::new("sidecar.peer.identity", peer));
        }
        attributes.push(KeyValue::new("sidecar.listener", self.listener.clone()));

        let span = self
            .tracer
            .span_builder(name)
            .with_kind(self.kind.clone())
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        let context = span.span_context();
        if context.is_valid() {
            req.headers_mut().insert(
                TRACEPARENT,
                traceparent_value(
                    u128::from_be_bytes(context.trace_id().to_bytes()),
                    u64::from_be_bytes(context.span_id().to_bytes()),
                    context.trace_flags().to_u8(),
                ),
            );
        } else {
            // The provider is shut down: forward as if tracing were off.
            ensure_traceparent(req.headers_mut());
        }
        // The edge's count of attempts, when it keeps one.
        let attempts = if span.is_recording() && self.kind == SpanKind::Client {
            req.extensions().get::<Attempts>().cloned()
        } else {
            None
        };
        RequestSpan {
            span,
            client: self.kind == SpanKind::Client,
            attempts,
        }
    }
}

/// The span of one request, open until [`RequestSpan::finish`].
#[derive(Debug)]
pub(crate) struct RequestSpan {
    span: Span,
    client: bool,
    attempts: Option<Attempts>,
}

impl RequestSpan {
    /// Ends the span with the response's status. `local_error` is the flag of a response the
    /// proxy made itself (`x-sidecar-error`), which becomes `error.type` and `sidecar.error`;
    /// otherwise a 5xx (or any 4xx on a client span) is the error, by its status code.
    pub(crate) fn finish<B>(mut self, response: &Response<B>, local_error: Option<&str>) {
        if !self.span.is_recording() {
            return;
        }
        let status = response.status();
        self.span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        if let Some(attempts) = &self.attempts {
            let resent = attempts.count().saturating_sub(1);
            if resent > 0 {
                self.span.set_attribute(KeyValue::new(
                    "http.request.resend_count",
                    i64::from(resent),
                ));
            }
        }
        let error_type = match local_error {
            Some(flag) => {
                self.span
                    .set_attribute(KeyValue::new("sidecar.error", flag.to_owned()));
                Some(flag.to_owned())
            }
            None if status.is_server_error() || (self.client && status.is_client_error()) => {
                Some(status.as_str().to_owned())
            }
            None => None,
        };
        if let Some(error_type) = error_type {
            self.span
                .set_status(Status::error(format!("{error_type}: {status}")));
            self.span
                .set_attribute(KeyValue::new("error.type", error_type));
        }
        self.span.end();
    }
}

/// `http.request.method` and the span's name: a known method as it is, any other as
/// `_OTHER`, named `HTTP`.
fn method_attribute(method: &Method) -> (&'static str, &'static str) {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN
        .iter()
        .find(|known| **known == method.as_str())
        .map_or(("_OTHER", "HTTP"), |known| (known, known))
}

/// The authority the request is for: its URI's, or its Host header's.
fn authority<B>(req: &Request<B>) -> Option<Authority> {
    req.uri().authority().cloned().or_else(|| {
        req.headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse().ok())
    })
}

fn protocol_version(version: Version) -> Option<&'static str> {
    match version {
        Version::HTTP_10 => Some("1.0"),
        Version::HTTP_11 => Some("1.1"),
        Version::HTTP_2 => Some("2"),
        Version::HTTP_3 => Some("3"),
        _ => None,
    }
}
