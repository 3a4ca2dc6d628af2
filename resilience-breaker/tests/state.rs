//! The pure state machine, driven by hand with explicit instants: every transition, both window
//! kinds, slow calls, consecutive failures, probes, backoff with injected jitter, manual states.

use resilience_breaker::{
    BreakerOpen, Outcome, PROBE_RESERVATION_LAPSE, Permit, Policy, RandomSource, SlidingWindow,
    State, StateMachine, Transition,
};
use std::time::Duration;
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// A random source that always returns the same number.
#[derive(Debug)]
struct Fixed(f64);

impl RandomSource for Fixed {
    fn next_f64(&self) -> f64 {
        self.0
    }
}

fn policy() -> Policy {
    Policy::default()
        .failure_rate(0.5)
        .window(SlidingWindow::Count(10))
        .minimum_calls(4)
        .open_for(5 * SEC)
        .open_for_max(60 * SEC)
        .open_for_multiplier(2.0)
        .jitter(0.0)
        .half_open_probes(2)
}

fn ok() -> Outcome {
    Outcome::success(MS)
}

fn fail() -> Outcome {
    Outcome::failure(MS)
}

fn permit(m: &StateMachine, now: Instant) -> Permit {
    let (result, _) = m.acquire(now);
    result.expect("the breaker lets the call through")
}

/// One call, acquired and recorded at `now`; returns the transition it caused.
fn call(m: &StateMachine, outcome: Outcome, now: Instant) -> Option<Transition> {
    let p = permit(m, now);
    m.record(p, outcome, now)
}

fn rejected(m: &StateMachine, now: Instant) -> BreakerOpen {
    let (result, transition) = m.acquire(now);
    assert_eq!(transition, None);
    result.expect_err("the breaker rejects the call")
}

/// Trips a breaker with `policy()` at `now` (four failures) and returns the transition.
fn trip(m: &StateMachine, now: Instant) -> Transition {
    for _ in 0..3 {
        assert_eq!(call(m, fail(), now), None);
    }
    call(m, fail(), now).expect("the fourth failure trips the breaker")
}

#[test]
fn no_rate_is_judged_below_minimum_calls() {
    let t0 = Instant::now();
    let m = StateMachine::new(policy(), t0).unwrap();
    for _ in 0..3 {
        assert_eq!(call(&m, fail(), t0), None);
    }
    // Three failures of three: 100 %, but below the minimum of four calls.
    assert_eq!(m.state(), State::Closed);
    assert_eq!(m.counts(t0).failures, 3);
}

#[test]
fn the_failure_rate_trips_at_exactly_the_threshold() {
    let t0 = Instant::now();
    let m = StateMachine::new(policy(), t0).unwrap();
    for outcome in [ok(), fail(), ok(), ok(), fail()] {
        assert_eq!(call(&m, outcome, t0), None);
    }
    // 2 of 5 = 40 %: still closed. The sixth call makes it 3 of 6 = 50 %.
    assert_eq!(m.state(), State::Closed);
    let t = call(&m, fail(), t0).expect("50 % >= 50 % trips");
    assert_eq!((t.from, t.to), (State::Closed, State::Open));
    assert_eq!(t.open_until, Some(t0 + 5 * SEC));
    assert_eq!(m.state(), State::Open);
}

#[test]
fn the_count_window_forgets_old_failures() {
    let t0 = Instant::now();
    let m = StateMachine::new(policy(), t0).unwrap();
    // A failure then 10 successes: the failure has left the 10-call window.
    call(&m, fail(), t0);
    for _ in 0..10 {
        assert_eq!(call(&m, ok(), t0), None);
    }
    let counts = m.counts(t0);
    assert_eq!((counts.calls, counts.failures), (10, 0));
    // 4 failures of the last 10 calls: 40 %, closed. The fifth makes 50 %.
    for _ in 0..4 {
        assert_eq!(call(&m, fail(), t0), None);
    }
    assert!(call(&m, fail(), t0).is_some());
}

#[test]
fn the_time_window_judges_only_recent_calls() {
    let t0 = Instant::now();
    let m = StateMachine::new(policy().window(SlidingWindow::Time(10 * SEC)), t0).unwrap();
    // Three failures at t0, then successes 11 s later: the failures are out of the window.
    for _ in 0..3 {
        call(&m, fail(), t0);
    }
    let later = t0 + 11 * SEC;
    for _ in 0..3 {
        assert_eq!(call(&m, ok(), later), None);
    }
    let counts = m.counts(later);
    assert_eq!((counts.calls, counts.failures), (3, 0));
    // Within one window: 2 failures + 3 successes at 11 s..15 s, then a third failure = 3 of 6.
    call(&m, fail(), later + SEC);
    call(&m, fail(), later + 2 * SEC);
    assert_eq!(m.state(), State::Closed);
    let t = call(&m, fail(), later + 4 * SEC).expect("3 of 6 in the window trips");
    assert_eq!(t.to, State::Open);
}

#[test]
fn the_time_window_without_enough_recent_calls_never_trips() {
    let t0 = Instant::now();
    let m = StateMachine::new(policy().window(SlidingWindow::Time(10 * SEC)), t0).unwrap();
    // A failure every 4 s: never more than three in any 10 s window, below the minimum of 4.
    for i in 0..20 {
        assert_eq!(call(&m, fail(), t0 + 4 * SEC * i), None);
    }
    assert_eq!(m.state(), State::Closed);
}

#[test]
fn the_slow_call_rate_trips_even_when_every_call_succeeds() {
    let t0 = Instant::now();
    let m = StateMachine::new(policy().slow_calls(0.75, Duration::from_millis(200)), t0).unwrap();
    let slow = Outcome::success(Duration::from_millis(200));
    let fast = Outcome::success(Duration::from_millis(199));
    call(&m, fast, t0);
    call(&m, slow, t0);
    assert_eq!(call(&m, slow, t0), None);
    // 3 of 4 slow = 75 %.
    let t = call(&m, slow, t0).expect("75 % slow trips");
    assert_eq!(t.to, State::Open);
    assert_eq!(m.counts(t0).slow, 3);
    assert_eq!(m.counts(t0).failures, 0);
}

#[test]
fn consecutive_failures_trip_and_a_success_resets_the_run() {
    let t0 = Instant::now();
    let m = StateMachine::new(Policy::consecutive_failures(3).jitter(0.0), t0).unwrap();
    call(&m, fail(), t0);
    call(&m, fail(), t0);
    call(&m, ok(), t0);
    assert_eq!(m.consecutive_failures(), 0);
    call(&m, fail(), t0);
    assert_eq!(call(&m, fail(), t0), None);
    let t = call(&m, fail(), t0).expect("three in a row trips");
    assert_eq!(t.to, State::Open);
}

#[test]
fn open_rejects_until_the_open_duration_has_passed_then_half_opens() {
    let t0 = Instant::now();
    let m = StateMachine::new(policy(), t0).unwrap();
    trip(&m, t0);
    let err = rejected(&m, t0 + 5 * SEC - MS);
    assert_eq!(err.state(), State::Open);
    assert_eq!(err.next_probe(), Some(t0 + 5 * SEC));
    assert_eq!(err.retry_after(), Some(MS));
    assert_eq!(
        err.retry_after_secs(),
        Some(1),
        "a millisecond rounds up to a second"
    );
    assert_eq!(
        err.to_string(),
        "circuit breaker is open; next probe in 1ms"
    );

    let (result, transition) = m.acquire(t0 + 5 * SEC);
    let probe = result.expect("the first probe goes through");
    assert!(probe.is_probe());
    let t = transition.expect("Open -> HalfOpen");
    assert_eq!((t.from, t.to), (State::Open, State::HalfOpen));
    m.release(probe);
}

#[test]
fn half_open_admits_the_configured_probes_and_closes_when_all_succeed() {
    let t0 = Instant::now();
    let m = StateMachine::new(policy(), t0).unwrap();
    trip(&m, t0);
    let t1 = t0 + 5 * SEC;
    let a = permit(&m, t1);
    let b = permit(&m, t1);
    let err = rejected(&m, t1);
    assert_eq!(err.state(), State::HalfOpen);
    assert_eq!(err.next_probe(), None);
    assert_eq!(m.probes_admitted(), 2);

    assert_eq!(m.record(a, ok(), t1), None);
    assert_eq!(m.state(), State::HalfOpen);
    let t = m.record(b, ok(), t1).expect("the last probe closes it");
    assert_eq!((t.from, t.to), (State::HalfOpen, State::Closed));
    // The window starts afresh.
    assert_eq!(m.counts(t1).calls, 0);
}

#[test]
fn a_failed_probe_reopens_at_once_and_the_open_duration_backs_off() {
    let t0 = Instant::now();
    let m = StateMachine::new(policy(), t0).unwrap();
    trip(&m, t0);
    assert_eq!(m.open_until(), t0 + 5 * SEC);
    // Each failed probe round re-opens for twice as long: 10 s, 20 s, 40 s, then the 60 s cap.
    for expected in [10, 20, 40, 60, 60] {
        let now = m.open_until();
        let p = permit(&m, now);
        let t = m.record(p, fail(), now).expect("a failed probe re-opens");
        assert_eq!((t.from, t.to), (State::HalfOpen, State::Open));
        assert_eq!(t.open_until, Some(now + expected * SEC));
    }
    // Close it: the backoff starts over.
    let now = m.open_until();
    for _ in 0..2 {
        let p = permit(&m, now);
        m.record(p, ok(), now);
    }
    assert_eq!(m.state(), State::Closed);
    let t = trip(&m, now);
    assert_eq!(t.open_until, Some(now + 5 * SEC));
}

#[test]
fn a_slow_probe_reopens_when_slow_calls_are_judged() {
    let t0 = Instant::now();
    let m = StateMachine::new(policy().slow_calls(1.0, SEC), t0).unwrap();
    trip(&m, t0);
    let t1 = t0 + 5 * SEC;
    let p = permit(&m, t1);
    let t = m
        .record(p, Outcome::success(SEC), t1 + SEC)
        .expect("slow probe");
    assert_eq!(t.to, State::Open);
}

#[test]
fn jitter_comes_from_the_injected_source() {
    let t0 = Instant::now();
    let m = StateMachine::new(policy().jitter(0.2).random_source(Fixed(0.5)), t0).unwrap();
    let t = trip(&m, t0);
    // 5 s less 0.2 * 0.5 of it.
    assert_eq!(t.open_until, Some(t0 + Duration::from_millis(4500)));
}

#[test]
fn a_released_probe_lets_another_through_and_stale_probes_are_ignored() {
    let t0 = Instant::now();
    let m = StateMachine::new(policy(), t0).unwrap();
    trip(&m, t0);
    let t1 = t0 + 5 * SEC;
    let a = permit(&m, t1);
    let b = permit(&m, t1);
    rejected(&m, t1);
    m.release(a);
    let c = permit(&m, t1);
    // b fails: re-open. c, from the same round, finishes later: ignored.
    assert!(m.record(b, fail(), t1).is_some());
    assert_eq!(m.record(c, ok(), t1), None);
    assert_eq!(m.state(), State::Open);
    // A call that began while closed and ends while open is ignored too.
    let m2 = StateMachine::new(policy(), t0).unwrap();
    let early = permit(&m2, t0);
    trip(&m2, t0);
    assert_eq!(m2.record(early, fail(), t0), None);
}

#[test]
fn a_reserved_probe_is_held_until_it_lapses_then_another_caller_takes_its_place() {
    let t0 = Instant::now();
    let m = StateMachine::new(policy(), t0).unwrap();
    trip(&m, t0);
    let t1 = t0 + 5 * SEC;
    // Both probes reserved, a second apart; neither is called.
    let first = m.reserve(t1).0.unwrap();
    let second = m.reserve(t1 + 100 * MS).0.unwrap();
    assert_eq!(m.probes_admitted(), 2);
    // Held until the first lapses: the rejection says when that is.
    let lapses = t1 + PROBE_RESERVATION_LAPSE;
    let open = rejected(&m, lapses - MS);
    assert_eq!(open.state(), State::HalfOpen);
    assert_eq!(open.next_probe(), Some(lapses));
    // Then a caller takes the first one's place (not the second's), and no more are admitted.
    let taker = permit(&m, lapses);
    assert_eq!(m.probes_admitted(), 2);
    assert!(m.is_stale(&first));
    assert!(!m.is_stale(&second));
    assert_eq!(m.claim(first), None, "its place is gone");
    let second = m.claim(second).expect("still held");
    assert_eq!(
        rejected(&m, lapses).next_probe(),
        None,
        "both probes are in flight"
    );
    // The two in flight decide; the lost one counts for nothing either way.
    assert_eq!(m.record(taker, ok(), lapses), None);
    assert!(m.record(second, ok(), lapses).is_some());
    assert_eq!(m.state(), State::Closed);
}

#[test]
fn a_lost_reservation_hands_nothing_back_and_records_nothing() {
    let t0 = Instant::now();
    let m = StateMachine::new(policy().half_open_probes(1), t0).unwrap();
    trip(&m, t0);
    let t1 = t0 + 5 * SEC;
    let lost = m.reserve(t1).0.unwrap();
    let late = t1 + PROBE_RESERVATION_LAPSE;
    let taker = m.reserve(late).0.unwrap();
    // Releasing the lost permit does not free the taker's place.
    m.release(lost);
    assert_eq!(m.probes_admitted(), 1);
    rejected(&m, late);
    // The taker's reservation lapses in turn and is taken: its failure, recorded by hand,
    // does not reopen the breaker; the one that took its place decides.
    let last = m.reserve(late + PROBE_RESERVATION_LAPSE).0.unwrap();
    assert_eq!(m.record(taker, fail(), late), None);
    assert_eq!(m.state(), State::HalfOpen);
    let closed = m.record(last, ok(), late + PROBE_RESERVATION_LAPSE);
    assert_eq!(closed.map(|t| t.to), Some(State::Closed));
}

#[test]
fn forced_open_rejects_everything_until_closed_by_hand() {
    let t0 = Instant::now();
    let m = StateMachine::new(policy(), t0).unwrap();
    let t = m.force_open(t0).unwrap();
    assert_eq!((t.from, t.to), (State::Closed, State::ForcedOpen));
    let err = rejected(&m, t0 + 3600 * SEC);
    assert_eq!(err.state(), State::ForcedOpen);
    assert_eq!(err.next_probe(), None);
    assert_eq!(m.force_open(t0), None, "no transition to the same state");
    let t = m.force_closed(t0).unwrap();
    assert_eq!((t.from, t.to), (State::ForcedOpen, State::Closed));
    call(&m, ok(), t0);
}

#[test]
fn disabled_lets_everything_through_and_records_nothing() {
    let t0 = Instant::now();
    let m = StateMachine::new(policy(), t0).unwrap();
    m.disable(t0).unwrap();
    for _ in 0..20 {
        let p = permit(&m, t0);
        assert!(!p.is_tracked());
        assert_eq!(m.record(p, fail(), t0), None);
    }
    assert_eq!(m.state(), State::Disabled);
    assert_eq!(m.counts(t0).calls, 0);
}

#[test]
fn metrics_only_records_but_never_trips() {
    let t0 = Instant::now();
    let m = StateMachine::new(policy(), t0).unwrap();
    m.metrics_only(t0).unwrap();
    for _ in 0..20 {
        assert_eq!(call(&m, fail(), t0), None);
    }
    assert_eq!(m.state(), State::MetricsOnly);
    assert_eq!(m.counts(t0).failures, 10);
}

#[test]
fn reset_closes_clears_and_forgets_the_backoff() {
    let t0 = Instant::now();
    let m = StateMachine::new(policy(), t0).unwrap();
    trip(&m, t0);
    let now = m.open_until();
    let p = permit(&m, now);
    m.record(p, fail(), now).unwrap(); // re-opened for 10 s
    let t = m.reset(now).unwrap();
    assert_eq!((t.from, t.to), (State::Open, State::Closed));
    assert_eq!(m.counts(now).calls, 0);
    assert_eq!(trip(&m, now).open_until, Some(now + 5 * SEC));
    // force_closed from Open: a trip from Closed starts the backoff over as well.
    m.force_closed(now).unwrap();
    assert_eq!(m.counts(now).calls, 0);
    assert_eq!(trip(&m, now).open_until, Some(now + 5 * SEC));
}

#[test]
fn invalid_policies_are_rejected_naming_the_field_and_value() {
    for (policy, field, value) in [
        (policy().failure_rate(0.0), "failure_rate", "0"),
        (policy().failure_rate(1.5), "failure_rate", "1.5"),
        (
            policy().window(SlidingWindow::Count(0)),
            "window.calls",
            "0",
        ),
        (policy().half_open_probes(0), "half_open_probes", "0"),
        (
            policy().open_for_multiplier(0.5),
            "open_for_multiplier",
            "0.5",
        ),
        (policy().jitter(1.0), "jitter", "1"),
        (policy().open_for_max(SEC), "open_for_max", "1s"),
    ] {
        let err = policy.validate().unwrap_err();
        assert_eq!(err.field(), field);
        assert_eq!(err.value(), value);
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[test]
fn the_lock_free_windows_are_exact_once_concurrent_calls_have_landed() {
    let t0 = Instant::now();
    // Metrics-only: record everything, never trip.
    let big = StateMachine::new(policy().window(SlidingWindow::Count(100_000)), t0).unwrap();
    let small = StateMachine::new(policy(), t0).unwrap();
    let time = StateMachine::new(policy().window(SlidingWindow::Time(60 * SEC)), t0).unwrap();
    for m in [&big, &small, &time] {
        m.metrics_only(t0).unwrap();
    }
    std::thread::scope(|s| {
        for thread in 0..4u32 {
            let (big, small, time) = (&big, &small, &time);
            s.spawn(move || {
                for i in 0..5_000u32 {
                    let failed = (i + thread) % 4 == 0;
                    let outcome = if failed { fail() } else { ok() };
                    big.record(permit(big, t0), outcome, t0);
                    small.record(permit(small, t0), fail(), t0);
                    time.record(permit(time, t0), outcome, t0 + SEC);
                }
            });
        }
    });
    let counts = big.counts(t0);
    assert_eq!((counts.calls, counts.failures), (20_000, 5_000));
    let counts = small.counts(t0);
    assert_eq!((counts.calls, counts.failures), (10, 10));
    let counts = time.counts(t0 + SEC);
    assert_eq!((counts.calls, counts.failures), (20_000, 5_000));
}
