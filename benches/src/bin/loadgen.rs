//! A fixed-rate HTTP/1.1 load generator for the load harness (`benches/load/run.py`), since
//! Debian's `wrk` has no fixed-rate mode: it sends `GET`s at a constant total rate over
//! keep-alive connections and prints latency percentiles as one JSON line.
//!
//! ```sh
//! cargo build --release -p benches --bin loadgen
//! target/release/loadgen --addr 127.0.0.1:8080 --rate 5000 --connections 32 --seconds 3
//! ```
//!
//! Request `k` is due `k / rate` seconds after the start and goes on connection
//! `k % connections`, so the requests are evenly spaced. A thread of its own keeps the schedule
//! (see [`pace`]): the runtime's timer fires at most once a millisecond, and requests paced by it
//! left in bursts (five at a time at 5 000 req/s) that queued at the server, so their latency was
//! the burst's rather than the rate's. Latency is counted as wrk2 counts it, without coordinated
//! omission: when a request could not go when it was due because the previous answer on its
//! connection came late, its latency runs from when the pacing thread let it go; otherwise from
//! when it was sent (the hand-over from the pacing thread is not charged to the server).

use std::{net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::mpsc,
    time::Instant,
};

struct Args {
    addr: SocketAddr,
    path: String,
    rate: f64,
    connections: usize,
    seconds: f64,
    warmup: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
        path: "/".into(),
        rate: 5000.0,
        connections: 32,
        seconds: 3.0,
        warmup: 0.5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--addr" => args.addr = value.parse().map_err(|e| bad(&e))?,
            "--path" => args.path = value,
            "--rate" => args.rate = value.parse().map_err(|e| bad(&e))?,
            "--connections" => args.connections = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => args.seconds = value.parse().map_err(|e| bad(&e))?,
            "--warmup" => args.warmup = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if !(args.rate > 0.0 && args.connections > 0 && args.seconds > 0.0 && args.seconds <= 60.0) {
        return Err("need --rate > 0, --connections > 0, 0 < --seconds <= 60".into());
    }
    Ok(args)
}

/// What one connection saw: latencies (ns) of the requests scheduled after the warm-up, and
/// how many failed.
struct Outcome {
    latencies: Vec<u64>,
    errors: u64,
}

/// A request handed to its connection: when it was due, and when the pacing thread let it go.
#[derive(Clone, Copy)]
struct Due {
    at: Duration,
    fired: Instant,
}

/// Keeps the schedule: sleeps until each request is due and hands it to its connection. A
/// thread's sleep ends within tens of microseconds of its instant, well inside the gap between
/// two requests; the runtime's timer would round every instant up to its next millisecond.
/// Dropping the senders at the end tells the connections that the run is over.
#[expect(
    clippy::disallowed_methods,
    reason = "the pacing thread is not on a runtime, and needs a finer sleep than its timer"
)]
fn pace(args: &Args, start: Instant, connections: Vec<mpsc::UnboundedSender<Due>>) {
    let end = Duration::from_secs_f64(args.warmup + args.seconds);
    for k in 0u64.. {
        let at = Duration::from_secs_f64(k as f64 / args.rate);
        if at >= end {
            break;
        }
        let now = Instant::now();
        if start + at > now {
            std::thread::sleep(start + at - now);
        }
        let due = Due {
            at,
            fired: Instant::now(),
        };
        let connection = &connections[(k % connections.len() as u64) as usize];
        if connection.send(due).is_err() {
            break;
        }
    }
}

async fn connection(args: &Args, mut due: mpsc::UnboundedReceiver<Due>) -> Outcome {
    let warmup = Duration::from_secs_f64(args.warmup);
    let request = format!("GET {} HTTP/1.1\r\nhost: load\r\n\r\n", args.path);
    let mut outcome = Outcome {
        latencies: Vec::new(),
        errors: 0,
    };
    let mut stream: Option<BufReader<TcpStream>> = None;
    // When the previous answer came: a request due before then is late.
    let mut free_since = Instant::now();
    while let Some(Due { at, fired }) = due.recv().await {
        let sent_at = if free_since > fired {
            // Late because the previous answer was: count from the schedule, as the pacing
            // thread kept it.
            fired
        } else {
            Instant::now()
        };
        if stream.is_none() {
            match TcpStream::connect(args.addr).await {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    stream = Some(BufReader::new(tcp));
                }
                Err(_) => {
                    outcome.errors += 1;
                    free_since = Instant::now();
                    continue;
                }
            }
        }
        let Some(conn) = stream.as_mut() else {
            continue;
        };
        let ok = round_trip(conn, request.as_bytes()).await;
        let latency = sent_at.elapsed();
        free_since = Instant::now();
        if !ok {
            outcome.errors += 1;
            stream = None;
        } else if at >= warmup {
            outcome.latencies.push(latency.as_nanos() as u64);
        }
    }
    outcome
}

/// Sends one request and reads the whole answer; whether it was a 2xx.
async fn round_trip(conn: &mut BufReader<TcpStream>, request: &[u8]) -> bool {
    if conn.get_mut().write_all(request).await.is_err() {
        return false;
    }
    let mut line = String::new();
    if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
        return false;
    }
    let success = line.split(' ').nth(1).is_some_and(|s| s.starts_with('2'));
    let mut length: Option<usize> = None;
    let mut chunked = false;
    loop {
        line.clear();
        if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
            return false;
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
    }
    if chunked {
        loop {
            line.clear();
            if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                return false;
            }
            let Ok(size) = usize::from_str_radix(line.trim_end(), 16) else {
                return false;
            };
            // The chunk and its CRLF (the last chunk: just the CRLF after no trailers).
            let mut chunk = vec![0; size + 2];
            if conn.read_exact(&mut chunk).await.is_err() {
                return false;
            }
            if size == 0 {
                return success;
            }
        }
    }
    let mut body = vec![0; length.unwrap_or(0)];
    conn.read_exact(&mut body).await.is_ok() && success
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("loadgen: {message}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..args.connections)
        .map(|_| mpsc::unbounded_channel())
        .unzip();
    let start = Instant::now() + Duration::from_millis(20);
    let args = &args;
    let outcomes = std::thread::scope(|scope| {
        scope.spawn(move || pace(args, start, senders));
        runtime.block_on(futures::future::join_all(
            receivers.into_iter().map(|due| connection(args, due)),
        ))
    });
    let mut latencies: Vec<u64> = outcomes
        .iter()
        .flat_map(|o| o.latencies.iter().copied())
        .collect();
    let errors: u64 = outcomes.iter().map(|o| o.errors).sum();
    latencies.sort_unstable();
    println!(
        "{{\"rate\":{},\"seconds\":{},\"requests\":{},\"errors\":{},\"achieved_rps\":{:.1},\"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1}}}",
        args.rate,
        args.seconds,
        latencies.len(),
        errors,
        latencies.len() as f64 / args.seconds,
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 99.9),
        percentile(&latencies, 100.0),
    );
}
