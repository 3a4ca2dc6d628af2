//! Mutual TLS for [tower] and [hyper] services, built on [rustls]: SPIFFE workload identities,
//! authorization by identity, and certificate rotation without dropping connections.
//!
//! ```
//! use resilience_mtls::{dev_ca::DevCa, Credentials, Identity, MtlsAcceptor, MtlsConnector};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // Two workloads with certificates from one (development) CA.
//! let ca = DevCa::new("example.org")?;
//! let server = Credentials::new(ca.workload("ns/shop/sa/orders")?.material(ca.trust_pem())?);
//! let client = Credentials::new(ca.workload("ns/shop/sa/frontend")?.material(ca.trust_pem())?);
//!
//! // The server: strict mutual TLS; each connection comes with the client's identity.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let acceptor = MtlsAcceptor::new(&server);
//! let serving = tokio::spawn(async move {
//!     let (tcp, _) = listener.accept().await?;
//!     let mut stream = acceptor.accept(tcp).await?;
//!     let peer = stream.peer_identity().cloned();
//!     stream.write_all(b"hello").await?;
//!     stream.shutdown().await?;
//!     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(peer)
//! });
//!
//! // The client: dials an address, but accepts only the identity it expects.
//! let expected: Identity = "spiffe://example.org/ns/shop/sa/orders".parse()?;
//! let connector = MtlsConnector::new(&client, expected);
//! let tcp = tokio::net::TcpStream::connect(addr).await?;
//! let mut tls = connector.handshake("localhost".try_into()?, tcp).await?;
//! let mut reply = Vec::new();
//! tls.read_to_end(&mut reply).await?;
//! assert_eq!(reply, b"hello");
//!
//! let peer = serving.await??.expect("a verified client identity");
//! assert_eq!(peer.to_string(), "spiffe://example.org/ns/shop/sa/frontend");
//! # Ok(())
//! # }
//! ```
//!
//! # Parts
//!
//! - [`Identity`]: a SPIFFE ID from a certificate's URI SAN, or else a DNS name from its DNS
//!   SAN; [`IdentityPattern`] and [`AllowList`] say whom to admit, with `*` for one segment.
//! - [`Material`]: our certificate chain, key and trust bundle, loaded from PEM files and
//!   checked, with errors that name the file at fault ([`MaterialError`]). Keys in PKCS#8,
//!   PKCS#1 and SEC1 form; RSA, ECDSA P-256/P-384 and Ed25519; chains with intermediates.
//! - [`Credentials`]: the current material, swapped atomically; [`Rotation`] re-reads the
//!   files when they change (a file watch, and polling as a fallback), checks them, and swaps
//!   them in. New handshakes use the new material; live connections are untouched.
//! - [`MtlsAcceptor`]: the server side, in [`MtlsMode::Strict`], [`MtlsMode::Permissive`]
//!   (TLS and plaintext on one port) or [`MtlsMode::Disabled`] mode; it yields an
//!   [`MtlsStream`] with the peer's identity.
//! - [`MtlsConnector`]: the client side, a connector for hyper-util's `Client` that presents
//!   our certificate and accepts only a server with the expected identity.
//! - [`AddPeerIdentityLayer`] puts the connection's peer identity into each request;
//!   [`AuthorizeLayer`] answers peers that are not on the allow-list with `403 Forbidden` and
//!   `x-sidecar-error: unauthorized`.
//! - [`dev_ca`] (feature `dev-ca`): a development CA that issues workload certificates with
//!   SPIFFE IDs, for tests, examples and `sidecar-lite certs`; off by default, so a service
//!   does not compile rcgen.
//! - [`metrics`]: handshakes by result and failure reason, seconds until our certificate
//!   expires (and a warning log once less than 20 % of its lifetime remains), reloads, denials.
//!
//! TLS 1.3 is the default, TLS 1.2 an opt-in; ALPN offers `h2` and `http/1.1`; sessions are
//! resumed (server tickets and session cache, client session store), and a resumed session's
//! peer chain is checked again on both sides (see [`MtlsConnector`]). All cryptography comes
//! from rustls' *ring* provider.
//!
//! # Config (feature `serde`)
//!
//! [`IdentityConfig`] is the `[identity]` section of a `sidecar-lite` config file; [`MtlsMode`]
//! and [`AllowList`] deserialize from the `mtls` and `allow` keys of its `[inbound]` section.
//!
//! How this crate fits with the others: `ARCHITECTURE.md` at the root of the workspace's
//! repository.
//!
//! [tower]: https://docs.rs/tower
//! [hyper]: https://docs.rs/hyper
//! [rustls]: https://docs.rs/rustls

#![cfg_attr(docsrs, feature(doc_cfg))]

mod allow;
mod authz;
mod client;
mod clock;
mod credentials;
mod error;
mod identity;
mod material;
mod origin;
mod resumed;
mod revocation;
mod rotation;
mod server;
mod sessions;
mod stream;
mod trust;
mod verifier;

#[cfg(feature = "dev-ca")]
pub mod dev_ca;
pub mod metrics;

#[cfg(feature = "serde")]
mod config;

pub use allow::AllowList;
pub use authz::{
    AddPeerIdentity, AddPeerIdentityLayer, Authorize, AuthorizeBody, AuthorizeFuture,
    AuthorizeLayer,
};
pub use client::{ConnectFuture, ConnectorBuilder, MtlsConnection, MtlsConnector, TlsInfo};
pub use credentials::Credentials;
pub use error::{FailureReason, HandshakeError, IdentityError, IdentityMismatch, MaterialError};
pub use identity::{Identity, IdentityPattern, SpiffeId};
pub use material::{Material, MaterialPaths};
pub use origin::{OriginConnector, OriginPaths};
pub use resilience_core::{BoxError, Enforcement, SIDECAR_ERROR};
pub use revocation::RevocationList;
pub use rotation::{Rotation, RotationHandle, RotationStatus};
pub use server::{AcceptorBuilder, MtlsAcceptor, MtlsMode};
pub use stream::{MtlsStream, Rewind};
pub use trust::UnknownTrustDomain;

#[cfg(feature = "serde")]
pub use config::IdentityConfig;

/// The crypto provider for everything in this crate: rustls' *ring* provider.
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<std::sync::Arc<rustls::crypto::CryptoProvider>> =
        std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The README's example (the same as the first one above), compiled as a doctest so that it
/// cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
