//! The pure state machine: no I/O and no clock. It is given the time, and it returns the
//! transitions it made so that the caller can publish them.
//!
//! In the Closed state, [`StateMachine::acquire`] is one atomic load and
//! [`StateMachine::record`] updates the lock-free window; only the rare transitions take a
//! mutex, and they re-check the state under it.

use crate::{
    BreakerOpen, ConfigError, Policy, SlidingWindow,
    window::{Counts, Window},
};
use std::{
    fmt,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::time::Instant;

/// The state of a circuit breaker, as resilience4j names and means them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum State {
    /// Calls go through; their outcomes are recorded and may trip the breaker.
    Closed = 0,
    /// Calls are rejected until the open duration has passed.
    Open = 1,
    /// A few probe calls go through; they decide between Closed and Open.
    HalfOpen = 2,
    /// Every call is rejected until the breaker is closed or reset by hand.
    ForcedOpen = 3,
    /// Every call goes through; nothing is recorded and the state never changes by itself.
    Disabled = 4,
    /// Every call goes through and is recorded, but the breaker never trips.
    MetricsOnly = 5,
}

impl State {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Closed,
            1 => Self::Open,
            2 => Self::HalfOpen,
            3 => Self::ForcedOpen,
            4 => Self::Disabled,
            _ => Self::MetricsOnly,
        }
    }

    /// The value of the `resilience_breaker_state` gauge: 0 closed, 1 open, 2 half-open. Forced
    /// open counts as open; disabled and metrics-only count as closed.
    #[must_use]
    pub const fn gauge(self) -> f64 {
        match self {
            Self::Open | Self::ForcedOpen => 1.0,
            Self::HalfOpen => 2.0,
            Self::Closed | Self::Disabled | Self::MetricsOnly => 0.0,
        }
    }

    /// The state's name in logs: `closed`, `open`, `half-open`, `forced-open`, `disabled`,
    /// `metrics-only`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
            Self::ForcedOpen => "forced-open",
            Self::Disabled => "disabled",
            Self::MetricsOnly => "metrics-only",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// When it happened.
    pub at: Instant,
    /// For a transition to Open: when the next probe is allowed.
    pub open_until: Option<Instant>,
}

/// The outcome of one call, as the breaker judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    failed: bool,
    elapsed: Duration,
}

impl Outcome {
    /// A call that succeeded after `elapsed`.
    #[must_use]
    pub const fn success(elapsed: Duration) -> Self {
        Self {
            failed: false,
            elapsed,
        }
    }

    /// A call that failed after `elapsed`.
    #[must_use]
    pub const fn failure(elapsed: Duration) -> Self {
        Self {
            failed: true,
            elapsed,
        }
    }

    /// Whether the call failed.
    #[must_use]
    pub const fn is_failure(&self) -> bool {
        self.failed
    }

    /// How long the call took.
    #[must_use]
    pub const fn elapsed(&self) -> Duration {
        self.elapsed
    }
}

/// Leave to make one call, from [`StateMachine::acquire`]. Hand it back with
/// [`StateMachine::record`] when the call is done, or [`StateMachine::release`] if it is never
/// made or is cancelled, so that a half-open breaker can let another probe through.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a permit must be recorded or released"]
pub struct Permit(PermitKind);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermitKind {
    /// Closed or metrics-only: the outcome goes into the window.
    Pass,
    /// Disabled: nothing is recorded.
    Untracked,
    /// One of the half-open probes of round `round`; `reserved` holds its ticket while it is
    /// reserved and not yet claimed for a call.
    Probe { round: u64, reserved: Option<u64> },
}

impl Permit {
    /// Whether this permit is a half-open probe.
    #[must_use]
    pub fn is_probe(&self) -> bool {
        matches!(self.0, PermitKind::Probe { .. })
    }

    /// Whether the breaker records this call's outcome (not when disabled).
    #[must_use]
    pub fn is_tracked(&self) -> bool {
        !matches!(self.0, PermitKind::Untracked)
    }
}

/// How long a half-open probe reserved by [`StateMachine::reserve`] is kept for its holder.
/// After that another caller may take its place: a back-pressure service that reserved the
/// probe in `poll_ready` and was then not called (a balancer that picked another endpoint,
/// and has had no request since) must not keep the breaker half-open with no probe sent.
pub const PROBE_RESERVATION_LAPSE: Duration = Duration::from_secs(1);

/// The longest a breaker stays open by itself, whatever the policy says: 30 years, tokio's own
/// "far future". A longer open duration (`Duration::MAX`, say) would overflow the clock.
const LONGEST_OPEN: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// The circuit breaker's state machine: [`State`], the sliding window, and the rules of a
/// [`Policy`].
///
/// It has no clock and does no I/O: every method that depends on the time is given it, and
/// every method that may change the state returns the [`Transition`] it made.
#[derive(Debug)]
pub struct StateMachine {
    policy: Policy,
    minimum_calls: u32,
    origin: Instant,
    state: ReadMostly,
    window: Window,
    consecutive: AtomicU32,
    cold: Mutex<Cold>,
}

/// The state, read by every call and written only by transitions, on a cache line of its own so
/// that the writes of the window do not evict it.
#[derive(Debug)]
#[repr(align(64))]
struct ReadMostly {
    state: AtomicU8,
    /// Nanoseconds from `origin` to the end of the open period; written before `state`.
    open_until: AtomicU64,
}

/// What only the transitions need.
#[derive(Debug, Default)]
struct Cold {
    /// Incremented on each transition, so that a probe of an earlier round is ignored.
    round: u64,
    /// Consecutive re-opens without a close in between.
    reopens: u32,
    probes_admitted: u32,
    probes_succeeded: u32,
    /// The probes of this round reserved and not yet claimed, by ticket, with when each was
    /// reserved; at most `probes_admitted`.
    reserved: Vec<(u64, Instant)>,
    /// The next reservation's ticket.
    next_ticket: u64,
}

impl Cold {
    /// A probe permit of this round, registered as reserved if it is held for later.
    fn probe(&mut self, hold: Hold, now: Instant) -> Permit {
        let reserved = (hold == Hold::Reserve).then(|| {
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            self.reserved.push((ticket, now));
            ticket
        });
        Permit(PermitKind::Probe {
            round: self.round,
            reserved,
        })
    }

    /// Whether the reservation `ticket` is still held.
    fn holds(&self, ticket: u64) -> bool {
        self.reserved.iter().any(|&(t, _)| t == ticket)
    }

    /// Takes the reservation `ticket` out, for its call or its release: false if it is not
    /// held any more (another caller took its place once it lapsed).
    fn unreserve(&mut self, ticket: u64) -> bool {
        let index = self.reserved.iter().position(|&(t, _)| t == ticket);
        index
            .map(|index| self.reserved.swap_remove(index))
            .is_some()
    }
}

/// How a permit is held until its call.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// For a call made now.
    Call,
    /// Reserved for a call to come: see [`StateMachine::reserve`].
    Reserve,
}

impl StateMachine {
    /// A closed breaker with `policy`, created at `now`.
    ///
    /// # Errors
    ///
    /// If the policy is not valid: the [`ConfigError`] of [`Policy::validate`], which names the
    /// first field that is wrong and its value.
    ///
    /// ```
    /// use resilience_breaker::{Policy, StateMachine};
    /// use tokio::time::Instant;
    ///
    /// let err = StateMachine::new(Policy::default().failure_rate(1.5), Instant::now()).unwrap_err();
    /// assert_eq!(err.to_string(), "invalid `failure_rate` = 1.5: must be in (0, 1]");
    /// ```
    pub fn new(policy: Policy, now: Instant) -> Result<Self, ConfigError> {
        policy.validate()?;
        Ok(Self::with_valid_policy(policy, now))
    }

    /// [`new`](Self::new) with a policy that has passed [`Policy::validate`]: the crate checks
    /// each policy once, where it comes in, and keeps it unchanged from then on.
    pub(crate) fn with_valid_policy(policy: Policy, now: Instant) -> Self {
        debug_assert!(policy.validate().is_ok(), "the policy was validated");
        Self {
            minimum_calls: policy.effective_minimum_calls(),
            window: Window::new(policy.window, now),
            policy,
            origin: now,
            state: ReadMostly {
                state: AtomicU8::new(State::Closed as u8),
                open_until: AtomicU64::new(0),
            },
            consecutive: AtomicU32::new(0),
            cold: Mutex::new(Cold::default()),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The current state.
    #[inline]
    pub fn state(&self) -> State {
        State::from_u8(self.state.state.load(Ordering::Acquire))
    }

    /// The calls in the sliding window at `now`. In the Open and HalfOpen states these are the
    /// calls that tripped the breaker; the window starts afresh when it closes.
    pub fn counts(&self, now: Instant) -> Counts {
        self.window.counts(now)
    }

    /// Failures in a row, counted in the Closed state.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Ordering::Relaxed)
    }

    /// When the open period ends (meaningful in the Open state).
    pub fn open_until(&self) -> Instant {
        self.origin + Duration::from_nanos(self.state.open_until.load(Ordering::Acquire))
    }

    /// Whether the service must read the clock for every call (a time window or a slow-call
    /// rule); with a count window and no slow-call rule the Closed path never reads it.
    pub fn needs_clock(&self) -> bool {
        self.window.needs_clock() || self.policy.slow_call_rate.is_some()
    }

    /// Asks leave for one call at `now`.
    pub fn acquire(&self, now: Instant) -> (Result<Permit, BreakerOpen>, Option<Transition>) {
        self.acquire_with(|| now)
    }

    /// [`acquire`](Self::acquire), reading the time only if it is needed (never when Closed).
    #[inline]
    pub fn acquire_with(
        &self,
        now: impl FnOnce() -> Instant,
    ) -> (Result<Permit, BreakerOpen>, Option<Transition>) {
        self.admit(now, Hold::Call)
    }

    /// [`acquire`](Self::acquire) for a call to be made later, as a back-pressure service's
    /// `poll_ready` does for its next `call`. A half-open probe permit so reserved is held for
    /// [`PROBE_RESERVATION_LAPSE`]; after that, a caller that finds every probe taken takes
    /// its place. Before the call, [`claim`](Self::claim) it.
    pub fn reserve(&self, now: Instant) -> (Result<Permit, BreakerOpen>, Option<Transition>) {
        self.admit(|| now, Hold::Reserve)
    }

    #[inline]
    fn admit(
        &self,
        now: impl FnOnce() -> Instant,
        hold: Hold,
    ) -> (Result<Permit, BreakerOpen>, Option<Transition>) {
        match self.state() {
            State::Closed | State::MetricsOnly => (Ok(Permit(PermitKind::Pass)), None),
            State::Disabled => (Ok(Permit(PermitKind::Untracked)), None),
            State::ForcedOpen => (Err(BreakerOpen::new(State::ForcedOpen, None, now())), None),
            State::Open => {
                let now = now();
                let until = self.open_until();
                if now < until {
                    (Err(BreakerOpen::new(State::Open, Some(until), now)), None)
                } else {
                    self.acquire_slow(now, hold)
                }
            }
            State::HalfOpen => self.acquire_slow(now(), hold),
        }
    }

    #[cold]
    fn acquire_slow(
        &self,
        now: Instant,
        hold: Hold,
    ) -> (Result<Permit, BreakerOpen>, Option<Transition>) {
        let mut cold = self.lock();
        match self.state() {
            State::Closed | State::MetricsOnly => (Ok(Permit(PermitKind::Pass)), None),
            State::Disabled => (Ok(Permit(PermitKind::Untracked)), None),
            State::ForcedOpen => (Err(BreakerOpen::new(State::ForcedOpen, None, now)), None),
            State::Open => {
                let until = self.open_until();
                if now < until {
                    return (Err(BreakerOpen::new(State::Open, Some(until), now)), None);
                }
                let t = self.set(&mut cold, State::HalfOpen, now, None);
                cold.probes_admitted = 1;
                (Ok(cold.probe(hold, now)), Some(t))
            }
            State::HalfOpen => {
                if cold.probes_admitted < self.policy.half_open_probes {
                    cold.probes_admitted += 1;
                    return (Ok(cold.probe(hold, now)), None);
                }
                // Every probe is taken. One reserved and left uncalled for too long gives its
                // place up; otherwise the earliest reservation's lapse is when to look again.
                let oldest = (cold.reserved.iter().enumerate())
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(index, &(_, at))| (index, at + PROBE_RESERVATION_LAPSE));
                match oldest {
                    Some((index, lapsed)) if lapsed <= now => {
                        cold.reserved.swap_remove(index);
                        (Ok(cold.probe(hold, now)), None)
                    }
                    _ => {
                        let lapses = oldest.map(|(_, lapsed)| lapsed);
                        (Err(BreakerOpen::new(State::HalfOpen, lapses, now)), None)
                    }
                }
            }
        }
    }

    /// Claims a permit from [`reserve`](Self::reserve) for its call, which is made now:
    /// `None` if it was a probe whose reservation lapsed and was taken by another caller (ask
    /// again with [`acquire`](Self::acquire)). Any other permit comes back as it is.
    pub fn claim(&self, permit: Permit) -> Option<Permit> {
        let PermitKind::Probe {
            round,
            reserved: Some(ticket),
        } = permit.0
        else {
            return Some(permit);
        };
        let mut cold = self.lock();
        // A probe of a round that has ended goes on: its outcome is ignored, as any late one.
        if self.in_round(&cold, round) && !cold.unreserve(ticket) {
            return None;
        }
        Some(Permit(PermitKind::Probe {
            round,
            reserved: None,
        }))
    }

    /// Whether the breaker is half-open in round `round` (under the lock, `cold`).
    fn in_round(&self, cold: &Cold, round: u64) -> bool {
        self.state() == State::HalfOpen && cold.round == round
    }

    /// Whether a permit from [`reserve`](Self::reserve) no longer lets its call through: a
    /// probe whose place another caller has taken, or whose half-open round has ended; a pass
    /// of a breaker that has left the Closed state since (or the Disabled one). Reserve again.
    pub fn is_stale(&self, permit: &Permit) -> bool {
        match permit.0 {
            PermitKind::Pass => !matches!(self.state(), State::Closed | State::MetricsOnly),
            PermitKind::Untracked => self.state() != State::Disabled,
            PermitKind::Probe { round, reserved } => {
                let cold = self.lock();
                !self.in_round(&cold, round) || reserved.is_some_and(|ticket| !cold.holds(ticket))
            }
        }
    }

    /// Records the outcome of a call made with `permit`, finished at `now`.
    pub fn record(&self, permit: Permit, outcome: Outcome, now: Instant) -> Option<Transition> {
        self.record_with(permit, outcome, || now)
    }

    /// [`record`](Self::record), reading the time only if it is needed: with a count window in
    /// the Closed state, only when the breaker trips.
    #[inline]
    pub fn record_with(
        &self,
        permit: Permit,
        outcome: Outcome,
        now: impl Fn() -> Instant,
    ) -> Option<Transition> {
        match permit.0 {
            PermitKind::Untracked => None,
            PermitKind::Pass => {
                let state = self.state();
                if state != State::Closed && state != State::MetricsOnly {
                    // The call started before a transition; it says nothing about the new state.
                    return None;
                }
                let slow = self.is_slow(&outcome);
                let counts = self.window.record(&now, outcome.failed, slow);
                let consecutive = if outcome.failed {
                    self.consecutive.fetch_add(1, Ordering::Relaxed) + 1
                } else {
                    if self.consecutive.load(Ordering::Relaxed) != 0 {
                        self.consecutive.store(0, Ordering::Relaxed);
                    }
                    0
                };
                if state == State::Closed && self.should_trip(counts, consecutive) {
                    self.trip(now())
                } else {
                    None
                }
            }
            PermitKind::Probe { round, reserved } => {
                self.record_probe(round, reserved, &outcome, now())
            }
        }
    }

    pub(crate) fn is_slow(&self, outcome: &Outcome) -> bool {
        self.policy.slow_call_rate.is_some() && outcome.elapsed >= self.policy.slow_call_duration
    }

    /// Whether the rules say trip, given the window and the failures in a row.
    fn should_trip(&self, counts: Counts, consecutive: u32) -> bool {
        if self
            .policy
            .consecutive_failures
            .is_some_and(|k| consecutive >= k)
        {
            return true;
        }
        if counts.calls < self.minimum_calls {
            return false;
        }
        let calls = f64::from(counts.calls);
        self.policy
            .failure_rate
            .is_some_and(|r| f64::from(counts.failures) >= r * calls)
            || self
                .policy
                .slow_call_rate
                .is_some_and(|r| f64::from(counts.slow) >= r * calls)
    }

    #[cold]
    fn trip(&self, now: Instant) -> Option<Transition> {
        let mut cold = self.lock();
        // Re-check under the lock: another call may have tripped it, or a handle changed it.
        if self.state() != State::Closed {
            return None;
        }
        let counts = self.window.counts(now);
        if !self.should_trip(counts, self.consecutive.load(Ordering::Relaxed)) {
            return None;
        }
        cold.reopens = 0;
        Some(self.open(&mut cold, now))
    }

    #[cold]
    fn record_probe(
        &self,
        round: u64,
        reserved: Option<u64>,
        outcome: &Outcome,
        now: Instant,
    ) -> Option<Transition> {
        let mut cold = self.lock();
        if !self.in_round(&cold, round) {
            return None;
        }
        // A reservation recorded without its claim: if its place was taken, the probe that
        // took it decides.
        if reserved.is_some_and(|ticket| !cold.unreserve(ticket)) {
            return None;
        }
        if outcome.failed || self.is_slow(outcome) {
            cold.reopens = cold.reopens.saturating_add(1);
            return Some(self.open(&mut cold, now));
        }
        cold.probes_succeeded += 1;
        if cold.probes_succeeded >= self.policy.half_open_probes {
            cold.reopens = 0;
            self.window.clear();
            self.consecutive.store(0, Ordering::Relaxed);
            return Some(self.set(&mut cold, State::Closed, now, None));
        }
        None
    }

    /// Hands back a permit whose call was never made or was cancelled. A half-open breaker
    /// lets another probe through in its place.
    pub fn release(&self, permit: Permit) {
        let PermitKind::Probe { round, reserved } = permit.0 else {
            return;
        };
        let mut cold = self.lock();
        // A reservation whose place was taken frees nothing: the taker holds that place.
        if self.in_round(&cold, round) && reserved.is_none_or(|ticket| cold.unreserve(ticket)) {
            cold.probes_admitted = cold.probes_admitted.saturating_sub(1);
        }
    }

    /// Probes admitted in the current half-open round (reserved, in flight or succeeded).
    pub fn probes_admitted(&self) -> u32 {
        let cold = self.lock();
        if self.state() == State::HalfOpen {
            cold.probes_admitted
        } else {
            0
        }
    }

    fn open(&self, cold: &mut Cold, now: Instant) -> Transition {
        let duration = self
            .policy
            .jittered(self.policy.open_duration(cold.reopens).min(LONGEST_OPEN));
        // At most 30 years on: as safe from overflow as tokio's own far future.
        let until = now + duration;
        let nanos = until.saturating_duration_since(self.origin).as_nanos();
        self.state
            .open_until
            .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Release);
        self.set(cold, State::Open, now, Some(until))
    }

    fn set(
        &self,
        cold: &mut Cold,
        to: State,
        now: Instant,
        open_until: Option<Instant>,
    ) -> Transition {
        let from = self.state();
        cold.round += 1;
        cold.probes_admitted = 0;
        cold.probes_succeeded = 0;
        cold.reserved.clear();
        self.state.state.store(to as u8, Ordering::Release);
        Transition {
            from,
            to,
            at: now,
            open_until,
        }
    }

    /// Opens the breaker until [`force_closed`](Self::force_closed) or [`reset`](Self::reset).
    pub fn force_open(&self, now: Instant) -> Option<Transition> {
        self.force(State::ForcedOpen, now)
    }

    /// Closes the breaker now, with an empty window; nothing happens if it is already Closed.
    pub fn force_closed(&self, now: Instant) -> Option<Transition> {
        self.force(State::Closed, now)
    }

    /// Lets every call through and records nothing until closed or reset.
    pub fn disable(&self, now: Instant) -> Option<Transition> {
        self.force(State::Disabled, now)
    }

    /// Lets every call through and records it, but never trips.
    pub fn metrics_only(&self, now: Instant) -> Option<Transition> {
        self.force(State::MetricsOnly, now)
    }

    /// Back to a new breaker's state, from any state: Closed, empty window, no backoff.
    pub fn reset(&self, now: Instant) -> Option<Transition> {
        let mut cold = self.lock();
        cold.reopens = 0;
        self.clear();
        let from = self.state();
        let t = self.set(&mut cold, State::Closed, now, None);
        (from != State::Closed).then_some(t)
    }

    fn force(&self, to: State, now: Instant) -> Option<Transition> {
        let mut cold = self.lock();
        let from = self.state();
        if from == to {
            return None;
        }
        if to == State::Closed || to == State::MetricsOnly || from == State::Disabled {
            self.clear();
        }
        Some(self.set(&mut cold, to, now, None))
    }

    fn clear(&self) {
        self.window.clear();
        self.consecutive.store(0, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Cold> {
        // The lock guards plain counters that are consistent after every statement; a panic
        // elsewhere while holding it leaves nothing half-done.
        self.cold
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The window kind, for reporting.
    pub fn window(&self) -> SlidingWindow {
        self.policy.window
    }
}
