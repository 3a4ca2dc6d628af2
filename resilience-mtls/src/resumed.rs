//! [`verify_resumed`]: a resumed session's peer chain checked again, on either side.

use crate::{FailureReason, HandshakeError, clock::wall_clock};
use rustls::{CommonState, HandshakeKind};
use rustls_pki_types::{CertificateDer, UnixTime};
use std::io;

/// A resumed TLS session carries the peer chain of the handshake that made it, and rustls does
/// not verify it again, on either side: without this, a certificate that has since expired,
/// or whose CA has left the trust bundle, would keep working for as long as its tickets (and
/// each resumption brings new ones). So a resumed session's chain goes through `verify`, with
/// the wall clock's now, as a full handshake's would today. A full handshake passes untouched.
pub(crate) fn verify_resumed(
    conn: &CommonState,
    verify: impl FnOnce(
        &CertificateDer<'_>,
        &[CertificateDer<'_>],
        UnixTime,
    ) -> Result<(), rustls::Error>,
) -> Result<(), HandshakeError> {
    if conn.handshake_kind() != Some(HandshakeKind::Resumed) {
        return Ok(());
    }
    let Some((end_entity, intermediates)) = conn
        .peer_certificates()
        .and_then(|chain| chain.split_first())
    else {
        return Ok(());
    };
    let now = UnixTime::since_unix_epoch(
        wall_clock()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    verify(end_entity, intermediates, now).map_err(|error| {
        HandshakeError::new(
            FailureReason::of_tls(&error),
            io::Error::new(io::ErrorKind::InvalidData, error),
        )
    })
}
