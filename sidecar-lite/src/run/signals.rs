//! The signals the binary acts on: SIGTERM and SIGINT stop it, SIGHUP reloads its config.

/// SIGTERM and SIGINT, listened to from creation on.
pub(super) struct StopSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    pub(super) fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                term: signal(SignalKind::terminate()).ok(),
                interrupt: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// The next SIGTERM or SIGINT (Ctrl-C).
    pub(super) async fn recv(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                Some(()) = recv(&mut self.term) => {}
                Some(()) = recv(&mut self.interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// SIGHUP, listened to from creation on; never on systems without it.
pub(super) struct Hangups {
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    pub(super) fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                hangup: signal(SignalKind::hangup()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// The next SIGHUP.
    pub(super) async fn recv(&mut self) {
        #[cfg(unix)]
        {
            if recv(&mut self.hangup).await.is_some() {
                return;
            }
        }
        std::future::pending().await
    }
}

/// The next signal of a stream, or never if it could not be installed.
#[cfg(unix)]
async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
