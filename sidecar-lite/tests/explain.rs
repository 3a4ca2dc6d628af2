//! `Config::explain`, what `sidecar-lite check` prints: for a table of route policies, the
//! worst-case load on the upstream, the worst-case latency of one request, the fastest breaker
//! trip, and the warnings (field and line) for settings that contradict each other.
// The sidecar itself is under test: the `proxy` feature (on by default).
#![cfg(feature = "proxy")]

use serde_json::{Value, json};
use sidecar_lite::Config;

/// A config with one route called `r` whose section ends with `policy`.
fn route(policy: &str) -> String {
    format!(
        "[[outbound]]\nname = \"r\"\nlisten = \"127.0.0.1:15001\"\nendpoints = [\"127.0.0.1:8080\"]\n{policy}"
    )
}

fn explain(policy: &str) -> (Value, Vec<(String, Option<usize>)>) {
    let text = route(policy);
    let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let warnings = config
        .warnings(&text)
        .into_iter()
        .map(|w| (w.field, w.line))
        .collect();
    let value: Value = serde_json::from_str(&config.explain_json(&text)).unwrap();
    (value["routes"][0].clone(), warnings)
}

struct Case {
    name: &'static str,
    policy: &'static str,
    load: Value,
    latency: Value,
    breaker: (u64, u64),
    warnings: &'static [(&'static str, usize)],
}

#[test]
fn plaintext_without_an_identity_is_said_to_do_nothing() {
    let (_, warnings) = explain("plaintext = true\n");
    assert_eq!(warnings, [("outbound[0].plaintext".to_owned(), Some(5))]);
}

#[test]
fn each_policy_has_its_figures_and_warnings() {
    let cases = [
        Case {
            name: "defaults: 15 s timeout, 3 attempts, no per-try timeout",
            policy: "",
            load: json!({"per_request": 3, "sustained": 1.2, "reserve_per_second": 10}),
            // Each attempt may take the whole timeout: the timeout cuts them short.
            latency: json!({"worst_ms": 15000, "timeout_ms": 15000, "attempts": 3,
                "per_try_ms": 15000, "backoff_ms": 75, "retry_after_ms": 10000,
                "cut_by_timeout": true}),
            breaker: (20, 10),
            warnings: &[],
        },
        Case {
            name: "attempts and backoff that fit in the timeout",
            policy: "timeout = \"2s\"\n[outbound.retry]\nattempts = 3\nper_try_timeout = \"500ms\"\n\
                     on = [\"connect-failure\", \"reset\"]\n",
            load: json!({"per_request": 3, "sustained": 1.2, "reserve_per_second": 10}),
            latency: json!({"worst_ms": 1575, "timeout_ms": 2000, "attempts": 3,
                "per_try_ms": 500, "backoff_ms": 75, "retry_after_ms": null,
                "cut_by_timeout": false}),
            breaker: (20, 10),
            warnings: &[],
        },
        Case {
            name: "per-try timeouts that add up past the timeout",
            policy: "timeout = \"1s\"\n[outbound.retry]\nattempts = 4\nper_try_timeout = \"400ms\"\n\
                     backoff = { base = \"100ms\", max = \"100ms\", jitter = \"none\" }\n",
            load: json!({"per_request": 4, "sustained": 1.2, "reserve_per_second": 10}),
            latency: json!({"worst_ms": 1000, "timeout_ms": 1000, "attempts": 4,
                "per_try_ms": 400, "backoff_ms": 300, "retry_after_ms": 10000,
                "cut_by_timeout": true}),
            breaker: (20, 10),
            warnings: &[("outbound[0].retry.attempts", 7)],
        },
        Case {
            name: "a per-try timeout as long as the timeout",
            policy: "timeout = \"1s\"\n[outbound.retry]\nper_try_timeout = \"1s\"\n",
            load: json!({"per_request": 3, "sustained": 1.2, "reserve_per_second": 10}),
            latency: json!({"worst_ms": 1000, "timeout_ms": 1000, "attempts": 3,
                "per_try_ms": 1000, "backoff_ms": 75, "retry_after_ms": 10000,
                "cut_by_timeout": true}),
            breaker: (20, 10),
            warnings: &[("outbound[0].retry.per_try_timeout", 7)],
        },
        Case {
            name: "no retries",
            policy: "timeout = \"3s\"\n[outbound.retry]\nattempts = 1\n",
            load: json!({"per_request": 1, "sustained": 1.0, "reserve_per_second": 0}),
            latency: json!({"worst_ms": 3000, "timeout_ms": 3000, "attempts": 1,
                "per_try_ms": 3000, "backoff_ms": 0, "retry_after_ms": null,
                "cut_by_timeout": false}),
            breaker: (20, 10),
            warnings: &[],
        },
        Case {
            name: "retries with nothing to retry on, and a status condition without statuses",
            policy: "[outbound.retry]\nattempts = 2\non = []\nbudget = { ratio = 0.5, min_per_second = 3 }\n",
            load: json!({"per_request": 1, "sustained": 1.0, "reserve_per_second": 0}),
            latency: json!({"worst_ms": 15000, "timeout_ms": 15000, "attempts": 1,
                "per_try_ms": 15000, "backoff_ms": 0, "retry_after_ms": null,
                "cut_by_timeout": false}),
            breaker: (20, 10),
            warnings: &[("outbound[0].retry.on", 7)],
        },
        Case {
            name: "a status condition without statuses",
            policy: "[outbound.retry]\non = [\"retriable-status-codes\"]\n",
            load: json!({"per_request": 3, "sustained": 1.2, "reserve_per_second": 10}),
            latency: json!({"worst_ms": 15000, "timeout_ms": 15000, "attempts": 3,
                "per_try_ms": 15000, "backoff_ms": 75, "retry_after_ms": 10000,
                "cut_by_timeout": true}),
            breaker: (20, 10),
            warnings: &[("outbound[0].retry.on", 6)],
        },
        Case {
            name: "a bigger budget, and a breaker that trips on consecutive failures first",
            policy: "[outbound.retry]\nattempts = 5\nbudget = { ratio = 0.5, min_per_second = 1 }\n\
                     [outbound.breaker]\nconsecutive_failures = 5\nminimum_calls = 10\n",
            load: json!({"per_request": 5, "sustained": 1.5, "reserve_per_second": 1}),
            latency: json!({"worst_ms": 15000, "timeout_ms": 15000, "attempts": 5,
                "per_try_ms": 15000, "backoff_ms": 25 + 50 + 100 + 200, "retry_after_ms": 10000,
                "cut_by_timeout": true}),
            // consecutive_failures alone: no failure rate is judged.
            breaker: (5, 5),
            warnings: &[],
        },
        Case {
            name: "a minimum larger than the window, and a slow call slower than the timeout",
            policy: "timeout = \"1s\"\n[outbound.breaker]\nwindow = { calls = 10 }\nminimum_calls = 50\n\
                     failure_rate = 0.25\nslow_call_rate = 0.5\nslow_call_duration = \"2s\"\n",
            load: json!({"per_request": 3, "sustained": 1.2, "reserve_per_second": 10}),
            latency: json!({"worst_ms": 1000, "timeout_ms": 1000, "attempts": 3,
                "per_try_ms": 1000, "backoff_ms": 75, "retry_after_ms": 10000,
                "cut_by_timeout": true}),
            // The rate is judged over the 10 calls the window holds: 3 of them failing.
            breaker: (10, 3),
            warnings: &[
                ("outbound[0].breaker.minimum_calls", 8),
                ("outbound[0].breaker.slow_call_duration", 11),
            ],
        },
        Case {
            name: "a budget that allows no retry",
            policy: "[outbound.retry]\nbudget = { ratio = 0.0, min_per_second = 0 }\n",
            load: json!({"per_request": 1, "sustained": 1.0, "reserve_per_second": 0}),
            latency: json!({"worst_ms": 15000, "timeout_ms": 15000, "attempts": 1,
                "per_try_ms": 15000, "backoff_ms": 0, "retry_after_ms": null,
                "cut_by_timeout": false}),
            breaker: (20, 10),
            warnings: &[("outbound[0].retry.budget", 6)],
        },
    ];
    for case in cases {
        let (route, warnings) = explain(case.policy);
        assert_eq!(route["load"], case.load, "{}", case.name);
        assert_eq!(route["latency"], case.latency, "{}", case.name);
        assert_eq!(
            (
                route["breaker"]["calls"].as_u64().unwrap(),
                route["breaker"]["failing"].as_u64().unwrap()
            ),
            case.breaker,
            "{}",
            case.name
        );
        let expected: Vec<(String, Option<usize>)> = case
            .warnings
            .iter()
            .map(|(field, line)| ((*field).to_owned(), Some(*line)))
            .collect();
        assert_eq!(warnings, expected, "{}", case.name);
    }
}

#[test]
fn the_text_says_each_figure_and_warning() {
    let text = route(
        "timeout = \"1s\"\n[outbound.retry]\nattempts = 4\nper_try_timeout = \"400ms\"\n\
         on = [\"reset\"]\nbackoff = { base = \"100ms\", max = \"100ms\", jitter = \"none\" }\n",
    );
    let explained = Config::parse(&text).unwrap().explain(&text);
    assert_eq!(
        explained,
        "route \"r\" (line 2):\n  \
         load on the upstream: at most 4x for one request (attempts); over time at most 1.20x \
         (budget ratio) plus 10 retries/s (min_per_second)\n  \
         worst-case latency: 1s, the timeout, which cuts short 4 attempts of up to 400ms each \
         with backoff of up to 300ms in all (1s 900ms)\n  \
         breaker: trips after 20 calls at the fastest, 10 of them failing or slow (failure_rate \
         = 0.5 over at least 20 calls within the last 100 calls); then open 5s, growing to 1m\n\
         warning: line 7: `outbound[0].retry.attempts`: 4 attempts of up to 400ms with up to \
         300ms of backoff take up to 1s 900ms, longer than the timeout (1s): the last attempts \
         may never run\n"
    );
}
