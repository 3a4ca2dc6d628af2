//! The tasks hyper spawns for a listener's HTTP/2 streams, counted, so that the listener can
//! wait for the last of them at the end of a drain.
//!
//! hyper serves each HTTP/2 stream in a task of its own, outside the connection's task. When
//! the drain's grace runs out, the listener drops its connections, and each stream still
//! waiting for its upstream learns that its connection is gone and ends, dropping its request
//! (which writes the request's access-log line). That happens on the stream's own worker, at
//! its next turn: the listener waits for it, so that the stop writes the line out.

use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::sync::Notify;

/// Spawns onto the current runtime, as hyper-util's `TokioExecutor`, and counts the tasks.
#[derive(Clone, Debug, Default)]
pub(super) struct StreamTasks(Arc<Live>);

#[derive(Debug, Default)]
struct Live {
    count: AtomicUsize,
    /// Told when the count falls to zero.
    none: Notify,
}

/// One task's place in the count.
struct Place(Arc<Live>);

impl Drop for Place {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none.notify_waiters();
        }
    }
}

pin_project! {
    /// A task, counted until it is dropped. A struct rather than an `async` block, which
    /// would move the task (hyper's whole stream, request and answer) once more, at its first
    /// poll.
    struct Counted<F> {
        #[pin]
        task: F,
        place: Place,
    }
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().task.poll(cx)
    }
}

impl<F> hyper::rt::Executor<F> for StreamTasks
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, task: F) {
        self.0.count.fetch_add(1, Ordering::AcqRel);
        let place = Place(self.0.clone());
        tokio::spawn(Counted { task, place });
    }
}

impl StreamTasks {
    /// Waits until every task has ended, or for `at_most`; says whether they all ended.
    pub(super) async fn ended(&self, at_most: Duration) -> bool {
        let all_ended = async {
            loop {
                let none = self.0.none.notified();
                if self.0.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                none.await;
            }
        };
        tokio::time::timeout(at_most, all_ended).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;

    #[tokio::test(start_paused = true)]
    async fn ended_waits_for_every_task_and_no_longer_than_asked() {
        let tasks = StreamTasks::default();
        assert!(tasks.ended(Duration::ZERO).await, "none yet");
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        tasks.execute(async move {
            let _ = finished.await;
        });
        tasks.execute(std::future::pending::<()>());
        assert!(!tasks.ended(Duration::from_secs(1)).await);
        drop(finish);
        assert!(!tasks.ended(Duration::from_secs(1)).await, "one is left");
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ends_while_waited_for_wakes_the_wait() {
        let tasks = StreamTasks::default();
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        tasks.execute(async move {
            let _ = finished.await;
        });
        let waiting = tokio::spawn({
            let tasks = tasks.clone();
            async move { tasks.ended(Duration::from_secs(3600)).await }
        });
        tokio::task::yield_now().await;
        drop(finish);
        assert!(waiting.await.unwrap());
    }
}
