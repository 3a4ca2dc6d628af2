//! [`Policy`]: when a breaker trips, how long it stays open, and how it probes.

use crate::{ConfigError, SlidingWindow};
use resilience_core::{RandomSource, ThreadRandom};
use std::{fmt, sync::Arc, time::Duration};

/// The rules of one circuit breaker, with resilience4j's meanings.
///
/// Start from [`Policy::default`] (or [`Policy::consecutive_failures`]) and change what you need;
/// every default below is the one `sidecar-lite` uses, with its reason. The setters take any
/// value; the policy is checked as a whole, by [`validate`](Self::validate), when it goes into
/// a breaker: every constructor that takes a policy returns its [`ConfigError`].
///
/// ```
/// use resilience_breaker::{Policy, SlidingWindow};
/// use std::time::Duration;
///
/// let policy = Policy::default()
///     .failure_rate(0.5)
///     .window(SlidingWindow::Time(Duration::from_secs(10)))
///     .minimum_calls(20)
///     .slow_calls(0.8, Duration::from_secs(2))
///     .open_for(Duration::from_secs(5))
///     .half_open_probes(3);
/// policy.validate().unwrap();
/// ```
#[derive(Clone)]
#[must_use]
pub struct Policy {
    pub(crate) failure_rate: Option<f64>,
    pub(crate) slow_call_rate: Option<f64>,
    pub(crate) slow_call_duration: Duration,
    pub(crate) window: SlidingWindow,
    pub(crate) minimum_calls: u32,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) open_for: Duration,
    pub(crate) open_for_max: Duration,
    pub(crate) open_for_multiplier: f64,
    pub(crate) jitter: f64,
    pub(crate) half_open_probes: u32,
    pub(crate) random: Arc<dyn RandomSource>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("failure_rate", &self.failure_rate)
            .field("slow_call_rate", &self.slow_call_rate)
            .field("slow_call_duration", &self.slow_call_duration)
            .field("window", &self.window)
            .field("minimum_calls", &self.minimum_calls)
            .field("consecutive_failures", &self.consecutive_failures)
            .field("open_for", &self.open_for)
            .field("open_for_max", &self.open_for_max)
            .field("open_for_multiplier", &self.open_for_multiplier)
            .field("jitter", &self.jitter)
            .field("half_open_probes", &self.half_open_probes)
            .finish_non_exhaustive()
    }
}

impl Default for Policy {
    /// Failure rate 50 % over the last 100 calls, judged from 20 calls; open for 5 s, doubling on
    /// each consecutive re-open up to 60 s, 10 % jitter; 3 half-open probes; no slow-call rule and
    /// no consecutive-failures rule.
    fn default() -> Self {
        Self {
            failure_rate: Some(Self::DEFAULT_FAILURE_RATE),
            slow_call_rate: None,
            slow_call_duration: Self::DEFAULT_SLOW_CALL_DURATION,
            window: Self::DEFAULT_WINDOW,
            minimum_calls: Self::DEFAULT_MINIMUM_CALLS,
            consecutive_failures: None,
            open_for: Self::DEFAULT_OPEN_FOR,
            open_for_max: Self::DEFAULT_OPEN_FOR_MAX,
            open_for_multiplier: Self::DEFAULT_OPEN_FOR_MULTIPLIER,
            jitter: Self::DEFAULT_JITTER,
            half_open_probes: Self::DEFAULT_HALF_OPEN_PROBES,
            random: Arc::new(ThreadRandom),
        }
    }
}

impl Policy {
    /// 0.5: resilience4j's default; a service failing half its calls is not serving.
    pub const DEFAULT_FAILURE_RATE: f64 = 0.5;
    /// The last 100 calls: resilience4j's default; enough calls that one bad request does not
    /// move the rate by more than a percent.
    pub const DEFAULT_WINDOW: SlidingWindow = SlidingWindow::Count(100);
    /// 20 calls: a rate over fewer calls is noise (2 failures of 3 are not 67 % of anything);
    /// lower than resilience4j's 100 so that a quiet endpoint can still trip.
    pub const DEFAULT_MINIMUM_CALLS: u32 = 20;
    /// 60 s: resilience4j's default; only used when a slow-call rate is set.
    pub const DEFAULT_SLOW_CALL_DURATION: Duration = Duration::from_secs(60);
    /// 5 s: long enough for an overloaded upstream to drain, short enough that a recovered one
    /// gets traffic back quickly (resilience4j's 60 s is tuned for batch back ends).
    pub const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(5);
    /// 60 s: an upstream that keeps failing its probes is probed about once a minute.
    pub const DEFAULT_OPEN_FOR_MAX: Duration = Duration::from_secs(60);
    /// 2: exponential backoff between probe rounds, as Linkerd and Polly do.
    pub const DEFAULT_OPEN_FOR_MULTIPLIER: f64 = 2.0;
    /// 0.1: open durations vary by up to 10 % so that many clients do not probe in lock-step.
    pub const DEFAULT_JITTER: f64 = 0.1;
    /// 3: the sidecar's default; one lucky probe is weak evidence, three in a row is good.
    pub const DEFAULT_HALF_OPEN_PROBES: u32 = 3;

    /// A policy that trips after `failures` failures in a row and judges no rates.
    pub fn consecutive_failures(failures: u32) -> Self {
        Self {
            failure_rate: None,
            consecutive_failures: Some(failures),
            ..Self::default()
        }
    }

    /// Trip when at least this share of the window's calls failed, in `(0, 1]`.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = Some(rate);
        self
    }

    /// Judge no failure rate (for example with only a consecutive-failures rule).
    pub fn no_failure_rate(mut self) -> Self {
        self.failure_rate = None;
        self
    }

    /// Trip when at least `rate` of the window's calls took `duration` or longer.
    pub fn slow_calls(mut self, rate: f64, duration: Duration) -> Self {
        self.slow_call_rate = Some(rate);
        self.slow_call_duration = duration;
        self
    }

    /// Which calls the rates are judged over.
    pub fn window(mut self, window: SlidingWindow) -> Self {
        self.window = window;
        self
    }

    /// No rate is judged over fewer calls than this. For a count window the window size caps
    /// it, as in resilience4j.
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.minimum_calls = calls;
        self
    }

    /// Also trip after this many failures in a row, whatever the rates.
    pub fn trip_after_consecutive_failures(mut self, failures: u32) -> Self {
        self.consecutive_failures = Some(failures);
        self
    }

    /// How long the breaker stays open the first time.
    pub fn open_for(mut self, duration: Duration) -> Self {
        self.open_for = duration;
        self
    }

    /// The longest the breaker stays open after repeated re-opens. An open duration longer
    /// than 30 years (`Duration::MAX`, say) is cut to 30 years, so that it fits the clock.
    pub fn open_for_max(mut self, duration: Duration) -> Self {
        self.open_for_max = duration;
        self
    }

    /// The open duration is multiplied by this on each consecutive re-open (at least 1).
    pub fn open_for_multiplier(mut self, multiplier: f64) -> Self {
        self.open_for_multiplier = multiplier;
        self
    }

    /// Each open duration is shortened by a random share of up to `jitter`, in `[0, 1)`.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// How many probes the half-open breaker lets through; all must succeed for it to close.
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.half_open_probes = probes;
        self
    }

    /// Replaces the random source of the jitter.
    pub fn random_source(mut self, random: impl RandomSource + 'static) -> Self {
        self.random = Arc::new(random);
        self
    }

    /// The sliding window.
    #[must_use]
    pub fn sliding_window(&self) -> SlidingWindow {
        self.window
    }

    /// Whether a slow-call rate is judged (then a slow probe also re-opens the breaker).
    #[must_use]
    pub fn judges_slow_calls(&self) -> bool {
        self.slow_call_rate.is_some()
    }

    /// The number of half-open probes.
    #[must_use]
    pub fn probes(&self) -> u32 {
        self.half_open_probes
    }

    /// The minimum number of calls before a rate is judged, after the count window's cap.
    #[must_use]
    pub fn effective_minimum_calls(&self) -> u32 {
        match self.window {
            SlidingWindow::Count(n) => self.minimum_calls.min(n),
            SlidingWindow::Time(_) => self.minimum_calls,
        }
    }

    /// Checks the settings, naming the first field that is wrong and its value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn rate(field: &'static str, value: Option<f64>) -> Result<(), ConfigError> {
            match value {
                Some(r) if !(r > 0.0 && r <= 1.0) => {
                    Err(ConfigError::new(field, r, "must be in (0, 1]"))
                }
                _ => Ok(()),
            }
        }
        fn positive(field: &'static str, value: Duration) -> Result<(), ConfigError> {
            if value.is_zero() {
                Err(ConfigError::duration(
                    field,
                    value,
                    "must be greater than zero",
                ))
            } else {
                Ok(())
            }
        }
        rate("failure_rate", self.failure_rate)?;
        rate("slow_call_rate", self.slow_call_rate)?;
        if self.failure_rate.is_none()
            && self.slow_call_rate.is_none()
            && self.consecutive_failures.is_none()
        {
            return Err(ConfigError::new(
                "failure_rate",
                "none",
                "set a failure rate, a slow-call rate or consecutive failures, or the breaker never trips",
            ));
        }
        positive("slow_call_duration", self.slow_call_duration)?;
        match self.window {
            SlidingWindow::Count(n) if n == 0 || n > Self::MAX_WINDOW_CALLS => {
                return Err(ConfigError::new(
                    "window.calls",
                    n,
                    "must be between 1 and 1000000",
                ));
            }
            SlidingWindow::Time(d) if d < Duration::from_millis(10) => {
                return Err(ConfigError::duration(
                    "window.duration",
                    d,
                    "must be at least 10ms",
                ));
            }
            _ => {}
        }
        if self.minimum_calls == 0 {
            return Err(ConfigError::new("minimum_calls", 0, "must be at least 1"));
        }
        if self.consecutive_failures == Some(0) {
            return Err(ConfigError::new(
                "consecutive_failures",
                0,
                "must be at least 1",
            ));
        }
        positive("open_for", self.open_for)?;
        if self.open_for_max < self.open_for {
            return Err(ConfigError::duration(
                "open_for_max",
                self.open_for_max,
                "must not be less than `open_for`",
            ));
        }
        let m = self.open_for_multiplier;
        if !(m.is_finite() && m >= 1.0) {
            return Err(ConfigError::new(
                "open_for_multiplier",
                m,
                "must be a finite number of at least 1",
            ));
        }
        if !(self.jitter >= 0.0 && self.jitter < 1.0) {
            return Err(ConfigError::new("jitter", self.jitter, "must be in [0, 1)"));
        }
        if self.half_open_probes == 0 {
            return Err(ConfigError::new(
                "half_open_probes",
                0,
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The largest count window: each call takes one byte.
    pub const MAX_WINDOW_CALLS: u32 = 1_000_000;

    /// The open duration after `reopens` consecutive re-opens, before jitter.
    #[must_use]
    pub fn open_duration(&self, reopens: u32) -> Duration {
        let factor = self
            .open_for_multiplier
            .powi(i32::try_from(reopens).unwrap_or(i32::MAX));
        let secs = self.open_for.as_secs_f64() * factor;
        // Never panics, even for a policy that would not validate (a negative multiplier, say):
        // whatever is not a duration below the maximum is the maximum.
        match Duration::try_from_secs_f64(secs) {
            Ok(duration) if duration < self.open_for_max => duration,
            _ => self.open_for_max,
        }
    }

    pub(crate) fn jittered(&self, duration: Duration) -> Duration {
        if self.jitter == 0.0 {
            return duration;
        }
        let r = self.random.next_f64().clamp(0.0, 1.0);
        let factor = (1.0 - self.jitter * r).clamp(0.0, 1.0);
        Duration::try_from_secs_f64(duration.as_secs_f64() * factor).unwrap_or(duration)
    }
}
