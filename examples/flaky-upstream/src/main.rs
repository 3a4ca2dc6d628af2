//! The flaky upstream as a program: an HTTP/1.1 and h2c server that fails on purpose.
//!
//! Run it from the workspace root (every flag: `--help`):
//!
//! ```sh
//! cargo run --release -p example-flaky-upstream -- --listen 127.0.0.1:8080 \
//!     --error-rate 0.2 --error-status 503 --latency 5ms --reset-rate 0.01
//! curl -i http://127.0.0.1:8080/
//! ```
//!
//! It prints `listening on http://ADDR` for each `--listen` once it accepts connections (use
//! `--listen 127.0.0.1:0` for a free port), and its counters when stopped with Ctrl-C or
//! SIGTERM.

use clap::Parser;
use example_flaky_upstream::{Faults, Rate, Upstream};
use http::StatusCode;
use std::{net::SocketAddr, process::ExitCode, time::Duration};

/// An HTTP upstream that fails on purpose. Rates are shares between 0 and 1, applied on an
/// exact schedule (0.25 fails requests 4, 8, 12...), not at random.
#[derive(Debug, Parser)]
#[command(name = "flaky-upstream")]
struct Cli {
    /// Where to listen (loopback; port 0 for a free one). Given more than once, each address
    /// is an upstream of its own (its own fault schedule and counters), all on one runtime.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: Vec<SocketAddr>,
    /// Share of requests answered with --error-status.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// The status of injected errors.
    #[arg(long, default_value_t = 503)]
    error_status: u16,
    /// Waited before every answer, e.g. "5ms".
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    latency: Duration,
    /// Share of requests that wait --slow-latency more.
    #[arg(long, default_value_t = 0.0)]
    slow_rate: f64,
    /// The extra wait of a request picked by --slow-rate, e.g. "100ms".
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
    slow_latency: Duration,
    /// Share of requests whose connection is reset (TCP RST).
    #[arg(long, default_value_t = 0.0)]
    reset_rate: f64,
    /// Share of requests whose connection is reset half-way through the response body.
    #[arg(long, default_value_t = 0.0)]
    reset_mid_body_rate: f64,
    /// Injected errors come in bursts of this many requests out of every --error-period
    /// (instead of --error-rate spread evenly).
    #[arg(long, requires = "error_period")]
    error_burst: Option<u64>,
    /// The period of --error-burst, in requests.
    #[arg(long, requires = "error_burst")]
    error_period: Option<u64>,
    /// Share of requests never answered (held for --hang-for, then the connection closes).
    #[arg(long, default_value_t = 0.0)]
    hang_rate: f64,
    /// How long a hung request is held.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    hang_for: Duration,
    /// Share of requests whose body is sent one byte at a time.
    #[arg(long, default_value_t = 0.0)]
    slow_body_rate: f64,
    /// The pause between the bytes of a slow body.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10ms")]
    slow_byte_interval: Duration,
    /// Share of requests answered with bytes that are not HTTP.
    #[arg(long, default_value_t = 0.0)]
    invalid_http_rate: f64,
    /// Close keep-alive connections idle this long, e.g. "100ms".
    #[arg(long, value_parser = humantime::parse_duration)]
    close_idle_after: Option<Duration>,
    /// Size of a successful response's body, in bytes.
    #[arg(long, default_value_t = 3)]
    body_bytes: usize,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    worker_threads: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Ok(error_status) = StatusCode::from_u16(cli.error_status) else {
        eprintln!("--error-status {}: not an HTTP status", cli.error_status);
        return ExitCode::from(2);
    };
    let faults = Faults {
        error_rate: match (cli.error_burst, cli.error_period) {
            (Some(length), Some(period)) => Rate::bursts(length, period),
            _ => Rate::new(cli.error_rate),
        },
        error_status,
        latency: cli.latency,
        slow_rate: Rate::new(cli.slow_rate),
        slow_latency: cli.slow_latency,
        reset_rate: Rate::new(cli.reset_rate),
        reset_mid_body_rate: Rate::new(cli.reset_mid_body_rate),
        hang_rate: Rate::new(cli.hang_rate),
        hang_for: cli.hang_for,
        slow_body_rate: Rate::new(cli.slow_body_rate),
        slow_byte_interval: cli.slow_byte_interval,
        invalid_http_rate: Rate::new(cli.invalid_http_rate),
        close_idle_after: cli.close_idle_after,
        body_bytes: cli.body_bytes,
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.worker_threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let mut upstreams = Vec::with_capacity(cli.listen.len());
        for addr in &cli.listen {
            match Upstream::start_on(*addr, faults.clone()).await {
                Ok(upstream) => {
                    println!("listening on http://{}", upstream.addr());
                    upstreams.push(upstream);
                }
                Err(error) => {
                    eprintln!("cannot listen on {addr}: {error}");
                    return ExitCode::FAILURE;
                }
            }
        }
        wait_for_signal().await;
        for upstream in &upstreams {
            println!("{}: {:?}", upstream.addr(), upstream.counters());
        }
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
