//! Cross-check with resilience4j: a scripted sequence of outcomes, replayed against our breaker,
//! gives the states that resilience4j's documentation prescribes for the same config.
//!
//! The config, in resilience4j's terms: `failureRateThreshold(50)`,
//! `slidingWindowType(COUNT_BASED)`, `slidingWindowSize(10)`, `minimumNumberOfCalls(5)`,
//! `permittedNumberOfCallsInHalfOpenState(3)`, `waitDurationInOpenState(60s)` (constant: no
//! multiplier, no randomisation), `automaticTransitionFromOpenToHalfOpenEnabled(false)`.
//!
//! The rules from resilience4j's CircuitBreaker documentation that the script exercises:
//! - "the failure rate ... can only be calculated, if a minimum number of calls were
//!   recorded": with fewer than 5 calls the breaker stays CLOSED whatever the rate.
//! - "If the failure rate ... is equal or greater than the configured threshold, the
//!   CircuitBreaker transitions to OPEN": 50 % trips a 50 % threshold.
//! - The count-based window aggregates "the outcome of the last N calls".
//! - OPEN "rejects calls with a CallNotPermittedException"; after the wait duration the next
//!   call moves it to HALF_OPEN, which "permits a configurable number of calls"; further calls
//!   are rejected until those complete.
//! - After the permitted calls, a failure rate below the threshold closes the breaker, and the
//!   metrics start afresh; at or above the threshold it opens again.
//!
//! One deliberate difference (issue 4: "if any fails it opens again"): resilience4j judges the
//! half-open round only once all 3 probes have completed, while we re-open on the first failed
//! probe. The script's failing round is therefore one where resilience4j re-opens too (2 of 3
//! failed = 67 %), and the test checks that both pass through the same transitions, with ours
//! re-opening earlier in the round.

use resilience_breaker::{Outcome, Permit, Policy, SlidingWindow, State, StateMachine};
use std::time::Duration;
use tokio::time::Instant;

const SEC: Duration = Duration::from_secs(1);

fn config() -> Policy {
    Policy::default()
        .failure_rate(0.5)
        .window(SlidingWindow::Count(10))
        .minimum_calls(5)
        .half_open_probes(3)
        .open_for(60 * SEC)
        .open_for_max(60 * SEC)
        .open_for_multiplier(1.0)
        .jitter(0.0)
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// A call that completes at once with this outcome (`true` = failure).
    Call(bool),
    /// A call that must be rejected.
    Rejected,
}
use Step::{Call, Rejected};

const S: Step = Call(false);
const F: Step = Call(true);

#[test]
fn the_documented_state_sequence() {
    let t0 = Instant::now();
    let m = StateMachine::new(config(), t0).unwrap();
    let transitions = std::cell::RefCell::new(Vec::new());
    let log = |t: Option<resilience_breaker::Transition>| {
        transitions.borrow_mut().extend(t.map(|t| (t.from, t.to)));
    };
    let run = |m: &StateMachine, now: Instant, step: Step, expected: State, why: &str| {
        let (result, t) = m.acquire(now);
        log(t);
        match step {
            Call(failed) => {
                let permit = result.unwrap_or_else(|e| panic!("{why}: rejected: {e}"));
                let outcome = if failed {
                    Outcome::failure(SEC / 100)
                } else {
                    Outcome::success(SEC / 100)
                };
                log(m.record(permit, outcome, now));
            }
            Rejected => assert!(result.is_err(), "{why}: expected a rejection"),
        }
        assert_eq!(m.state(), expected, "{why}");
    };

    use State::{Closed, HalfOpen, Open};
    // Phase 1: below the minimum of 5 calls no rate is judged, even at 50 %.
    run(&m, t0, S, Closed, "1 call");
    run(&m, t0, F, Closed, "2 calls, 1 failed: below the minimum");
    run(&m, t0, S, Closed, "3 calls");
    run(
        &m,
        t0,
        F,
        Closed,
        "4 calls, 2 failed (50 %): still below the minimum",
    );
    // Phase 2: judged from the fifth call on.
    run(&m, t0, S, Closed, "5 calls, 2 failed = 40 % < 50 %");
    run(&m, t0, S, Closed, "6 calls, 2 failed = 33 %");
    run(&m, t0, F, Closed, "7 calls, 3 failed = 43 %");
    run(&m, t0, F, Open, "8 calls, 4 failed = 50 % >= 50 %: OPEN");
    // Phase 3: open for the wait duration.
    run(
        &m,
        t0 + 30 * SEC,
        Rejected,
        Open,
        "30 s into the 60 s wait: not permitted",
    );
    run(
        &m,
        t0 + 60 * SEC - SEC / 1000,
        Rejected,
        Open,
        "1 ms before the wait ends",
    );
    // Phase 4: the next call after the wait is the first of 3 permitted half-open calls.
    let t1 = t0 + 60 * SEC;
    let (first, t) = m.acquire(t1);
    log(t);
    let second = m.acquire(t1).0.expect("second permitted call");
    let third = m.acquire(t1).0.expect("third permitted call");
    assert_eq!(
        m.state(),
        HalfOpen,
        "OPEN -> HALF_OPEN on the first call after the wait"
    );
    run(
        &m,
        t1,
        Rejected,
        HalfOpen,
        "a fourth concurrent call is not permitted",
    );
    // All three succeed: 0 % < 50 %, CLOSED.
    let finish = |p: Permit, failed: bool| {
        let outcome = if failed {
            Outcome::failure(SEC / 100)
        } else {
            Outcome::success(SEC / 100)
        };
        log(m.record(p, outcome, t1));
    };
    finish(first.expect("first permitted call"), false);
    finish(second, false);
    assert_eq!(m.state(), HalfOpen, "2 of 3 permitted calls done");
    finish(third, false);
    assert_eq!(m.state(), Closed, "3 of 3 succeeded: CLOSED");
    assert_eq!(m.counts(t1).calls, 0, "metrics start afresh on closing");

    // Phase 5: the fresh window again waits for 5 calls, then 100 % failures trip it.
    for i in 1..=4 {
        run(
            &m,
            t1,
            F,
            Closed,
            &format!("{i} of the minimum 5 calls after closing"),
        );
    }
    run(&m, t1, F, Open, "5 calls, 5 failed = 100 %: OPEN");
    // Phase 6: a failing half-open round. 3 probes in flight, then failure, failure, success:
    // resilience4j judges after all three (2 of 3 = 67 % >= 50 %) and re-opens; we re-open on
    // the first failure and ignore the rest of the round. Same transitions either way.
    let t2 = t1 + 60 * SEC;
    let (a, t) = m.acquire(t2);
    log(t);
    let a = a.expect("probe a");
    let b = m.acquire(t2).0.expect("probe b");
    let c = m.acquire(t2).0.expect("probe c");
    log(m.record(a, Outcome::failure(SEC), t2));
    assert_eq!(m.state(), Open, "ours: the first failed probe re-opens");
    log(m.record(b, Outcome::failure(SEC), t2));
    log(m.record(c, Outcome::success(SEC), t2));
    assert_eq!(
        m.state(),
        Open,
        "resilience4j: 67 % >= 50 % after the round: OPEN"
    );
    assert_eq!(
        m.open_until(),
        t2 + 60 * SEC,
        "a constant wait, as configured"
    );

    assert_eq!(
        transitions.into_inner(),
        vec![
            (Closed, Open),
            (Open, HalfOpen),
            (HalfOpen, Closed),
            (Closed, Open),
            (Open, HalfOpen),
            (HalfOpen, Open),
        ]
    );
}
