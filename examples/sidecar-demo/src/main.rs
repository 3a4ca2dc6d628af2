//! The sidecar-mode demo: an app, two `sidecar-lite` processes with mTLS between them, and a
//! request through both.
//!
//! Run it from the workspace root (the README's run command):
//!
//! ```sh
//! cargo build --release -p sidecar-lite -p example-sidecar-demo && target/release/example-sidecar-demo
//! ```
//!
//! It makes a dev CA and two workload certificates (`frontend`, `orders`) in
//! `target/sidecar-demo/`, starts the `orders` app on 127.0.0.1, starts the `orders` sidecar
//! (inbound: mTLS, allows only `frontend`) and the `frontend` sidecar (outbound route to
//! `orders`), sends `GET /orders/42` to the frontend sidecar as a plain-HTTP app would, prints
//! what each hop did, and stops both sidecars with SIGTERM.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use std::{
    convert::Infallible,
    error::Error,
    net::{SocketAddr, TcpListener as StdListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};
use tokio::net::TcpListener;

type BoxError = Box<dyn Error + Send + Sync>;

const TRUST_DOMAIN: &str = "example.org";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let binary = sidecar_binary()?;
    let dir = PathBuf::from("target/sidecar-demo");
    std::fs::create_dir_all(&dir)?;
    resilience_mtls::dev_ca::write_workloads(
        &dir,
        TRUST_DOMAIN,
        &["ns/shop/sa/frontend".into(), "ns/shop/sa/orders".into()],
    )?;
    println!(
        "1. dev CA and certificates for frontend and orders in {}",
        dir.display()
    );

    let app = start_app().await?;
    println!("2. the orders app listens on {app} (plain HTTP, loopback only)");

    let [orders_in, orders_admin, frontend_out, frontend_admin] = free_ports()?;
    let orders_config = write_config(
        &dir,
        "orders",
        &format!(
            "[admin]\nlisten = \"{orders_admin}\"\n\n{}\n[inbound]\nlisten = \"{orders_in}\"\napp = \"{app}\"\nmtls = \"strict\"\nallow = [\"spiffe://{TRUST_DOMAIN}/ns/shop/sa/frontend\"]\ntimeout = \"5s\"\n",
            identity(&dir, "orders")
        ),
    )?;
    let frontend_config = write_config(
        &dir,
        "frontend",
        &format!(
            "[admin]\nlisten = \"{frontend_admin}\"\n\n{}\n[[outbound]]\nname = \"orders\"\nlisten = \"{frontend_out}\"\nendpoints = [\"{orders_in}\"]\nserver_identity = \"spiffe://{TRUST_DOMAIN}/ns/shop/sa/orders\"\ntimeout = \"2s\"\n",
            identity(&dir, "frontend")
        ),
    )?;

    let mut orders = spawn(&binary, &orders_config)?;
    let mut frontend = spawn(&binary, &frontend_config)?;
    let outcome = async {
        wait_ready(orders_admin).await?;
        wait_ready(frontend_admin).await?;
        println!(
            "3. orders sidecar: mTLS inbound on {orders_in} -> app {app} (pid {})",
            pid(&orders)
        );
        println!(
            "4. frontend sidecar: outbound {frontend_out} -> mTLS -> {orders_in} (pid {})",
            pid(&frontend)
        );

        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let request = Request::get(format!("http://{frontend_out}/orders/42"))
            .header("host", "orders.shop")
            .body(Empty::new())?;
        println!("5. app -> GET http://{frontend_out}/orders/42 (plain HTTP to its own sidecar)");
        let response =
            tokio::time::timeout(Duration::from_secs(10), client.request(request)).await??;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        println!("6. response {status}; the orders app saw:");
        for line in String::from_utf8_lossy(&body).lines() {
            println!("     {line}");
        }
        if !status.is_success() {
            return Err(format!("the request failed with {status}").into());
        }
        Ok::<_, BoxError>(())
    }
    .await;

    stop(&mut frontend).await;
    stop(&mut orders).await;
    println!("7. both sidecars stopped with SIGTERM");
    outcome?;
    println!("done: a request crossed two sidecars over mutual TLS, with identities checked");
    Ok(())
}

/// The `sidecar-lite` binary built beside this one.
fn sidecar_binary() -> Result<PathBuf, BoxError> {
    let here = std::env::current_exe()?;
    let binary = here.with_file_name(format!("sidecar-lite{}", std::env::consts::EXE_SUFFIX));
    if binary.exists() {
        Ok(binary)
    } else {
        Err(format!(
            "{} not found: build it first with `cargo build --release -p sidecar-lite -p example-sidecar-demo`",
            binary.display()
        )
        .into())
    }
}

fn identity(dir: &Path, name: &str) -> String {
    let abs = |file: String| std::fs::canonicalize(dir.join(file)).unwrap_or_default();
    format!(
        "[identity]\ncert = \"{}\"\nkey = \"{}\"\ntrust = \"{}\"\n",
        abs(format!("{name}.pem")).display(),
        abs(format!("{name}-key.pem")).display(),
        abs("ca.pem".into()).display()
    )
}

fn write_config(dir: &Path, name: &str, text: &str) -> Result<PathBuf, BoxError> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Four free loopback ports, found by binding and releasing them.
fn free_ports() -> Result<[SocketAddr; 4], BoxError> {
    let listeners = (0..4)
        .map(|_| StdListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(StdListener::local_addr)
        .collect::<Result<_, _>>()?;
    Ok([addrs[0], addrs[1], addrs[2], addrs[3]])
}

/// A sidecar process of the demo, killed if the demo ends before it stops it.
///
/// Spawned with `std::process`, not tokio's: tokio's `process` feature would be unified into
/// the sidecar-lite binary built by the same command, whose runtimes would then reap orphans
/// on every park (about 500 instructions a request, `benches/load/instructions.py`).
struct Sidecar(Child);

impl Sidecar {
    /// Kills the process if it is still running, and reaps it.
    fn kill(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(binary: &Path, config: &Path) -> Result<Sidecar, BoxError> {
    Ok(Sidecar(
        Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?,
    ))
}

fn pid(sidecar: &Sidecar) -> u32 {
    sidecar.0.id()
}

/// Polls the admin `/ready` endpoint, for at most 10 seconds.
async fn wait_ready(admin: SocketAddr) -> Result<(), BoxError> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for _ in 0..100 {
        let request = Request::get(format!("http://{admin}/ready")).body(Empty::new())?;
        if let Ok(response) = client.request(request).await
            && response.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("the sidecar with admin {admin} did not become ready in 10 s").into())
}

/// Asks a sidecar to stop with SIGTERM and waits up to 10 seconds for it (then kills it).
async fn stop(sidecar: &mut Sidecar) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid(sidecar).to_string())
        .status();
    for _ in 0..100 {
        if !matches!(sidecar.0.try_wait(), Ok(None)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sidecar.kill();
}

/// The orders app: says what it received.
async fn start_app() -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let mut seen = format!("{} {}\n", req.method(), req.uri());
                    for name in ["host", "x-forwarded-for", "traceparent"] {
                        if let Some(value) = req.headers().get(name) {
                            seen.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
                        }
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(seen))))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(addr)
}
