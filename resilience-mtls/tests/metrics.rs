//! Metrics: handshakes by side, result and failure reason; the expiry gauge; the warning once
//! less than 20 % of the certificate's lifetime remains. One test: the recorder is global.

mod common;

use common::{HandshakeServer, credentials, spiffe, tcp};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use resilience_mtls::{
    Credentials, Identity, MtlsAcceptor, MtlsConnector, OriginConnector, OriginPaths,
    dev_ca::{DevCa, IssueOptions, write_atomic},
    metrics::{CERT_EXPIRY, CRL_NEXT_UPDATE, HANDSHAKES, ORIGIN_CERT_NOT_AFTER, ORIGIN_RELOADS},
};
use std::{
    cell::RefCell,
    collections::HashMap,
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Totals of what the recorder saw. Its snapshots reset counters and gauges, so they are
/// added up here.
struct Seen {
    snapshotter: Snapshotter,
    counters: RefCell<HashMap<String, u64>>,
    gauges: RefCell<HashMap<String, f64>>,
}

fn key_text(key: &metrics::Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Seen {
    fn refresh(&self) {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let text = key_text(key.key());
            match value {
                DebugValue::Counter(n) => {
                    *self.counters.borrow_mut().entry(text).or_default() += n;
                }
                DebugValue::Gauge(g) if g.into_inner() != 0.0 => {
                    self.gauges.borrow_mut().insert(text, g.into_inner());
                }
                _ => {}
            }
        }
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.refresh();
        let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let text = format!("{name}{{{}}}", labels.join(","));
        self.counters.borrow().get(&text).copied().unwrap_or(0)
    }

    fn gauge(&self, name: &str, identity: &str) -> Option<f64> {
        self.gauge_by(name, "identity", identity)
    }

    fn gauge_by(&self, name: &str, label: &str, value: &str) -> Option<f64> {
        self.refresh();
        self.gauges
            .borrow()
            .get(&format!("{name}{{{label}={value}}}"))
            .copied()
    }
}

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .matches(needle)
            .count()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn handshakes_expiry_and_lifetime_warnings_are_recorded() {
    let recorder = DebuggingRecorder::new();
    let seen = Seen {
        snapshotter: recorder.snapshotter(),
        counters: RefCell::default(),
        gauges: RefCell::default(),
    };
    recorder.install().unwrap();
    let server = |side: &str, result: &str, reason: &str| {
        seen.counter(
            HANDSHAKES,
            &[("side", side), ("result", result), ("reason", reason)],
        )
    };

    let ca = DevCa::new("example.org").unwrap();
    let server_creds = credentials(&ca, "ns/shop/sa/orders");
    let mut srv = HandshakeServer::spawn(MtlsAcceptor::new(&server_creds)).await;
    let name = || "localhost".try_into().unwrap();

    // A full handshake, then a resumed one.
    let client_creds = credentials(&ca, "ns/shop/sa/frontend");
    let good = MtlsConnector::new(&client_creds, spiffe("ns/shop/sa/orders"));
    for _ in 0..2 {
        let mut tls = good.handshake(name(), tcp(srv.addr).await).await.unwrap();
        let mut text = String::new();
        tls.read_to_string(&mut text).await.unwrap();
        srv.next().await.unwrap();
    }
    assert_eq!(server("server", "ok", "full"), 1);
    assert_eq!(server("server", "ok", "resumed"), 1);
    assert_eq!(server("client", "ok", "full"), 1);
    assert_eq!(server("client", "ok", "resumed"), 1);

    // Unknown CA.
    let other = DevCa::new("other.org").unwrap();
    let intruder = Credentials::new(
        other
            .issue(&spiffe("ns/shop/sa/frontend"), &IssueOptions::new())
            .unwrap()
            .material(ca.trust_pem())
            .unwrap(),
    );
    let tls = MtlsConnector::new(&intruder, spiffe("ns/shop/sa/orders"))
        .handshake(name(), tcp(srv.addr).await)
        .await;
    if let Ok(mut tls) = tls {
        let _ = tls.read(&mut [0; 16]).await;
    }
    srv.next().await.unwrap_err();
    assert_eq!(server("server", "error", "unknown-ca"), 1);

    // Identity mismatch, seen by the client.
    MtlsConnector::new(&client_creds, spiffe("ns/shop/sa/payments"))
        .handshake(name(), tcp(srv.addr).await)
        .await
        .unwrap_err();
    srv.next().await.unwrap_err();
    assert_eq!(server("client", "error", "identity-mismatch"), 1);
    assert_eq!(server("server", "error", "peer-rejected"), 1);

    // Plaintext on a strict port.
    let mut plain = tcp(srv.addr).await;
    plain.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    srv.next().await.unwrap_err();
    assert_eq!(server("server", "error", "not-tls"), 1);

    // Requests refused by the authorization layer.
    let deny = resilience_mtls::Authorize::new(
        tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(()))
        }),
        resilience_mtls::AllowList::new(),
    );
    let response = tower::ServiceExt::oneshot(deny, http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::FORBIDDEN);
    assert_eq!(
        seen.counter(resilience_mtls::metrics::DENIED, &[("mode", "enforce")]),
        1
    );

    // The expiry gauge: about a day for a fresh dev certificate.
    let secs = seen
        .gauge(CERT_EXPIRY, "spiffe://example.org/ns/shop/sa/orders")
        .expect("the expiry gauge");
    assert!((23.0 * 3600.0..=24.0 * 3600.0).contains(&secs), "{secs}");

    // Less than 20 % of the lifetime left: one warning, however often expiry is recorded.
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let now = common::now();
    let hour = Duration::from_secs(3600);
    let old = |path: &str| {
        ca.issue(
            &spiffe(path),
            &IssueOptions::new().valid(now - 9 * hour, now + hour),
        )
        .unwrap()
        .material(ca.trust_pem())
        .unwrap()
    };
    let creds = Credentials::new(old("ns/shop/sa/old"));
    creds.record_expiry(common::now());
    creds.record_expiry(common::now());
    assert_eq!(logs.count("close to expiry"), 1);
    assert_eq!(logs.count("WARN"), 1);
    // New material that is also old: warned about once more.
    creds.store(old("ns/shop/sa/old"));
    creds.record_expiry(common::now());
    assert_eq!(logs.count("close to expiry"), 2);
    // Fresh material: no warning.
    creds.store(
        ca.workload("ns/shop/sa/old")
            .unwrap()
            .material(ca.trust_pem())
            .unwrap(),
    );
    creds.record_expiry(common::now());
    assert_eq!(logs.count("close to expiry"), 2);

    // A revocation list past its next update still applies: its gauge goes below zero, and
    // one warning says so, however often expiry is recorded.
    let dir = common::tempdir();
    let files = common::paths(dir.path(), "orders").crl(dir.path().join("crl.pem"));
    ca.workload("ns/shop/sa/orders")
        .unwrap()
        .write(&files, ca.trust_pem())
        .unwrap();
    std::fs::write(&files.crls[0], ca.crl_until(&[], now - hour).unwrap()).unwrap();
    let creds = Credentials::load(&files).unwrap();
    creds.record_expiry(common::now());
    creds.record_expiry(common::now());
    assert_eq!(logs.count("past its next update"), 1);
    let material = creds.current();
    let list = material.revocation_lists().next().unwrap();
    assert!(list.is_stale(common::now()));
    let overdue = seen
        .gauge_by(CRL_NEXT_UPDATE, "issuer", list.issuer())
        .expect("the list's gauge");
    assert!((-3700.0..=-3500.0).contains(&overdue), "{overdue}");
    // The client certificate of an origin: when it expires, by the server's name, set when
    // its files are read; files that do not load count as a failed reload.
    let client = ca
        .issue(
            &Identity::parse("orders.example.org").unwrap(),
            &IssueOptions::new().valid(now - hour, now + 2 * hour),
        )
        .unwrap();
    let paths = OriginPaths::new(&files.trust).client_certificate(
        dir.path().join("client.pem"),
        dir.path().join("client-key.pem"),
    );
    let (cert, key) = paths.client_certificate.clone().unwrap();
    write_atomic(&cert, client.cert_pem.as_bytes()).unwrap();
    write_atomic(&key, client.key_pem.as_bytes()).unwrap();
    let origin = OriginConnector::from_files(paths, "api.example.test".try_into().unwrap())
        .unwrap()
        .wrap(hyper_util::client::legacy::connect::HttpConnector::new());
    let not_after = seen
        .gauge_by(ORIGIN_CERT_NOT_AFTER, "server_name", "api.example.test")
        .expect("the origin's gauge");
    let expected = (now + 2 * hour)
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (not_after - expected).abs() <= 1.0,
        "{not_after} {expected}"
    );
    let labels = [("server_name", "api.example.test"), ("result", "error")];
    assert_eq!(seen.counter(ORIGIN_RELOADS, &labels), 0);
    write_atomic(
        &key,
        ca.workload("ns/shop/sa/other").unwrap().key_pem.as_bytes(),
    )
    .unwrap();
    let refused = tcp_refused().await;
    let dialled = tower::ServiceExt::oneshot(origin, refused).await;
    assert!(dialled.is_err());
    assert_eq!(seen.counter(ORIGIN_RELOADS, &labels), 1);
}

/// An address on 127.0.0.1 that refuses connections: bound, never listening.
async fn tcp_refused() -> http::Uri {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    // Leaked for the test's life, so that nothing else takes the port.
    std::mem::forget(socket);
    format!("http://{addr}").parse().unwrap()
}
