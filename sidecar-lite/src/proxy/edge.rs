//! The edge of each listener: the rules every forwarded request and response follows, around a
//! stack from [`crate::stack`], with errors turned into flagged responses.

use super::{
    ClientAddr, OpenConnections, SharedListenerState,
    access_log::{CountedBody, PendingLine},
    headers::{append_forwarded_for, ensure_traceparent, join_cookies, strip_hop_by_hop},
    local_reply::local_reply,
    per_thread,
    signals::{ListenerSignals, Outcome},
    span::RequestSpan,
    state::StackCall,
    upgrade::{BadSwitch, ClientUpgrade, ask_for_websocket},
};
use crate::stack::Attempts;
use crate::transport::{ProxyBody, local_response};
use http::{
    HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header::HOST, uri::Authority,
};
use hyper::{body::Incoming, service::Service};
use metrics::{Counter, Histogram};
use resilience_core::{
    BoxError, GRPC_STATUS, LocalReply, Reason, SIDECAR_ERROR, header_value, is_grpc,
};
use resilience_mtls::Identity;
use std::{
    cell::RefCell,
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};
use tokio::time::Instant;

/// The request body the stacks of listeners take: hyper's, counted for the access log.
pub(crate) type EdgeBody = CountedBody<Incoming>;

/// Wraps the listener's current stack with the proxy's request and response rules, for each
/// connection from its client's address (known to its every request without a copy in each);
/// never fails: errors become local replies flagged with `x-sidecar-error`. With a tracer in
/// the listener's state, each request gets a span (see [`super::span`]); without, nothing of
/// tracing is done but keeping or starting `traceparent`.
///
/// A request with more than `max_headers` header fields is answered 431: hyper counts them on
/// HTTP/1.1, and nothing does on HTTP/2.
pub(crate) fn edge(
    listener: Arc<str>,
    state: SharedListenerState,
    metrics: Arc<ListenerMetrics>,
    max_headers: usize,
) -> impl Fn(ClientAddr) -> Edge + Clone + Send + 'static {
    move |client| {
        Edge(Arc::new(EdgeOfConnection {
            listener: listener.clone(),
            state: state.clone(),
            metrics: metrics.clone(),
            client,
            max_headers,
        }))
    }
}

/// The edge of one listener for one connection: see [`edge`]. One `Arc`, so that the
/// reference each request's future keeps is one count, not five.
pub(crate) struct Edge(Arc<EdgeOfConnection>);

struct EdgeOfConnection {
    listener: Arc<str>,
    state: SharedListenerState,
    metrics: Arc<ListenerMetrics>,
    client: ClientAddr,
    max_headers: usize,
}

/// Always ready: hyper's kind of service, called without waiting for readiness.
impl Service<Request<Incoming>> for Edge {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = EdgeFuture;

    fn call(&self, req: Request<Incoming>) -> EdgeFuture {
        edge_request(&self.0, req)
    }
}

/// One request through the edge of a connection.
fn edge_request(edge: &Arc<EdgeOfConnection>, mut req: Request<Incoming>) -> EdgeFuture {
    let EdgeOfConnection {
        listener,
        state,
        metrics,
        client,
        max_headers,
    } = &**edge;
    let start = Instant::now();
    // Told before the hop's own headers go, which name it.
    let upgrade = ClientUpgrade::take_websocket(&mut req);
    // The hop's own headers go before anything reads the request, as Envoy's codec drops
    // them: a `Connection` that names `traceparent` must not take the span's away.
    let admitted = admit(&mut req, *max_headers);
    // The state of the moment: a reload swaps it without touching requests in flight.
    let current = state.load_full();
    // Every attempt of the request is counted in it, for the golden signals, the span and
    // the access log.
    let attempts = Attempts::default();
    req.extensions_mut().insert(attempts.clone());
    // Started before the request is rewritten (only its hop-by-hop headers are gone): the
    // span reads it as the caller sent it. Boxed: the future of every request would otherwise
    // carry room for it.
    let span = current
        .tracer
        .as_ref()
        .map(|tracer| Box::new(tracer.start(&mut req, client.addr)));
    let mut line = current
        .access_log
        .as_ref()
        .map(|log| log.begin(listener, &mut req, client.addr));
    if current.inbound.is_some()
        && let Some(peer) = req.extensions().get::<Identity>()
    {
        metrics.signals.peer(peer.as_str());
    }
    let grpc = is_grpc(req.headers());
    let method = req.method().clone();
    // The request is made ready here and moved into the stack's call, not into the future,
    // which then holds it once, in the call: hyper moves the future into its slot.
    let prepared = admitted
        .map(|host| prepare_request(&mut req, host, span.is_none(), client.forwarded.clone()));
    let call = match prepared {
        Ok(()) => {
            if upgrade.is_some() {
                ask_for_websocket(req.headers_mut());
            }
            if let Some(inbound) = &current.inbound {
                inbound.prepare_request(&mut req);
            }
            if let Some(line) = &mut line {
                line.trace(req.headers());
            }
            let req = req.map(|body| match &line {
                Some(line) => line.count_body(body),
                None => CountedBody::uncounted(body),
            });
            Some(current.call(req))
        }
        Err(_) => None,
    };
    EdgeFuture {
        edge: edge.clone(),
        call,
        finish: Some(Finish {
            start,
            attempts,
            grpc,
            refusal: prepared.err(),
            upgrade,
            method,
            span,
            line,
        }),
    }
}

/// Why the edge refuses a request before the stack sees it: what the next hop could not read
/// as the caller meant it (RFC 9112 sections 3.2 and 6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Which one would the app read?
    TwoHosts,
    /// Neither `Host` nor an authority in the target: whom is it for?
    NoHost,
    /// A `Host` that is not an authority.
    BadHost,
    /// A transfer coding other than chunked: stripped with its header, the body would reach
    /// the app still coded and unlabelled.
    TransferCoding,
    /// An authority in the target (absolute form, HTTP/2's `:authority`) that `Host` could
    /// not hold: user information, a port that is not a number.
    BadAuthority,
    /// `CONNECT`: a tunnel, which the proxy does not make (nor forward as a request).
    Tunnel,
    /// More header fields than `[limits] max_headers` (HTTP/2: hyper counts them on HTTP/1.1).
    TooManyHeaders,
}

impl Refusal {
    /// Why it is answered: a bad request (400), or too many header fields (431, RFC 6585).
    fn reason(self) -> Reason {
        match self {
            Self::TooManyHeaders => Reason::HeadersTooLarge,
            _ => Reason::BadRequest,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Self::BadAuthority => {
                "bad request: the authority of the request target is not a valid host and port"
            }
            Self::Tunnel => "bad request: CONNECT tunnels are not proxied",
            Self::TooManyHeaders => {
                "request header fields too large: more header fields than the listener takes"
            }
            Self::TwoHosts => "bad request: more than one Host header",
            Self::NoHost => "bad request: no Host header, and no authority in the request target",
            Self::BadHost => "bad request: the Host header is not a valid host and port",
            Self::TransferCoding => {
                "bad request: a transfer coding other than chunked cannot be forwarded"
            }
        }
    }
}

/// One request through the edge: the stack's call, then the response rules. A named future
/// rather than a boxed `async` block: hyper keeps it in the connection's slot for the request
/// in flight, so a request costs no allocation of its own for it.
pub(crate) struct EdgeFuture {
    edge: Arc<EdgeOfConnection>,
    /// `None` for a request refused before the stack (see [`Finish::refusal`]).
    call: Option<StackCall>,
    /// Taken when the future completes.
    finish: Option<Finish>,
}

/// What the edge does with the answer, once there is one.
struct Finish {
    start: Instant,
    attempts: Attempts,
    grpc: bool,
    /// Why the request never reached the stack, if it did not.
    refusal: Option<Refusal>,
    /// The claim on the client's connection of a WebSocket handshake passed on.
    upgrade: Option<ClientUpgrade>,
    method: Method,
    // Boxed: the future of every request would otherwise carry room for it.
    span: Option<Box<RequestSpan>>,
    line: Option<PendingLine>,
}

impl Future for EdgeFuture {
    type Output = Result<Response<ProxyBody>, Infallible>;

    /// Polled again after it completed, it stays pending (hyper never does so).
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let answer = match &mut this.call {
            Some(call) => Some(ready!(Pin::new(call).poll(cx))),
            None => None,
        };
        this.call = None;
        match this.finish.take() {
            Some(finish) => Poll::Ready(Ok(finish.respond(&this.edge, answer))),
            None => Poll::Pending,
        }
    }
}

impl Finish {
    /// The response to send: the stack's, or a local reply for its error or for a request
    /// it never saw (`None`: see `refusal`), with the response rules applied. An upstream's
    /// response that cannot be passed on as it is (a transfer coding other than chunked, a
    /// `101` that cannot become a tunnel) is answered `502 upstream` instead.
    fn respond(
        mut self,
        edge: &EdgeOfConnection,
        answer: Option<Result<Response<ProxyBody>, BoxError>>,
    ) -> Response<ProxyBody> {
        let EdgeOfConnection {
            listener, metrics, ..
        } = edge;
        let grpc = self.grpc;
        let (mut response, local) = match answer {
            Some(Ok(response)) => (response, false),
            Some(Err(error)) => {
                let response = local_reply(&error, grpc);
                metrics.record_local(&response);
                tracing::debug!(listener = &**listener, method = %self.method, status = %response.status(), %error, "answered by the proxy");
                (response, true)
            }
            None => {
                let text = self.refusal.map_or("bad request", Refusal::text);
                let reason = self.refusal.map_or(Reason::BadRequest, Refusal::reason);
                let response = local_response(LocalReply::new(reason).text(text).grpc(grpc));
                metrics.record_local(&response);
                (response, true)
            }
        };
        // Any other answer to a handshake leaves the connection HTTP: its claim goes.
        let unpassable = if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let switched = match self.upgrade {
                Some(claim) => claim.switch(&mut response, &mut self.line),
                None => Err(BadSwitch::Unasked),
            };
            switched.err().map(BadSwitch::text)
        } else if strip_hop_by_hop(response.headers_mut()) {
            Some("bad gateway: the upstream's response used a transfer coding other than chunked")
        } else {
            None
        };
        let (mut response, local) = match unpassable {
            Some(text) => {
                let response =
                    local_response(LocalReply::new(Reason::Upstream).text(text).grpc(grpc));
                metrics.record_local(&response);
                (response, true)
            }
            None => (response, local),
        };
        metrics.record(&response, self.start, self.attempts.count());
        if let Some(span) = self.span {
            let flag = local
                .then(|| response.headers().get(SIDECAR_ERROR))
                .flatten()
                .and_then(|v| v.to_str().ok());
            span.finish(&response, flag);
        }
        if let Some(line) = self.line {
            response = line.finish(response);
        }
        response
    }
}

/// Per-listener metrics, registered once so each request or connection only bumps handles,
/// and the listener's golden signals for the status page.
#[derive(Debug)]
pub(crate) struct ListenerMetrics {
    name: Arc<str>,
    by_class: [Counter; 5],
    duration: Histogram,
    /// Connections open now.
    pub(crate) open: OpenConnections,
    signals: ListenerSignals,
}

impl ListenerMetrics {
    pub(crate) fn new(listener: &str) -> Self {
        let class = |c: &'static str| metrics::counter!("sidecar_requests_total", "listener" => listener.to_owned(), "class" => c);
        Self {
            name: Arc::from(listener),
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            duration: metrics::histogram!(
                "sidecar_request_duration_seconds",
                "listener" => listener.to_owned()
            ),
            open: OpenConnections::new(
                metrics::gauge!("sidecar_connections_open", "listener" => listener.to_owned()),
                metrics::gauge!("sidecar_tunnels_open", "listener" => listener.to_owned()),
            ),
            signals: ListenerSignals::new(Instant::now()),
        }
    }

    /// The listener's name: `inbound` or `outbound/<route>`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The listener's golden signals.
    pub(crate) fn signals(&self) -> &ListenerSignals {
        &self.signals
    }

    /// Marks the series as in use without changing them, so that an exporter that expires
    /// idle series keeps those of a quiet listener that is still there.
    pub(crate) fn touch(&self) {
        for counter in &self.by_class {
            counter.increment(0);
        }
        self.open.touch();
    }

    /// Counts a finished response head: its status class, its latency, and for the golden
    /// signals whether it succeeded, how many attempts it took and its flag.
    fn record<B>(&self, response: &Response<B>, start: Instant, attempts: u32) {
        let now = Instant::now();
        let latency = now.saturating_duration_since(start);
        let status = response.status();
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.by_class[class].increment(1);
        self.duration.record(latency.as_secs_f64());
        let headers = response.headers();
        let flag = header_value(headers, &SIDECAR_ERROR).and_then(|v| v.to_str().ok());
        // A gRPC error in the head (trailers-only) is a failure too, whatever the HTTP status.
        let grpc_error = header_value(headers, &GRPC_STATUS).is_some_and(|v| v.as_bytes() != b"0");
        self.signals.record(
            now,
            Outcome {
                latency,
                success: !status.is_server_error() && flag.is_none() && !grpc_error,
                attempts,
                flag,
            },
        );
    }

    /// Counts a response the proxy made itself, by its flag. Only ours: a header from upstream
    /// must not mint label values.
    fn record_local<B>(&self, response: &Response<B>) {
        if let Some(flag) = response
            .headers()
            .get(SIDECAR_ERROR)
            .and_then(|v| v.to_str().ok())
        {
            metrics::counter!("sidecar_local_responses_total", "reason" => flag.to_owned())
                .increment(1);
        }
    }
}

/// Whether the proxy takes `req` at all, and the authority it is for (see [`host_of`]); its
/// hop-by-hop headers are gone once it is taken, and an HTTP/2 request's cookies are in one
/// field (RFC 9113 section 8.2.3: as the next hop, HTTP/1.1 or not, may need them).
fn admit<B>(req: &mut Request<B>, max_headers: usize) -> Result<Option<Authority>, Refusal> {
    if req.method() == Method::CONNECT {
        return Err(Refusal::Tunnel);
    }
    if req.version() == Version::HTTP_2 {
        // Counted as one field, as an HTTP/1.1 client sends them.
        join_cookies(req.headers_mut());
    }
    if req.headers().len() > max_headers {
        return Err(Refusal::TooManyHeaders);
    }
    let host = host_of(req)?;
    if strip_hop_by_hop(req.headers_mut()) {
        return Err(Refusal::TransferCoding);
    }
    Ok(host)
}

/// The authority the request is for, from its one `Host` (one lookup for every question asked
/// of it): `None` when its target names one (absolute form, HTTP/2's `:authority`), which then
/// wins (RFC 9112 section 3.2.2), if `Host` could hold it.
fn host_of<B>(req: &Request<B>) -> Result<Option<Authority>, Refusal> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::TwoHosts);
    }
    if let Some(authority) = req.uri().authority() {
        return if is_host_and_port(authority) {
            Ok(None)
        } else {
            Err(Refusal::BadAuthority)
        };
    }
    // Origin-form, the usual case: the authority is the Host header's.
    let first = first.ok_or(Refusal::NoHost)?;
    authority_of(first).map(Some).ok_or(Refusal::BadHost)
}

/// `host` as an authority, if it is one. The last one parsed on the thread is kept: a worker's
/// requests mostly name one host, and then share one parsed value instead of each parsing and
/// allocating its own, and allocating again when the retry layer copies the request.
fn authority_of(host: &HeaderValue) -> Option<Authority> {
    thread_local! {
        static LAST: RefCell<Option<((), Authority)>> = const { RefCell::new(None) };
    }
    per_thread::kept_or_made(
        &LAST,
        |(), kept| kept.as_str().as_bytes() == host.as_bytes(),
        || {
            let authority: Authority = host.to_str().ok()?.parse().ok()?;
            is_host_and_port(&authority).then_some(((), authority))
        },
    )
}

/// Whether `authority` is what `Host` may hold (RFC 9110 section 7.2): a host and an optional
/// port of digits, no user information. `Authority` alone takes `a:port`, and `user@a`. One
/// pass over the bytes: every HTTP/2 request's `:authority` comes this way.
fn is_host_and_port(authority: &Authority) -> bool {
    let text = authority.as_str().as_bytes();
    // Where the port starts: after the last `:` that is not inside an IPv6 literal.
    let mut port = None;
    for (i, &byte) in text.iter().enumerate() {
        match byte {
            b'@' => return false,
            b':' => port = Some(i + 1),
            b']' => port = None,
            _ => {}
        }
    }
    port.is_none_or(|start| {
        let port = &text[start..];
        port.is_empty() || std::str::from_utf8(port).is_ok_and(|port| port.parse::<u16>().is_ok())
    })
}

/// Applies the forwarding rules to a request [`admit`] took: `x-forwarded-for` (with
/// `forwarded`, the client's element) and (unless a span has set it) `traceparent` in, and an
/// absolute URI that keeps the caller's authority (the URI's, else `host`'s, from
/// [`host_of`]).
fn prepare_request<B>(
    req: &mut Request<B>,
    host: Option<Authority>,
    ensure_trace: bool,
    forwarded: HeaderValue,
) {
    let from_uri = req.uri().authority().cloned();
    append_forwarded_for(req.headers_mut(), forwarded);
    if ensure_trace {
        ensure_traceparent(req.headers_mut());
    }
    if let Some(authority) = from_uri.or(host) {
        // RFC 9112 section 3.2.2: a proxy sets Host from an absolute-form target, so Host and
        // `:authority` never disagree downstream (in origin form, Host is where it came from).
        // Set first, so that the authority is then moved into the URI, not cloned (its first
        // clone would allocate).
        if req.uri().authority().is_some()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            req.headers_mut().insert(HOST, host);
        }
        // Taken, not cloned: with a scheme, an authority and a path, `from_parts` cannot fail.
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(authority);
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    // The next hop's protocol is chosen by ALPN (between sidecars) or by the app client.
    *req.version_mut() = Version::HTTP_11;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_host_is_parsed_once_and_shared() {
        let host = |value: &'static str| authority_of(&HeaderValue::from_static(value));
        let first = host("app:8080").unwrap();
        assert_eq!(first, "app:8080");
        let again = host("app:8080").unwrap();
        assert_eq!(
            again.as_str().as_ptr(),
            first.as_str().as_ptr(),
            "the kept value"
        );
        // Another host, as sent (an authority compares without case; the one sent on keeps it).
        let other = host("App:8080").unwrap();
        assert_eq!(other.as_str(), "App:8080");
        assert_ne!(other.as_str().as_ptr(), first.as_str().as_ptr());
        // Not an authority: none, and the kept one stays for the next request.
        assert_eq!(host("a b"), None);
        assert_eq!(
            host("App:8080").unwrap().as_str().as_ptr(),
            other.as_str().as_ptr()
        );
    }

    #[test]
    fn a_host_is_a_host_and_an_optional_port_of_digits() {
        let host = |value: &'static str| authority_of(&HeaderValue::from_static(value));
        for good in ["a", "a:80", "a:", "10.0.0.1:65535", "[::1]", "[::1]:8080"] {
            assert!(host(good).is_some(), "{good}");
        }
        for bad in [
            "a:port",
            "a:65536",
            "user@a",
            "user:pw@a:80",
            "[::1]:x",
            "a b",
            "",
        ] {
            assert_eq!(host(bad), None, "{bad}");
        }
    }
}
