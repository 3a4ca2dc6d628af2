//! [`Sessions`]: the client's resumable sessions, forgotten whenever our own certificate
//! changes.
//!
//! A TLS 1.3 ticket carries the client certificate of the handshake that issued it, and a
//! resumption hands the server that one again, with fresh tickets that carry it on. So a client
//! that has rotated its certificate goes on showing the old one, for as long as it resumes:
//! once that one expires, or its CA leaves the server's trust, every resumption is refused
//! (the server checks the chain again) while the client keeps offering tickets. Rotation is
//! when to start afresh.

use crate::Credentials;
use rustls::{
    NamedGroup,
    client::{
        ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue,
        Tls13ClientSessionValue,
    },
    pki_types::{CertificateDer, ServerName},
};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// How many servers' sessions are kept.
const SERVERS: usize = 256;

/// The sessions of the certificate in `credentials` now.
#[derive(Debug)]
pub(crate) struct Sessions {
    credentials: Credentials,
    current: Mutex<Current>,
}

#[derive(Debug)]
struct Current {
    /// The credentials' generation last looked at.
    generation: u64,
    /// The certificate the sessions were made with.
    leaf: Option<CertificateDer<'static>>,
    cache: Arc<ClientSessionMemoryCache>,
}

impl Sessions {
    pub(crate) fn new(credentials: Credentials) -> Self {
        let generation = credentials.generation();
        let leaf = leaf(&credentials);
        Self {
            credentials,
            current: Mutex::new(Current {
                generation,
                leaf,
                cache: Arc::new(ClientSessionMemoryCache::new(SERVERS)),
            }),
        }
    }

    /// The sessions of our certificate now: a new, empty store once it has changed (not when
    /// only the trust bundle did: the server's chain is checked again on resumption).
    fn cache(&self) -> Arc<ClientSessionMemoryCache> {
        let generation = self.credentials.generation();
        let mut current = lock(&self.current);
        if current.generation != generation {
            current.generation = generation;
            let now = leaf(&self.credentials);
            if now != current.leaf {
                current.leaf = now;
                current.cache = Arc::new(ClientSessionMemoryCache::new(SERVERS));
            }
        }
        current.cache.clone()
    }

    /// Drops every session kept for `server_name`.
    pub(crate) fn forget(&self, server_name: &ServerName<'static>) {
        let cache = self.cache();
        cache.remove_tls12_session(server_name);
        while cache.take_tls13_ticket(server_name).is_some() {}
    }
}

fn leaf(credentials: &Credentials) -> Option<CertificateDer<'static>> {
    credentials.current().certified_key().cert.first().cloned()
}

fn lock(current: &Mutex<Current>) -> MutexGuard<'_, Current> {
    // Replaced whole, never left half-written.
    current.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ClientSessionStore for Sessions {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.cache().set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.cache().kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.cache().set_tls12_session(server_name, value);
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.cache().tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.cache().remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.cache().insert_tls13_ticket(server_name, value);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.cache().take_tls13_ticket(server_name)
    }
}
