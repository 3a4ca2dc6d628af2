//! [`Rotation`]: re-reads the certificate, key and trust bundle when their files change, checks
//! them, and swaps them into [`Credentials`].

use crate::{
    Credentials, Material, MaterialError, MaterialPaths, clock::wall_clock,
    material::MaterialFiles, metrics,
};
use notify::{EventKind, RecursiveMode, Watcher};
use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, SystemTime},
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

/// Watches the files of [`MaterialPaths`] and keeps [`Credentials`] up to date.
///
/// Changes are seen through a file watch (inotify and friends, on the files' directories, so
/// that replacing a file by rename, as Kubernetes does for mounted secrets, is seen too) and,
/// as a fallback for file systems without events, by re-reading the files every
/// [`poll_interval`](Self::poll_interval). New contents are checked as [`Material::load`]
/// checks them before they are swapped in; invalid contents (a key that does not match the
/// certificate because only one of them has been written yet, an expired certificate, a
/// missing file ...) are rejected with an error log and the current material is kept.
/// Reloads are counted in `resilience_mtls_reloads_total{result}`.
///
/// ```no_run
/// use resilience_mtls::{Credentials, MaterialPaths, Rotation};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let paths = MaterialPaths::new("certs/orders.pem", "certs/orders-key.pem", "certs/ca.pem");
/// let credentials = Credentials::load(&paths)?;
/// let _rotation = Rotation::new(paths).spawn(&credentials); // stops when dropped
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Rotation {
    paths: MaterialPaths,
    poll_interval: Duration,
    settle: Duration,
    watch_files: bool,
}

impl Rotation {
    /// Rotation for the files in `paths`, with the default settings.
    pub fn new(paths: MaterialPaths) -> Self {
        Self {
            paths,
            poll_interval: Duration::from_secs(10),
            settle: Duration::from_millis(50),
            watch_files: true,
        }
    }

    /// How often the files are re-read whatever the file watch says; default 10 s. This also
    /// refreshes the expiry gauge.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long to wait after a file event for the writer to finish before reading; default
    /// 50 ms.
    pub fn settle(mut self, delay: Duration) -> Self {
        self.settle = delay;
        self
    }

    /// Whether to use the file watch at all (polling only when `false`); default `true`.
    pub fn watch_files(mut self, enabled: bool) -> Self {
        self.watch_files = enabled;
        self
    }

    /// Starts the rotation task on the current tokio runtime. It runs until the handle is
    /// dropped.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn spawn(self, credentials: &Credentials) -> RotationHandle {
        let (tx, rx) = mpsc::channel(1);
        let watcher = if self.watch_files {
            match watch(&self.paths, tx) {
                Ok(watcher) => Some(watcher),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot watch certificate files; polling only");
                    None
                }
            }
        } else {
            None
        };
        let watching = watcher.is_some();
        // The files as they are now count as loaded only if they are what the credentials
        // hold: files rewritten since the credentials were loaded are loaded at the first
        // check, not left until they change again.
        let current = credentials.current();
        let last = MaterialFiles::read(&self.paths)
            .ok()
            .filter(|files| current.made_from(files));
        let (status_tx, status) = watch::channel(RotationStatus::default());
        let task = tokio::spawn(run(self, credentials.clone(), rx, watcher, last, status_tx));
        RotationHandle {
            task,
            watching,
            status,
        }
    }
}

/// What the rotation task has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotationStatus {
    /// Checks of the files (each poll, and each burst of file events).
    pub checks: u64,
    /// New material swapped in.
    pub reloads: u64,
    /// New file contents rejected (the current material was kept).
    pub rejections: u64,
    /// Why the last rejection happened, until the next successful reload.
    pub last_error: Option<String>,
}

/// The running rotation task; dropping it stops the task.
#[derive(Debug)]
pub struct RotationHandle {
    task: JoinHandle<()>,
    watching: bool,
    status: watch::Receiver<RotationStatus>,
}

impl RotationHandle {
    /// Whether the file watch is active (otherwise changes are seen by polling only).
    #[must_use]
    pub fn is_watching_files(&self) -> bool {
        self.watching
    }

    /// A receiver of the task's [`RotationStatus`], which changes after each check: a
    /// readiness signal for tests and health checks.
    #[must_use]
    pub fn status(&self) -> watch::Receiver<RotationStatus> {
        self.status.clone()
    }

    /// Stops the task and waits until it has: once this returns, it stores no more material.
    /// Dropping the handle stops it too, but a check already running on another thread may
    /// still store what it read, after whatever was stored since.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for RotationHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn watch(
    paths: &MaterialPaths,
    tx: mpsc::Sender<()>,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Our own reads show up as access events: ignore them, or each read would cause
        // another.
        if let Ok(event) = event
            && !matches!(event.kind, EventKind::Access(_))
        {
            // Full means a check is already due, which will see this change too.
            let _ = tx.try_send(());
        }
    })?;
    let dirs: BTreeSet<&Path> = paths
        .files()
        .map(|p| match p.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        })
        .collect();
    for dir in dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

async fn run(
    rotation: Rotation,
    credentials: Credentials,
    mut events: mpsc::Receiver<()>,
    _watcher: Option<notify::RecommendedWatcher>,
    mut last: Option<MaterialFiles>,
    status: watch::Sender<RotationStatus>,
) {
    let mut poll = tokio::time::interval(rotation.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    // The files last refused, and, when they were refused only for not being valid yet, when
    // they will be: they are looked at again then, not remembered as bad for ever.
    let mut rejected: Option<(MaterialFiles, Option<SystemTime>)> = None;
    let mut read_error: Option<String> = None;
    loop {
        tokio::select! {
            _ = poll.tick() => {}
            Some(()) = events.recv() => {
                tokio::time::sleep(rotation.settle).await;
                while events.try_recv().is_ok() {}
            }
        }
        let now = wall_clock();
        match MaterialFiles::read(&rotation.paths) {
            Ok(files) => {
                read_error = None;
                let refused = rejected.as_ref().is_some_and(|(refused, valid_from)| {
                    *refused == files && valid_from.is_none_or(|from| now < from)
                });
                if last.as_ref() != Some(&files) && !refused {
                    match Material::from_files(&files, &rotation.paths, now) {
                        Ok(material) => {
                            tracing::info!(
                                identity = %material.identity(),
                                "reloaded certificate material",
                            );
                            credentials.store(material);
                            metrics::reload(true);
                            last = Some(files);
                            rejected = None;
                            status.send_modify(|s| {
                                s.reloads += 1;
                                s.last_error = None;
                            });
                        }
                        Err(err) => {
                            tracing::error!(
                                error = %err,
                                "rejected new certificate material; keeping the current one",
                            );
                            metrics::reload(false);
                            let valid_from = match &err {
                                MaterialError::NotYetValid { valid_from, .. } => Some(*valid_from),
                                _ => None,
                            };
                            rejected = Some((files, valid_from));
                            status.send_modify(|s| {
                                s.rejections += 1;
                                s.last_error = Some(err.to_string());
                            });
                        }
                    }
                }
            }
            Err(err) => {
                let message = err.to_string();
                if read_error.as_ref() != Some(&message) {
                    tracing::error!(
                        error = %message,
                        "cannot read certificate material; keeping the current one",
                    );
                    metrics::reload(false);
                    status.send_modify(|s| {
                        s.rejections += 1;
                        s.last_error = Some(message.clone());
                    });
                    read_error = Some(message);
                }
            }
        }
        credentials.record_expiry(now);
        status.send_modify(|s| s.checks += 1);
    }
}
