//! A flaky HTTP upstream: it answers HTTP/1.1 and h2c on 127.0.0.1, and fails on purpose, on
//! an exact schedule: error statuses (spread or in bursts), latency, connection resets (before
//! the answer or half-way through its body), hung requests, bodies sent one byte at a time,
//! bytes that are not HTTP, and keep-alive connections closed while idle. The faults can be
//! changed while it runs ([`Upstream::set_faults`]), and it counts what it did.
//! Demos, tests and benchmarks of the other packages share it.
//!
//! Run it (every flag: `--help`):
//!
//! ```sh
//! cargo run --release -p example-flaky-upstream -- --listen 127.0.0.1:8080 \
//!     --error-rate 0.2 --latency 5ms --reset-rate 0.01
//! curl -i http://127.0.0.1:8080/
//! ```
//!
//! Or start it in process, on a free port, and read its counters:
//!
//! ```no_run
//! use example_flaky_upstream::{Faults, Rate, Upstream};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let upstream = Upstream::start(Faults {
//!     error_rate: Rate::every(3), // requests 3, 6, 9... get a 503
//!     ..Faults::default()
//! })
//! .await?;
//! println!("listening on {}", upstream.addr());
//! // ... send requests ...
//! assert_eq!(upstream.counters().errors, upstream.counters().requests / 3);
//! # Ok(())
//! # }
//! ```
//!
//! Rates are exact rather than random ([`Rate`]): after `N` requests, a rate `r` has picked
//! exactly `floor(N * r)` of them, spread evenly, so tests can assert counts.

mod counters;
mod faults;
mod server;

pub use counters::{Counters, Snapshot};
pub use faults::{Faults, Rate};
pub use server::{Body, INVALID_HTTP, REQUEST_ID, REQUEST_NUMBER, Upstream};
