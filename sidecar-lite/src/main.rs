//! The `sidecar-lite` command line: `run`, `check` and `certs`.

use clap::{Parser, Subcommand};
use metrics_exporter_prometheus::PrometheusBuilder;
use sidecar_lite::{
    config::{Config, LogFormat},
    run::Sidecar,
};
use std::{path::PathBuf, process::ExitCode};

/// A small mTLS sidecar proxy: timeouts, retries, circuit breaking and mutual TLS for the app
/// beside it, from one config file.
///
/// Your app sends plain HTTP to an outbound listener on 127.0.0.1; sidecar-lite retries,
/// times out, breaks circuits and balances over the peers' endpoints, speaking mTLS to their
/// sidecars. Peers reach your app through the inbound listener, which checks their identity.
#[derive(Debug, Parser)]
#[command(name = "sidecar-lite", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve: bind every listener in the config and proxy until SIGTERM or Ctrl-C, then drain.
    Run {
        /// The config file (TOML). See examples/sidecar.toml for every key and its default.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config and print it with every default filled in; exit 1 naming the line and
    /// field of each error.
    Check {
        /// The config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Create a development CA and workload certificates with SPIFFE IDs.
    ///
    /// Writes ca.pem, and <name>.pem with <name>-key.pem for each workload, into --out.
    /// Example: sidecar-lite certs --out certs --workload ns/shop/sa/orders
    Certs {
        /// Where to write the files (created if missing).
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// The SPIFFE trust domain.
        #[arg(long, default_value = "example.org")]
        trust_domain: String,
        /// A workload path such as ns/shop/sa/orders; the file name is its last segment.
        /// Repeat for several workloads.
        #[arg(long = "workload", required = true)]
        workloads: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config: path } => match Config::load(&path) {
            Ok(config) => {
                print!("{}", config.to_toml());
                eprintln!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config: path } => {
            let config = match Config::load(&path) {
                Ok(config) => config,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::FAILURE;
                }
            };
            init_logging(&config);
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            if let Some(threads) = config.runtime.worker_threads {
                runtime.worker_threads(threads);
            }
            let runtime = match runtime.enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("cannot start the runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .and_then(PrometheusBuilder::install_recorder);
            let metrics = match recorder {
                Ok(handle) => Some(handle),
                Err(error) => {
                    tracing::warn!(%error, "metrics are not recorded");
                    None
                }
            };
            runtime.block_on(async {
                match Sidecar::start(&config, metrics).await {
                    Ok(sidecar) => {
                        sidecar.run_until_signal(path.clone()).await;
                        ExitCode::SUCCESS
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot start");
                        eprintln!("{}: {error}", path.display());
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Command::Certs {
            out,
            trust_domain,
            workloads,
        } => match sidecar_lite::certs::write(&out, &trust_domain, &workloads) {
            Ok(written) => {
                for file in written {
                    println!("{}", file.display());
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("certs: {error}");
                ExitCode::FAILURE
            }
        },
    }
}

fn init_logging(config: &Config) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.filter));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
