//! The checks that serde cannot make: values in range, names unique, sections that need each
//! other. Each problem is named by its field's path, so that its line can be found.

use super::{
    ConcurrencyLimit, Config,
    endpoints::{Endpoint, MIN_DISCOVERY_INTERVAL, parse_endpoints_file},
    tracing::TracingConfig,
};
use resilience_mtls::{MtlsMode, SpiffeId};
use resilience_timeout::TimeoutConfig;
use std::{collections::HashSet, net::SocketAddr};

/// Every problem serde could not find, as (field path, message).
pub(super) fn problems(config: &Config) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut listeners: Vec<SocketAddr> = Vec::new();
    let mut listen = |field: String, addr: SocketAddr, problems: &mut Vec<(String, String)>| {
        // Port 0 asks the system for a free port: never a clash.
        if addr.port() == 0 {
            return;
        }
        match listeners.iter().find(|other| clash(**other, addr)) {
            Some(other) if *other == addr => {
                problems.push((field, format!("{addr} is already used by another listener")));
            }
            Some(other) => problems.push((
                field,
                format!("{addr} overlaps {other}, another listener's: the system refuses both"),
            )),
            None => listeners.push(addr),
        }
    };
    listen("admin.listen".into(), config.admin.listen, &mut problems);
    if let Some(probes) = config.admin.probes {
        listen("admin.probes".into(), probes, &mut problems);
    }

    if let Some(identity) = &config.identity {
        for domain in identity.trust_domains.keys() {
            if let Err(reason) = SpiffeId::check_trust_domain(domain) {
                problems.push((
                    format!("identity.trust_domains.\"{domain}\""),
                    format!("`{domain}` is not a SPIFFE trust domain: {reason}"),
                ));
            }
        }
    }

    if let Some(inbound) = &config.inbound {
        listen("inbound.listen".into(), inbound.listen, &mut problems);
        if inbound.mtls != MtlsMode::Disabled && config.identity.is_none() {
            problems.push((
                "inbound.mtls".into(),
                "needs an [identity] section (or set mtls = \"disabled\")".into(),
            ));
        }
        timeout_problems("inbound.timeout", &inbound.timeout, &mut problems);
        concurrency_problems(
            "inbound.max_concurrent_requests",
            &inbound.max_concurrent_requests,
            &mut problems,
        );
        if let Some(rate) = &inbound.rate_limit
            && let Err(e) = rate.validate()
        {
            problems.push((format!("inbound.rate_limit.{}", e.field()), e.to_string()));
        }
    }

    let mut names = HashSet::new();
    for (i, route) in config.outbound.iter().enumerate() {
        let at = |key: &str| format!("outbound[{i}].{key}");
        if route.name.trim().is_empty() {
            problems.push((at("name"), "must not be empty".into()));
        } else if !names.insert(route.name.as_str()) {
            problems.push((
                at("name"),
                format!("\"{}\" is used by another route", route.name),
            ));
        }
        listen(at("listen"), route.listen, &mut problems);
        if !route.listen.ip().is_loopback() && !route.allow_remote_callers {
            problems.push((
                at("listen"),
                format!(
                    "{} is not a loopback address: any client that reaches it calls out with \
                     this workload's identity; listen on 127.0.0.1 (or [::1]), or set \
                     allow_remote_callers = true",
                    route.listen
                ),
            ));
        }
        endpoint_problems(&at("endpoints"), &route.endpoints, &mut problems);
        let outside = route.plaintext || route.tls.is_some();
        match (&route.server_identity, &config.identity, outside) {
            (Some(_), _, true) => problems.push((
                at(if route.plaintext { "plaintext" } else { "tls" }),
                "contradicts `server_identity`: a route outside the mesh checks no identity".into(),
            )),
            (Some(_), None, false) => problems.push((
                at("server_identity"),
                "needs an [identity] section to speak mTLS".into(),
            )),
            (None, Some(_), false) => problems.push((
                at("server_identity"),
                "is required with [identity]: the peers' certificates are checked against it \
                 (or set `plaintext = true`, or `tls`, for endpoints outside the mesh)"
                    .into(),
            )),
            _ => {}
        }
        if route.plaintext && route.tls.is_some() {
            problems.push((at("plaintext"), "contradicts `tls`".into()));
        }
        if let Some(tls) = &route.tls {
            if rustls_pki_types::ServerName::try_from(tls.server_name.as_str()).is_err() {
                problems.push((
                    at("tls.server_name"),
                    format!(
                        "`{}` is neither a DNS name nor an IP address",
                        tls.server_name
                    ),
                ));
            }
            match (&tls.cert, &tls.key) {
                (Some(_), None) => problems.push((at("tls.cert"), "needs `key` beside it".into())),
                (None, Some(_)) => problems.push((at("tls.key"), "needs `cert` beside it".into())),
                _ => {}
            }
        }
        timeout_problems(&at("timeout"), &route.timeout, &mut problems);
        if let Err(e) = route.retry.validate() {
            problems.push((at(&format!("retry.{}", e.field())), e.to_string()));
        }
        // Each attempt tells the next hop its time less the margin: with no more than the
        // margin, every attempt would say there is none left, and a peer answer 504 at once.
        if let Some(per_try) = route.retry.per_try_timeout
            && route.timeout.propagate_deadline
            && per_try <= route.timeout.deadline_margin
        {
            problems.push((
                at("retry.per_try_timeout"),
                format!(
                    "{per_try:?} must be more than `timeout.deadline_margin` ({:?}): every \
                     attempt would tell the next hop it has no time left",
                    route.timeout.deadline_margin
                ),
            ));
        }
        if let Err(e) = route.breaker.validate() {
            problems.push((at(&format!("breaker.{}", e.field())), e.to_string()));
        }
        concurrency_problems(
            &at("max_concurrent_requests"),
            &route.max_concurrent_requests,
            &mut problems,
        );
        if let Some(hedge) = &route.hedge {
            if let Err(e) = hedge.validate() {
                problems.push((at(&format!("hedge.{}", e.field())), e.to_string()));
            }
            if route.retry.attempts > 1 {
                problems.push((
                    at("hedge"),
                    format!(
                        "a route hedges or retries, not both (gRPC A6): set retry.attempts = 1 \
                         (it is {}); hedged copies spend the retry budget",
                        route.retry.attempts
                    ),
                ));
            }
        }
        if let Some(rate) = &route.rate_limit {
            if let Err(e) = rate.validate() {
                problems.push((at(&format!("rate_limit.{}", e.field())), e.to_string()));
            } else if rate.per_caller.is_some() {
                problems.push((
                    at("rate_limit.per_caller"),
                    "is for [inbound] only: every caller of an outbound route is the local app"
                        .into(),
                ));
            }
        }
        if let Some(fault) = &route.fault {
            let percent = |field: String, value: f64, problems: &mut Vec<(String, String)>| {
                if !(0.0..=100.0).contains(&value) {
                    problems.push((field, format!("{value} is not a percentage from 0 to 100")));
                }
            };
            if let Some(abort) = &fault.abort {
                percent(at("fault.abort.percent"), abort.percent, &mut problems);
                if !(200..=599).contains(&abort.status) {
                    problems.push((
                        at("fault.abort.status"),
                        format!("{} is not a status from 200 to 599", abort.status),
                    ));
                }
            }
            if let Some(delay) = &fault.delay {
                percent(at("fault.delay.percent"), delay.percent, &mut problems);
            }
        }
    }
    let limits = &config.limits;
    // The maxima keep a typo from costing the process: each head parsed takes room for
    // `max_headers` headers (twice, in hyper, and in the framing guard), and a head may fill
    // `max_head_bytes`; Envoy's own ceilings are 8 MiB heads, and headers by the hundred.
    for (field, value, min, max) in [
        ("limits.max_headers", limits.max_headers, 1, MAX_HEADERS),
        (
            "limits.max_head_bytes",
            limits.max_head_bytes,
            8192,
            MAX_HEAD_BYTES,
        ),
        (
            "limits.max_connections",
            limits.max_connections,
            1,
            MAX_CONNECTIONS,
        ),
        (
            "limits.http2_max_concurrent_streams",
            limits.http2_max_concurrent_streams as usize,
            1,
            u32::MAX as usize,
        ),
    ] {
        if value < min {
            problems.push((
                field.into(),
                format!("{value} is below the minimum of {min}"),
            ));
        } else if value > max {
            problems.push((
                field.into(),
                format!("{value} is above the maximum of {max}"),
            ));
        }
    }
    if limits.max_connections_per_source == Some(0) {
        problems.push((
            "limits.max_connections_per_source".into(),
            "must be at least 1".into(),
        ));
    }
    for (field, value) in [
        ("discovery.dns_refresh", config.discovery.dns_refresh),
        ("discovery.file_poll", config.discovery.file_poll),
    ] {
        if value < MIN_DISCOVERY_INTERVAL {
            problems.push((
                field.into(),
                format!(
                    "{} is below the minimum of {}",
                    resilience_core::duration::format(value),
                    resilience_core::duration::format(MIN_DISCOVERY_INTERVAL)
                ),
            ));
        }
    }
    if config.discovery.resolver.is_some_and(|r| r.port() == 0) {
        problems.push((
            "discovery.resolver".into(),
            "needs a port other than 0".into(),
        ));
    }
    match config.runtime.worker_threads {
        Some(0) => problems.push(("runtime.worker_threads".into(), "must be at least 1".into())),
        Some(n) if n > super::process::MAX_WORKER_THREADS => problems.push((
            "runtime.worker_threads".into(),
            format!(
                "{n} is more than {}: one per core is what pays",
                super::process::MAX_WORKER_THREADS
            ),
        )),
        _ => {}
    }
    // The sidecar's own logging; library mode logs as the service does.
    #[cfg(feature = "proxy")]
    if let Err(e) = super::process::log_filter(&config.log.filter) {
        problems.push((
            "log.filter".into(),
            format!("\"{}\": {e}", config.log.filter),
        ));
    }
    if let Some(access_log) = &config.access_log {
        problems.extend(access_log.problems());
    }
    if let Some(tracing) = &config.tracing {
        tracing_problems(tracing, &mut problems);
    }
    problems
}

/// Whether the system refuses to bind both `a` and `b` (Linux, without `SO_REUSEPORT` between
/// them): the same port, and the same address or a wildcard that covers the other (`0.0.0.0`
/// covers IPv4; `[::]`, dual-stack by default, covers both).
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    let covers = |wild: SocketAddr, other: SocketAddr| {
        wild.ip().is_unspecified() && (wild.is_ipv6() || other.is_ipv4())
    };
    a.port() == b.port() && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
}

/// The most requests in flight one listener may allow: far beyond what one process serves,
/// and far below what the counter behind the limit can count.
const MAX_CONCURRENCY: usize = 1 << 20;

/// The most headers a request may be allowed.
const MAX_HEADERS: usize = 10_000;
/// The most bytes a request head may be allowed: 8 MiB.
const MAX_HEAD_BYTES: usize = 8 << 20;
/// The most connections a listener may be allowed.
const MAX_CONNECTIONS: usize = 1 << 20;

fn concurrency_problems(
    field: &str,
    limit: &ConcurrencyLimit,
    problems: &mut Vec<(String, String)>,
) {
    let problem = match limit {
        ConcurrencyLimit::Fixed(0) => Some("must be at least 1".into()),
        ConcurrencyLimit::Fixed(n) if *n > MAX_CONCURRENCY => {
            Some(format!("{n} is over the maximum of {MAX_CONCURRENCY}"))
        }
        ConcurrencyLimit::Fixed(_) => None,
        ConcurrencyLimit::Adaptive(adaptive) => match adaptive.layer() {
            Err(e) => {
                problems.push((format!("{field}.{}", e.field()), e.to_string()));
                None
            }
            Ok(_) if adaptive.max_limit > MAX_CONCURRENCY => Some(format!(
                "max_limit {} is over the maximum of {MAX_CONCURRENCY}",
                adaptive.max_limit
            )),
            Ok(_) => None,
        },
    };
    if let Some(problem) = problem {
        problems.push((field.to_owned(), problem));
    }
}

/// The most spans the export queue may hold.
const MAX_SPAN_QUEUE: usize = 1 << 20;

fn tracing_problems(tracing: &TracingConfig, problems: &mut Vec<(String, String)>) {
    if let Err(e) = tracing.endpoint() {
        problems.push(("tracing.otlp_endpoint".into(), e));
    }
    if tracing.service_name.trim().is_empty() {
        problems.push(("tracing.service_name".into(), "must not be empty".into()));
    }
    if !(0.0..=1.0).contains(&tracing.sampling_ratio) {
        problems.push((
            "tracing.sampling_ratio".into(),
            format!("{} is not a ratio from 0 to 1", tracing.sampling_ratio),
        ));
    }
    match tracing.queue_size {
        0 => problems.push(("tracing.queue_size".into(), "must be at least 1".into())),
        n if n > MAX_SPAN_QUEUE => problems.push((
            "tracing.queue_size".into(),
            format!("{n} is over the maximum of {MAX_SPAN_QUEUE}"),
        )),
        _ => {}
    }
    if tracing.batch_size == 0 {
        problems.push(("tracing.batch_size".into(), "must be at least 1".into()));
    }
    for (field, value) in [
        ("tracing.export_interval", tracing.export_interval),
        ("tracing.export_timeout", tracing.export_timeout),
    ] {
        if value.is_zero() {
            problems.push((field.into(), "must be more than zero".into()));
        }
    }
}

/// A route's `endpoints`: at least one; each address once; a `dns:` or `file:` source alone; a
/// file that exists and lists addresses.
fn endpoint_problems(field: &str, endpoints: &[Endpoint], problems: &mut Vec<(String, String)>) {
    if endpoints.is_empty() {
        problems.push((field.into(), "needs at least one endpoint".into()));
        return;
    }
    if endpoints.len() > 1
        && let Some(source) = endpoints.iter().find(|e| e.is_dynamic())
    {
        problems.push((
            field.into(),
            format!("\"{source}\" must be the route's only entry: list either addresses or one dns: or file: source"),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for endpoint in endpoints {
        // Twice would be one endpoint behind two breakers, neither seeing all its failures.
        if let Endpoint::Static(addr) = endpoint
            && !seen.insert(addr)
        {
            problems.push((
                field.into(),
                format!("\"{addr}\" is listed twice: list each endpoint once"),
            ));
        }
        if let Endpoint::File(path) = endpoint {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    if let Err(e) = parse_endpoints_file(&text) {
                        problems.push((field.into(), format!("\"{endpoint}\": {e}")));
                    }
                }
                Err(e) => problems.push((
                    field.into(),
                    format!("\"{endpoint}\": cannot read the file: {e}"),
                )),
            }
        }
    }
}

fn timeout_problems(field: &str, timeout: &TimeoutConfig, problems: &mut Vec<(String, String)>) {
    if let Err(e) = timeout.validate() {
        problems.push((format!("{field}.{}", e.field()), e.to_string()));
    }
}
