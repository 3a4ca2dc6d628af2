//! The admin server, on its own listener (loopback by default): metrics, health, the effective
//! config, breaker states, drain, and a status page.
//!
//! | endpoint | what |
//! | --- | --- |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /live` | 200 while the process runs |
//! | `GET /ready` | 200 once every listener is bound and the identity loaded; 503 when draining |
//! | `GET /config` | the effective config, every default filled in, as TOML; then each outbound route's endpoints in use now, as comments |
//! | `GET /breakers` | the breaker of each endpoint in use now: state and window counts, as JSON |
//! | `POST /drain` | stop taking traffic and drain (loopback callers only, with the header `x-sidecar-admin: drain`) |
//! | `GET /status.json` | the figures of the status page, as JSON (see `status.rs`) |
//! | `GET /` | a status page that refreshes itself |

use crate::{
    config::{Config, LimitsConfig},
    proxy::{ClientAddr, ListenerMetrics, Listening, OpenConnections},
    stack::LiveEndpoints,
    transport::{ProxyBody, boxed, local_response},
};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{
    HeaderValue, Method, Request, Response, StatusCode,
    header::{CONTENT_TYPE, HOST},
    uri::Authority,
};
use http_body_util::Full;
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use resilience_breaker::BreakerHandle;
use resilience_core::{LocalReply, Reason};
use resilience_mtls::Credentials;
use resilience_retry::Budget;
use serde::Serialize;
use std::{
    convert::Infallible,
    fmt::Write as _,
    future::Future,
    io,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::{net::TcpListener, sync::watch};

mod page;
mod status;

pub(crate) use status::Transitions;

/// The header `POST /drain` must carry, as `x-sidecar-admin: drain`.
pub(crate) const DRAIN_HEADER: &str = "x-sidecar-admin";
mod process;

/// What the admin server reports on and controls.
#[derive(Debug)]
pub(crate) struct AdminState {
    /// When the sidecar started.
    pub(crate) started: tokio::time::Instant,
    /// The worker threads that serve the listeners.
    pub(crate) workers: usize,
    /// Our identity's certificates, when there is an `[identity]`.
    pub(crate) credentials: Option<Credentials>,
    /// The latest transitions of each breaker, for the status page.
    pub(crate) transitions: Transitions,
    /// Set once the sidecar serves: listeners bound, identity loaded, config valid.
    pub(crate) ready: AtomicBool,
    /// What is being served now; replaced whole on each reload.
    pub(crate) serving: ArcSwap<Serving>,
    /// The Prometheus recorder's handle, when one is installed.
    pub(crate) metrics: Option<PrometheusHandle>,
    /// Asks the sidecar to drain.
    pub(crate) drain: watch::Sender<bool>,
}

/// The config being served and what was built from it.
#[derive(Debug)]
pub(crate) struct Serving {
    /// The effective config.
    pub(crate) config: Config,
    /// Each outbound route's endpoints, as they are now.
    pub(crate) routes: Vec<RouteEndpoints>,
    /// The listeners, by name.
    pub(crate) listeners: Vec<(String, SocketAddr)>,
    /// The metrics of the listeners serving now.
    pub(crate) listener_metrics: Vec<Arc<ListenerMetrics>>,
}

impl Serving {
    /// Marks the metric series of everything still in use as such (see
    /// [`BreakerHandle::touch_metrics`]): the exporter drops only series of what is gone, the
    /// breakers of endpoints that discovery removed, say.
    fn touch_metrics(&self) {
        for breaker in self.breakers() {
            breaker.handle.touch_metrics();
        }
        for metrics in &self.listener_metrics {
            metrics.touch();
        }
    }
}

impl Serving {
    /// Each endpoint's breaker on each route, for the endpoints in use now.
    #[must_use]
    pub(crate) fn breakers(&self) -> Vec<RouteBreaker> {
        self.routes
            .iter()
            .flat_map(|route| {
                route
                    .endpoints
                    .snapshot()
                    .iter()
                    .map(|(endpoint, handle)| RouteBreaker {
                        route: route.route.clone(),
                        endpoint: *endpoint,
                        handle: handle.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The effective config as TOML, followed by each outbound route's endpoints in use now
    /// (found by discovery for `dns:` and `file:` sources), as comments so the text still
    /// loads as a config.
    #[must_use]
    pub(crate) fn config_text(&self) -> String {
        let mut text = self.config.to_toml();
        if !self.routes.is_empty() {
            text.push_str(
                "\n# Endpoints in use now, per outbound route (discovered; not config keys):\n",
            );
            for route in &self.routes {
                let addrs: Vec<String> = route
                    .endpoints
                    .addrs()
                    .iter()
                    .map(|addr| format!("\"{addr}\""))
                    .collect();
                let _ = writeln!(
                    text,
                    "# {} = [{}]",
                    json_string(&route.route),
                    addrs.join(", ")
                );
            }
        }
        text
    }
}

/// The endpoints of one outbound route.
#[derive(Debug, Clone)]
pub(crate) struct RouteEndpoints {
    /// The route.
    pub(crate) route: String,
    /// Its endpoints now, each with its breaker.
    pub(crate) endpoints: LiveEndpoints,
    /// Its retry budget.
    pub(crate) budget: Option<Arc<Budget>>,
}

/// One endpoint's breaker on one route.
#[derive(Debug, Clone)]
pub(crate) struct RouteBreaker {
    /// The route.
    pub(crate) route: String,
    /// The endpoint.
    pub(crate) endpoint: SocketAddr,
    /// Its breaker.
    pub(crate) handle: BreakerHandle,
}

impl AdminState {
    /// Whether the sidecar is draining.
    pub(crate) fn draining(&self) -> bool {
        *self.drain.borrow()
    }

    /// `starting`, `ready` or `draining`.
    pub(crate) fn status(&self) -> &'static str {
        if self.draining() {
            "draining"
        } else if self.ready.load(Ordering::Acquire) {
            "ready"
        } else {
            "starting"
        }
    }
}

/// How often histogram samples are folded into their buckets. The recorder buffers every
/// sample until then, so without it memory grows with traffic between two scrapes (or forever,
/// when nothing scrapes); 5 s is the exporter's own default.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// How often the transitions of the breakers are taken in; the broadcast of each breaker keeps
/// its latest few meanwhile.
const TRANSITIONS_UPKEEP: Duration = Duration::from_secs(1);

/// Serves the admin endpoints on `listener` until `shutdown`, and keeps the metrics recorder's
/// buffers drained meanwhile.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: impl Future<Output = ()>,
    limits: LimitsConfig,
    scope: Scope,
) {
    let name = match scope {
        Scope::All => "admin",
        Scope::Probes => "probes",
    };
    // Its routes answer no WebSocket handshake: no tunnels to count.
    let open = OpenConnections::new(
        metrics::gauge!("sidecar_connections_open", "listener" => name),
        metrics::Gauge::noop(),
    );
    let recorder = state.metrics.clone().filter(|_| scope == Scope::All);
    let kept = state.clone();
    let touched = open.clone();
    // Often enough that nothing in use goes unchanged for a whole idle timeout.
    let period = METRICS_UPKEEP.min(state.serving.load().config.admin.metrics_idle_timeout / 2);
    let upkeep = async move {
        let mut every = tokio::time::interval(TRANSITIONS_UPKEEP);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_metrics_upkeep: Option<tokio::time::Instant> = None;
        loop {
            let now = every.tick().await;
            if scope == Scope::All {
                // Take in what the breakers announced, so the page shows their transitions.
                kept.transitions.refresh(&kept.serving.load().breakers());
            }
            if last_metrics_upkeep.is_some_and(|last| now - last < period) {
                continue;
            }
            last_metrics_upkeep = Some(now);
            touched.touch();
            if let Some(recorder) = &recorder {
                kept.serving.load().touch_metrics();
                recorder.run_upkeep();
            }
        }
    };
    let service = move |client: ClientAddr| {
        let state = state.clone();
        let loopback = client.addr.ip().is_loopback();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let state = state.clone();
            async move {
                Ok::<_, Infallible>(match scope {
                    Scope::All => route(&state, &req, loopback),
                    Scope::Probes => probe(&state, &req),
                })
            }
        })
    };
    let setup = Listening {
        name: name.into(),
        admission: crate::proxy::Admission::evicting_idle(&limits),
        limits,
        grace: Duration::from_secs(1),
        open,
        closed: crate::proxy::OnClosed::default(),
    };
    let server = crate::proxy::serve(setup, listener, || None, service, shutdown);
    tokio::select! {
        () = server => {}
        () = upkeep => {}
    }
}

/// What an admin listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every admin endpoint.
    All,
    /// `GET /live` and `GET /ready` only: the `[admin] probes` listener.
    Probes,
}

/// The probes listener: health only, whatever else is asked.
fn probe<B>(state: &AdminState, req: &Request<B>) -> Response<ProxyBody> {
    match (req.method(), req.uri().path()) {
        // Only GETs reach `route` from here: whether the client is on loopback (for POST
        // /drain) does not matter.
        (&Method::GET, "/live" | "/ready") => route(state, req, false),
        _ => local_response(
            LocalReply::new(Reason::NotFound)
                .text("the probes listener answers GET /live and GET /ready only"),
        ),
    }
}

/// `loopback`: the client connected from a loopback address.
fn route<B>(state: &AdminState, req: &Request<B>, loopback: bool) -> Response<ProxyBody> {
    if !addressed_by_ip_or_localhost(req) {
        // DNS rebinding: a page in a browser on this host can point its own name at
        // 127.0.0.1, but it cannot make the browser send an IP literal or `localhost` as Host.
        return local_response(LocalReply::new(Reason::Unauthorized).text(
            "forbidden: the admin server answers only requests whose Host is an IP address or localhost",
        ));
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/live") => text(StatusCode::OK, "text/plain", "live\n".into()),
        (&Method::GET, "/ready") => {
            if state.draining() {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "draining\n".into(),
                )
            } else if state.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "starting\n".into(),
                )
            }
        }
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics_text(state),
        ),
        (&Method::GET, "/config") => text(
            StatusCode::OK,
            "application/toml",
            state.serving.load().config_text(),
        ),
        (&Method::GET, "/breakers") => {
            text(StatusCode::OK, "application/json", breakers_json(state))
        }
        (&Method::GET, "/status.json") => text(
            StatusCode::OK,
            "application/json",
            serde_json::to_string(&status::status(state)).unwrap_or_default() + "\n",
        ),
        (&Method::POST, "/drain") => {
            // A custom header makes the request non-simple: a web page in a browser on this
            // host cannot send it cross-origin without a preflight we never answer.
            if req.headers().get(DRAIN_HEADER).map(|v| v.as_bytes()) != Some(b"drain") {
                return local_response(
                    LocalReply::new(Reason::BadRequest)
                        .text("bad request: POST /drain needs the header x-sidecar-admin: drain"),
                );
            }
            if !loopback {
                return local_response(
                    LocalReply::new(Reason::Unauthorized)
                        .text("forbidden: drain is accepted from loopback only"),
                );
            }
            tracing::info!("drain requested through the admin server");
            state.drain.send_replace(true);
            text(StatusCode::ACCEPTED, "text/plain", "draining\n".into())
        }
        (&Method::GET, "/") => text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            page::render(state),
        ),
        (
            _,
            "/live" | "/ready" | "/metrics" | "/config" | "/breakers" | "/status.json" | "/drain"
            | "/",
        ) => local_response(
            LocalReply::new(Reason::MethodNotAllowed)
                .text("method not allowed on this admin endpoint"),
        ),
        _ => local_response(LocalReply::new(Reason::NotFound).text("no such admin endpoint")),
    }
}

/// Whether the request names this server by an IP literal or `localhost` (with or without a
/// port), in its URI's authority or its Host header; a request naming neither is refused too.
fn addressed_by_ip_or_localhost<B>(req: &Request<B>) -> bool {
    let authority = match req.uri().authority() {
        Some(authority) => Some(authority.clone()),
        None => {
            let mut hosts = req.headers().get_all(HOST).iter();
            match (hosts.next(), hosts.next()) {
                (Some(host), None) => Authority::try_from(host.as_bytes()).ok(),
                _ => None,
            }
        }
    };
    authority.is_some_and(|authority| {
        let host = authority.host();
        host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok()
            || host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .is_some_and(|h| h.parse::<Ipv6Addr>().is_ok())
    })
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(boxed(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The Prometheus text: everything recorded, after bringing the process gauges up to date.
/// Breaker states are `resilience_breaker_state{name="<route>/<endpoint>"}`, kept by the
/// breakers themselves.
fn metrics_text(state: &AdminState) -> String {
    process::record();
    match &state.metrics {
        Some(handle) => {
            // Fold in what came since the last upkeep, so the scrape is current.
            handle.run_upkeep();
            handle.render()
        }
        None => "# no metrics recorder is installed in this process\n".to_owned(),
    }
}

/// One endpoint's breaker, as `/breakers` lists it.
#[derive(Serialize)]
struct BreakerView<'a> {
    route: &'a str,
    endpoint: SocketAddr,
    state: &'static str,
    calls: u32,
    failures: u32,
    slow: u32,
    failure_rate: f64,
}

fn breakers_json(state: &AdminState) -> String {
    let breakers = state.serving.load().breakers();
    let views: Vec<BreakerView<'_>> = breakers
        .iter()
        .map(|breaker| {
            let counts = breaker.handle.counts();
            BreakerView {
                route: &breaker.route,
                endpoint: breaker.endpoint,
                state: breaker.handle.state().as_str(),
                calls: counts.calls,
                failures: counts.failures,
                slow: counts.slow,
                failure_rate: counts.failure_rate(),
            }
        })
        .collect();
    let mut out = Vec::new();
    let written = views.serialize(&mut serde_json::Serializer::with_formatter(
        &mut out, OnePerLine,
    ));
    match written {
        Ok(()) => String::from_utf8_lossy(&out).into_owned() + "\n",
        Err(error) => format!("{{\"error\": {}}}\n", json_string(&error.to_string())),
    }
}

/// serde_json's compact output with a space after each `:` and `,` in an object, and each
/// element of the outer array on a line of its own: easy to read and to grep.
struct OnePerLine;

impl serde_json::ser::Formatter for OnePerLine {
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if !first {
            w.write_all(b",")?;
        }
        w.write_all(b"\n  ")
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b"\n]")
    }
}

/// A JSON string literal.
pub(crate) fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}
