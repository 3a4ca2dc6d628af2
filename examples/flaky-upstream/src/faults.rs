//! What the upstream does wrong, and on which requests: [`Faults`] and the exact schedule
//! ([`Rate`]) that picks the requests.

use http::StatusCode;
use std::time::Duration;

/// A share of requests, applied exactly rather than at random: with rate `r`, request `n`
/// (counting from 1) is picked when `floor(n * r)` grows, so after `N` requests exactly
/// `floor(N * r)` have been picked, spread evenly. `0.25` picks requests 4, 8, 12...; `0.5`
/// picks 2, 4, 6...; `1.0` picks all. Tests can assert the counts; demos still look flaky.
///
/// [`Rate::bursts`] picks runs of consecutive requests instead: the first `length` of every
/// `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// The share as a fraction, so that the arithmetic is exact: `every(3)` is 1/3, not
    /// 0.333333.
    numerator: u64,
    denominator: u64,
    /// Whether the picked requests come in one run per period rather than spread evenly.
    bursty: bool,
}

const MILLION: u64 = 1_000_000;

impl Default for Rate {
    fn default() -> Self {
        Self::NEVER
    }
}

impl Rate {
    /// Never.
    pub const NEVER: Self = Self {
        numerator: 0,
        denominator: 1,
        bursty: false,
    };
    /// Every request.
    pub const ALWAYS: Self = Self {
        numerator: 1,
        denominator: 1,
        bursty: false,
    };

    /// A share between 0 and 1 (clamped), to the nearest millionth.
    #[must_use]
    pub fn new(share: f64) -> Self {
        Self {
            numerator: (share.clamp(0.0, 1.0) * MILLION as f64).round() as u64,
            denominator: MILLION,
            bursty: false,
        }
    }

    /// Bursts: requests `1..=length` of every `period` (so `bursts(3, 10)` picks 1, 2, 3, 11,
    /// 12, 13...), as an upstream that fails for a while, then recovers, again and again.
    /// `length` is capped at `period`; a `period` of 0 means never.
    #[must_use]
    pub fn bursts(length: u64, period: u64) -> Self {
        if period == 0 {
            return Self::NEVER;
        }
        Self {
            numerator: length.min(period),
            denominator: period,
            bursty: true,
        }
    }

    /// Exactly one request in `n`: the `n`th, the `2n`th... `0` means never.
    #[must_use]
    pub fn every(n: u64) -> Self {
        if n == 0 {
            Self::NEVER
        } else {
            Self {
                numerator: 1,
                denominator: n,
                bursty: false,
            }
        }
    }

    /// The share, between 0 and 1.
    #[must_use]
    pub fn share(self) -> f64 {
        self.numerator as f64 / self.denominator as f64
    }

    /// How many of the first `n` requests are picked: `floor(n * share)` (for bursts, every
    /// full period's run and as much of the current one as has come).
    #[must_use]
    pub fn picked_among(self, n: u64) -> u64 {
        if self.bursty {
            return n / self.denominator * self.numerator
                + (n % self.denominator).min(self.numerator);
        }
        // u128: no overflow even for u64::MAX requests at a share of a million millionths.
        (u128::from(n) * u128::from(self.numerator) / u128::from(self.denominator)) as u64
    }

    /// Whether request `n` (from 1) is picked.
    #[must_use]
    pub fn picks(self, n: u64) -> bool {
        n > 0 && self.picked_among(n) > self.picked_among(n - 1)
    }
}

/// Everything the upstream can do wrong. The default does nothing wrong: a fast `200 OK`.
///
/// When several faults pick the same request, the first in this order wins: reset, invalid
/// HTTP, hang, error status, reset mid-body, slow body. Latency applies to every request that gets an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Requests answered with [`Faults::error_status`].
    pub error_rate: Rate,
    /// The status of an injected error. Default `503 Service Unavailable`.
    pub error_status: StatusCode,
    /// Waited before every answer (errors included). Default none.
    pub latency: Duration,
    /// Requests that wait [`Faults::slow_latency`] more before their answer: a slow spell of
    /// one endpoint, for hedging to beat.
    pub slow_rate: Rate,
    /// The extra wait of a request picked by [`Faults::slow_rate`]. Default 100 ms.
    pub slow_latency: Duration,
    /// Requests whose connection is reset (TCP RST, no response): the whole connection, so
    /// over HTTP/2 every stream on it fails with the picked one.
    pub reset_rate: Rate,
    /// Requests whose connection is reset in the middle of the response: the head and the
    /// first half of the body go out, then a TCP RST.
    pub reset_mid_body_rate: Rate,
    /// Requests never answered: the upstream holds them until [`Faults::hang_for`] passes,
    /// the client goes away, or the upstream stops.
    pub hang_rate: Rate,
    /// How long a hung request is held before its connection is closed. Default 60 s.
    pub hang_for: Duration,
    /// Requests whose body is sent one byte at a time, [`Faults::slow_byte_interval`] apart.
    pub slow_body_rate: Rate,
    /// The pause between the bytes of a slow body. Default 10 ms.
    pub slow_byte_interval: Duration,
    /// Requests answered with bytes that are not HTTP, after which the connection closes.
    pub invalid_http_rate: Rate,
    /// Keep-alive connections idle (no request in flight) this long are closed by the
    /// upstream, as servers with a short keep-alive timeout do. Default never.
    pub close_idle_after: Option<Duration>,
    /// The size of a successful response's body (`ok\n` at the default of 3;
    /// larger bodies are `okkk...k\n`).
    pub body_bytes: usize,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            error_rate: Rate::NEVER,
            error_status: StatusCode::SERVICE_UNAVAILABLE,
            latency: Duration::ZERO,
            slow_rate: Rate::NEVER,
            slow_latency: Duration::from_millis(100),
            reset_rate: Rate::NEVER,
            reset_mid_body_rate: Rate::NEVER,
            hang_rate: Rate::NEVER,
            hang_for: Duration::from_secs(60),
            slow_body_rate: Rate::NEVER,
            slow_byte_interval: Duration::from_millis(10),
            invalid_http_rate: Rate::NEVER,
            close_idle_after: None,
            body_bytes: 3,
        }
    }
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Reset,
    InvalidHttp,
    Hang,
    Error,
    ResetMidBody,
    SlowBody,
    Ok,
}

impl Faults {
    /// The fate of request `n` (from 1).
    pub(crate) fn fate(&self, n: u64) -> Fate {
        if self.reset_rate.picks(n) {
            Fate::Reset
        } else if self.invalid_http_rate.picks(n) {
            Fate::InvalidHttp
        } else if self.hang_rate.picks(n) {
            Fate::Hang
        } else if self.error_rate.picks(n) {
            Fate::Error
        } else if self.reset_mid_body_rate.picks(n) {
            Fate::ResetMidBody
        } else if self.slow_body_rate.picks(n) {
            Fate::SlowBody
        } else {
            Fate::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picked(rate: Rate, upto: u64) -> Vec<u64> {
        (1..=upto).filter(|&n| rate.picks(n)).collect()
    }

    #[test]
    fn rates_pick_exactly_and_evenly() {
        assert_eq!(picked(Rate::new(0.25), 12), [4, 8, 12]);
        assert_eq!(picked(Rate::new(0.5), 6), [2, 4, 6]);
        assert_eq!(picked(Rate::every(3), 9), [3, 6, 9]);
        assert_eq!(picked(Rate::every(7), 21), [7, 14, 21]);
        assert_eq!(picked(Rate::ALWAYS, 3), [1, 2, 3]);
        assert!(picked(Rate::NEVER, 1000).is_empty());
        for share in [0.001, 0.1, 0.2, 0.3, 0.37, 0.9] {
            let rate = Rate::new(share);
            assert_eq!(picked(rate, 10_000).len() as u64, rate.picked_among(10_000));
            assert_eq!(rate.picked_among(10_000), (10_000.0 * share).round() as u64);
        }
    }

    #[test]
    fn bursts_pick_runs_of_consecutive_requests() {
        assert_eq!(
            picked(Rate::bursts(3, 10), 23),
            [1, 2, 3, 11, 12, 13, 21, 22, 23]
        );
        assert_eq!(Rate::bursts(3, 10).picked_among(25), 9);
        assert_eq!(
            picked(Rate::bursts(5, 2), 3),
            [1, 2, 3],
            "a run as long as its period"
        );
        assert!(picked(Rate::bursts(3, 0), 10).is_empty());
        assert!((Rate::bursts(1, 4).share() - 0.25).abs() < f64::EPSILON);
    }

    #[test]
    fn the_first_fault_in_order_wins() {
        let faults = Faults {
            reset_rate: Rate::every(4),
            error_rate: Rate::every(2),
            ..Faults::default()
        };
        let fates: Vec<Fate> = (1..=4).map(|n| faults.fate(n)).collect();
        assert_eq!(fates, [Fate::Ok, Fate::Error, Fate::Ok, Fate::Reset]);
    }
}
