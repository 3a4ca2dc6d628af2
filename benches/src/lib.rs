//! Criterion benchmarks for the resilience workspace, and the helpers they share.
//!
//! Run them with `cargo bench -p benches`; see the workspace README for the figures.

pub mod process;

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

/// Measures one ready-and-call round trip through clones of `svc` on `threads` threads at once,
/// each thread on its own single-threaded runtime, all sharing whatever the clones share (a
/// circuit breaker's state, say). The figure is the wall time from the first thread's start to
/// the last thread's end, for each thread making `iters` calls: the per-call cost under
/// contention.
// Criterion measures wall time; this is the benchmark's clock, not library code.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
pub fn bench_calls_threaded<S>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    threads: usize,
    svc: S,
) where
    S: Service<u64> + Clone + Send + 'static,
    S::Error: Debug,
{
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let barrier = std::sync::Barrier::new(threads);
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..threads)
                    .map(|_| {
                        let mut svc = svc.clone();
                        let barrier = &barrier;
                        scope.spawn(move || {
                            let rt = runtime();
                            barrier.wait();
                            let start = std::time::Instant::now();
                            rt.block_on(async {
                                for i in 0..iters {
                                    let ready = svc.ready().await.expect("ready");
                                    black_box(ready.call(i).await.expect("response"));
                                }
                            });
                            (start, std::time::Instant::now())
                        })
                    })
                    .collect();
                let spans: Vec<_> = workers
                    .into_iter()
                    .map(|w| w.join().expect("a benchmark thread"))
                    .collect();
                let start = spans.iter().map(|s| s.0).min().expect("one thread or more");
                let end = spans.iter().map(|s| s.1).max().expect("one thread or more");
                end - start
            })
        })
    });
}
