//! Runs a validated config: credentials, listeners, stacks, the admin server, hot reload, and
//! a graceful stop.
//!
//! Each listener has one swap cell, a [`SharedListenerState`]: its stack, TLS acceptor and
//! tracer. A reload builds every new stack first (a bad config changes nothing; a listener
//! whose config it leaves as it is keeps its stack), then stores a new state in each cell.
//! Requests in flight finish on the stack they started on; live connections pick up the new
//! stack with their next request. Listeners whose address changed, or whose route is gone,
//! drain; new ones are bound (or take the sockets of the listener that held their address).

mod binary;
mod signals;
mod telemetry;
mod workers;

use crate::{
    admin::{AdminState, RouteEndpoints, Scope, Serving, Transitions},
    config::{Config, InboundConfig, OutboundConfig},
    proxy::{
        AccessLog, Admission, EdgeBody, EdgeTracer, InboundRules, ListenerMetrics, ListenerState,
        Listening, OnClosed, SharedListenerState, edge, serve,
    },
    stack::{self, StackService},
};
use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use resilience_core::BoxError;
use resilience_mtls::{
    Credentials, IdentityConfig, Material, MtlsAcceptor, MtlsMode, RotationHandle,
};
use signals::{Hangups, StopSignals};
use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};
use telemetry::Telemetry;
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use workers::Workers;

/// How long a stop waits for the access log to be written out.
const ACCESS_LOG_FLUSH: Duration = Duration::from_secs(2);

/// How often the config file is checked for changes.
const CONFIG_POLL: Duration = Duration::from_secs(1);

/// The addresses the sidecar listens on (useful with port 0 in tests).
#[derive(Debug, Clone, Default)]
pub struct Bound {
    /// The inbound listener, if any.
    pub inbound: Option<SocketAddr>,
    /// Each outbound route's listener, by route name.
    pub outbound: Vec<(String, SocketAddr)>,
    /// The admin listener.
    pub admin: Option<SocketAddr>,
    /// The probes listener (`[admin] probes`), if any.
    pub probes: Option<SocketAddr>,
}

/// A running sidecar: reload it with [`Sidecar::reload`], stop it with [`Sidecar::stop`], or
/// drop it to stop at once.
#[derive(Debug)]
pub struct Sidecar {
    /// Where it listens.
    pub bound: Bound,
    config: Config,
    admin: Arc<AdminState>,
    listeners: HashMap<String, Listener>,
    credentials: Option<Credentials>,
    tasks: JoinSet<()>,
    workers: Workers,
    telemetry: Option<Telemetry>,
    access_log: Option<AccessLog>,
    /// The watch of the identity files, replaced when a reload changes which they are.
    rotation: Option<RotationHandle>,
}

/// One serving listener: its address, its swap cell, its own stop switch, and its metrics.
#[derive(Debug)]
struct Listener {
    addr: SocketAddr,
    /// Its workers' sockets, duplicated: a reload that gives its address to another listener
    /// (a route renamed, or two that swap ports) hands these over, with the connections
    /// waiting in their queues, rather than bind the address while it is still held. Closed
    /// when the listener stops accepting (a drain), so that the address closes then.
    sockets: Spare,
    state: SharedListenerState,
    stop: watch::Sender<bool>,
    metrics: Arc<ListenerMetrics>,
}

/// A stack built for one listener, not yet serving.
struct Planned {
    key: String,
    listen: SocketAddr,
    stack: StackService<EdgeBody>,
    mtls: Option<MtlsMode>,
    endpoints: Option<RouteEndpoints>,
    tracer: Option<EdgeTracer>,
}

impl Sidecar {
    /// Binds every listener and starts serving. Fails before serving anything if a listener
    /// cannot be bound or the identity cannot be loaded. `metrics` is the handle of the
    /// Prometheus recorder that the binary installs, for `/metrics`.
    pub async fn start(
        config: &Config,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Self, BoxError> {
        let credentials = match &config.identity {
            Some(identity) => Some(identity.load().map_err(|e| format!("[identity]: {e}"))?),
            None => None,
        };
        let rotation = match (&config.identity, &credentials) {
            (Some(identity), Some(credentials)) => Some(identity.rotation().spawn(credentials)),
            _ => None,
        };
        let workers = Workers::start(config.runtime.workers())?;
        let telemetry = config.tracing.as_ref().map(Telemetry::start).transpose()?;
        let access_log = open_access_log(config)?;
        let admin_listener = bind("admin", config.admin.listen).await?;
        let admin_addr = admin_listener.local_addr()?;
        let probes_listener = match config.admin.probes {
            Some(addr) => Some(bind("probes", addr).await?),
            None => None,
        };
        let probes_addr = probes_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let (drain, _) = watch::channel(false);
        let admin = Arc::new(AdminState {
            started: tokio::time::Instant::now(),
            workers: workers.count(),
            credentials: credentials.clone(),
            transitions: Transitions::default(),
            ready: false.into(),
            serving: ArcSwap::from_pointee(Serving {
                config: config.clone(),
                routes: Vec::new(),
                listeners: Vec::new(),
                listener_metrics: Vec::new(),
            }),
            metrics,
            drain,
        });
        let mut sidecar = Self {
            bound: Bound {
                admin: Some(admin_addr),
                probes: probes_addr,
                ..Bound::default()
            },
            config: config.clone(),
            admin: admin.clone(),
            listeners: HashMap::new(),
            credentials,
            tasks: JoinSet::new(),
            workers,
            telemetry,
            access_log,
            rotation,
        };
        let planned = sidecar.plan(config)?;
        sidecar.apply(config.clone(), planned).await?;
        // The admin server outlives the drain, so probes see `/ready` turn false; it stops
        // when the process ends.
        tokio::spawn(crate::admin::serve(
            admin_listener,
            admin.clone(),
            std::future::pending(),
            config.limits.for_admin(),
            Scope::All,
        ));
        if let Some(probes) = probes_listener {
            tokio::spawn(crate::admin::serve(
                probes,
                admin.clone(),
                std::future::pending(),
                config.limits.for_admin(),
                Scope::Probes,
            ));
        }
        admin.ready.store(true, Ordering::Release);
        tracing::info!(bound = ?sidecar.bound, "sidecar-lite is serving");
        Ok(sidecar)
    }

    /// Applies a new config: every stack is built first, so an invalid config changes
    /// nothing; then stacks are swapped, new listeners bound and removed ones drained. The
    /// identity files are watched on their own. In `[identity]`, what peers are checked
    /// against (the trust bundle, federated trust domains, revocation lists) and how often
    /// the files are read may change here; our own certificate, key or TLS versions need a
    /// restart and are refused, as are changes to `[admin]`, `[runtime]`, `[limits]`,
    /// `[tracing]` and `[log]` (the process's logger is set up once).
    pub async fn reload(&mut self, config: &Config) -> Result<(), BoxError> {
        let trust = self.new_trust(config)?;
        if config.admin != self.config.admin
            || config.runtime != self.config.runtime
            || config.limits != self.config.limits
        {
            return Err("[admin], [runtime] or [limits] changed: restart to apply".into());
        }
        if config.tracing != self.config.tracing {
            return Err("[tracing] changed: restart to apply".into());
        }
        if config.log != self.config.log {
            return Err("[log] changed: restart to apply".into());
        }
        // A new file (or format) is opened before anything changes; the same one is reopened,
        // for logrotate, which sends SIGHUP once it has moved the file away.
        let access_log = if config.access_log == self.config.access_log {
            None
        } else {
            Some(open_access_log(config)?)
        };
        let planned = self.plan(config)?;
        let previous = match access_log {
            Some(log) => Some(std::mem::replace(&mut self.access_log, log)),
            None => {
                if let Some(log) = &self.access_log {
                    log.reopen();
                }
                None
            }
        };
        let applied = self.apply(config.clone(), planned).await;
        // A reload that fails changes nothing: the log stays the one `[access_log]` names.
        if applied.is_err()
            && let Some(previous) = previous
        {
            self.access_log = previous;
        }
        if applied.is_ok()
            && let (Some((material, identity)), Some(credentials)) = (trust, &self.credentials)
        {
            // The old watch stopped first, so that no check of the old files it has running
            // stores their material after this; then the next handshakes check peers against
            // the new, and the new files are watched.
            if let Some(old) = self.rotation.take() {
                old.stop().await;
            }
            if let Some(material) = material {
                credentials.store(material);
            }
            self.rotation = Some(identity.rotation().spawn(credentials));
        }
        applied
    }

    /// `config`'s `[identity]` when only what peers are checked against, or how often the
    /// files are read, changed; with its material when the files are others, loaded now, so
    /// that a reload whose files do not load changes nothing. `None` when `[identity]` is the
    /// same.
    fn new_trust(
        &self,
        config: &Config,
    ) -> Result<Option<(Option<Material>, IdentityConfig)>, BoxError> {
        match (&self.config.identity, &config.identity) {
            (old, new) if old == new => Ok(None),
            (Some(old), Some(new))
                if old.cert == new.cert && old.key == new.key && old.tls12 == new.tls12 =>
            {
                let material = if old.paths() == new.paths() {
                    None
                } else {
                    Some(Material::load(&new.paths()).map_err(|e| format!("[identity]: {e}"))?)
                };
                Ok(Some((material, new.clone())))
            }
            (Some(_), Some(_)) => Err("[identity] changed our certificate, key or TLS \
                                       versions: restart to use them (what peers are checked \
                                       against may change on reload)"
                .into()),
            _ => Err("[identity] added or removed: restart to apply".into()),
        }
    }

    /// Builds the stack of every listener in `config`.
    fn plan(&self, config: &Config) -> Result<Vec<Planned>, BoxError> {
        let mut planned = Vec::new();
        let tracer = self.telemetry.as_ref().map(Telemetry::tracer);
        if let Some(inbound) = &config.inbound {
            let same = (self.config.inbound.as_ref()).is_some_and(|old| {
                *old == InboundConfig {
                    listen: old.listen,
                    ..inbound.clone()
                }
            });
            let stack = match same.then(|| self.kept("inbound")).flatten() {
                Some(kept) => kept,
                None => stack::inbound(inbound)?,
            };
            planned.push(Planned {
                key: "inbound".to_owned(),
                listen: inbound.listen,
                stack,
                mtls: Some(inbound.mtls),
                endpoints: None,
                tracer: tracer.map(|t| {
                    EdgeTracer::inbound(t.clone(), Arc::from("inbound"), inbound.allow_list())
                }),
            });
        }
        for route in &config.outbound {
            let key = format!("outbound/{}", route.name);
            if let Some(kept) = self.kept_route(config, route, &key) {
                planned.push(kept);
                continue;
            }
            let tls = match (&config.identity, &self.credentials, &route.server_identity) {
                (Some(identity), Some(credentials), Some(expected)) => {
                    Some(identity.connector(credentials, expected.clone()))
                }
                _ => None,
            };
            let outbound = stack::outbound_with_endpoints(config, route, tls.as_ref())
                .map_err(|e| format!("outbound `{}`: {e}", route.name))?;
            planned.push(Planned {
                tracer: self.outbound_tracer(route, &key),
                key,
                listen: route.listen,
                stack: outbound.service,
                mtls: None,
                endpoints: Some(RouteEndpoints {
                    route: route.name.clone(),
                    endpoints: outbound.endpoints,
                    budget: Some(outbound.budget),
                }),
            });
        }
        Ok(planned)
    }

    /// The stack a listener serves with now, if it has one. A clone shares its state.
    fn kept(&self, key: &str) -> Option<StackService<EdgeBody>> {
        (self.listeners.get(key)).map(|listener| listener.state.load().stack())
    }

    /// The plan of an outbound route that `config` leaves as it is (wherever it listens):
    /// its stack as it serves now, with its breakers, retry budget, limits, balancers and
    /// connections, rather than a new one that starts them afresh.
    fn kept_route(&self, config: &Config, route: &OutboundConfig, key: &str) -> Option<Planned> {
        let old = self
            .config
            .outbound
            .iter()
            .find(|old| old.name == route.name)?;
        let same =
            *old == OutboundConfig {
                listen: old.listen,
                ..route.clone()
            } && config.discovery == self.config.discovery;
        if !same {
            return None;
        }
        let serving = self.admin.serving.load();
        let endpoints = serving
            .routes
            .iter()
            .find(|r| r.route == route.name)?
            .clone();
        Some(Planned {
            tracer: self.outbound_tracer(route, key),
            key: key.to_owned(),
            listen: route.listen,
            stack: self.kept(key)?,
            mtls: None,
            endpoints: Some(endpoints),
        })
    }

    fn outbound_tracer(&self, route: &OutboundConfig, key: &str) -> Option<EdgeTracer> {
        let tracer = self.telemetry.as_ref().map(Telemetry::tracer)?;
        // Whom the route's requests reach: its server's identity, or the name its TLS checks
        // (the span then says `https`, and names it as the peer).
        let peer = route.server_identity.as_ref().map(|id| id.as_str());
        Some(EdgeTracer::outbound(
            tracer.clone(),
            Arc::from(key),
            peer.or(route.tls.as_ref().map(|tls| tls.server_name.as_str())),
        ))
    }

    /// Swaps in planned stacks, binds what is new, drains what is gone.
    async fn apply(&mut self, config: Config, planned: Vec<Planned>) -> Result<(), BoxError> {
        // Bind every new listener before changing anything, so a busy port fails the whole
        // reload rather than half of it.
        let unchanged = |plan: &Planned| {
            (self.listeners.get(&plan.key))
                .is_some_and(|l| l.addr == plan.listen || plan.listen.port() == 0)
        };
        // The listeners that give their address up: no longer configured, or moving.
        let released: HashMap<SocketAddr, &Listener> = self
            .listeners
            .iter()
            .filter(|(key, _)| !planned.iter().any(|p| p.key == **key && unchanged(p)))
            .map(|(_, listener)| (listener.addr, listener))
            .collect();
        let mut fresh = HashMap::new();
        for plan in planned.iter().filter(|plan| !unchanged(plan)) {
            let spare = released
                .get(&plan.listen)
                .and_then(|l| l.sockets.duplicate());
            let sockets = match spare {
                Some(sockets) => sockets,
                None => self.workers.bind(plan.listen),
            }
            .and_then(|sockets| Ok((duplicate(&sockets)?, sockets)))
            .map_err(|e| format!("cannot listen on {} for {}: {e}", plan.listen, plan.key))?;
            fresh.insert(plan.key.clone(), sockets);
        }
        let keep: Vec<&str> = planned.iter().map(|p| p.key.as_str()).collect();
        let gone: Vec<String> = self
            .listeners
            .keys()
            .filter(|k| !keep.contains(&k.as_str()) || fresh.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(listener) = self.listeners.remove(&key) {
                tracing::info!(listener = key, addr = %listener.addr, "draining a listener no longer configured");
                let _ = listener.stop.send(true);
            }
        }

        let mut routes = Vec::new();
        for plan in planned {
            routes.extend(plan.endpoints);
            let acceptor: Option<Arc<MtlsAcceptor>> =
                match (plan.mtls, &self.config.identity, &self.credentials) {
                    (Some(mode), Some(identity), Some(credentials))
                        if mode != MtlsMode::Disabled =>
                    {
                        Some(Arc::new(
                            identity
                                .acceptor(credentials)
                                .mode(mode)
                                .handshake_timeout(self.config.limits.header_read_timeout)
                                .build(),
                        ))
                    }
                    _ => None,
                };
            // Everything a reload replaces, in one value: the mTLS mode may have changed too,
            // and new connections get the new one.
            // Only the inbound listener has an mTLS mode, and only it tells the app who called.
            let inbound = plan
                .mtls
                .map(|_| InboundRules::new(self.credentials.clone()));
            let state = ListenerState::new(
                plan.stack,
                acceptor,
                plan.tracer,
                self.access_log.clone(),
                inbound,
            );
            match fresh.remove(&plan.key) {
                None => {
                    if let Some(listener) = self.listeners.get(&plan.key) {
                        listener.state.store(Arc::new(state));
                    }
                }
                Some((kept, sockets)) => {
                    let addr = sockets[0].local_addr()?;
                    let kept = Spare(Arc::new(Mutex::new(Some(kept))));
                    let state: SharedListenerState = Arc::new(ArcSwap::from_pointee(state));
                    let (stop, stopped) = watch::channel(false);
                    let name: Arc<str> = Arc::from(plan.key.as_str());
                    let metrics = Arc::new(ListenerMetrics::new(&name));
                    let service = edge(
                        name.clone(),
                        state.clone(),
                        metrics.clone(),
                        config.limits.max_headers,
                    );
                    let setup = Listening {
                        name,
                        admission: Admission::new(&config.limits),
                        limits: config.limits.clone(),
                        grace: config.runtime.drain_grace,
                        open: metrics.open.clone(),
                        closed: {
                            let kept = kept.clone();
                            OnClosed(Some(Arc::new(move || kept.close())))
                        },
                    };
                    for (socket, worker) in sockets.into_iter().zip(self.workers.handles()) {
                        let mut stopped = stopped.clone();
                        let mut drained = self.admin.drain.subscribe();
                        let shutdown = async move {
                            tokio::select! {
                                _ = stopped.wait_for(|s| *s) => {}
                                _ = drained.wait_for(|d| *d) => {}
                            }
                        };
                        let accepting = state.clone();
                        let setup = setup.clone();
                        let service = service.clone();
                        self.tasks.spawn_on(
                            async move {
                                // Registered with the reactor of the worker that serves it.
                                match TcpListener::from_std(socket) {
                                    Ok(tcp) => {
                                        let acceptor = move || accepting.load().acceptor.clone();
                                        serve(setup, tcp, acceptor, service, shutdown).await;
                                    }
                                    Err(error) => {
                                        tracing::error!(listener = &*setup.name, %error, "cannot serve on a worker");
                                    }
                                }
                            },
                            worker,
                        );
                    }
                    let listener = Listener {
                        addr,
                        sockets: kept,
                        state,
                        stop,
                        metrics,
                    };
                    self.listeners.insert(plan.key, listener);
                }
            }
        }

        self.bound.inbound = self.listeners.get("inbound").map(|l| l.addr);
        self.bound.outbound = config
            .outbound
            .iter()
            .filter_map(|r| {
                let key = format!("outbound/{}", r.name);
                self.listeners.get(&key).map(|l| (r.name.clone(), l.addr))
            })
            .collect();
        let mut listeners: Vec<(String, SocketAddr)> = self
            .listeners
            .iter()
            .map(|(k, l)| (k.clone(), l.addr))
            .collect();
        listeners.sort();
        if let Some(admin) = self.bound.admin {
            listeners.push(("admin".to_owned(), admin));
        }
        self.admin.serving.store(Arc::new(Serving {
            config: config.clone(),
            routes,
            listeners,
            listener_metrics: self.listeners.values().map(|l| l.metrics.clone()).collect(),
        }));
        self.config = config;
        Ok(())
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain grace period), and
    /// returns when every listener has closed and the last spans have been exported (up to
    /// `[tracing] export_timeout`).
    pub async fn stop(mut self) {
        self.admin.drain.send_replace(true);
        while self.tasks.join_next().await.is_some() {}
        // The lines of the requests drained just now, written out before the process ends.
        if let Some(log) = &self.access_log {
            log.flush(ACCESS_LOG_FLUSH).await;
        }
        if let Some(telemetry) = self.telemetry.take() {
            telemetry.shutdown().await;
        }
    }

    /// Serves until SIGTERM, SIGINT or `POST /drain`, then drains and returns. Reloads `path`
    /// on SIGHUP and whenever the file changes; an invalid file is logged with its errors and
    /// the running config kept.
    pub async fn run_until_signal(mut self, path: PathBuf) {
        let mut drained = self.admin.drain.subscribe();
        // Made once, before the loop: a signal stream misses what arrived before it existed.
        let mut stops = StopSignals::new();
        let mut hangups = Hangups::new();
        let mut last = std::fs::read(&path).ok();
        let mut seen = last.clone();
        let mut poll = tokio::time::interval(CONFIG_POLL);
        loop {
            tokio::select! {
                () = stops.recv() => {
                    tracing::info!("stop requested; draining");
                    break;
                }
                _ = drained.wait_for(|drain| *drain) => break,
                () = hangups.recv() => {
                    tracing::info!(path = %path.display(), "SIGHUP: reloading the config");
                    // logrotate's signal: the log is reopened even if the reload fails.
                    if let Some(log) = &self.access_log {
                        log.reopen();
                    }
                    self.reload_from(&path).await;
                    last = std::fs::read(&path).ok();
                    seen = last.clone();
                }
                _ = poll.tick() => {
                    // Act on a change only once the file has stayed the same for a whole poll,
                    // so a file still being written is not read half-way.
                    let now = std::fs::read(&path).ok();
                    if now.is_some() && now != last && now == seen {
                        tracing::info!(path = %path.display(), "config file changed: reloading");
                        last = now.clone();
                        self.reload_from(&path).await;
                    }
                    seen = now;
                }
            }
        }
        self.stop().await;
    }

    async fn reload_from(&mut self, path: &std::path::Path) {
        let outcome = match Config::load(path) {
            Ok(config) => self.reload(&config).await,
            Err(errors) => Err(errors.into()),
        };
        let result = match outcome {
            Ok(()) => {
                tracing::info!("config reloaded");
                "ok"
            }
            Err(error) => {
                tracing::error!(%error, "config not reloaded; serving the previous one");
                "error"
            }
        };
        metrics::counter!("sidecar_config_reload_total", "result" => result).increment(1);
    }
}

/// The access log that `config` asks for, opened.
fn open_access_log(config: &Config) -> Result<Option<AccessLog>, BoxError> {
    config
        .access_log
        .as_ref()
        .map(|section| {
            AccessLog::open(section)
                .map_err(|e| format!("[access_log] path: cannot open {e}").into())
        })
        .transpose()
}

/// Each of `sockets` again, as a new descriptor of the same socket.
fn duplicate(sockets: &[std::net::TcpListener]) -> std::io::Result<Vec<std::net::TcpListener>> {
    sockets
        .iter()
        .map(std::net::TcpListener::try_clone)
        .collect()
}

/// A listener's spare descriptors of its sockets (see [`Listener::sockets`]), until it stops
/// accepting.
#[derive(Debug, Clone)]
struct Spare(Arc<Mutex<Option<Vec<std::net::TcpListener>>>>);

impl Spare {
    /// New descriptors of the sockets, if the listener still accepts.
    fn duplicate(&self) -> Option<std::io::Result<Vec<std::net::TcpListener>>> {
        self.lock().as_deref().map(duplicate)
    }

    /// Closes them: the listener no longer accepts.
    fn close(&self) {
        drop(self.lock().take());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<std::net::TcpListener>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn bind(name: &str, addr: SocketAddr) -> Result<TcpListener, BoxError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} for {name}: {e}").into())
}
