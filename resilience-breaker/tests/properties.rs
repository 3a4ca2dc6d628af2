//! Properties of the state machine over any sequence of outcomes, releases and times (bounded
//! case counts so they run in CI in well under a second each):
//!
//! 1. HalfOpen never has more than the configured probes in flight.
//! 2. The breaker never closes without the configured number of successful probes.
//! 3. In rate mode it never opens with fewer than `minimum_calls` recorded.

use proptest::prelude::*;
use resilience_breaker::{Outcome, Permit, Policy, SlidingWindow, State, StateMachine, Transition};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone)]
enum Op {
    /// Ask for a permit and keep it.
    Acquire,
    /// Finish the permit at this index (modulo the number held).
    Finish {
        index: usize,
        failed: bool,
        slow: bool,
    },
    /// Hand the permit at this index back unused.
    Release { index: usize },
    /// Let time pass.
    Advance { millis: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Acquire),
        4 => (any::<usize>(), any::<bool>(), any::<bool>())
            .prop_map(|(index, failed, slow)| Op::Finish { index, failed, slow }),
        1 => any::<usize>().prop_map(|index| Op::Release { index }),
        1 => (0u64..3_000).prop_map(|millis| Op::Advance { millis }),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop_oneof![
            (1u32..20).prop_map(SlidingWindow::Count),
            (1u64..20).prop_map(|s| SlidingWindow::Time(Duration::from_secs(s))),
        ],
        1u32..15,
        1u32..5,
        prop_oneof![Just(0.1), Just(0.5), Just(1.0)],
        any::<bool>(),
    )
        .prop_map(|(window, minimum, probes, rate, slow_rule)| {
            let mut p = Policy::default()
                .failure_rate(rate)
                .window(window)
                .minimum_calls(minimum)
                .half_open_probes(probes)
                .open_for(Duration::from_secs(1))
                .open_for_max(Duration::from_secs(4))
                .jitter(0.5);
            if slow_rule {
                p = p.slow_calls(0.5, Duration::from_millis(100));
            }
            p
        })
}

struct Model {
    machine: StateMachine,
    now: Instant,
    held: Vec<Permit>,
    probes: u32,
    /// Probes in flight in the current half-open round.
    probes_in_flight: u32,
    /// Successful probes recorded in the current half-open round.
    probe_successes: u32,
    /// Outcomes recorded while Closed since the breaker last closed.
    recorded_while_closed: u32,
    minimum: u32,
}

impl Model {
    fn observe(&mut self, transition: Option<Transition>) {
        let Some(t) = transition else { return };
        match (t.from, t.to) {
            (State::Closed, State::Open) => {
                // Property 3.
                assert!(
                    self.recorded_while_closed >= self.minimum,
                    "opened after {} calls, minimum {}",
                    self.recorded_while_closed,
                    self.minimum
                );
                assert!(self.machine.counts(self.now).calls >= self.minimum);
            }
            (State::HalfOpen, State::Closed) => {
                // Property 2.
                assert!(
                    self.probe_successes >= self.probes,
                    "closed after {} successful probes of {}",
                    self.probe_successes,
                    self.probes
                );
                self.recorded_while_closed = 0;
            }
            (State::Open, State::HalfOpen) => {}
            (State::HalfOpen, State::Open) => {}
            other => panic!("unexpected transition {other:?}"),
        }
        if t.to == State::HalfOpen || t.from == State::HalfOpen {
            self.probes_in_flight = 0;
            self.probe_successes = 0;
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Acquire => {
                let (result, transition) = self.machine.acquire(self.now);
                self.observe(transition);
                if let Ok(permit) = result {
                    if permit.is_probe() {
                        self.probes_in_flight += 1;
                        // Property 1.
                        assert!(self.probes_in_flight <= self.probes);
                    }
                    self.held.push(permit);
                }
            }
            Op::Finish {
                index,
                failed,
                slow,
            } if !self.held.is_empty() => {
                let permit = self.held.swap_remove(index % self.held.len());
                let elapsed = Duration::from_millis(if slow { 100 } else { 1 });
                let outcome = if failed {
                    Outcome::failure(elapsed)
                } else {
                    Outcome::success(elapsed)
                };
                let state = self.machine.state();
                let probe = permit.is_probe();
                if probe && state == State::HalfOpen {
                    self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
                    let slow_fails = slow && self.machine.policy().judges_slow_calls();
                    if !(failed || slow_fails) {
                        self.probe_successes += 1;
                    }
                }
                if !probe && state == State::Closed {
                    self.recorded_while_closed += 1;
                }
                let transition = self.machine.record(permit, outcome, self.now);
                self.observe(transition);
            }
            Op::Release { index } if !self.held.is_empty() => {
                let permit = self.held.swap_remove(index % self.held.len());
                if permit.is_probe() && self.machine.state() == State::HalfOpen {
                    self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
                }
                self.machine.release(permit);
            }
            Op::Advance { millis } => self.now += Duration::from_millis(millis),
            _ => {}
        }
        if self.machine.state() == State::HalfOpen {
            assert!(self.machine.probes_admitted() <= self.probes);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn probes_successes_and_minimum_calls_hold(
        policy in policy(),
        ops in prop::collection::vec(op(), 1..300),
    ) {
        let now = Instant::now();
        let mut model = Model {
            probes: policy.probes(),
            minimum: policy.effective_minimum_calls(),
            machine: StateMachine::new(policy, now).unwrap(),
            now,
            held: Vec::new(),
            probes_in_flight: 0,
            probe_successes: 0,
            recorded_while_closed: 0,
        };
        for op in ops {
            model.apply(op);
        }
    }
}
