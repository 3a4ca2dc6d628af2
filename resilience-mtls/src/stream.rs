//! [`MtlsStream`]: an accepted connection, TLS or plaintext, with the peer's identity.

use crate::Identity;
use rustls::ServerConnection;
use rustls_pki_types::CertificateDer;
use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;

/// An I/O stream that first yields the byte that was read to tell TLS from plaintext.
#[derive(Debug)]
pub struct Rewind<IO> {
    first: Option<u8>,
    inner: IO,
}

impl<IO> Rewind<IO> {
    pub(crate) fn new(inner: IO, first: Option<u8>) -> Self {
        Self { first, inner }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &IO {
        &self.inner
    }

    /// The underlying stream, mutably.
    pub fn get_mut(&mut self) -> &mut IO {
        &mut self.inner
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() > 0
            && let Some(byte) = self.first.take()
        {
            buf.put_slice(&[byte]);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An accepted connection: TLS with a verified peer identity, or plaintext (permissive and
/// disabled modes) with none.
///
/// Put the identity into each request with
/// [`AddPeerIdentityLayer`](crate::AddPeerIdentityLayer) so that
/// [`Authorize`](crate::Authorize) can check it.
#[derive(Debug)]
pub struct MtlsStream<IO> {
    inner: Inner<IO>,
    identity: Option<Identity>,
}

#[derive(Debug)]
enum Inner<IO> {
    Tls(Box<TlsStream<Rewind<IO>>>),
    Plain(Rewind<IO>),
}

impl<IO> MtlsStream<IO> {
    pub(crate) fn tls(stream: TlsStream<Rewind<IO>>, identity: Identity) -> Self {
        Self {
            inner: Inner::Tls(Box::new(stream)),
            identity: Some(identity),
        }
    }

    pub(crate) fn plain(stream: Rewind<IO>) -> Self {
        Self {
            inner: Inner::Plain(stream),
            identity: None,
        }
    }

    /// The verified identity of the peer; `None` for plaintext.
    #[must_use]
    pub fn peer_identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// Whether the connection is TLS.
    #[must_use]
    pub fn is_tls(&self) -> bool {
        matches!(self.inner, Inner::Tls(_))
    }

    /// The rustls connection state, for TLS connections.
    #[must_use]
    pub fn tls_connection(&self) -> Option<&ServerConnection> {
        match &self.inner {
            Inner::Tls(tls) => Some(tls.get_ref().1),
            Inner::Plain(_) => None,
        }
    }

    /// The ALPN protocol agreed in the handshake (`h2`, `http/1.1`), if any.
    #[must_use]
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.tls_connection().and_then(|c| c.alpn_protocol())
    }

    /// The peer's certificate chain, leaf first, for TLS connections.
    #[must_use]
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.tls_connection().and_then(|c| c.peer_certificates())
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &IO {
        match &self.inner {
            Inner::Tls(tls) => tls.get_ref().0.get_ref(),
            Inner::Plain(plain) => plain.get_ref(),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for MtlsStream<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
            Inner::Plain(plain) => Pin::new(plain).poll_read(cx, buf),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MtlsStream<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.inner {
            Inner::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
            Inner::Plain(plain) => Pin::new(plain).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.inner {
            Inner::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
            Inner::Plain(plain) => Pin::new(plain).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Inner::Tls(tls) => tls.is_write_vectored(),
            Inner::Plain(plain) => plain.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
            Inner::Plain(plain) => Pin::new(plain).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
            Inner::Plain(plain) => Pin::new(plain).poll_shutdown(cx),
        }
    }
}
