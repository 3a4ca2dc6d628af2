//! The `dns:NAME:PORT` source of service discovery (feature `dns`): every A and AAAA record of
//! a name, looked up again when the records expire, at least every `dns_refresh`.

use crate::config::DiscoveryConfig;
use hickory_resolver::{
    TokioResolver,
    config::{ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts},
    net::runtime::TokioRuntimeProvider,
};
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::SocketAddr,
    sync::{Mutex, PoisonError},
    time::Duration,
};

/// A lookup is never repeated sooner than this after the last one, however short the TTL
/// (unless `dns_refresh` is shorter still).
const MIN_DNS_REFRESH: Duration = Duration::from_secs(1);

/// Answers in a row saying a name has no address before its endpoints are dropped. One such
/// answer may be a resolver's bad moment; several, a second apart at least, mean the name is
/// gone.
const NO_RECORDS_IN_A_ROW: u32 = 3;

/// The last good set of each `dns:` name (keyed by resolver, name and port), kept across the
/// reloads that rebuild its route. A handful of entries: one per name ever configured.
static LAST_GOOD: Mutex<BTreeMap<String, Vec<SocketAddr>>> = Mutex::new(BTreeMap::new());

/// Every A and AAAA record of `name`, at `port`.
pub(crate) struct DnsSource {
    resolver: Box<TokioResolver>,
    name: String,
    port: u16,
    refresh: Duration,
    /// The key of this name's last good set in [`LAST_GOOD`].
    key: String,
    /// Whether the last lookup failed: a run of failures is logged once (and each one
    /// counted).
    failing: bool,
    /// Lookups in a row whose answer was that the name has no address (NXDOMAIN, or no
    /// A or AAAA record): after [`NO_RECORDS_IN_A_ROW`] the set is emptied.
    no_records: u32,
}

impl DnsSource {
    /// The source of `name` at `port`, asking the resolver of `config`, and the set that the
    /// same name last resolved to in this process (empty if none).
    pub(super) fn new(
        config: &DiscoveryConfig,
        name: &str,
        port: u16,
    ) -> Result<(Self, Vec<SocketAddr>), String> {
        let key = format!("{:?}/{name}:{port}", config.resolver);
        let last_good = LAST_GOOD
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned()
            .unwrap_or_default();
        let source = Self {
            resolver: Box::new(resolver(config)?),
            name: name.to_owned(),
            port,
            refresh: config.dns_refresh,
            key,
            failing: false,
            no_records: 0,
        };
        Ok((source, last_good))
    }

    /// Looks again: the new set if there is one to apply, and how long to wait before the
    /// next look.
    pub(super) async fn refresh(
        &mut self,
        route: &str,
    ) -> (Option<BTreeSet<SocketAddr>>, Duration) {
        let Self {
            resolver,
            name,
            port,
            refresh,
            key,
            failing,
            no_records,
        } = self;
        let floor = MIN_DNS_REFRESH.min(*refresh);
        let lookup = resolver.lookup_ip(name.as_str()).await;
        let answered_none = match &lookup {
            Ok(lookup) => lookup.iter().next().is_none(),
            Err(error) => error.is_no_records_found(),
        };
        *no_records = if answered_none { *no_records + 1 } else { 0 };
        if *no_records >= NO_RECORDS_IN_A_ROW {
            // The name has no address, answered again and again: it is gone (a
            // Service scaled to zero), not a resolver having a bad moment.
            if *no_records == NO_RECORDS_IN_A_ROW {
                tracing::warn!(
                    route,
                    name,
                    "the name has had no address {NO_RECORDS_IN_A_ROW} lookups in a row; dropping its endpoints"
                );
            }
            metrics::counter!("sidecar_dns_failures_total", "route" => route.to_owned())
                .increment(1);
            LAST_GOOD
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(key.as_str());
            return (Some(BTreeSet::new()), floor);
        }
        match lookup {
            Ok(lookup) => {
                let addrs: BTreeSet<SocketAddr> =
                    lookup.iter().map(|ip| SocketAddr::new(ip, *port)).collect();
                let ttl = lookup
                    .as_lookup()
                    .answers()
                    .iter()
                    .map(|record| record.ttl)
                    .min();
                if addrs.is_empty() {
                    dns_failure(route, name, failing, &"no A or AAAA record");
                    return (None, floor);
                }
                if std::mem::take(failing) {
                    tracing::info!(route, name, "DNS lookups succeed again");
                }
                // Again when the records expire, and at least every `refresh`.
                let wait = ttl.map_or(*refresh, |ttl| {
                    Duration::from_secs(ttl.into()).clamp(floor, *refresh)
                });
                LAST_GOOD
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key.clone(), addrs.iter().copied().collect());
                (Some(addrs), wait)
            }
            Err(error) => {
                dns_failure(route, name, failing, &error);
                (None, floor)
            }
        }
    }
}

impl fmt::Debug for DnsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dns:{}:{}", self.name, self.port)
    }
}

fn dns_failure(route: &str, name: &str, failing: &mut bool, error: &dyn fmt::Display) {
    if std::mem::replace(failing, true) {
        tracing::debug!(route, name, %error, "DNS lookup failed again");
    } else {
        tracing::warn!(route, name, %error, "DNS lookup failed; keeping the endpoints found before");
    }
    metrics::counter!("sidecar_dns_failures_total", "route" => route.to_owned()).increment(1);
}

/// The resolver for `dns:` sources: the server of `config.resolver`, or the system's.
fn resolver(config: &DiscoveryConfig) -> Result<TokioResolver, String> {
    let mut builder = match config.resolver {
        Some(server) => {
            let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                .into_iter()
                .map(|mut connection| {
                    connection.port = server.port();
                    connection
                })
                .collect();
            let name_server = NameServerConfig::new(server.ip(), true, connections);
            let mut builder = TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![name_server]),
                TokioRuntimeProvider::default(),
            );
            *builder.options_mut() = ResolverOpts::default();
            builder
        }
        None => TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?,
    };
    // Every address of the name: a headless Service has one per pod, of either family.
    builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    builder
        .build()
        .map_err(|e| format!("cannot make a DNS resolver: {e}"))
}
