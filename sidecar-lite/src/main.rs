//! The `sidecar-lite` command line: `run`, `check` and `certs`.

use clap::{Parser, Subcommand, ValueEnum};
use sidecar_lite::{Config, Sidecar};
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

/// jemalloc, for the binary only (feature `jemalloc`, on by default): see the feature's note in
/// Cargo.toml for what it saves.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Validate a config, print it with every default filled in, and explain each outbound
    /// route's policy: the worst-case load on its upstream, the worst-case latency of one
    /// request, the fastest its breakers can trip, and warnings for settings that contradict
    /// each other. Exit 1 naming the line and field of each error.
    Check {
        /// The config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Treat warnings as errors: exit 1 when there is any.
        #[arg(long)]
        strict: bool,
        /// `text`: the effective config, then the explanation as comments; `json`: the
        /// explanation alone, for machines.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
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

/// How `check` prints its explanation.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            config: path,
            strict,
            format,
        } => check(&path, strict, format),
        Command::Run { config: path } => {
            let config = match Config::load(&path) {
                Ok(config) => config,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::FAILURE;
                }
            };
            match Sidecar::run_process(config, path.clone()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("{}: {error}", path.display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Certs {
            out,
            trust_domain,
            workloads,
        } => match resilience_mtls::dev_ca::write_workloads(&out, &trust_domain, &workloads) {
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

fn check(path: &Path, strict: bool, format: Format) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    // Read again for the lines of the warnings: `load` has just read it whole.
    let text = std::fs::read_to_string(path).unwrap_or_default();
    match format {
        Format::Text => {
            print!("{}", config.to_toml());
            println!("\n# What this config does, route by route:");
            for line in config.explain(&text).lines() {
                println!("# {line}");
            }
        }
        Format::Json => println!("{}", config.explain_json(&text)),
    }
    let warnings = config.warnings(&text);
    for warning in &warnings {
        eprintln!("{}: warning: {warning}", path.display());
    }
    if strict && !warnings.is_empty() {
        eprintln!(
            "{}: {} warning(s), and --strict makes them errors",
            path.display(),
            warnings.len()
        );
        return ExitCode::FAILURE;
    }
    eprintln!("{}: ok", path.display());
    ExitCode::SUCCESS
}
