//! What `sidecar-lite check` says of each outbound route's policy: the worst it can do to the
//! upstream and to the caller, how fast its breaker can trip, and the settings that contradict
//! each other. Worked out from the config alone, with the same rules the layers follow.

use super::{Config, ConfigProblem, OutboundConfig, locate::locate};
use resilience_breaker::{BreakerConfig, Policy, WindowConfig};
use resilience_retry::{Condition, Jitter, RetryConfig};
use serde::Serialize;
use std::{fmt, time::Duration};

/// The policy of every outbound route, explained: see [`Config::explain`].
#[derive(Debug, Clone, Serialize)]
struct PolicyReport {
    routes: Vec<RouteReport>,
    warnings: Vec<ConfigProblem>,
}

/// One route's figures.
#[derive(Debug, Clone, Serialize)]
struct RouteReport {
    route: String,
    line: Option<usize>,
    load: Load,
    latency: Latency,
    breaker: Trip,
}

/// The most load one route can put on its upstream.
#[derive(Debug, Clone, Serialize)]
struct Load {
    /// Copies of one request the upstream may see: `attempts`.
    per_request: u32,
    /// Over time, requests plus retries per request, at most: `1 + budget.ratio`.
    sustained: f64,
    /// Retries a second the budget allows on top, whatever the traffic: `min_per_second`.
    reserve_per_second: u32,
}

/// The longest one request can take.
#[derive(Debug, Clone, Serialize)]
struct Latency {
    #[serde(rename = "worst_ms", serialize_with = "millis")]
    worst: Duration,
    #[serde(rename = "timeout_ms", serialize_with = "millis")]
    timeout: Duration,
    attempts: u32,
    /// Each attempt's limit: the per-try timeout, else the timeout.
    #[serde(rename = "per_try_ms", serialize_with = "millis")]
    per_try: Duration,
    /// Backoff between attempts, all of it, at most.
    #[serde(rename = "backoff_ms", serialize_with = "millis")]
    backoff: Duration,
    /// A `Retry-After` waited out instead of a backoff, at most, when a retried answer can
    /// carry one.
    #[serde(rename = "retry_after_ms", serialize_with = "millis_option")]
    retry_after: Option<Duration>,
    /// Whether the timeout ends a request before its attempts and waits could.
    cut_by_timeout: bool,
}

/// The fastest the breaker of an endpoint can open.
#[derive(Debug, Clone, Serialize)]
struct Trip {
    calls: u32,
    failing: u32,
    rule: String,
    #[serde(rename = "open_for_ms", serialize_with = "millis")]
    open_for: Duration,
    #[serde(rename = "open_for_max_ms", serialize_with = "millis")]
    open_for_max: Duration,
}

impl Config {
    /// Explains the policy of each outbound route, in lines for people: the worst-case load on
    /// its upstream, the worst-case latency of one request, and the fastest its breakers can
    /// trip; then a line for each of [`warnings`](Self::warnings). `text` is the file the
    /// config was read from, for the lines of the warnings.
    #[must_use]
    pub fn explain(&self, text: &str) -> String {
        self.report(text).to_string()
    }

    /// What [`explain`](Self::explain) says, as a JSON object for machines: `routes` (each
    /// with `load`, `latency` and `breaker`; durations in milliseconds) and `warnings`.
    #[must_use]
    pub fn explain_json(&self, text: &str) -> String {
        // Strings, numbers and options only: it cannot fail.
        serde_json::to_string_pretty(&self.report(text)).unwrap_or_default()
    }

    /// The settings that contradict each other, as problems with their field and line: a
    /// per-try timeout not shorter than the timeout, attempts that cannot all run within it,
    /// retries with nothing to retry on or no budget, a breaker minimum beyond its window, a
    /// slow-call duration no call can reach. They are legal, so [`Config::parse`] accepts them.
    #[must_use]
    pub fn warnings(&self, text: &str) -> Vec<ConfigProblem> {
        self.report(text).warnings
    }

    fn report(&self, text: &str) -> PolicyReport {
        let mut warnings = Vec::new();
        let routes = self
            .outbound
            .iter()
            .enumerate()
            .map(|(i, route)| {
                let at = |key: &str| format!("outbound[{i}].{key}");
                let mut found = contradictions(route);
                if route.plaintext && self.identity.is_none() {
                    found.push((
                        "plaintext".into(),
                        "does nothing without [identity]: a route without `tls` speaks plaintext \
                         then"
                            .into(),
                    ));
                }
                for (field, message) in found {
                    let field = at(&field);
                    warnings.push(ConfigProblem {
                        line: locate(text, &field),
                        field,
                        message,
                    });
                }
                RouteReport {
                    route: route.name.clone(),
                    line: locate(text, &at("name")),
                    load: load(&route.retry),
                    latency: latency(route),
                    breaker: trip(&route.breaker),
                }
            })
            .collect();
        PolicyReport { routes, warnings }
    }
}

fn load(retry: &RetryConfig) -> Load {
    let budget_allows = retry.budget.ratio > 0.0 || retry.budget.min_per_second > 0;
    let retries = retry.attempts > 1 && !retry.on.is_empty() && budget_allows;
    Load {
        per_request: if retries { retry.attempts } else { 1 },
        sustained: if retries {
            1.0 + retry.budget.ratio
        } else {
            1.0
        },
        reserve_per_second: if retries {
            retry.budget.min_per_second
        } else {
            0
        },
    }
}

/// The longest wait before each retry, as the backoff computes it: `base * multiplier^n`,
/// capped at `max`; decorrelated jitter may reach `max` from the second retry on.
fn backoff_caps(retry: &RetryConfig) -> impl Iterator<Item = Duration> + '_ {
    let backoff = &retry.backoff;
    (0..retry.attempts.saturating_sub(1)).map(move |n| {
        if backoff.jitter == Jitter::Decorrelated && n > 0 {
            return backoff.max;
        }
        let grown = backoff.base.as_secs_f64() * backoff.multiplier.powi(n.min(64) as i32);
        Duration::try_from_secs_f64(grown)
            .unwrap_or(Duration::MAX)
            .min(backoff.max)
    })
}

/// Whether a retried answer can carry a `Retry-After`: a status is retried.
fn retries_statuses(retry: &RetryConfig) -> bool {
    retry.on.iter().any(|c| {
        matches!(
            c,
            Condition::ServerError | Condition::GatewayError | Condition::RetriableStatusCodes
        )
    })
}

fn latency(route: &OutboundConfig) -> Latency {
    let retry = &route.retry;
    let timeout = route.timeout.timeout;
    let attempts = load(retry).per_request;
    let per_try = retry.per_try_timeout.unwrap_or(timeout).min(timeout);
    let backoff: Duration = if attempts > 1 {
        backoff_caps(retry).sum()
    } else {
        Duration::ZERO
    };
    let retry_after = (attempts > 1 && retries_statuses(retry)).then_some(retry.max_retry_after);
    let waits = match retry_after {
        Some(cap) => backoff_caps(retry).map(|b| b.max(cap)).sum(),
        None => backoff,
    };
    let unbounded = per_try.saturating_mul(attempts).saturating_add(waits);
    Latency {
        worst: unbounded.min(timeout),
        timeout,
        attempts,
        per_try,
        backoff,
        retry_after,
        cut_by_timeout: unbounded > timeout,
    }
}

fn trip(breaker: &BreakerConfig) -> Trip {
    let mut candidates = Vec::new();
    if let Some(n) = breaker.consecutive_failures {
        candidates.push((n, n, format!("consecutive_failures = {n}")));
    }
    let minimum = match breaker.window {
        WindowConfig::Calls(n) => breaker.minimum_calls.min(n),
        WindowConfig::Duration(_) => breaker.minimum_calls,
    };
    let within = match breaker.window {
        WindowConfig::Calls(n) => format!("the last {n} calls"),
        WindowConfig::Duration(d) => format!("{}", humantime::format_duration(d)),
    };
    let failure_rate = match (breaker.failure_rate, breaker.consecutive_failures) {
        (Some(rate), _) => Some(rate),
        (None, Some(_)) => None,
        (None, None) => Some(Policy::DEFAULT_FAILURE_RATE),
    };
    for (rate, key) in [
        (failure_rate, "failure_rate"),
        (breaker.slow_call_rate, "slow_call_rate"),
    ] {
        if let Some(rate) = rate {
            let needed = ((f64::from(minimum) * rate).ceil() as u32).clamp(1, minimum.max(1));
            candidates.push((
                minimum,
                needed,
                format!("{key} = {rate} over at least {minimum} calls within {within}"),
            ));
        }
    }
    let (calls, failing, rule) = candidates
        .into_iter()
        .min_by_key(|(calls, _, _)| *calls)
        .unwrap_or((0, 0, "never: no rule is set".to_owned()));
    Trip {
        calls,
        failing,
        rule,
        open_for: breaker.open_for,
        open_for_max: breaker.open_for_max,
    }
}

/// The settings of `route` that contradict each other, as (field under the route, message).
fn contradictions(route: &OutboundConfig) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let retry = &route.retry;
    let timeout = route.timeout.timeout;
    let show = |d: Duration| humantime::format_duration(d).to_string();
    if let Some(per_try) = retry.per_try_timeout {
        if per_try >= timeout {
            found.push((
                "retry.per_try_timeout".into(),
                format!(
                    "{} is not shorter than the timeout ({}): it never fires first, so an \
                     attempt that hangs is never retried",
                    show(per_try),
                    show(timeout)
                ),
            ));
        } else if retry.attempts > 1 {
            let backoff: Duration = backoff_caps(retry).sum();
            let needed = per_try
                .saturating_mul(retry.attempts)
                .saturating_add(backoff);
            if needed > timeout {
                found.push((
                    "retry.attempts".into(),
                    format!(
                        "{} attempts of up to {} with up to {} of backoff take up to {}, \
                         longer than the timeout ({}): the last attempts may never run",
                        retry.attempts,
                        show(per_try),
                        show(backoff),
                        show(needed),
                        show(timeout)
                    ),
                ));
            }
        }
    }
    if retry.attempts > 1 && retry.on.is_empty() {
        found.push((
            "retry.on".into(),
            format!(
                "is empty: nothing is retried, whatever attempts = {} says",
                retry.attempts
            ),
        ));
    }
    if retry.on.contains(&Condition::RetriableStatusCodes)
        && retry.retriable_status_codes.is_empty()
    {
        found.push((
            "retry.on".into(),
            "names \"retriable-status-codes\" but retriable_status_codes is empty: that \
             condition never fires"
                .into(),
        ));
    }
    if retry.attempts > 1 && retry.budget.ratio == 0.0 && retry.budget.min_per_second == 0 {
        found.push((
            "retry.budget".into(),
            "allows no retry at all (ratio = 0 and min_per_second = 0)".into(),
        ));
    }
    let breaker = &route.breaker;
    if let WindowConfig::Calls(n) = breaker.window
        && breaker.minimum_calls > n
    {
        found.push((
            "breaker.minimum_calls".into(),
            format!(
                "{} is more than the window holds ({n} calls): rates are judged over {n} calls",
                breaker.minimum_calls
            ),
        ));
    }
    let cut_at = retry.per_try_timeout.unwrap_or(timeout).min(timeout);
    if breaker.slow_call_rate.is_some() && breaker.slow_call_duration >= cut_at {
        found.push((
            "breaker.slow_call_duration".into(),
            format!(
                "{} is not shorter than the {} that ends a call first ({}): no call is ever \
                 slow, so slow_call_rate never trips",
                show(breaker.slow_call_duration),
                if retry.per_try_timeout.is_some_and(|p| p < timeout) {
                    "per-try timeout"
                } else {
                    "timeout"
                },
                show(cut_at)
            ),
        ));
    }
    found
}

impl fmt::Display for PolicyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |d: Duration| humantime::format_duration(d).to_string();
        for route in &self.routes {
            match route.line {
                Some(line) => writeln!(f, "route \"{}\" (line {line}):", route.route)?,
                None => writeln!(f, "route \"{}\":", route.route)?,
            }
            let load = &route.load;
            if load.per_request == 1 {
                writeln!(f, "  load on the upstream: 1x, nothing is retried")?;
            } else {
                writeln!(
                    f,
                    "  load on the upstream: at most {}x for one request (attempts); over time \
                     at most {:.2}x (budget ratio) plus {} retries/s (min_per_second)",
                    load.per_request, load.sustained, load.reserve_per_second
                )?;
            }
            let latency = &route.latency;
            let tries = if latency.attempts == 1 {
                format!("1 attempt of up to {}", show(latency.per_try))
            } else {
                format!(
                    "{} attempts of up to {} each with backoff of up to {} in all",
                    latency.attempts,
                    show(latency.per_try),
                    show(latency.backoff)
                )
            };
            let tried = latency
                .per_try
                .saturating_mul(latency.attempts)
                .saturating_add(latency.backoff);
            let worst = show(latency.worst);
            match latency.retry_after {
                _ if tried > latency.timeout => writeln!(
                    f,
                    "  worst-case latency: {worst}, the timeout, which cuts short {tries} ({})",
                    show(tried)
                )?,
                Some(cap) if latency.worst > tried => writeln!(
                    f,
                    "  worst-case latency: {worst}{}: {tries} take up to {}, but a Retry-After \
                     of up to {} may replace each backoff",
                    if latency.cut_by_timeout {
                        ", the timeout"
                    } else {
                        ""
                    },
                    show(tried),
                    show(cap)
                )?,
                _ => writeln!(
                    f,
                    "  worst-case latency: {worst}: {tries}, within the timeout ({})",
                    show(latency.timeout)
                )?,
            }
            let trip = &route.breaker;
            if trip.calls == 0 {
                writeln!(f, "  breaker: never trips ({})", trip.rule)?;
            } else {
                writeln!(
                    f,
                    "  breaker: trips after {} calls at the fastest, {} of them failing or slow \
                     ({}); then open {}, growing to {}",
                    trip.calls,
                    trip.failing,
                    trip.rule,
                    show(trip.open_for),
                    show(trip.open_for_max)
                )?;
            }
        }
        if self.warnings.is_empty() {
            writeln!(f, "no warnings")?;
        }
        for warning in &self.warnings {
            writeln!(f, "warning: {warning}")?;
        }
        Ok(())
    }
}

fn millis<S: serde::Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

fn millis_option<S: serde::Serializer>(
    duration: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(d) => millis(d, s),
        None => s.serialize_none(),
    }
}
