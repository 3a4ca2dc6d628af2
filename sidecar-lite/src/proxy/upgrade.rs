//! WebSocket over HTTP/1.1 (RFC 6455): the handshakes the edge passes on with their `Upgrade`,
//! and the tunnel a client's connection becomes once the upstream has answered `101`.
//!
//! Only `websocket` goes through, on a `GET` without a body, as Envoy's `upgrade_configs` and
//! Linkerd do by default. Any other upgrade (`h2c` above all: a client that upgrades past the
//! proxy talks to the app unchecked) loses its `Upgrade` as hop-by-hop, as every request did
//! before. The connection becomes a tunnel only when the upstream answered `101` on a
//! connection that switched, naming `websocket` and accepting the handshake's key
//! (`Sec-WebSocket-Accept`, RFC 6455 section 4.2.2): a handshake the app refuses leaves the
//! client's connection HTTP, and any other `101` (to a request that asked for nothing, or one
//! that did not accept this handshake) is a `502`, never a raw pipe to the app.
//!
//! The tunnel runs in the task of the client's connection, after hyper has let go of it: it
//! still counts against the listener's connection limits, is closed when no byte has moved
//! either way for `idle_timeout`, and is cut at the end of a drain, as any connection is.

use super::{access_log::PendingLine, activity::Activity, headers::strip_hop_by_hop};
use base64::Engine;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Version,
    header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE},
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
/// What a server appends to the key before hashing it into `Sec-WebSocket-Accept`.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

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
    /// The handshake's `Sec-WebSocket-Key`, once the edge has found it to be one.
    key: Option<HeaderValue>,
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
                key: None,
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
        let key = websocket_key(req)?.clone();
        Some(Self {
            key: Some(key),
            ..claim
        })
    }

    /// Passes on `response`, the upstream's `101` to the handshake, as this connection's
    /// tunnel: it must come from a connection that switched, name `websocket` and accept this
    /// handshake's key. Its hop-by-hop headers are the tunnel's own, and it takes the
    /// request's access-log `line`, to send when the tunnel ends.
    pub(super) fn switch<B>(
        self,
        response: &mut Response<B>,
        line: &mut Option<PendingLine>,
    ) -> Result<(), BadSwitch> {
        let accepted = self.key.as_ref().is_some_and(|key| {
            response
                .headers()
                .get(SEC_WEBSOCKET_ACCEPT)
                .is_some_and(|accept| accept.as_bytes() == accept_for(key).as_bytes())
        });
        if !names(response.headers(), &UPGRADE, WEBSOCKET) || !accepted {
            return Err(BadSwitch::NotThisHandshake);
        }
        let upstream = response
            .extensions_mut()
            .remove::<OnUpgrade>()
            .ok_or(BadSwitch::Unasked)?;
        // A `101` has no body: whatever it says of its framing goes with the other
        // hop-by-hop headers.
        let _ = strip_hop_by_hop(response.headers_mut());
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

/// A `101` that cannot become a tunnel, answered `502` instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BadSwitch {
    /// To a request the edge did not pass on as a handshake, or on a connection that did not
    /// switch.
    Unasked,
    /// Not naming `websocket`, or not accepting the handshake's key.
    NotThisHandshake,
}

impl BadSwitch {
    pub(super) fn text(self) -> &'static str {
        match self {
            Self::Unasked => {
                "bad gateway: the upstream switched protocols, which the request did not ask for"
            }
            Self::NotThisHandshake => {
                "bad gateway: the upstream's 101 did not accept this WebSocket handshake"
            }
        }
    }
}

/// The `Sec-WebSocket-Accept` a server answers `key` with (RFC 6455 section 4.2.2): the
/// base64 of the SHA-1 of the key and the protocol's GUID.
fn accept_for(key: &HeaderValue) -> String {
    let mut sha1 = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    sha1.update(key.as_bytes());
    sha1.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha1.finish())
}

/// The key of `req` if it is a WebSocket opening handshake (RFC 6455 section 4.1): HTTP/1.1,
/// `GET` without a body, `Connection` naming `upgrade`, `Upgrade` naming `websocket`, and one
/// `Sec-WebSocket-Key`.
fn websocket_key<B: Body>(req: &Request<B>) -> Option<&HeaderValue> {
    let handshake = req.version() == Version::HTTP_11
        && req.method() == Method::GET
        && req.body().is_end_stream()
        && names(req.headers(), &CONNECTION, "upgrade")
        && names(req.headers(), &UPGRADE, WEBSOCKET);
    let mut keys = req.headers().get_all(SEC_WEBSOCKET_KEY).iter();
    match (handshake, keys.next(), keys.next()) {
        (true, Some(key), None) => Some(key),
        _ => None,
    }
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
        // However the tunnel ends (both sides closed, an error, silence, or cut by the drain,
        // which drops this future), its line says what it carried.
        let _line = line.map(|line| TunnelLine {
            line: Some(line),
            activity: activity.clone(),
            at_start: activity.bytes(),
        });
        let carry = async {
            let (client, upstream) = futures::future::try_join(client, upstream).await?;
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        };
        tokio::pin!(carry);
        loop {
            tokio::select! {
                biased;
                carried = carry.as_mut() => {
                    if let Err(error) = carried {
                        tracing::debug!(listener, %remote, %error, "tunnel ended with an error");
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

/// A tunnel's access-log line, sent when it is dropped with the bytes the client's connection
/// moved each way since the tunnel started.
struct TunnelLine {
    line: Option<PendingLine>,
    activity: Arc<Activity>,
    at_start: (u64, u64),
}

impl Drop for TunnelLine {
    fn drop(&mut self) {
        let (read, written) = self.activity.bytes();
        if let Some(line) = self.line.take() {
            line.tunnelled(
                read.wrapping_sub(self.at_start.0),
                written.wrapping_sub(self.at_start.1),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn handshake(headers: &[(&'static str, &'static str)]) -> Request<Full<&'static [u8]>> {
        let mut req = Request::get("/chat").body(Full::new(&b""[..])).unwrap();
        req.headers_mut().insert(
            SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
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
            assert!(websocket_key(&handshake(&headers)).is_some(), "{headers:?}");
        }
        let no = [
            vec![("upgrade", "websocket")],
            vec![("connection", "upgrade")],
            vec![("connection", "upgrade"), ("upgrade", "h2c")],
            vec![("connection", "upgrade"), ("upgrade", "websocket/13")],
            vec![("connection", "upgrades"), ("upgrade", "websocket")],
        ];
        for headers in no {
            assert!(websocket_key(&handshake(&headers)).is_none(), "{headers:?}");
        }
    }

    #[test]
    fn only_a_get_without_a_body_in_http_1_1_is_a_handshake() {
        let headers = [("connection", "upgrade"), ("upgrade", "websocket")];
        let mut post = handshake(&headers);
        *post.method_mut() = Method::POST;
        assert!(websocket_key(&post).is_none());
        let mut with_body = handshake(&headers);
        *with_body.body_mut() = Full::new(&b"x"[..]);
        assert!(websocket_key(&with_body).is_none());
        let mut http10 = handshake(&headers);
        *http10.version_mut() = Version::HTTP_10;
        assert!(websocket_key(&http10).is_none());
        let mut keyless = handshake(&headers);
        keyless.headers_mut().remove(SEC_WEBSOCKET_KEY);
        assert!(websocket_key(&keyless).is_none());
        let mut two_keys = handshake(&headers);
        two_keys.headers_mut().append(
            SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("b3RoZXIga2V5IGhlcmU="),
        );
        assert!(websocket_key(&two_keys).is_none());
    }

    #[test]
    fn the_accept_of_a_key_is_rfc_6455s() {
        // The example of RFC 6455 section 1.3.
        let key = HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(accept_for(&key), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
