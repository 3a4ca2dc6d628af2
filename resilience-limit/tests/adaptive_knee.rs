//! The adaptive limit against a simulated upstream whose latency rises past a knee of 20
//! concurrent calls (each call's latency is 10 ms times the calls in flight over 20, so it can
//! serve 2000 calls a second however many it is sent at once), offered twice what it can
//! serve, on paused time: the limit settles near the knee, goodput matches the best static
//! limit, and admitted calls stay fast.

use resilience_limit::{AdaptiveConcurrencyLayer, AdaptiveHandle, Algorithm, Vegas};
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tower::{BoxError, Layer, Service, ServiceExt, limit::ConcurrencyLimitLayer, service_fn};

const KNEE: usize = 20;
const BASE: Duration = Duration::from_millis(10);
/// Twice what the upstream can serve (2000 a second).
const ARRIVAL_EVERY: Duration = Duration::from_micros(250);
const WARM_UP: Duration = Duration::from_secs(5);
const MEASURED: Duration = Duration::from_secs(15);

#[derive(Debug, Default)]
struct Outcome {
    /// Latencies of the calls that completed within the measured spell.
    latencies: Vec<Duration>,
    /// The adaptive limit, read every 100 ms of the measured spell.
    limits: Vec<usize>,
}

impl Outcome {
    fn goodput(&self) -> f64 {
        self.latencies.len() as f64 / MEASURED.as_secs_f64()
    }

    fn p99(&self) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted[sorted.len() * 99 / 100]
    }
}

/// The upstream: latency grows with the calls in flight past the knee.
fn upstream() -> impl Service<(), Response = (), Error = BoxError, Future: Send> + Clone + Send {
    let in_flight = Arc::new(AtomicUsize::new(0));
    service_fn(move |()| {
        let in_flight = in_flight.clone();
        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let latency = BASE.mul_f64((now as f64 / KNEE as f64).max(1.0));
        async move {
            tokio::time::sleep(latency).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, BoxError>(())
        }
    })
}

/// Offers the load to `service` for the warm-up and the measured spell.
async fn offer<S>(service: S, handle: Option<AdaptiveHandle>) -> Outcome
where
    S: Service<(), Response = (), Error = BoxError, Future: Send + 'static>
        + Clone
        + Send
        + 'static,
{
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let start = tokio::time::Instant::now();
    let measure_from = start + WARM_UP;
    let end = measure_from + MEASURED;
    let mut next_read = measure_from;
    let mut tasks = tokio::task::JoinSet::new();
    let mut arrivals = tokio::time::interval(ARRIVAL_EVERY);
    while tokio::time::Instant::now() < end {
        arrivals.tick().await;
        let now = tokio::time::Instant::now();
        if let Some(handle) = &handle
            && now >= next_read
        {
            outcome.lock().unwrap().limits.push(handle.limit());
            next_read += Duration::from_millis(100);
        }
        let call = service.clone().oneshot(());
        let outcome = outcome.clone();
        tasks.spawn(async move {
            let admitted = tokio::time::Instant::now();
            if call.await.is_ok() {
                let done = tokio::time::Instant::now();
                if admitted >= measure_from && done < end {
                    outcome.lock().unwrap().latencies.push(done - admitted);
                }
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    tasks.shutdown().await;
    Arc::try_unwrap(outcome).unwrap().into_inner().unwrap()
}

async fn adaptive(algorithm: Algorithm) -> Outcome {
    let layer = AdaptiveConcurrencyLayer::new(algorithm)
        .limits(1, 1, 1000)
        .unwrap();
    let handle = layer.handle();
    offer(layer.layer(upstream()), Some(handle)).await
}

async fn fixed(limit: usize) -> Outcome {
    // Shed at once over the limit, as the adaptive limit does: no queue.
    let service = tower::load_shed::LoadShedLayer::new()
        .layer(ConcurrencyLimitLayer::new(limit).layer(upstream()));
    let service = service.map_err(BoxError::from);
    offer(service, None).await
}

/// `algorithm` against the static limits: settles within 30 % of the knee, with the goodput
/// of the best static limit, and admitted calls near the no-load latency.
async fn settles_near_the_knee(name: &str, algorithm: Algorithm) {
    let outcome = adaptive(algorithm).await;
    let mut best = 0.0_f64;
    for limit in [5, 10, 20, 40, 80] {
        let goodput = fixed(limit).await.goodput();
        println!("static {limit}: {goodput:.0} calls/s");
        best = best.max(goodput);
    }
    let limits = &outcome.limits;
    let (low, high) = (*limits.iter().min().unwrap(), *limits.iter().max().unwrap());
    println!(
        "{name}: limit {low}..={high}, goodput {:.0} calls/s, p99 {:?}",
        outcome.goodput(),
        outcome.p99()
    );
    assert!(
        low >= 14 && high <= 26,
        "{name}: the limit stays within 30 % of the knee (20): {low}..={high}"
    );
    assert!(
        outcome.goodput() >= best * 0.98,
        "{name}: goodput {:.0} vs the best static limit's {best:.0}",
        outcome.goodput()
    );
    assert!(
        outcome.p99() <= BASE.mul_f64(1.5),
        "{name}: admitted calls stay near the no-load latency: p99 {:?}",
        outcome.p99()
    );
}

#[tokio::test(start_paused = true)]
async fn gradient2_settles_near_the_knee_with_the_goodput_of_the_best_static_limit() {
    settles_near_the_knee("gradient2", Algorithm::default()).await;
}

#[tokio::test(start_paused = true)]
async fn vegas_settles_near_the_knee_with_the_goodput_of_the_best_static_limit() {
    settles_near_the_knee("vegas", Algorithm::Vegas(Vegas::default())).await;
}
