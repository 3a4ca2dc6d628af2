//! Handshakes per second of `resilience-mtls`'s acceptor over loopback: full mutual-TLS 1.3
//! handshakes (a client that never resumes) and resumed ones (a client that keeps its session
//! tickets). Each iteration is one TCP connection, the handshake, and one byte from the server
//! after it has verified the client, so the figure covers the server's whole work. Client and
//! server run in one process on one runtime, so the figure is a ratio to compare, not a
//! capacity.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use resilience_mtls::{Credentials, MtlsAcceptor, MtlsConnector, dev_ca::DevCa};
use std::hint::black_box;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    runtime::Runtime,
};

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn credentials(ca: &DevCa, path: &str) -> Credentials {
    let cert = ca.workload(path).expect("a workload certificate");
    Credentials::new(cert.material(ca.trust_pem()).expect("valid material"))
}

/// One connection: connect, handshake, read the server's byte.
async fn handshake(connector: &MtlsConnector, addr: std::net::SocketAddr) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let mut tls = connector
        .handshake("localhost".try_into().expect("a name"), tcp)
        .await
        .expect("handshake");
    let mut byte = [0u8; 1];
    tls.read_exact(&mut byte).await.expect("the server's byte");
    black_box(byte);
}

fn handshakes(c: &mut Criterion) {
    let rt = runtime();
    let ca = DevCa::new("example.org").expect("a dev CA");
    let server = credentials(&ca, "ns/bench/sa/server");
    let client = credentials(&ca, "ns/bench/sa/client");
    let expected = server.identity();

    let addr = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = MtlsAcceptor::new(&server);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut stream) = acceptor.accept(tcp).await {
                        let _ = stream.write_all(b"!").await;
                        let _ = stream.shutdown().await;
                    }
                });
            }
        });
        addr
    });

    let mut group = c.benchmark_group("mtls_handshake");
    group.throughput(Throughput::Elements(1));

    let full = MtlsConnector::builder(&client, expected.clone())
        .resumption(false)
        .build();
    group.bench_function("full", |b| {
        b.to_async(&rt).iter(|| handshake(&full, addr));
    });

    let resumed = MtlsConnector::new(&client, expected);
    rt.block_on(handshake(&resumed, addr)); // the first, full handshake stores a ticket
    group.bench_function("resumed", |b| {
        b.to_async(&rt).iter(|| handshake(&resumed, addr));
    });
    group.finish();
}

criterion_group!(benches, handshakes);
criterion_main!(benches);
