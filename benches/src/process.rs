//! `sidecar-lite` as a real process, for the benchmarks that compare it with library mode:
//! find the built binary, start it on a config, wait until it is ready, and stop it by its PID.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// The release `sidecar-lite` binary of this workspace: `target/release/sidecar-lite` (or under
/// `CARGO_TARGET_DIR`). Benchmarks run from the bench profile, whose output is the same
/// `release` directory; build the binary first with `cargo build --release -p sidecar-lite`.
pub fn sidecar_binary() -> Result<PathBuf, String> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let binary = target.join("release").join("sidecar-lite");
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "{} not found: build it first with `cargo build --release -p sidecar-lite` \
             (the modes benchmark starts it as a real process)",
            binary.display()
        ))
    }
}

/// `n` free loopback addresses, found by binding port 0 and letting go; the process that
/// binds them next is started at once, so the window for a clash is small.
pub fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound address"))
        .collect()
}

/// A `sidecar-lite run` process; stopped (SIGTERM to its PID, then SIGKILL after 5 s) on drop.
#[derive(Debug)]
pub struct SidecarProcess {
    child: Child,
    name: String,
}

impl SidecarProcess {
    /// Writes `config` to `dir/<name>.toml`, starts the binary on it, and waits (up to 10 s)
    /// until its admin server at `admin` says `/ready`.
    pub fn start(binary: &Path, dir: &Path, name: &str, config: &str, admin: SocketAddr) -> Self {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).expect("the sidecar's config file");
        let child = Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut process = Self {
            child,
            name: name.to_owned(),
        };
        process.wait_ready(admin);
        process
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&mut self, admin: SocketAddr) {
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sidecar `{}` exited at start: {status}", self.name);
            }
            if admin_ready(admin) {
                return;
            }
            pause(Duration::from_millis(50));
        }
        panic!("sidecar `{}` was not ready within 10 s", self.name);
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        // Only this process, by its PID.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            pause(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /ready` on the admin server, by hand: whether it answered 200.
fn admin_ready(admin: SocketAddr) -> bool {
    let Ok(mut tcp) = TcpStream::connect_timeout(&admin, Duration::from_millis(200)) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
    if tcp
        .write_all(b"GET /ready HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// Waits between polls of a process that runs on its own; not library code.
#[allow(clippy::disallowed_methods)]
fn pause(duration: Duration) {
    std::thread::sleep(duration);
}
