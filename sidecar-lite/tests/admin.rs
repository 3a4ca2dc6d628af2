//! The admin server: readiness and drain, the effective config, breaker states, metrics and
//! the status page.
// The sidecar itself is under test: the `proxy` feature (on by default).
#![cfg(feature = "proxy")]

mod common;

use common::*;
use http::{Method, Request, StatusCode};
use sidecar_lite::{Config, Sidecar};
use std::net::SocketAddr;
use tokio::time::timeout;

async fn start(failing: SocketAddr, healthy: SocketAddr) -> Sidecar {
    let text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[outbound]]
name = "orders"
listen = "127.0.0.1:0"
endpoints = ["{healthy}"]

# One endpoint per route, so which breaker opens does not depend on the balancer's choices.
[[outbound]]
name = "broken"
listen = "127.0.0.1:0"
endpoints = ["{failing}"]
retry = {{ attempts = 5, backoff = {{ base = "1ms", max = "2ms" }} }}
breaker = {{ minimum_calls = 4, window = {{ calls = 10 }}, open_for = "30s" }}
"#
    );
    let config = Config::parse(&text).unwrap();
    Sidecar::start(&config, Some(recorder())).await.unwrap()
}

async fn admin_get(sidecar: &Sidecar, path: &str) -> (StatusCode, String) {
    let response = get(format!("http://{}{path}", sidecar.bound.admin.unwrap())).await;
    let status = response.status();
    (status, text(response).await)
}

#[tokio::test]
async fn admin_reports_config_breakers_metrics_and_status() {
    let (failing, _) = status_app(503).await;
    let (healthy, _) = status_app(200).await;
    let sidecar = start(failing, healthy).await;

    assert_eq!(admin_get(&sidecar, "/live").await.0, StatusCode::OK);
    assert_eq!(
        admin_get(&sidecar, "/ready").await,
        (StatusCode::OK, "ready\n".to_owned())
    );

    let (status, config) = admin_get(&sidecar, "/config").await;
    assert_eq!(status, StatusCode::OK);
    assert!(config.contains("name = \"orders\""), "{config}");
    assert!(
        config.contains("half_open_probes = 3"),
        "defaults are filled in: {config}"
    );

    let (_, breakers) = admin_get(&sidecar, "/breakers").await;
    assert_eq!(
        breakers.matches("\"state\": \"closed\"").count(),
        2,
        "{breakers}"
    );

    for i in 0..20 {
        let response = get(format!("http://{}/{i}", outbound_addr(&sidecar))).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    // The broken route's first request: four 503s open its breaker, the fifth attempt is
    // refused by it.
    let broken = sidecar.bound.outbound[1].1;
    let response = get(format!("http://{broken}/")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (_, breakers) = admin_get(&sidecar, "/breakers").await;
    assert!(
        breakers.contains(&format!("\"endpoint\": \"{failing}\", \"state\": \"open\"")),
        "{breakers}"
    );
    assert!(
        breakers.contains(&format!(
            "\"endpoint\": \"{healthy}\", \"state\": \"closed\""
        )),
        "{breakers}"
    );

    let (_, metrics) = admin_get(&sidecar, "/metrics").await;
    assert!(
        metrics.contains("sidecar_requests_total{listener=\"outbound/orders\",class=\"2xx\"} 20"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "resilience_breaker_state{{name=\"broken/{failing}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("process_resident_memory_bytes"),
        "{metrics}"
    );
    assert!(
        metrics.contains("resilience_retry_attempts_total"),
        "{metrics}"
    );

    let (status, page) = admin_get(&sidecar, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<td class=\"open\">open</td>"), "{page}");
    assert!(
        page.contains("status: <b id=\"status\">ready</b>"),
        "{page}"
    );

    assert_eq!(admin_get(&sidecar, "/nope").await.0, StatusCode::NOT_FOUND);
    sidecar.stop().await;
}

#[tokio::test]
async fn post_drain_turns_ready_false_and_stops_the_listeners() {
    let (app, _) = status_app(200).await;
    let sidecar = start(app, app).await;
    let admin = sidecar.bound.admin.unwrap();
    let outbound = outbound_addr(&sidecar);

    let (status, _) = admin_get(&sidecar, "/ready").await;
    assert_eq!(status, StatusCode::OK);
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{admin}/drain"))
        .body(full(""))
        .unwrap();
    let response = timeout(STEP, http1().request(req)).await.unwrap().unwrap();
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "no admin header: refused"
    );
    assert_eq!(admin_get(&sidecar, "/ready").await.0, StatusCode::OK);
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{admin}/drain"))
        .header("x-sidecar-admin", "drain")
        .body(full(""))
        .unwrap();
    let response = timeout(STEP, http1().request(req)).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(
        admin_get(&sidecar, "/ready").await,
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_owned())
    );

    // The listener closes once drained: new connections are refused within the bound.
    let refused = async {
        loop {
            if tokio::net::TcpStream::connect(outbound).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    timeout(STEP, refused)
        .await
        .expect("the outbound listener closes");
    sidecar.stop().await;
}

#[tokio::test]
async fn a_rebound_name_gets_nothing_from_the_admin_server() {
    let (app, _) = status_app(200).await;
    let sidecar = start(app, app).await;
    let admin = sidecar.bound.admin.unwrap();
    let request = |method: Method, path: &str, host: &str| {
        Request::builder()
            .method(method)
            .uri(format!("http://{admin}{path}"))
            .header("host", host)
            .header("x-sidecar-admin", "drain")
            .body(full(""))
            .unwrap()
    };
    // A page whose own name now points at 127.0.0.1 sends that name as Host.
    for (method, path) in [
        (Method::GET, "/config"),
        (Method::GET, "/metrics"),
        (Method::GET, "/ready"),
        (Method::POST, "/drain"),
    ] {
        let req = request(method, path, &format!("rebound.example:{}", admin.port()));
        let response = timeout(STEP, http1().request(req)).await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        assert_eq!(response.headers()["x-sidecar-error"], "unauthorized");
    }
    assert_eq!(
        admin_get(&sidecar, "/ready").await.0,
        StatusCode::OK,
        "not drained"
    );
    // IP literals and localhost are how probes and operators address it.
    for host in [
        format!("127.0.0.1:{}", admin.port()),
        format!("localhost:{}", admin.port()),
        "LOCALHOST".to_owned(),
        "[::1]:15000".to_owned(),
        "10.1.2.3".to_owned(),
    ] {
        let req = request(Method::GET, "/live", &host);
        let response = timeout(STEP, http1().request(req)).await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{host}");
    }
    sidecar.stop().await;
}

#[tokio::test]
async fn the_probes_listener_answers_health_and_nothing_else() {
    let config =
        Config::parse("[admin]\nlisten = \"127.0.0.1:0\"\nprobes = \"127.0.0.1:0\"\n").unwrap();
    let sidecar = Sidecar::start(&config, Some(recorder())).await.unwrap();
    let probes = sidecar.bound.probes.expect("the probes listener is bound");
    for (path, status) in [
        ("/live", StatusCode::OK),
        ("/ready", StatusCode::OK),
        ("/config", StatusCode::NOT_FOUND),
        ("/metrics", StatusCode::NOT_FOUND),
        ("/breakers", StatusCode::NOT_FOUND),
        ("/", StatusCode::NOT_FOUND),
    ] {
        let response = get(format!("http://{probes}{path}")).await;
        assert_eq!(response.status(), status, "{path}");
    }
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{probes}/drain"))
        .header("x-sidecar-admin", "drain")
        .body(full(""))
        .unwrap();
    let response = timeout(STEP, http1().request(req)).await.unwrap().unwrap();
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "no drain from outside"
    );
    assert_eq!(admin_get(&sidecar, "/ready").await.0, StatusCode::OK);
    sidecar.stop().await;
}

/// Held by the tests of this file that make mTLS handshakes, while one of them counts the
/// process-wide handshake counter.
static HANDSHAKES_COUNTED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn a_thousand_distinct_hosts_share_the_connections_to_an_endpoint() {
    let _alone = HANDSHAKES_COUNTED.lock().await;
    let render = || recorder().render();
    // Installed before the sidecars start, so that their handshakes are counted.
    let _ = render();
    let (app, hits) = echo_app().await;
    let path = path_to(app, "distinct-hosts").await;
    let handshakes = |text: &str| -> f64 {
        text.lines()
            .filter(|line| {
                line.starts_with("resilience_mtls_handshakes_total{")
                    && line.contains("side=\"client\"")
            })
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    let before = handshakes(&render());
    let client = http1();
    let addr = outbound_addr(&path.outbound);
    for n in 0..1000 {
        let req = Request::builder()
            .uri(format!("http://{addr}/"))
            .header("host", format!("tenant-{n}.orders.shop"))
            .body(full(""))
            .unwrap();
        let response = timeout(STEP, client.request(req)).await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let _ = text(response).await;
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1000);
    let made = handshakes(&render()) - before;
    // Keyed by the endpoint, the pool made one connection (HTTP/2, by ALPN) for all of them;
    // keyed by the caller's Host, it made one per Host.
    println!("{made} mTLS handshakes for 1000 Hosts");
    assert!(
        (1.0..=2.0).contains(&made),
        "{made} mTLS handshakes for 1000 Hosts"
    );
}

/// Now, by the wall clock: certificates are valid in wall-clock time.
#[allow(
    clippy::disallowed_methods,
    reason = "certificate validity is wall-clock time"
)]
fn wall_clock() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

/// `/status.json` and the page, through two sidecars: the golden signals of each side, the
/// inbound side's identity (a certificate with 10 % of its lifetime left, so it warns) and
/// trust, and the peers it has seen.
#[tokio::test]
async fn status_has_the_golden_signals_identity_and_peers() {
    let _alone = HANDSHAKES_COUNTED.lock().await;
    use resilience_mtls::dev_ca::IssueOptions;
    use std::time::Duration;
    let (app, _) = status_app(200).await;
    let certs = Certs::new("status-json");
    let hour = Duration::from_secs(3600);
    let now = wall_clock();
    let expiring = IssueOptions::new().valid(now - 9 * hour, now + hour);
    let inbound = sidecar(&format!(
        "{}\n[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"{app}\"\nallow = [\"{}\"]\n",
        certs.identity_with("orders", &expiring),
        spiffe("frontend"),
    ))
    .await;
    let outbound = frontend_to_orders(&certs, &inbound, "").await;
    for i in 0..5 {
        let response = get(format!("http://{}/{i}", outbound_addr(&outbound))).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    let (status, json) = admin_get(&inbound, "/status.json").await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["process"]["status"], "ready");
    assert_eq!(json["process"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(json["process"]["worker_threads"].as_u64().unwrap() >= 1);
    let identity = &json["identity"];
    assert_eq!(identity["identity"], spiffe("orders"));
    assert_eq!(identity["expiring_soon"], true);
    let left = identity["lifetime_left"].as_f64().unwrap();
    assert!((0.09..=0.11).contains(&left), "{left}");
    let trust = identity["trust"].as_array().unwrap();
    assert_eq!(trust.len(), 1);
    assert!(trust[0].as_str().unwrap().contains("CN="), "{trust:?}");
    let listener = &json["listeners"][0];
    assert_eq!(listener["name"], "inbound");
    assert_eq!(listener["window"]["requests"], 5);
    assert_eq!(listener["window"]["success_rate"], 1.0);
    // One pooled connection per worker of the outbound side, at most: each worker sends on
    // the connections it made, whatever worker accepted the caller.
    let (_, outbound_status) = admin_get(&outbound, "/status.json").await;
    let outbound_status: serde_json::Value = serde_json::from_str(&outbound_status).unwrap();
    let outbound_workers = outbound_status["process"]["worker_threads"]
        .as_u64()
        .unwrap();
    let open = listener["connections_open"].as_u64().unwrap();
    assert!(
        (1..=outbound_workers).contains(&open),
        "{open} connections from the outbound side's {outbound_workers} workers"
    );
    assert_eq!(
        listener["peers"],
        serde_json::json!([{"identity": spiffe("frontend"), "requests": 5}])
    );
    assert_eq!(listener["series"].as_array().unwrap().len(), 30);

    let (_, json) = admin_get(&outbound, "/status.json").await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let route = &json["listeners"][0];
    assert_eq!(route["name"], "outbound/peer");
    assert_eq!(route["window"]["requests"], 5);
    assert_eq!(route["window"]["retried_share"], 0.0);
    // The default budget: 10 a second over 10 s, and 5 requests' share of 0.2 each.
    assert_eq!(route["retry_budget"], 101);
    assert_eq!(json["endpoints"][0]["state"], "closed");
    assert_eq!(json["endpoints"][0]["calls"], 5);

    let (_, page) = admin_get(&inbound, "/").await;
    assert!(page.contains("class=\"warn\""), "{page}");
    assert!(
        page.contains("less than 20% left, rotation is late"),
        "{page}"
    );
    assert!(
        page.contains(&format!(
            "<tr><td>{}</td><td class=\"n\">5</td></tr>",
            spiffe("frontend")
        )),
        "{page}"
    );
}

/// A connection cut at the drain grace has its task aborted, so it never reaches its end: it
/// is counted out of `sidecar_connections_open` all the same (the gauge outlives the listener,
/// under the same name, and would stay one too high for good).
#[tokio::test]
async fn a_connection_cut_at_the_drain_grace_is_counted_out_of_the_open_gauge() {
    let (slow, hits) = app(|_req| async {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        hyper::Response::new(full("late"))
    })
    .await;
    let config = |listen: SocketAddr| {
        Config::parse(&format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[runtime]\ndrain_grace = \"100ms\"\n\
             [[outbound]]\nname = \"cut\"\nlisten = \"{listen}\"\nendpoints = [\"{slow}\"]\n"
        ))
        .unwrap()
    };
    let mut sidecar = Sidecar::start(&config("127.0.0.1:0".parse().unwrap()), Some(recorder()))
        .await
        .unwrap();
    let req = Request::builder()
        .uri(format!("http://{}/", outbound_addr(&sidecar)))
        .body(full(""))
        .unwrap();
    let pending = tokio::spawn(http1().request(req));
    assert!(
        eventually(async || hits.load(std::sync::atomic::Ordering::SeqCst) == 1).await,
        "the request reached the app"
    );
    let open = || {
        recorder()
            .render()
            .lines()
            .find(|l| l.starts_with("sidecar_connections_open{listener=\"outbound/cut\"}"))
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
    };
    assert_eq!(open().as_deref(), Some("1"));

    // The route moves: its old listener drains, and cuts the request at the grace.
    sidecar
        .reload(&config(common::process::free_addr()))
        .await
        .unwrap();
    let _ = timeout(STEP, pending).await.expect("the request is cut");
    assert!(
        eventually(async || open().as_deref() == Some("0")).await,
        "{:?}",
        open()
    );
    sidecar.stop().await;
}
