//! Library or sidecar: one HTTP/1.1 round trip over loopback (a `GET`, the whole answer read)
//! to the same upstream app, in one run, as:
//!
//! - `direct`: the client calls the app;
//! - `library/mtls`: the client calls through `sidecar_lite::outbound` in process (the
//!   route of the `example-library-mode` crate), over mTLS to the peer's inbound sidecar-lite
//!   process, which calls the app;
//! - `sidecar/mtls`: the client calls its outbound sidecar-lite process in plain HTTP, which
//!   speaks mTLS to the peer's inbound sidecar-lite process, which calls the app;
//! - `library/plaintext` and `sidecar/plaintext`: the same two paths without mTLS, to the peer's
//!   inbound sidecar-lite with `mtls = "disabled"` and `allow_anonymous = true`.
//!
//! The peer's side is the same in the `library` and `sidecar` modes of each kind, so their
//! difference is exactly the outbound sidecar's hop. The
//! sidecars are real processes from `target/release/sidecar-lite`, one worker thread each,
//! stopped by their PID; build the binary first with `cargo build --release -p sidecar-lite`.
//! The app is the flaky upstream with no faults, on a runtime of its own in this process.

use benches::process::{SidecarProcess, free_addrs, sidecar_binary};
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use example_flaky_upstream::{Faults, Upstream};
use example_library_mode::{UpstreamClient, route};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use std::{
    hint::black_box,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};
use tokio::runtime::Runtime;

const TRUST_DOMAIN: &str = "example.org";

/// The route used by library mode and the outbound sidecar alike; `{endpoint}` and the
/// identity lines are filled in per mode.
fn route_section(listen: SocketAddr, endpoint: SocketAddr, mtls: bool) -> String {
    let identity = if mtls {
        format!("server_identity = \"spiffe://{TRUST_DOMAIN}/ns/bench/sa/app\"\n")
    } else {
        String::new()
    };
    format!(
        "[[outbound]]\nname = \"app\"\nlisten = \"{listen}\"\nendpoints = [\"{endpoint}\"]\n{identity}timeout = \"5s\"\n\n[outbound.retry]\nattempts = 3\nper_try_timeout = \"2s\"\n"
    )
}

fn identity_section(dir: &Path, name: &str) -> String {
    format!(
        "[identity]\ncert = \"{}\"\nkey = \"{}\"\ntrust = \"{}\"\n",
        dir.join(format!("{name}.pem")).display(),
        dir.join(format!("{name}-key.pem")).display(),
        dir.join("ca.pem").display()
    )
}

fn head(admin: SocketAddr) -> String {
    format!(
        "[admin]\nlisten = \"{admin}\"\n\n[runtime]\nworker_threads = 1\n\n[log]\nfilter = \"error\"\n\n"
    )
}

/// The peer's inbound sidecar in front of `app`: strict mTLS allowing `client`, or plaintext
/// admitting anonymous callers.
fn inbound(binary: &Path, dir: &Path, app: SocketAddr, mtls: bool) -> (SidecarProcess, SocketAddr) {
    let [listen, admin] = free_addrs(2)[..] else {
        unreachable!()
    };
    let (identity, security) = if mtls {
        (
            identity_section(dir, "app"),
            format!("mtls = \"strict\"\nallow = [\"spiffe://{TRUST_DOMAIN}/ns/bench/sa/client\"]"),
        )
    } else {
        (
            String::new(),
            "mtls = \"disabled\"\nallow_anonymous = true".to_owned(),
        )
    };
    let config = format!(
        "{}{identity}\n[inbound]\nlisten = \"{listen}\"\napp = \"{app}\"\n{security}\n",
        head(admin),
    );
    let name = if mtls {
        "inbound-mtls"
    } else {
        "inbound-plain"
    };
    (
        SidecarProcess::start(binary, dir, name, &config, admin),
        listen,
    )
}

/// The client's outbound sidecar with one route to `endpoint`.
fn outbound(
    binary: &Path,
    dir: &Path,
    endpoint: SocketAddr,
    mtls: bool,
) -> (SidecarProcess, SocketAddr) {
    let [listen, admin] = free_addrs(2)[..] else {
        unreachable!()
    };
    let identity = if mtls {
        identity_section(dir, "client")
    } else {
        String::new()
    };
    let config = format!(
        "{}{identity}\n{}",
        head(admin),
        route_section(listen, endpoint, mtls)
    );
    let name = if mtls {
        "outbound-mtls"
    } else {
        "outbound-plain"
    };
    (
        SidecarProcess::start(binary, dir, name, &config, admin),
        listen,
    )
}

/// Library mode: the route's stack in process, built as `example-library-mode` builds it.
fn library(dir: &Path, endpoint: SocketAddr, mtls: bool) -> UpstreamClient {
    let identity = if mtls {
        identity_section(dir, "client")
    } else {
        String::new()
    };
    let text = format!(
        "{identity}\n{}",
        route_section(SocketAddr::from(([127, 0, 0, 1], 0)), endpoint, mtls)
    );
    let (config, route) = route(&text, "app").expect("the library route parses");
    UpstreamClient::new(&config, &route).expect("the library stack")
}

fn get(addr: SocketAddr) -> Request<Empty<Bytes>> {
    Request::get(format!("http://{addr}/"))
        .header("host", "app")
        .body(Empty::new())
        .expect("a request")
}

/// Temporary certificates for `app` and `client`, removed on drop.
struct CertDir(PathBuf);

impl Drop for CertDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn modes(c: &mut Criterion) {
    let binary = match sidecar_binary() {
        Ok(binary) => binary,
        Err(message) => panic!("{message}"),
    };
    let dir = CertDir(std::env::temp_dir().join(format!("bench-modes-{}", std::process::id())));
    resilience_mtls::dev_ca::write_workloads(
        &dir.0,
        TRUST_DOMAIN,
        &["ns/bench/sa/app".into(), "ns/bench/sa/client".into()],
    )
    .expect("certificates");

    // The app, on a runtime of its own (one worker), as a separate service would be.
    let app_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("the app's runtime");
    let app = app_rt
        .block_on(Upstream::start(Faults::default()))
        .expect("the app");

    let (_inbound_mtls, inbound_mtls) = inbound(&binary, &dir.0, app.addr(), true);
    let (_inbound_plain, inbound_plain) = inbound(&binary, &dir.0, app.addr(), false);
    let (_outbound_mtls, outbound_mtls) = outbound(&binary, &dir.0, inbound_mtls, true);
    let (_outbound_plain, outbound_plain) = outbound(&binary, &dir.0, inbound_plain, false);

    // The client side: one thread, as a caller's request handler would run.
    let rt: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the client's runtime");
    let (library_mtls, library_plain) = rt.block_on(async {
        (
            library(&dir.0, inbound_mtls, true),
            library(&dir.0, inbound_plain, false),
        )
    });
    let http: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();

    let mut group = c.benchmark_group("modes");
    let plain_targets = [
        ("direct", app.addr()),
        ("sidecar/plaintext", outbound_plain),
        ("sidecar/mtls", outbound_mtls),
    ];
    for (name, addr) in plain_targets {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let response = http.request(get(addr)).await.expect(name);
                assert!(
                    response.status().is_success(),
                    "{name}: {}",
                    response.status()
                );
                black_box(response.into_body().collect().await.expect(name).to_bytes())
            })
        });
    }
    for (name, client) in [
        ("library/plaintext", &library_plain),
        ("library/mtls", &library_mtls),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let response = client.get("/").await.expect(name);
                assert!(
                    response.status().is_success(),
                    "{name}: {}",
                    response.status()
                );
                black_box(response.into_body().collect().await.expect(name).to_bytes())
            })
        });
    }
    group.finish();
    // Dropping the processes stops them, each by its PID.
}

fn config() -> Criterion {
    // Short runs: the machine is small and shared; the figures are ratios within one run.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = modes
}
criterion_main!(benches);
