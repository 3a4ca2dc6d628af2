//! Service discovery: a `dns:` name served by a test DNS server whose records change, and a
//! `file:` of endpoints rewritten under load. Traffic moves to the new endpoints with no failed
//! request; a failed lookup keeps the old set; the admin server shows the current set.
//!
//! Every endpoint is an app on 127.0.0.x; the DNS server is a UDP socket on 127.0.0.1 that
//! answers A queries from a table the test changes (hickory-proto encodes the messages).
// The sidecar itself is under test: the `proxy` feature (on by default).
#![cfg(feature = "proxy")]

mod common;

use common::{
    dns::{Answer, Dns},
    *,
};
use http::{Request, StatusCode};
use sidecar_lite::{Config, Sidecar};
use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::{net::TcpListener, task::JoinHandle, time::timeout};

/// `n` apps on one port, at 127.0.0.1, 127.0.0.2, ...: the pods behind a headless Service.
/// Each answers 200 and counts its requests.
async fn pods(n: u8) -> Vec<(SocketAddr, Arc<AtomicUsize>)> {
    // Another process may hold the port on one of the addresses: try a few ports.
    for _ in 0..20 {
        let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for i in 2..=n {
            match TcpListener::bind((Ipv4Addr::new(127, 0, 0, i), port)).await {
                Ok(listener) => listeners.push(listener),
                Err(_) => break,
            }
        }
        if listeners.len() == usize::from(n) {
            return listeners
                .into_iter()
                .map(|listener| {
                    serve_app(listener, |_req| async { http::Response::new(full("pod")) })
                })
                .collect();
        }
    }
    panic!("no port free on 127.0.0.1 to 127.0.0.{n}");
}

/// Requests sent without pause by a few clients until stopped (bounded: 20 000 each, and
/// [`STEP`] for each request), counting the ones that did not get a 200.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..4)
            .map(|_| {
                let (stop, sent, failed, errors) =
                    (stop.clone(), sent.clone(), failed.clone(), errors.clone());
                tokio::spawn(async move {
                    let client = http1();
                    for _ in 0..20_000 {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let req = Request::builder()
                            .uri(format!("http://{addr}/"))
                            .body(full(""))
                            .unwrap();
                        let outcome = match timeout(STEP, client.request(req)).await {
                            Ok(Ok(response)) if response.status() == StatusCode::OK => None,
                            Ok(Ok(response)) => Some(format!(
                                "{} {:?}",
                                response.status(),
                                response.headers().get("x-sidecar-error")
                            )),
                            Ok(Err(e)) => Some(e.to_string()),
                            Err(_) => Some("timed out".to_owned()),
                        };
                        if let Some(error) = outcome {
                            failed.fetch_add(1, Ordering::SeqCst);
                            errors.lock().unwrap().push(error);
                        }
                        sent.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Self {
            stop,
            sent,
            failed,
            errors,
            tasks,
        }
    }

    /// Waits until `more` requests have been sent after this call.
    async fn more(&self, more: usize) -> bool {
        let target = self.sent.load(Ordering::SeqCst) + more;
        eventually(async || self.sent.load(Ordering::SeqCst) >= target).await
    }

    /// Stops the load; the failed requests, with what went wrong.
    async fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            timeout(STEP, task).await.unwrap().unwrap();
        }
        let errors = self.errors.lock().unwrap().clone();
        (
            self.sent.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            errors,
        )
    }
}

async fn admin_get(sidecar: &Sidecar, path: &str) -> String {
    let response = get(format!("http://{}{path}", sidecar.bound.admin.unwrap())).await;
    assert_eq!(response.status(), StatusCode::OK);
    text(response).await
}

/// The endpoints that `/config` says `route` uses now.
async fn endpoints_in_use(sidecar: &Sidecar, route: &str) -> String {
    let config = admin_get(sidecar, "/config").await;
    let prefix = format!("# \"{route}\" = ");
    config
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no endpoints of {route} in /config:\n{config}"))
        .to_owned()
}

/// Addresses as `/config` lists them: in order.
fn list(addrs: &[SocketAddr]) -> String {
    let mut addrs = addrs.to_vec();
    addrs.sort();
    let quoted: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// A counter's value in the Prometheus text, 0 when absent.
fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

async fn start(text: &str) -> Sidecar {
    let config = Config::parse(text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
    Sidecar::start(&config, Some(recorder())).await.unwrap()
}

fn hits(pod: &(SocketAddr, Arc<AtomicUsize>)) -> usize {
    pod.1.load(Ordering::SeqCst)
}

#[tokio::test]
async fn traffic_follows_dns_records_and_a_failed_lookup_keeps_the_old_set() {
    let pods = pods(3).await;
    let port = pods[0].0.port();
    let ip = |i: usize| match pods[i].0.ip() {
        std::net::IpAddr::V4(ip) => ip,
        other => panic!("{other}"),
    };
    let dns = Dns::start(Answer::Records(vec![ip(0)], 0)).await;
    let sidecar = start(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[discovery]
resolver = "{}"
dns_refresh = "50ms"

[[outbound]]
name = "dns-orders"
listen = "127.0.0.1:0"
endpoints = ["dns:orders.shop.test:{port}"]
"#,
        dns.addr
    ))
    .await;
    let load = Load::start(outbound_addr(&sidecar));

    // The first lookup finds pod 0, and traffic flows to it.
    assert!(
        eventually(async || hits(&pods[0]) >= 20).await,
        "pod 0 got no traffic"
    );
    assert_eq!(
        endpoints_in_use(&sidecar, "dns-orders").await,
        list(&[pods[0].0])
    );

    // The records change to pods 1 and 2: traffic moves there, pod 0 gets none.
    dns.set(Answer::Records(vec![ip(1), ip(2)], 0));
    let moved = list(&[pods[1].0, pods[2].0]);
    assert!(
        eventually(async || endpoints_in_use(&sidecar, "dns-orders").await == moved).await,
        "the endpoints did not move: {}",
        endpoints_in_use(&sidecar, "dns-orders").await
    );
    // Requests already sent to pod 0 finish there; after them it gets nothing.
    assert!(load.more(50).await);
    let pod0 = hits(&pods[0]);
    let (pod1, pod2) = (hits(&pods[1]), hits(&pods[2]));
    assert!(load.more(200).await);
    assert_eq!(
        hits(&pods[0]),
        pod0,
        "a removed endpoint still gets traffic"
    );
    assert!(
        hits(&pods[1]) > pod1 && hits(&pods[2]) > pod2,
        "both new endpoints get traffic"
    );

    // Lookups fail: the set found before stays, and traffic keeps flowing to it.
    let failed_before = dns.failed.load(Ordering::SeqCst);
    dns.set(Answer::Fail);
    assert!(
        eventually(async || dns.failed.load(Ordering::SeqCst) >= failed_before + 3).await,
        "the name was not looked up again"
    );
    assert!(load.more(100).await);
    assert_eq!(endpoints_in_use(&sidecar, "dns-orders").await, moved);
    let breakers = admin_get(&sidecar, "/breakers").await;
    assert_eq!(breakers.matches("\"route\": \"dns-orders\"").count(), 2);
    for pod in &pods[1..] {
        assert!(breakers.contains(&format!("\"endpoint\": \"{}\"", pod.0)));
    }
    assert!(!breakers.contains(&format!("\"endpoint\": \"{}\"", pods[0].0)));

    let metrics = admin_get(&sidecar, "/metrics").await;
    assert!(
        counter(&metrics, "sidecar_dns_failures_total{route=\"dns-orders\"}") >= 1,
        "{metrics}"
    );
    assert_eq!(
        counter(
            &metrics,
            "sidecar_endpoint_changes_total{route=\"dns-orders\",change=\"added\"}"
        ),
        3
    );
    assert_eq!(
        counter(
            &metrics,
            "sidecar_endpoint_changes_total{route=\"dns-orders\",change=\"removed\"}"
        ),
        1
    );

    // The records come back: the set follows them again.
    dns.set(Answer::Records(vec![ip(0), ip(2)], 0));
    let back = list(&[pods[0].0, pods[2].0]);
    assert!(eventually(async || endpoints_in_use(&sidecar, "dns-orders").await == back).await);
    assert!(load.more(100).await);

    let (sent, failed, errors) = load.finish().await;
    println!("{sent} requests, {failed} failed");
    assert_eq!(failed, 0, "failed requests: {errors:?}");
    sidecar.stop().await;
}

#[tokio::test]
async fn a_name_is_looked_up_again_when_its_ttl_runs_out() {
    let pods = pods(2).await;
    let port = pods[0].0.port();
    let dns = Dns::start(Answer::Records(vec![Ipv4Addr::LOCALHOST], 1)).await;
    // The refresh interval is an hour: only the 1 s TTL brings the next lookup.
    let sidecar = start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[discovery]\nresolver = \"{}\"\ndns_refresh = \"1h\"\n[[outbound]]\nname = \"dns-ttl\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"dns:ttl.shop.test:{port}\"]\n",
        dns.addr
    ))
    .await;
    assert!(
        eventually(async || endpoints_in_use(&sidecar, "dns-ttl").await == list(&[pods[0].0]))
            .await
    );
    let answered = dns.answered.load(Ordering::SeqCst);
    dns.set(Answer::Records(vec![Ipv4Addr::new(127, 0, 0, 2)], 1));
    assert!(
        eventually(async || endpoints_in_use(&sidecar, "dns-ttl").await == list(&[pods[1].0]))
            .await,
        "the name was not looked up again after its TTL"
    );
    assert!(dns.answered.load(Ordering::SeqCst) > answered);
    sidecar.stop().await;
}

/// Replaces a file whole, as a scheduler should: write beside it, then rename over it.
fn replace(path: &Path, text: &str) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "sidecar-lite-discovery-{test}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn a_file_of_endpoints_adds_and_removes_endpoints_under_load_with_no_failed_request() {
    let mut pods = Vec::new();
    for _ in 0..3 {
        pods.push(status_app(200).await);
    }
    let addrs: Vec<SocketAddr> = pods.iter().map(|p| p.0).collect();
    let dir = TempDir::new("file");
    let file = dir.0.join("endpoints.txt");
    replace(&file, &format!("# pods of orders\n{}\n\n", addrs[0]));
    let sidecar = start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[discovery]\nfile_poll = \"20ms\"\n[[outbound]]\nname = \"file-orders\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"file:{}\"]\n",
        file.display()
    ))
    .await;
    // The file is read before the route serves: no wait for a first poll.
    assert_eq!(
        endpoints_in_use(&sidecar, "file-orders").await,
        list(&addrs[..1])
    );
    let load = Load::start(outbound_addr(&sidecar));
    assert!(load.more(50).await);

    // Each step: the file changes, the set follows, and traffic reaches only that set.
    let steps: [&[usize]; 4] = [&[0, 1, 2], &[1, 2], &[2], &[0, 1]];
    for (n, step) in steps.iter().enumerate() {
        let set: Vec<SocketAddr> = step.iter().map(|&i| addrs[i]).collect();
        // Lines one time, JSON the next: both formats are read.
        let text = if n % 2 == 0 {
            set.iter().map(|a| format!("{a}\n")).collect()
        } else {
            format!("{{\"endpoints\": {}}}", list(&set))
        };
        replace(&file, &text);
        assert!(
            eventually(async || endpoints_in_use(&sidecar, "file-orders").await == list(&set))
                .await,
            "step {n}: the set did not become {set:?}"
        );
        assert!(load.more(50).await);
        let before: Vec<usize> = pods.iter().map(|p| p.1.load(Ordering::SeqCst)).collect();
        assert!(load.more(200).await);
        for (i, pod) in pods.iter().enumerate() {
            let got = pod.1.load(Ordering::SeqCst) - before[i];
            if step.contains(&i) {
                assert!(got > 0, "step {n}: endpoint {i} got no traffic");
            } else {
                assert_eq!(got, 0, "step {n}: removed endpoint {i} got traffic");
            }
        }
        let breakers = admin_get(&sidecar, "/breakers").await;
        assert_eq!(
            breakers.matches("\"route\": \"file-orders\"").count(),
            set.len(),
            "{breakers}"
        );
    }

    // A broken file keeps the last good set.
    replace(&file, "not an address\n");
    let metrics_failures = async || {
        counter(
            &admin_get(&sidecar, "/metrics").await,
            "sidecar_endpoint_file_failures_total{route=\"file-orders\"}",
        )
    };
    assert!(eventually(async || metrics_failures().await >= 1).await);
    assert_eq!(
        endpoints_in_use(&sidecar, "file-orders").await,
        list(&addrs[..2])
    );
    assert!(load.more(100).await);

    let (sent, failed, errors) = load.finish().await;
    println!("{sent} requests, {failed} failed");
    assert_eq!(failed, 0, "failed requests: {errors:?}");
    sidecar.stop().await;
}

#[tokio::test]
async fn discovery_stops_when_the_route_is_reloaded_away() {
    let (pod, _) = status_app(200).await;
    let dns = Dns::start(Answer::Records(vec![Ipv4Addr::LOCALHOST], 0)).await;
    let text = |endpoints: String| {
        Config::parse(&format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[discovery]\nresolver = \"{}\"\ndns_refresh = \"20ms\"\n[[outbound]]\nname = \"dns-reload\"\nlisten = \"127.0.0.1:0\"\nendpoints = [{endpoints}]\n",
            dns.addr
        ))
        .unwrap()
    };
    let mut sidecar = Sidecar::start(
        &text(format!("\"dns:reload.shop.test:{}\"", pod.port())),
        Some(recorder()),
    )
    .await
    .unwrap();
    assert!(eventually(async || dns.answered.load(Ordering::SeqCst) >= 3).await);
    assert_eq!(endpoints_in_use(&sidecar, "dns-reload").await, list(&[pod]));

    // The route now lists its endpoint: the old stack, and its lookups, are gone.
    sidecar.reload(&text(format!("\"{pod}\""))).await.unwrap();
    // Give a task that would still run the time for several lookups (20 ms apart), in
    // bounded steps, then check that no query came.
    let settle = dns.answered.load(Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let after = dns.answered.load(Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        dns.answered.load(Ordering::SeqCst),
        after,
        "lookups went on after the route was replaced ({settle} before the reload)"
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn a_reload_while_lookups_fail_keeps_the_last_good_set() {
    let (pod, hits) = status_app(200).await;
    let dns = Dns::start(Answer::Records(vec![Ipv4Addr::LOCALHOST], 0)).await;
    let config = |attempts: u32| {
        Config::parse(&format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[discovery]\nresolver = \"{}\"\ndns_refresh = \"20ms\"\n[[outbound]]\nname = \"dns-down\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"dns:down.shop.test:{}\"]\ntimeout = \"2s\"\nretry = {{ attempts = {attempts} }}\n",
            dns.addr,
            pod.port()
        ))
        .unwrap()
    };
    let mut sidecar = Sidecar::start(&config(3), Some(recorder())).await.unwrap();
    assert!(
        eventually(async || endpoints_in_use(&sidecar, "dns-down").await == list(&[pod])).await
    );

    // DNS goes down, then the route is rebuilt by a reload: it starts with the set found
    // before, and serves at once.
    dns.set(Answer::Fail);
    let failed = dns.failed.load(Ordering::SeqCst);
    assert!(eventually(async || dns.failed.load(Ordering::SeqCst) > failed).await);
    sidecar.reload(&config(2)).await.unwrap();
    assert_eq!(endpoints_in_use(&sidecar, "dns-down").await, list(&[pod]));
    let load = Load::start(outbound_addr(&sidecar));
    assert!(load.more(50).await);
    let (_, failed, errors) = load.finish().await;
    assert_eq!(failed, 0, "failed requests: {errors:?}");
    assert!(hits.load(Ordering::SeqCst) >= 50);
    sidecar.stop().await;
}

/// A name that has never resolved: once discovery has looked, requests get 503
/// `no-endpoints` at once instead of waiting for the balancer until their timeout.
#[tokio::test]
async fn a_name_that_never_resolved_answers_503_at_once() {
    let dns = Dns::start(Answer::Fail).await;
    let sidecar = start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[discovery]\nresolver = \"{}\"\ndns_refresh = \"50ms\"\n\
         [[outbound]]\nname = \"nowhere\"\nlisten = \"127.0.0.1:0\"\n\
         endpoints = [\"dns:nowhere.shop.test:80\"]\ntimeout = \"60s\"\n",
        dns.addr
    ))
    .await;
    let addr = outbound_addr(&sidecar);
    // Each try gives up after a second, well inside the route's 60 s timeout: once discovery
    // has looked, the answer comes at once.
    let refused_at_once = async || {
        let req = Request::builder()
            .uri(format!("http://{addr}/"))
            .body(full(""))
            .unwrap();
        match timeout(Duration::from_secs(1), http1().request(req)).await {
            Ok(Ok(response)) => {
                response.status() == StatusCode::SERVICE_UNAVAILABLE
                    && response.headers()["x-sidecar-error"] == "no-endpoints"
            }
            _ => false,
        }
    };
    assert!(eventually(refused_at_once).await);
    assert!(dns.failed.load(Ordering::SeqCst) >= 1);
    sidecar.stop().await;
}

/// A request that came before the first lookup waits for an endpoint; when that lookup finds
/// none, it gets 503 `no-endpoints` then, not at the route's timeout.
#[tokio::test]
async fn a_request_waiting_for_the_first_lookup_gets_503_when_it_finds_nothing() {
    let dns = Dns::start(Answer::NoSuchName).await;
    dns.hold();
    let sidecar = start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[discovery]\nresolver = \"{}\"\n\
         [[outbound]]\nname = \"later\"\nlisten = \"127.0.0.1:0\"\n\
         endpoints = [\"dns:later.shop.test:80\"]\ntimeout = \"60s\"\n\
         max_concurrent_requests = 1\n",
        dns.addr
    ))
    .await;
    let addr = outbound_addr(&sidecar);
    let send = move || {
        let req = Request::builder()
            .uri(format!("http://{addr}/"))
            .body(full(""))
            .unwrap();
        http1().request(req)
    };
    let waiting = tokio::spawn(send());
    let connected = async || {
        let status = admin_get(&sidecar, "/status.json").await;
        status.contains("\"connections_open\":1")
    };
    assert!(eventually(connected).await);
    // The route takes one request at a time: once another is shed, the first one is in,
    // waiting for an endpoint while the lookup is held.
    let shed = async || match timeout(Duration::from_secs(1), send()).await {
        Ok(Ok(response)) => response.headers()["x-sidecar-error"] == "overloaded",
        _ => false,
    };
    assert!(eventually(shed).await, "the first request is in");
    assert!(!waiting.is_finished());

    dns.release();
    let response = timeout(STEP, waiting)
        .await
        .expect("answered when the lookup found nothing, not at the route's timeout")
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["x-sidecar-error"], "no-endpoints");
    sidecar.stop().await;
}

/// A name that is gone (NXDOMAIN, lookup after lookup, as for a Service scaled to zero): its
/// endpoints are dropped and requests get 503 `no-endpoints`, while a SERVFAIL keeps them.
#[tokio::test]
async fn a_name_that_no_longer_exists_loses_its_endpoints() {
    let (pod, _) = status_app(200).await;
    let dns = Dns::start(Answer::Records(vec![Ipv4Addr::LOCALHOST], 0)).await;
    let sidecar = start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[discovery]\nresolver = \"{}\"\ndns_refresh = \"20ms\"\n\
         [[outbound]]\nname = \"gone\"\nlisten = \"127.0.0.1:0\"\n\
         endpoints = [\"dns:gone.shop.test:{}\"]\n",
        dns.addr,
        pod.port()
    ))
    .await;
    assert!(eventually(async || endpoints_in_use(&sidecar, "gone").await == list(&[pod])).await);

    dns.set(Answer::NoSuchName);
    assert!(eventually(async || endpoints_in_use(&sidecar, "gone").await == list(&[])).await);
    let response = get(format!("http://{}/", outbound_addr(&sidecar))).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["x-sidecar-error"], "no-endpoints");

    // Back, and a resolver failure after that keeps the set.
    dns.set(Answer::Records(vec![Ipv4Addr::LOCALHOST], 0));
    assert!(eventually(async || endpoints_in_use(&sidecar, "gone").await == list(&[pod])).await);
    dns.set(Answer::Fail);
    let failed = dns.failed.load(Ordering::SeqCst);
    // Well past three lookups in a row (a lookup may ask more than once).
    assert!(eventually(async || dns.failed.load(Ordering::SeqCst) >= failed + 20).await);
    assert_eq!(endpoints_in_use(&sidecar, "gone").await, list(&[pod]));
    sidecar.stop().await;
}
