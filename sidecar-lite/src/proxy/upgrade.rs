//! WebSocket over HTTP/1.1 (RFC 6455): the handshakes the edge passes on with their `Upgrade`,
//! and the tunnel a client's connection becomes once the upstream has answered `101`.
//!
//! Only `websocket` goes through, on a `GET` without a body, as Envoy's `upgrade_configs` and
//! Linkerd do by default. Any other upgrade (`h2c` above all: a client that upgrades past the
//! proxy talks to the app unchecked) loses its `Upgrade` as hop-by-hop, as every request did
//! before. The connection becomes a tunnel only when the upstream answered `101` on a
//! connection that switched: a handshake the app refuses leaves the client's connection HTTP,
//! and a `101` to a request that asked for nothing is a `502`.
//!
//! The tunnel runs in the task of the client's connection, after hyper has let go of it: it
//! still counts against the listener's connection limits, is closed when no byte has moved
//! either way for `idle_timeout`, and is cut at the end of a drain, as any connection is.

use super::{access_log::PendingLine, activity::Activity};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version,
    header::{CONNECTION, UPGRADE},
};
use hyper::{body::Body, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

/// The only protocol the edge upgrades to.
const WEBSOCKET: &str = "websocket";

/// A connection's place for the tunnel it may become: filled by the edge when it passes a
/// `101` on, taken by the connection's task once hyper has let go of the connection.
#[derive(Debug, Default)]
pub(super) struct TunnelSlot(Mutex<Option<Tunnel>>);

impl TunnelSlot {
    pub(super) fn take(&self) -> Option<Tunnel> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// The two halves of a tunnel, each handed over by hyper once its side has switched, and the
/// handshake's access-log line, sent when the tunnel ends.
#[derive(Debug)]
pub(super) struct Tunnel {
    client: OnUpgrade,
    upstream: OnUpgrade,
    line: Option<PendingLine>,
}

/// A request's claim on its client connection, for the edge: hyper's hand-over of the
/// connection, and the connection's slot for the tunnel. `Clone` as extensions must be; the
/// edge takes it out before anything could copy the request.
#[derive(Debug, Clone)]
pub(super) struct ClientUpgrade {
    on_upgrade: OnUpgrade,
    slot: Arc<TunnelSlot>,
}

impl ClientUpgrade {
    /// Replaces hyper's hand-over in a request that names an upgrade (hyper gives one to every
    /// HTTP/1.1 request with `Upgrade`) with a claim that knows the connection's `slot`.
    pub(super) fn mark<B>(req: &mut Request<B>, slot: &Arc<TunnelSlot>) {
        // Most requests carry no extension at all: nothing to look up.
        if req.extensions().is_empty() {
            return;
        }
        if let Some(on_upgrade) = req.extensions_mut().remove::<OnUpgrade>() {
            req.extensions_mut().insert(Self {
                on_upgrade,
                slot: slot.clone(),
            });
        }
    }

    /// The claim of a request the edge passes on as a WebSocket handshake, with its hop-by-hop
    /// headers still there; any other request loses its claim here, so that nothing below the
    /// edge holds the client's connection.
    pub(super) fn take_websocket<B: Body>(req: &mut Request<B>) -> Option<Self> {
        if req.extensions().is_empty() {
            return None;
        }
        let claim = req.extensions_mut().remove::<Self>()?;
        is_websocket_handshake(req).then_some(claim)
    }

    /// The response to pass on for `response`, the answer to the handshake: a `101` from a
    /// connection that switched becomes this connection's tunnel, and says so in its own
    /// hop-by-hop headers (the edge stripped the upstream's), and takes the request's access-log
    /// `line`, to send when the tunnel ends; any other answer leaves the connection HTTP.
    /// `Err` for a `101` that cannot be a tunnel.
    pub(super) fn answer<B>(
        self,
        response: &mut Response<B>,
        line: &mut Option<PendingLine>,
    ) -> Result<(), UnaskedSwitch> {
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(());
        }
        let upstream = response
            .extensions_mut()
            .remove::<OnUpgrade>()
            .ok_or(UnaskedSwitch)?;
        ask_for_websocket(response.headers_mut());
        let mut line = line.take();
        if let Some(line) = &mut line {
            line.head(response);
        }
        *self.slot.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Tunnel {
            client: self.on_upgrade,
            upstream,
            line,
        });
        Ok(())
    }
}

/// An upstream answered `101` to a request the edge did not pass on as an upgrade, or on a
/// connection that did not switch: nothing can be tunnelled, and the answer is a `502`.
#[derive(Debug, Clone, Copy)]
pub(super) struct UnaskedSwitch;

/// Whether `req` is a WebSocket opening handshake (RFC 6455 section 4.1): HTTP/1.1, `GET`
/// without a body, `Connection` naming `upgrade` and `Upgrade` naming `websocket`.
fn is_websocket_handshake<B: Body>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.method() == Method::GET
        && req.body().is_end_stream()
        && names(req.headers(), &CONNECTION, "upgrade")
        && names(req.headers(), &UPGRADE, WEBSOCKET)
}

/// Whether a comma-separated list in `name`'s fields has `token`, in any case. A protocol's
/// version (`websocket/13`) is another protocol.
fn names(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Sets the hop-by-hop headers of a WebSocket handshake or its `101`, after the edge has
/// stripped the ones that came.
pub(super) fn ask_for_websocket(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static(WEBSOCKET));
}

impl Tunnel {
    /// Carries bytes both ways until both sides have closed, one fails, or no byte has moved
    /// either way for `idle`. The tunnel is in flight for the connection's `activity` while
    /// it lasts: never idle, so never evicted for a newcomer; only silence closes it.
    pub(super) async fn run(
        self,
        listener: &str,
        remote: SocketAddr,
        activity: &Arc<Activity>,
        idle: Duration,
    ) {
        let _in_flight = activity.start(Version::HTTP_11);
        let Self {
            client,
            upstream,
            line,
        } = self;
        let carry = async {
            let (client, upstream) = futures::future::try_join(client, upstream).await?;
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            let carried = tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(carried)
        };
        tokio::pin!(carry);
        loop {
            tokio::select! {
                biased;
                carried = carry.as_mut() => {
                    match carried {
                        Ok((from_client, to_client)) => {
                            if let Some(line) = line {
                                line.tunnelled(from_client, to_client);
                            }
                        }
                        Err(error) => {
                            tracing::debug!(listener, %remote, %error, "tunnel ended with an error");
                        }
                    }
                    return;
                }
                () = tokio::time::sleep_until(activity.next_check(idle, idle)) => {
                    if activity.silent(idle, idle).is_some() {
                        metrics::counter!("sidecar_connections_closed_idle_total", "listener" => listener.to_owned(), "reason" => "tunnel-idle")
                            .increment(1);
                        tracing::debug!(listener, %remote, "closing an idle tunnel");
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn handshake(headers: &[(&'static str, &'static str)]) -> Request<Full<&'static [u8]>> {
        let mut req = Request::get("/chat").body(Full::new(&b""[..])).unwrap();
        for (name, value) in headers {
            req.headers_mut()
                .append(*name, HeaderValue::from_static(value));
        }
        req
    }

    #[test]
    fn a_websocket_handshake_is_told_by_its_connection_and_upgrade_tokens() {
        let yes = [
            vec![("connection", "Upgrade"), ("upgrade", "websocket")],
            vec![
                ("connection", "keep-alive, upgrade"),
                ("upgrade", "WebSocket"),
            ],
            vec![
                ("connection", "keep-alive"),
                ("connection", "upgrade"),
                ("upgrade", "foo, websocket"),
            ],
        ];
        for headers in yes {
            assert!(is_websocket_handshake(&handshake(&headers)), "{headers:?}");
        }
        let no = [
            vec![("upgrade", "websocket")],
            vec![("connection", "upgrade")],
            vec![("connection", "upgrade"), ("upgrade", "h2c")],
            vec![("connection", "upgrade"), ("upgrade", "websocket/13")],
            vec![("connection", "upgrades"), ("upgrade", "websocket")],
        ];
        for headers in no {
            assert!(!is_websocket_handshake(&handshake(&headers)), "{headers:?}");
        }
    }

    #[test]
    fn only_a_get_without_a_body_in_http_1_1_is_a_handshake() {
        let headers = [("connection", "upgrade"), ("upgrade", "websocket")];
        let mut post = handshake(&headers);
        *post.method_mut() = Method::POST;
        assert!(!is_websocket_handshake(&post));
        let mut with_body = handshake(&headers);
        *with_body.body_mut() = Full::new(&b"x"[..]);
        assert!(!is_websocket_handshake(&with_body));
        let mut http10 = handshake(&headers);
        *http10.version_mut() = Version::HTTP_10;
        assert!(!is_websocket_handshake(&http10));
    }
}
