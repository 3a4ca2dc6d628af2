//! The metrics this crate records, through the `metrics` facade.
//!
//! | name | kind | labels |
//! | --- | --- | --- |
//! | `resilience_mtls_handshakes_total` | counter | `side` (`server`, `client`, and `origin` for TLS to a server outside the mesh), `result` (`ok`, `error`), `reason` (a [`FailureReason`], or `full` / `resumed` when ok) |
//! | `resilience_mtls_cert_expiry_seconds` | gauge | `identity`: seconds until our certificate expires |
//! | `resilience_mtls_origin_cert_not_after_timestamp_seconds` | gauge | `server_name`: when the client certificate an [`OriginConnector`](crate::OriginConnector) presents to that server expires, in seconds since the Unix epoch (set when its files are read) |
//! | `resilience_mtls_crl_next_update_seconds` | gauge | `issuer`: seconds until a revocation list's next update is due (below zero once it is overdue) |
//! | `resilience_mtls_reloads_total` | counter | `result` (`ok`, `error`): our material's files read again by a [`Rotation`](crate::Rotation) |
//! | `resilience_mtls_origin_reloads_total` | counter | `server_name`, `result` (`ok`, `error`): an [`OriginConnector`](crate::OriginConnector)'s files read again |
//! | `resilience_mtls_denied_total` | counter | `mode` (`enforce`, `shadow`): requests refused by [`Authorize`](crate::Authorize), or that it would refuse in shadow mode |

use crate::{FailureReason, Material};
use std::time::SystemTime;

/// Counter: TLS handshakes by side, result and reason.
pub const HANDSHAKES: &str = "resilience_mtls_handshakes_total";
/// Gauge: seconds until our certificate expires.
pub const CERT_EXPIRY: &str = "resilience_mtls_cert_expiry_seconds";
/// Gauge: when an origin's client certificate expires, in seconds since the Unix epoch.
pub const ORIGIN_CERT_NOT_AFTER: &str = "resilience_mtls_origin_cert_not_after_timestamp_seconds";
/// Gauge: seconds until a revocation list's next update is due, negative once overdue.
pub const CRL_NEXT_UPDATE: &str = "resilience_mtls_crl_next_update_seconds";
/// Counter: reloads of certificate material by result.
pub const RELOADS: &str = "resilience_mtls_reloads_total";
/// Counter: an origin connector's files read again, by server name and result.
pub const ORIGIN_RELOADS: &str = "resilience_mtls_origin_reloads_total";
/// Counter: requests refused by the authorization layer.
pub const DENIED: &str = "resilience_mtls_denied_total";

pub(crate) fn handshake_ok(side: &'static str, resumed: bool) {
    let kind = if resumed { "resumed" } else { "full" };
    metrics::counter!(HANDSHAKES, "side" => side, "result" => "ok", "reason" => kind).increment(1);
}

pub(crate) fn handshake_failed(side: &'static str, reason: FailureReason) {
    metrics::counter!(HANDSHAKES, "side" => side, "result" => "error", "reason" => reason.as_str())
        .increment(1);
}

pub(crate) fn cert_expiry(material: &Material, now: SystemTime) {
    metrics::gauge!(CERT_EXPIRY, "identity" => material.identity().to_string())
        .set(material.expires_in(now).as_secs_f64());
}

pub(crate) fn origin_cert_not_after(server_name: &str, not_after: SystemTime) {
    let seconds = match not_after.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    };
    metrics::gauge!(ORIGIN_CERT_NOT_AFTER, "server_name" => server_name.to_owned()).set(seconds);
}

pub(crate) fn crl_next_update(list: &crate::RevocationList, now: SystemTime) {
    let Some(next) = list.next_update() else {
        return;
    };
    let seconds = match next.duration_since(now) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(behind) => -behind.duration().as_secs_f64(),
    };
    metrics::gauge!(CRL_NEXT_UPDATE, "issuer" => list.issuer().to_owned()).set(seconds);
}

pub(crate) fn reload(ok: bool) {
    let result = if ok { "ok" } else { "error" };
    metrics::counter!(RELOADS, "result" => result).increment(1);
}

pub(crate) fn origin_reload(server_name: &str, ok: bool) {
    let result = if ok { "ok" } else { "error" };
    metrics::counter!(ORIGIN_RELOADS, "server_name" => server_name.to_owned(), "result" => result)
        .increment(1);
}

pub(crate) fn denied(enforcement: resilience_core::Enforcement) {
    metrics::counter!(DENIED, "mode" => enforcement.as_str()).increment(1);
}
