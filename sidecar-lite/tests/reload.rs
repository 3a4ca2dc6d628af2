//! Hot reload: new policies apply to the next request, with no failed requests under load; a
//! broken file keeps the old config serving; the binary reloads when its file changes.
// The sidecar itself is under test: the `proxy` feature (on by default).
#![cfg(feature = "proxy")]

mod common;

use common::{process, *};
use http::{Request, StatusCode};
use sidecar_lite::Config;
use std::{
    net::SocketAddr,
    sync::Arc,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};
use tokio::time::timeout;

/// Answers 503 to first attempts and 200 to retries (which carry `x-retry-attempt`).
async fn first_attempts_fail() -> SocketAddr {
    app(|req: hyper::Request<hyper::body::Incoming>| async move {
        let retried = req.headers().contains_key("x-retry-attempt");
        let mut response = hyper::Response::new(full(if retried { "retried" } else { "first" }));
        if !retried {
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        response
    })
    .await
    .0
}

fn route(listen: SocketAddr, app: SocketAddr, attempts: u32) -> Config {
    Config::parse(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[outbound]]\nname = \"orders\"\nlisten = \"{listen}\"\nendpoints = [\"{app}\"]\nretry = {{ attempts = {attempts}, backoff = {{ base = \"1ms\", max = \"1ms\" }} }}\n"
    ))
    .unwrap()
}

async fn status(addr: SocketAddr) -> StatusCode {
    let req = Request::builder()
        .uri(format!("http://{addr}/"))
        .body(full(""))
        .unwrap();
    timeout(STEP, http1().request(req))
        .await
        .unwrap()
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_new_retry_policy_applies_to_the_next_request() {
    let app = first_attempts_fail().await;
    let start = route("127.0.0.1:0".parse().unwrap(), app, 1);
    let mut sidecar = sidecar_lite::Sidecar::start(&start, None).await.unwrap();
    let addr = outbound_addr(&sidecar);
    assert_eq!(
        status(addr).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "one attempt: no retry"
    );

    sidecar.reload(&route(addr, app, 2)).await.unwrap();
    assert_eq!(
        outbound_addr(&sidecar),
        addr,
        "the same listener keeps serving"
    );
    assert_eq!(
        status(addr).await,
        StatusCode::OK,
        "two attempts: the retry answers"
    );

    sidecar.reload(&route(addr, app, 1)).await.unwrap();
    assert_eq!(status(addr).await, StatusCode::SERVICE_UNAVAILABLE);
    sidecar.stop().await;
}

#[tokio::test]
async fn reloads_under_continuous_load_fail_no_request() {
    let (app, _) = status_app(200).await;
    let start = route("127.0.0.1:0".parse().unwrap(), app, 1);
    let mut sidecar = sidecar_lite::Sidecar::start(&start, None).await.unwrap();
    let addr = outbound_addr(&sidecar);

    let failed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (failed, done) = (failed.clone(), done.clone());
        load.push(tokio::spawn(async move {
            let client = http1();
            for _ in 0..100 {
                let req = Request::builder()
                    .uri(format!("http://{addr}/"))
                    .body(full(""))
                    .unwrap();
                match timeout(STEP, client.request(req)).await {
                    Ok(Ok(response)) if response.status() == StatusCode::OK => {}
                    _ => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    // Reload again and again for as long as the load runs (bounded: 2000 reloads at most).
    let mut reloads = 0;
    for attempts in [2, 3, 1].into_iter().cycle().take(2000) {
        if done.load(Ordering::SeqCst) == 400 {
            break;
        }
        sidecar.reload(&route(addr, app, attempts)).await.unwrap();
        reloads += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(reloads >= 5, "the load overlapped {reloads} reloads");
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 400);
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    sidecar.stop().await;
}

#[tokio::test]
async fn a_reload_that_cannot_bind_changes_nothing() {
    let (app, _) = status_app(200).await;
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let start = route("127.0.0.1:0".parse().unwrap(), app, 1);
    let mut sidecar = sidecar_lite::Sidecar::start(&start, None).await.unwrap();
    let addr = outbound_addr(&sidecar);
    let err = sidecar
        .reload(&route(busy.local_addr().unwrap(), app, 3))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot listen"), "{err}");
    assert_eq!(outbound_addr(&sidecar), addr);
    assert_eq!(status(addr).await, StatusCode::OK);
    sidecar.stop().await;
}

/// Outbound routes, each `(name, listen, app)`.
fn routes(routes: &[(&str, SocketAddr, SocketAddr)]) -> Config {
    let mut text = String::from("[admin]\nlisten = \"127.0.0.1:0\"\n");
    for (name, listen, app) in routes {
        text += &format!(
            "[[outbound]]\nname = \"{name}\"\nlisten = \"{listen}\"\nendpoints = [\"{app}\"]\n"
        );
    }
    Config::parse(&text).unwrap()
}

/// A route renamed on the same address: the new one takes the address over from the old one,
/// which is still listening there when the new one starts.
#[tokio::test]
async fn a_route_renamed_on_its_address_takes_the_address_over() {
    let (before, _) = status_app(200).await;
    let (after, _) = status_app(202).await;
    let any = "127.0.0.1:0".parse().unwrap();
    let mut sidecar = sidecar_lite::Sidecar::start(&routes(&[("orders", any, before)]), None)
        .await
        .unwrap();
    let addr = outbound_addr(&sidecar);
    assert_eq!(status(addr).await, StatusCode::OK);

    sidecar
        .reload(&routes(&[("billing", addr, after)]))
        .await
        .unwrap();
    assert_eq!(sidecar.bound.outbound, [("billing".to_owned(), addr)]);
    assert_eq!(status(addr).await, StatusCode::ACCEPTED);

    // A drain closes the address, for all that it changed hands.
    let drain = Request::post(format!("http://{}/drain", sidecar.bound.admin.unwrap()))
        .header("x-sidecar-admin", "drain")
        .body(full(""))
        .unwrap();
    let drained = timeout(STEP, http1().request(drain))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(drained.status(), StatusCode::ACCEPTED);
    let closed = async || tokio::net::TcpStream::connect(addr).await.is_err();
    assert!(
        eventually(closed).await,
        "the address still takes connections"
    );
    sidecar.stop().await;
}

/// Two routes that swap addresses in one reload: each takes the other's.
#[tokio::test]
async fn two_routes_that_swap_addresses_take_each_others() {
    let (first, _) = status_app(200).await;
    let (second, _) = status_app(202).await;
    let any = "127.0.0.1:0".parse().unwrap();
    let start = routes(&[("first", any, first), ("second", any, second)]);
    let mut sidecar = sidecar_lite::Sidecar::start(&start, None).await.unwrap();
    let [(_, a), (_, b)] = sidecar.bound.outbound[..] else {
        panic!("two routes: {:?}", sidecar.bound.outbound);
    };
    assert_eq!(status(a).await, StatusCode::OK);
    assert_eq!(status(b).await, StatusCode::ACCEPTED);

    let swapped = routes(&[("first", b, first), ("second", a, second)]);
    sidecar.reload(&swapped).await.unwrap();
    assert_eq!(status(a).await, StatusCode::ACCEPTED);
    assert_eq!(status(b).await, StatusCode::OK);
    sidecar.stop().await;
}

/// A reload keeps what serves a route it leaves as it is: an open breaker stays open (a
/// SIGHUP for logrotate, or another route's change, does not send traffic back to an endpoint
/// that is failing). A route whose config changed starts afresh, as Envoy's clusters do: its
/// breaker is a new one, closed.
#[tokio::test]
async fn a_reload_keeps_the_breakers_of_routes_it_leaves_as_they_are() {
    let (kept_app, kept_hits) = status_app(500).await;
    let (changed_app, changed_hits) = status_app(500).await;
    let text = |changed_attempts: u32| {
        let route = |name: &str, app: SocketAddr, extra: &str| {
            format!(
                "[[outbound]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{app}\"]\n\
                 breaker = {{ consecutive_failures = 1, open_for = \"1h\", open_for_max = \"1h\" }}\n{extra}"
            )
        };
        Config::parse(&format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n{}{}",
            route("kept", kept_app, ""),
            route(
                "changed",
                changed_app,
                &format!("retry = {{ attempts = {changed_attempts} }}\n")
            ),
        ))
        .unwrap()
    };
    let mut sidecar = sidecar_lite::Sidecar::start(&text(1), None).await.unwrap();
    let [(_, kept), (_, changed)] = sidecar.bound.outbound[..] else {
        panic!("two routes: {:?}", sidecar.bound.outbound);
    };
    for addr in [kept, changed] {
        assert_eq!(status(addr).await, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status(addr).await, StatusCode::SERVICE_UNAVAILABLE, "open");
    }

    // The same config (a SIGHUP): both breakers stay open.
    sidecar.reload(&text(1)).await.unwrap();
    for addr in [kept, changed] {
        assert_eq!(status(addr).await, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(
        kept_hits.load(Ordering::SeqCst),
        1,
        "still open: nothing sent"
    );
    assert_eq!(
        changed_hits.load(Ordering::SeqCst),
        1,
        "still open: nothing sent"
    );

    // Only "changed" changes: its breaker is new, the other's stays open.
    sidecar.reload(&text(2)).await.unwrap();
    assert_eq!(sidecar.bound.outbound[0].1, kept);
    assert_eq!(status(kept).await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        kept_hits.load(Ordering::SeqCst),
        1,
        "still open: nothing sent"
    );
    assert_eq!(status(changed).await, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        changed_hits.load(Ordering::SeqCst),
        2,
        "a new breaker: sent"
    );
    sidecar.stop().await;
}

/// A reload that fails changes nothing, the access log included: after one that named another
/// log file and a busy port, the first config reloaded again goes on writing to the first
/// file. A changed `[log]` is refused, as the logger is set up once.
#[tokio::test]
async fn a_failed_reload_keeps_the_access_log_and_a_changed_log_section_is_refused() {
    let (app, _) = status_app(200).await;
    let certs = Certs::new("reload-access-log");
    let (first_log, other_log) = (certs.dir.join("first.log"), certs.dir.join("other.log"));
    let config = |log: &std::path::Path, listen: SocketAddr, extra: &str| {
        Config::parse(&format!(
            "{extra}[admin]\nlisten = \"127.0.0.1:0\"\n[access_log]\npath = \"{}\"\nformat = \"json\"\n\
             [[outbound]]\nname = \"orders\"\nlisten = \"{listen}\"\nendpoints = [\"{app}\"]\n",
            log.display()
        ))
        .unwrap()
    };
    let start = config(&first_log, "127.0.0.1:0".parse().unwrap(), "");
    let mut sidecar = sidecar_lite::Sidecar::start(&start, None).await.unwrap();
    let addr = outbound_addr(&sidecar);

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = sidecar
        .reload(&config(&other_log, busy.local_addr().unwrap(), ""))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot listen"), "{err}");
    sidecar.reload(&start).await.unwrap();
    assert_eq!(status(addr).await, StatusCode::OK);
    let lines = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert!(
        eventually(async || lines(&first_log) == 1).await,
        "the request is logged in the first file"
    );
    assert_eq!(lines(&other_log), 0, "nothing went to the other file");

    let err = sidecar
        .reload(&config(
            &first_log,
            "127.0.0.1:0".parse().unwrap(),
            "[log]\nformat = \"json\"\n",
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("[log] changed"), "{err}");
    sidecar.stop().await;
}

#[tokio::test]
async fn the_binary_reloads_its_file_and_keeps_serving_through_a_broken_one() {
    let (app, _) = status_app(200).await;
    let (first, second) = (process::free_addr(), process::free_addr());
    let route = move |name: &str, listen: SocketAddr| {
        format!("[[outbound]]\nname = \"{name}\"\nlisten = \"{listen}\"\nendpoints = [\"{app}\"]\n")
    };
    let mut sidecar = process::SidecarProcess::start("reload", &route("one", first)).await;
    let serving = move |addr: SocketAddr| async move {
        let req = Request::builder()
            .uri(format!("http://{addr}/"))
            .body(full(""))
            .unwrap();
        matches!(timeout(Duration::from_secs(1), http1().request(req)).await, Ok(Ok(r)) if r.status() == StatusCode::OK)
    };
    assert!(
        eventually(async || serving(first).await).await,
        "the first route serves"
    );

    sidecar.write_config(&format!("{}\n[[outbound]]\nname = ", route("one", first)));
    let rejected = async || {
        sidecar
            .metric("sidecar_config_reload_total{result=\"error\"}")
            .await
            == Some(1.0)
    };
    assert!(
        eventually(rejected).await,
        "the broken file is read and refused"
    );
    assert!(
        serving(first).await,
        "a broken file keeps the old config serving"
    );

    sidecar.write_config(&format!("{}{}", route("one", first), route("two", second)));
    assert!(
        eventually(async || serving(second).await).await,
        "the new route is bound"
    );
    assert!(serving(first).await);

    sidecar.signal("TERM");
    let exit = sidecar.wait_exit().await;
    assert!(exit.success(), "SIGTERM ends the process cleanly: {exit:?}");
}

#[tokio::test]
async fn a_reload_from_permissive_to_strict_mtls_applies_to_new_connections() {
    let (app, _) = status_app(200).await;
    let certs = Certs::new("reload-mtls");
    let identity = certs.identity("orders");
    let inbound = |mode: &str, listen: SocketAddr| {
        Config::parse(&format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n{identity}\n[inbound]\nlisten = \"{listen}\"\napp = \"{app}\"\nmtls = \"{mode}\"\nallow = [\"{}\"]\n",
            spiffe("frontend")
        ))
        .unwrap()
    };
    let start = inbound("permissive", "127.0.0.1:0".parse().unwrap());
    let mut sidecar = sidecar_lite::Sidecar::start(&start, None).await.unwrap();
    let addr = sidecar.bound.inbound.unwrap();
    // Permissive: a plaintext caller is served (as anonymous, so authorization says 403).
    let plaintext = || async move {
        let req = Request::builder()
            .uri(format!("http://{addr}/"))
            .body(full(""))
            .unwrap();
        timeout(STEP, http1().request(req))
            .await
            .unwrap()
            .map(|r| r.status())
    };
    assert_eq!(plaintext().await.unwrap(), StatusCode::FORBIDDEN);

    sidecar.reload(&inbound("strict", addr)).await.unwrap();
    assert_eq!(sidecar.bound.inbound, Some(addr));
    assert!(
        plaintext().await.is_err(),
        "strict: plaintext connections are refused"
    );
    sidecar.stop().await;
}

/// The balancer's load gauge expires with the rest after an idle spell, and comes back with
/// the next requests: a held handle would go on writing to the series dropped.
#[tokio::test]
async fn an_endpoints_load_series_comes_back_after_an_idle_spell() {
    let (first, _) = status_app(200).await;
    let (second, _) = status_app(200).await;
    let listen = process::free_addr();
    let sidecar = process::SidecarProcess::start_with(
        "load-series",
        &format!(
            "[[outbound]]\nname = \"orders\"\nlisten = \"{listen}\"\nendpoints = [\"{first}\", \"{second}\"]\n"
        ),
        "metrics_idle_timeout = \"1s\"\n",
        &[],
    )
    .await;
    let load = format!("sidecar_endpoint_load{{route=\"orders\",endpoint=\"{first}\"}}");
    // More requests than the reads between two publications (each request reads both).
    let traffic = async || {
        for _ in 0..160 {
            let response = get(format!("http://{listen}/")).await;
            assert_eq!(response.status(), StatusCode::OK);
        }
    };
    traffic().await;
    assert!(sidecar.metric(&load).await.is_some(), "published");
    assert!(
        eventually(async || sidecar.metric(&load).await.is_none()).await,
        "expired after 1 s unchanged"
    );
    traffic().await;
    assert!(sidecar.metric(&load).await.is_some(), "published again");
}

/// An adaptive limit's gauge comes back after an idle spell too, though the limit holds still.
#[tokio::test]
async fn an_adaptive_limits_series_comes_back_after_an_idle_spell() {
    let (app, _) = status_app(200).await;
    let listen = process::free_addr();
    let sidecar = process::SidecarProcess::start_with(
        "limit-series",
        &format!(
            "[[outbound]]\nname = \"orders\"\nlisten = \"{listen}\"\nendpoints = [\"{app}\"]\n\
             max_concurrent_requests = \"adaptive\"\n"
        ),
        "metrics_idle_timeout = \"1s\"\n",
        &[],
    )
    .await;
    let limit = "resilience_concurrency_limit{name=\"orders\"}";
    assert!(sidecar.metric(limit).await.is_some(), "published at start");
    assert!(
        eventually(async || sidecar.metric(limit).await.is_none()).await,
        "expired after 1 s unchanged"
    );
    // Requests until a window closes (100 ms and 10 calls at least).
    assert!(
        eventually(async || {
            for _ in 0..10 {
                let response = get(format!("http://{listen}/")).await;
                assert_eq!(response.status(), StatusCode::OK);
            }
            sidecar.metric(limit).await.is_some()
        })
        .await,
        "published again"
    );
}

#[tokio::test]
async fn metric_series_of_endpoints_that_are_gone_expire_and_those_in_use_stay() {
    let (kept, _) = status_app(200).await;
    let (removed, _) = status_app(200).await;
    let listen = process::free_addr();
    let dir = std::env::temp_dir().join(format!("sidecar-lite-series-{}", listen.port()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("endpoints.txt");
    std::fs::write(&file, format!("{kept}\n{removed}\n")).unwrap();
    let sidecar = process::SidecarProcess::start_with(
        "series",
        &format!(
            "[discovery]\nfile_poll = \"20ms\"\n[[outbound]]\nname = \"orders\"\nlisten = \"{listen}\"\nendpoints = [\"file:{}\"]\n",
            file.display()
        ),
        "metrics_idle_timeout = \"1s\"\n",
        &[],
    )
    .await;
    let series = |endpoint: std::net::SocketAddr| {
        format!("resilience_breaker_state{{name=\"orders/{endpoint}\"}}")
    };
    assert!(
        eventually(async || sidecar.metric(&series(removed)).await.is_some()).await,
        "both endpoints have their breaker series"
    );
    let response = get(format!("http://{listen}/")).await;
    assert_eq!(response.status(), StatusCode::OK);

    // Discovery drops one endpoint; its series go once they have been idle for 1 s.
    let staged = dir.join("endpoints.txt.new");
    std::fs::write(&staged, format!("{kept}\n")).unwrap();
    std::fs::rename(&staged, &file).unwrap();
    assert!(
        eventually(async || sidecar.metric(&series(removed)).await.is_none()).await,
        "the removed endpoint's series expire"
    );
    // What is in use stays, quiet or not: the other breaker, and the idle route's counters.
    assert_eq!(sidecar.metric(&series(kept)).await, Some(0.0));
    let requests = "sidecar_requests_total{listener=\"outbound/orders\",class=\"2xx\"}";
    assert_eq!(sidecar.metric(requests).await, Some(1.0));
    let _ = std::fs::remove_dir_all(&dir);
}
