//! Library mode as a program: an HTTP service that calls its upstream through
//! `sidecar_lite::outbound`, built from a sidecar-lite config file's `[[outbound]]`
//! section.
//!
//! Run it from the workspace root, beside the flaky upstream:
//!
//! ```sh
//! cargo run --release -p example-flaky-upstream -- --listen 127.0.0.1:8080 --error-rate 0.3 &
//! cargo run --release -p example-library-mode -- --config examples/library-mode/library.toml \
//!     --route upstream --listen 127.0.0.1:8081
//! curl -i http://127.0.0.1:8081/hello        # 200 every time: the route retries the 503s
//! ```

use clap::Parser;
use example_library_mode::{UpstreamClient, route, serve};
use std::{net::SocketAddr, path::PathBuf, process::ExitCode};
use tokio::net::TcpListener;

/// An HTTP service that calls its upstream through the resilience stack, in process.
#[derive(Debug, Parser)]
#[command(name = "library-mode")]
struct Cli {
    /// A sidecar-lite config file; only the route named by --route (and `[identity]`) is used.
    #[arg(long, default_value = "examples/library-mode/library.toml")]
    config: PathBuf,
    /// The `[[outbound]]` route to call the upstream through.
    #[arg(long, default_value = "upstream")]
    route: String,
    /// Where this service listens.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let text = match std::fs::read_to_string(&cli.config) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("cannot read {}: {error}", cli.config.display());
            return ExitCode::FAILURE;
        }
    };
    let client = match route(&text, &cli.route)
        .and_then(|(config, route)| UpstreamClient::new(&config, &route))
    {
        Ok(client) => client,
        Err(error) => {
            eprintln!("{}: {error}", cli.config.display());
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(cli.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot listen on {}: {error}", cli.listen);
            return ExitCode::FAILURE;
        }
    };
    println!(
        "listening on http://{}; calling route \"{}\" in process",
        cli.listen, cli.route
    );
    tokio::select! {
        () = serve(listener, client) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    ExitCode::SUCCESS
}
