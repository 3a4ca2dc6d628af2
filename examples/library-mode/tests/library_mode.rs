//! Library mode against the flaky upstream: the route's retries mend injected 503s, and the
//! same route speaks mTLS to a peer's inbound sidecar when the config has an identity.

use bytes::Bytes;
use example_flaky_upstream::{Faults, Rate, Upstream};
use example_library_mode::{UpstreamClient, route, serve};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use resilience_mtls::{MaterialPaths, dev_ca::DevCa};
use sidecar_lite::{Config, Sidecar};
use std::{net::SocketAddr, path::PathBuf, time::Duration};
use tokio::{net::TcpListener, time::timeout};

const STEP: Duration = Duration::from_secs(10);

const RETRY_503: &str =
    "attempts = 3\non = [\"gateway-error\"]\nbackoff = { base = \"1ms\", max = \"5ms\" }";

/// A config with one route, `upstream`, to `endpoint`; `head` goes before it (an
/// `[identity]`), `extra` into it (a `server_identity`), `retry` into its retry table.
fn config(head: &str, endpoint: SocketAddr, extra: &str, retry: &str) -> String {
    format!(
        "{head}\n[[outbound]]\nname = \"upstream\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{endpoint}\"]\ntimeout = \"5s\"\n{extra}\n\n[outbound.retry]\n{retry}\n"
    )
}

/// Starts the example service with `config`'s route; returns its address.
async fn service(config: &str) -> SocketAddr {
    let (config, route) = route(config, "upstream").unwrap();
    let client = UpstreamClient::new(&config, &route).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, client));
    addr
}

/// `n` GETs to the example service, one after another: each status and body.
async fn calls(addr: SocketAddr, n: usize) -> Vec<(StatusCode, String)> {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut answers = Vec::new();
    for _ in 0..n {
        let request = Request::get(format!("http://{addr}/hello"))
            .body(Empty::new())
            .unwrap();
        let response = timeout(STEP, client.request(request))
            .await
            .unwrap()
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        answers.push((status, String::from_utf8_lossy(&body).into_owned()));
    }
    answers
}

#[tokio::test]
async fn retries_mend_injected_503s() {
    // Every second request to the upstream fails with 503.
    let upstream = Upstream::start(Faults {
        error_rate: Rate::every(2),
        ..Faults::default()
    })
    .await
    .unwrap();
    let addr = service(&config("", upstream.addr(), "", RETRY_503)).await;

    let answers = calls(addr, 10).await;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body, "upstream answered 200 OK: ok\n");
    }
    // Call 1 is upstream request 1 (fine); every later call meets a 503 first, then is retried.
    let counters = upstream.counters();
    assert_eq!(counters.ok, 10);
    assert_eq!(counters.errors, 9);
    assert_eq!(counters.requests, 19);
}

#[tokio::test]
async fn without_retries_the_503s_reach_the_caller() {
    let upstream = Upstream::start(Faults {
        error_rate: Rate::every(2),
        ..Faults::default()
    })
    .await
    .unwrap();
    let addr = service(&config("", upstream.addr(), "", "attempts = 1")).await;

    let statuses: Vec<u16> = calls(addr, 6)
        .await
        .into_iter()
        .map(|(status, _)| status.as_u16())
        .collect();
    assert_eq!(statuses, [200, 503, 200, 503, 200, 503]);
    assert_eq!(upstream.counters().requests, 6);
}

#[tokio::test]
async fn the_shipped_config_is_a_valid_route() {
    let (config, route) = route(include_str!("../library.toml"), "upstream").unwrap();
    assert!(config.identity().is_none());
    assert_eq!(route.endpoints(), ["127.0.0.1:8080"]);
    assert_eq!(route.retry().attempts, 3);
    assert!(
        example_library_mode::route(include_str!("../library.toml"), "nope")
            .unwrap_err()
            .to_string()
            .contains("no [[outbound]] route named \"nope\"")
    );
}

/// Certificates for two workloads in a fresh directory, removed on drop.
struct Certs {
    dir: PathBuf,
    ca: DevCa,
}

impl Certs {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("library-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            dir,
            ca: DevCa::new("example.org").unwrap(),
        }
    }

    /// Writes the certificate of `ns/shop/sa/<name>`; returns its `[identity]` section.
    fn identity(&self, name: &str) -> String {
        let paths = MaterialPaths::new(
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}-key.pem")),
            self.dir.join("ca.pem"),
        );
        self.ca
            .workload(&format!("ns/shop/sa/{name}"))
            .unwrap()
            .write(&paths, self.ca.trust_pem())
            .unwrap();
        format!(
            "[identity]\ncert = \"{}\"\nkey = \"{}\"\ntrust = \"{}\"\n",
            paths.cert.display(),
            paths.key.display(),
            paths.trust.display()
        )
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn with_an_identity_the_route_speaks_mtls_to_the_peers_sidecar() {
    let upstream = Upstream::start(Faults {
        error_rate: Rate::every(2),
        ..Faults::default()
    })
    .await
    .unwrap();
    let certs = Certs::new();
    // The peer's inbound sidecar, in process: strict mTLS, lets only `frontend` in.
    let inbound = Config::parse(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{}\n[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"{}\"\nallow = [\"spiffe://example.org/ns/shop/sa/frontend\"]\n",
        certs.identity("orders"),
        upstream.addr()
    ))
    .unwrap();
    let sidecar = Sidecar::start(&inbound, None).await.unwrap();
    let inbound_addr = sidecar.bound.inbound.unwrap();

    let addr = service(&config(
        &certs.identity("frontend"),
        inbound_addr,
        "server_identity = \"spiffe://example.org/ns/shop/sa/orders\"",
        RETRY_503,
    ))
    .await;

    // Every second upstream request fails; the retries mend them across both TLS hops.
    let answers = calls(addr, 4).await;
    assert!(
        answers.iter().all(|(status, _)| *status == StatusCode::OK),
        "{answers:?}"
    );
    assert_eq!(upstream.counters().ok, 4);
    sidecar.stop().await;
}
