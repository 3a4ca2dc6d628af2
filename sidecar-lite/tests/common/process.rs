//! The sidecar-lite binary as a child process: started from config text, signalled by PID,
//! read through its admin `/metrics`, killed if a test fails before it stops.

use super::{STEP, eventually, full, http1, text};
use http::{Request, StatusCode};
use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Mutex, PoisonError},
    time::Duration,
};
use tokio::time::timeout;

/// A free port on 127.0.0.1 (bound, then released for the child to bind). Taken below the
/// kernel's ephemeral range, where this process's own outgoing connections get their local
/// ports (one of them taking a port after its release would fail the child's start), and never
/// one this process was given before (a child told to listen twice on one port fails too).
pub fn free_addr() -> SocketAddr {
    const LOWEST: u16 = 10_000;
    static LAST: Mutex<Option<u16>> = Mutex::new(None);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|&low| low > LOWEST + 1_000)
        .unwrap_or(32_768);
    let span = ephemeral_low - LOWEST;
    let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
    // Each test process starts at its own place in the span.
    let mut port = last.unwrap_or(LOWEST + (std::process::id() % u32::from(span)) as u16);
    for _ in 0..span {
        port = if port + 1 >= ephemeral_low {
            LOWEST
        } else {
            port + 1
        };
        if let Ok(addr) =
            std::net::TcpListener::bind(("127.0.0.1", port)).and_then(|l| l.local_addr())
        {
            *last = Some(port);
            return addr;
        }
    }
    panic!("no free port on 127.0.0.1 between {LOWEST} and {ephemeral_low}");
}

/// A running `sidecar-lite run --config FILE`.
pub struct SidecarProcess {
    child: Child,
    pub admin: SocketAddr,
    pub config: PathBuf,
    dir: PathBuf,
    head: String,
}

impl SidecarProcess {
    /// Writes `[admin]` (a free port), `[log]` and `body` to a config file, starts the binary
    /// on it and waits (bounded) until `/ready` answers 200.
    pub async fn start(name: &str, body: &str) -> Self {
        Self::start_with(name, body, "", &[]).await
    }

    /// [`start`](Self::start), with more `[admin]` keys and `env` set for the process.
    pub async fn start_with(
        name: &str,
        body: &str,
        admin_keys: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let admin = free_addr();
        let dir = std::env::temp_dir().join(format!(
            "sidecar-lite-{name}-{}-{}",
            std::process::id(),
            admin.port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("sidecar.toml");
        let head = format!("[admin]\nlisten = \"{admin}\"\n{admin_keys}[log]\nfilter = \"warn\"\n");
        std::fs::write(&config, format!("{head}{body}")).unwrap();
        // Its log, for a start that fails: what it said is the first thing to read.
        let log = dir.join("stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_sidecar-lite"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("a log file for the child"))
            .spawn()
            .expect("the sidecar-lite binary starts");
        let mut process = Self {
            child,
            admin,
            config,
            dir,
            head,
        };
        if !eventually(async || process.get("/ready").await.0 == StatusCode::OK).await {
            let exited = process.child.try_wait().ok().flatten();
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            panic!(
                "{name} did not become ready within {STEP:?} ({}); its config:\n{}\nits log:\n{said}",
                exited.map_or("still running".to_owned(), |status| format!(
                    "exited: {status}"
                )),
                std::fs::read_to_string(&process.config).unwrap_or_default(),
            );
        }
        process
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Replaces the config file's body (the admin section stays).
    pub fn write_config(&self, body: &str) {
        // Write then rename, so the watcher never reads half a file.
        let staged = self.dir.join("sidecar.toml.new");
        std::fs::write(&staged, format!("{}{body}", self.head)).unwrap();
        std::fs::rename(&staged, &self.config).unwrap();
    }

    /// Sends `signal` (`HUP`, `TERM`...) to this process only, by PID.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{signal} {}", self.pid());
    }

    /// A GET on the admin listener: status and body (status 0 when it did not answer).
    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let req = Request::builder()
            .uri(format!("http://{}{path}", self.admin))
            .body(full(""))
            .unwrap();
        match timeout(Duration::from_secs(2), http1().request(req)).await {
            Ok(Ok(response)) => (response.status(), text(response).await),
            _ => (StatusCode::from_u16(599).unwrap(), String::new()),
        }
    }

    /// The value of the sample whose name and labels are exactly `series` on `/metrics`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await;
        body.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
    }

    /// Waits (bounded by [`STEP`]) for the process to exit.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let exited = async || matches!(self.child.try_wait(), Ok(Some(_)));
        assert!(
            eventually(exited).await,
            "the process exits within {STEP:?}"
        );
        self.child.wait().unwrap()
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
