//! A bounded load loop, recording what each request got.

use super::{BoxBody, STEP, http1};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::time::{Instant, timeout};

/// What one request got.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The request's number, from 0, across all workers.
    pub n: u64,
    pub post: bool,
    /// The status, when a response head came.
    pub status: Option<StatusCode>,
    /// The `x-sidecar-error` flag of a response the sidecar made itself.
    pub flag: Option<String>,
    /// The error instead of a response, or while reading its body.
    pub error: Option<String>,
    /// From sending to the end of the body (or the error).
    pub latency: Duration,
}

impl Outcome {
    /// A 2xx with its whole body.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| s.is_success())
    }
}

/// Everything a load run got.
#[derive(Debug, Default)]
pub struct Load {
    pub outcomes: Vec<Outcome>,
    pub elapsed: Duration,
}

impl Load {
    pub fn sent(&self) -> usize {
        self.outcomes.len()
    }

    pub fn failures(&self) -> Vec<&Outcome> {
        self.outcomes.iter().filter(|o| !o.ok()).collect()
    }

    pub fn count(&self, which: impl Fn(&Outcome) -> bool) -> usize {
        self.outcomes.iter().filter(|o| which(o)).count()
    }

    /// The `q` quantile (0 to 1) of the latencies of the outcomes `which` picks.
    pub fn quantile(&self, q: f64, which: impl Fn(&Outcome) -> bool) -> Duration {
        let mut latencies: Vec<Duration> = self
            .outcomes
            .iter()
            .filter(|o| which(o))
            .map(|o| o.latency)
            .collect();
        latencies.sort();
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((latencies.len() as f64) * q).ceil() as usize;
        latencies[rank.clamp(1, latencies.len()) - 1]
    }

    /// A one-line summary for the test's output.
    pub fn summary(&self) -> String {
        let ok = self.count(Outcome::ok);
        format!(
            "{} requests in {:.2?} ({:.0} req/s): {ok} ok, {} not; p50 {:.2?}, p99 {:.2?}",
            self.sent(),
            self.elapsed,
            self.sent() as f64 / self.elapsed.as_secs_f64().max(1e-9),
            self.sent() - ok,
            self.quantile(0.5, |_| true),
            self.quantile(0.99, |_| true),
        )
    }
}

/// How a load run sends and stops.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Concurrent request loops, each on its own keep-alive connection pool.
    pub workers: usize,
    /// Stop starting requests after this long...
    pub duration: Duration,
    /// ...or after this many requests in all, whichever comes first.
    pub max_requests: u64,
    /// Every `post_every`th request is a POST (0: none), each with a unique `x-request-id`.
    pub post_every: u64,
    /// The pause between a worker's requests (zero: back to back).
    pub pace: Duration,
    /// The number of the first request (and of its `x-request-id`), so that runs against
    /// one upstream do not reuse ids.
    pub first: u64,
}

impl Plan {
    pub fn new(workers: usize, duration: Duration) -> Self {
        Self {
            workers,
            duration,
            max_requests: 1_000_000,
            post_every: 0,
            pace: Duration::ZERO,
            first: 0,
        }
    }
}

/// Runs `plan` against `addr`, every request `GET /n` (or `POST /n`), each bounded by
/// [`STEP`]; returns every outcome, in no particular order.
pub async fn run(addr: SocketAddr, plan: Plan) -> Load {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let stop_at = started + plan.duration;
    let workers: Vec<_> = (0..plan.workers)
        .map(|_| {
            let next = next.clone();
            tokio::spawn(async move {
                let client = http1();
                let mut outcomes = Vec::new();
                while Instant::now() < stop_at {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= plan.max_requests {
                        break;
                    }
                    let post = plan.post_every > 0 && n % plan.post_every == plan.post_every - 1;
                    outcomes.push(send(&client, addr, plan.first + n, post).await);
                    if !plan.pace.is_zero() {
                        tokio::time::sleep(plan.pace).await;
                    }
                }
                outcomes
            })
        })
        .collect();
    let mut load = Load::default();
    for worker in workers {
        load.outcomes
            .extend(worker.await.expect("a load worker panicked"));
    }
    load.elapsed = started.elapsed();
    load
}

/// One request, read to the end of its body. A POST carries `x-request-id: load-N`, so the
/// flaky upstream counts one that arrives twice.
pub async fn send(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        BoxBody,
    >,
    addr: SocketAddr,
    n: u64,
    post: bool,
) -> Outcome {
    let mut req = Request::builder()
        .method(if post { "POST" } else { "GET" })
        .uri(format!("http://{addr}/{n}"));
    if post {
        req = req.header("x-request-id", format!("load-{n}"));
    }
    let req = req
        .body(super::full(if post { "order" } else { "" }))
        .expect("a valid request");
    let started = Instant::now();
    let mut outcome = Outcome {
        n,
        post,
        status: None,
        flag: None,
        error: None,
        latency: Duration::ZERO,
    };
    match timeout(STEP, client.request(req)).await {
        Err(_) => outcome.error = Some("no response within STEP".into()),
        Ok(Err(error)) => outcome.error = Some(format!("{error:?}")),
        Ok(Ok(response)) => {
            outcome.status = Some(response.status());
            outcome.flag = response
                .headers()
                .get("x-sidecar-error")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match timeout(STEP, response.into_body().collect()).await {
                Err(_) => outcome.error = Some("body not finished within STEP".into()),
                Ok(Err(error)) => outcome.error = Some(format!("body: {error:?}")),
                Ok(Ok(_)) => {}
            }
        }
    }
    outcome.latency = started.elapsed();
    outcome
}
