//! Criterion benchmarks for the resilience workspace, and the helpers they share.
//!
//! Run them with `cargo bench -p benches`; see the workspace README for the figures.

use criterion::{BenchmarkGroup, measurement::WallTime};
use std::{convert::Infallible, fmt::Debug, hint::black_box};
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt, service_fn};

/// A single-threaded runtime with timers, as a service under test would run on.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime")
}

/// A service that answers every request at once with the request itself: the bare baseline.
pub fn echo() -> impl Service<u64, Response = u64, Error = Infallible, Future: Send> + Clone {
    service_fn(|req: u64| async move { Ok::<_, Infallible>(req) })
}

/// Measures one ready-and-call round trip through `svc`, many times inside one task, so the
/// figure is the per-call cost of the service and not of entering the runtime.
pub fn bench_calls<S>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, rt: &Runtime, svc: S)
where
    S: Service<u64> + Clone + 'static,
    S::Error: Debug,
{
    group.bench_function(name, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let mut svc = svc.clone();
            async move {
                // Criterion measures wall time; this is the benchmark's clock, not library code.
                #[allow(clippy::disallowed_types, clippy::disallowed_methods)]
                let start = std::time::Instant::now();
                for i in 0..iters {
                    let ready = svc.ready().await.expect("ready");
                    black_box(ready.call(i).await.expect("response"));
                }
                start.elapsed()
            }
        })
    });
}
