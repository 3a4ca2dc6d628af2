//! The balancer's load estimate of each endpoint, published as the gauge
//! `sidecar_endpoint_load{route, endpoint}` each time the balancer reads it, for Prometheus
//! and the status page. Each worker's balancer has estimates of its own: the gauge is the one
//! read last.

use metrics::SharedString;
use std::{
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
};
use tower::{
    Service,
    load::{Load, peak_ewma::Cost},
};

/// An endpoint as the balancer sees it, whose load estimate is published when read, one read
/// in [`PUBLISH_EVERY`] (the balancer reads it twice a request; the figure is for people).
///
/// The gauge is looked up at each publication rather than held: the exporter drops a series
/// left unchanged for `metrics_idle_timeout`, and a held handle would then write, after an
/// idle spell, to a series no longer exported.
#[derive(Debug)]
pub(crate) struct PublishedLoad<S> {
    inner: S,
    route: SharedString,
    endpoint: SharedString,
    reads: std::sync::atomic::AtomicU32,
}

/// Reads of the load estimate per publication of it: each looks the gauge up (about 4 000
/// instructions), so one in 128 costs a two-endpoint route about 0.2 % of a request's.
const PUBLISH_EVERY: u32 = 128;

impl<S> PublishedLoad<S> {
    pub(crate) fn new(inner: S, route: &str, endpoint: SocketAddr) -> Self {
        Self {
            inner,
            // Shared, so that each publication's labels are a reference count, not a copy.
            route: SharedString::from(Arc::<str>::from(route)),
            endpoint: SharedString::from(Arc::<str>::from(endpoint.to_string())),
            reads: std::sync::atomic::AtomicU32::new(0),
        }
    }
}

impl<S: Service<R>, R> Service<R> for PublishedLoad<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.inner.call(req)
    }
}

impl<S: Load<Metric = Cost>> Load for PublishedLoad<S> {
    type Metric = Cost;

    fn load(&self) -> Cost {
        let cost = self.inner.load();
        let reads = self
            .reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if reads.is_multiple_of(PUBLISH_EVERY)
            && let Some(value) = cost_value(cost)
        {
            metrics::gauge!(
                "sidecar_endpoint_load",
                "route" => self.route.clone(),
                "endpoint" => self.endpoint.clone()
            )
            .set(value);
        }
        cost
    }
}

/// The number in a peak-EWMA `Cost` (its latency estimate in nanoseconds times the requests
/// in flight, plus one). tower keeps it private but prints it: `Cost(1234.5)`.
fn cost_value(cost: Cost) -> Option<f64> {
    format!("{cost:?}")
        .strip_prefix("Cost(")?
        .strip_suffix(')')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tower::load::{CompleteOnResponse, PeakEwma};

    /// Pins how tower prints a `Cost`: if that changes, this fails rather than the page
    /// silently losing the figure.
    #[tokio::test(start_paused = true)]
    async fn the_cost_of_an_idle_endpoint_is_its_default_latency() {
        let service = tower::service_fn(|()| async { Ok::<_, ()>(()) });
        let ewma = PeakEwma::new(
            service,
            Duration::from_millis(30),
            10e9,
            CompleteOnResponse::default(),
        );
        // Nothing in flight: the default round trip, in nanoseconds.
        assert_eq!(cost_value(ewma.load()), Some(30e6));
    }
}
