//! Shadow mode: the breaker trips, probes and closes as it would enforced, and refuses
//! nothing; each call it would refuse is counted with `mode="shadow"`, and its outcome is not
//! recorded.

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use resilience_breaker::{CircuitBreakerLayer, Enforcement, Mode, Policy, SlidingWindow, State};
use std::time::Duration;
use tower::{Layer, ServiceExt, service_fn};

const OPEN_FOR: Duration = Duration::from_secs(10);

fn layer(mode: Mode) -> CircuitBreakerLayer {
    CircuitBreakerLayer::new(
        Policy::default()
            .failure_rate(0.5)
            .window(SlidingWindow::Count(4))
            .minimum_calls(2)
            .open_for(OPEN_FOR)
            .jitter(0.0)
            .half_open_probes(1),
    )
    .unwrap()
    .named("orders")
    .mode(mode)
    .enforcement(Enforcement::Shadow)
}

#[tokio::test(start_paused = true)]
async fn a_shadow_breaker_opens_and_lets_every_call_through() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    for mode in [Mode::FailFast, Mode::BackPressure] {
        let service = layer(mode).layer(service_fn(|ok: bool| async move {
            if ok {
                Ok(())
            } else {
                Err(tower::BoxError::from("boom"))
            }
        }));
        let handle = service.handle().clone();
        for _ in 0..2 {
            assert!(service.clone().oneshot(false).await.is_err());
        }
        assert_eq!(handle.state(), State::Open, "{mode:?}: tripped as enforced");

        // Open: calls go through; their outcomes are not recorded, so the breaker stays open
        // until its time is up, as it would enforced.
        let mut unheld = service.clone();
        assert!(
            tokio_test::task::spawn(unheld.ready()).poll().is_ready(),
            "{mode:?}: ready while open, under a balancer too"
        );
        for _ in 0..3 {
            assert!(service.clone().oneshot(true).await.is_ok(), "{mode:?}");
        }
        assert_eq!(handle.state(), State::Open);
        tokio::time::advance(OPEN_FOR).await;
        assert!(service.clone().oneshot(true).await.is_ok());
        assert_eq!(
            handle.state(),
            State::Closed,
            "{mode:?}: the probe closed it"
        );
    }

    let shadow: u64 = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| {
            key.key().name() == "resilience_breaker_rejected_total"
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == "mode" && l.value() == "shadow")
        })
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => n,
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(shadow, 6, "three would-be refusals in each mode");
}

#[test]
fn the_config_reads_the_mode() {
    let config: resilience_breaker::BreakerConfig = toml::from_str("mode = \"shadow\"").unwrap();
    assert_eq!(config.mode, Enforcement::Shadow);
    assert!(toml::from_str::<resilience_breaker::BreakerConfig>("mode = \"loud\"").is_err());
}
