//! [`PerCertificate`]: the client's TLS config for the certificate it has now, each
//! certificate with resumable sessions of its own.
//!
//! A TLS 1.3 ticket carries the client certificate of the handshake that issued it, and a
//! resumption hands the server that one again, with fresh tickets that carry it on. So a client
//! that has rotated its certificate would go on showing the old one for as long as it resumes:
//! once that one expires, or its CA leaves the server's trust, every resumption is refused
//! (the server checks the chain again) while the client keeps offering tickets. So each
//! certificate gets a config and a session store of its own: a handshake made with the old
//! certificate, even one that ends after the rotation, leaves its tickets in the old store,
//! which nothing reads again.

use crate::Credentials;
use rustls::{
    ClientConfig,
    client::{ClientSessionMemoryCache, ClientSessionStore, Resumption},
    pki_types::{CertificateDer, ServerName},
};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio_rustls::TlsConnector;

/// How many servers' sessions are kept, per certificate.
const SERVERS: usize = 256;

/// The connector for the certificate in `credentials` now.
pub(crate) struct PerCertificate {
    credentials: Credentials,
    /// Everything but the session store.
    config: ClientConfig,
    resumption: bool,
    current: Mutex<Current>,
}

struct Current {
    /// The credentials' generation last looked at.
    generation: u64,
    /// The certificate the connector's sessions are made with.
    leaf: Option<CertificateDer<'static>>,
    tls: Tls,
}

/// A connector, and the store of its sessions (`None` with resumption off).
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) connector: TlsConnector,
    sessions: Option<Arc<ClientSessionMemoryCache>>,
}

impl Tls {
    /// Drops every session kept for `server_name`.
    pub(crate) fn forget(&self, server_name: &ServerName<'static>) {
        if let Some(sessions) = &self.sessions {
            sessions.remove_tls12_session(server_name);
            while sessions.take_tls13_ticket(server_name).is_some() {}
        }
    }
}

impl PerCertificate {
    pub(crate) fn new(credentials: Credentials, config: ClientConfig, resumption: bool) -> Self {
        let generation = credentials.generation();
        let leaf = leaf(&credentials);
        let tls = make(&config, resumption);
        Self {
            credentials,
            config,
            resumption,
            current: Mutex::new(Current {
                generation,
                leaf,
                tls,
            }),
        }
    }

    /// The connector for our certificate now: a new one, with no sessions, once it has
    /// changed (not when only the trust bundle did: a resumed server chain is checked again).
    pub(crate) fn current(&self) -> Tls {
        let generation = self.credentials.generation();
        let mut current = lock(&self.current);
        if current.generation != generation {
            current.generation = generation;
            let now = leaf(&self.credentials);
            if now != current.leaf {
                current.leaf = now;
                current.tls = make(&self.config, self.resumption);
            }
        }
        current.tls.clone()
    }
}

fn make(config: &ClientConfig, resumption: bool) -> Tls {
    let sessions = resumption.then(|| Arc::new(ClientSessionMemoryCache::new(SERVERS)));
    let mut config = config.clone();
    config.resumption = match &sessions {
        Some(sessions) => Resumption::store(sessions.clone()),
        None => Resumption::disabled(),
    };
    Tls {
        connector: TlsConnector::from(Arc::new(config)),
        sessions,
    }
}

fn leaf(credentials: &Credentials) -> Option<CertificateDer<'static>> {
    credentials.current().certified_key().cert.first().cloned()
}

fn lock(current: &Mutex<Current>) -> MutexGuard<'_, Current> {
    // Replaced whole, never left half-written.
    current.lock().unwrap_or_else(PoisonError::into_inner)
}
