//! `[access_log]`: one line per request, off unless the section is present.

use super::LogFormat;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `[access_log]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccessLogConfig {
    /// `stdout`, or a file, appended to and reopened on every reload (SIGHUP), so logrotate
    /// can move it away.
    pub(crate) path: PathBuf,
    /// `text` (default: one line per request) or `json` (one object per line).
    #[serde(default)]
    pub(crate) format: LogFormat,
    /// Requests waiting to be written; when it is full, requests go on unlogged, counted in
    /// `sidecar_access_log_dropped_total`. Default 8192.
    #[serde(default = "default_queue")]
    pub(crate) queue: usize,
}

/// The most requests the queue may hold: each waits in memory, about half a kilobyte.
pub(super) const MAX_QUEUE: usize = 1 << 20;

fn default_queue() -> usize {
    8192
}

impl AccessLogConfig {
    /// Whether the log goes to standard output.
    pub(crate) fn is_stdout(&self) -> bool {
        self.path == Path::new("stdout")
    }

    /// What is wrong with the section, as (field, message).
    pub(super) fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.path.as_os_str().is_empty() {
            problems.push((
                "access_log.path".into(),
                "must be `stdout` or a file".into(),
            ));
        } else if !self.is_stdout() {
            let dir = match self.path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            if !dir.is_dir() {
                problems.push((
                    "access_log.path".into(),
                    format!("{}: no such directory", dir.display()),
                ));
            } else if self.path.is_dir() {
                problems.push((
                    "access_log.path".into(),
                    format!("{} is a directory", self.path.display()),
                ));
            }
        }
        if !(1..=MAX_QUEUE).contains(&self.queue) {
            problems.push((
                "access_log.queue".into(),
                format!("{} is not from 1 to {MAX_QUEUE}", self.queue),
            ));
        }
        problems
    }
}
