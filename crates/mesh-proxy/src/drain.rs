//! Tracked tasks of the proxy, and the drain at shutdown.
//!
//! Every front-door connection, upgraded (spliced) connection and tunnel
//! stream runs as a task of [`Tasks`]. At shutdown [`Tasks::drain`] waits
//! for them to end, within a grace period, and then cuts what is left.
//! Connections are told to finish by a token that [`run_until`] watches
//! without polling it on every wake-up of the connection.

use std::{
    future::Future,
    ops::ControlFlow,
    pin::{Pin, pin},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
    time::Duration,
};

use futures::task::AtomicWaker;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::info;

/// How long the tasks cut at the end of a drain get to drop what they hold.
const CUT_WAIT: Duration = Duration::from_secs(1);

/// What [`crate::Proxy::drain`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Drained {
    /// Connections and tunnel streams that ended within the grace period.
    pub finished: usize,
    /// Those still running when it was over, aborted.
    pub cut: usize,
}

/// The proxy's tracked tasks.
#[derive(Default)]
pub(crate) struct Tasks {
    tracker: TaskTracker,
    /// Cancelled when a drain's grace period is over: every task stops.
    cut: CancellationToken,
}

impl Tasks {
    /// Runs `task` as a tracked task.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cut = self.cut.clone();
        self.tracker.spawn(async move {
            run_until(task, &cut, |_| ControlFlow::Break(())).await;
        });
    }

    /// Waits until every task ended, at most `grace`, then aborts the rest.
    pub(crate) async fn drain(&self, grace: Duration) -> Drained {
        self.tracker.close();
        let open = self.tracker.len();
        let cut = match tokio::time::timeout(grace, self.tracker.wait()).await {
            Ok(()) => 0,
            Err(_) => {
                let left = self.tracker.len();
                self.cut.cancel();
                let _ = tokio::time::timeout(CUT_WAIT, self.tracker.wait()).await;
                left
            }
        };
        let drained = Drained {
            finished: open.saturating_sub(cut),
            cut,
        };
        info!(
            finished = drained.finished,
            cut = drained.cut,
            ?grace,
            "proxy drained its connections and tunnel streams"
        );
        drained
    }
}

/// Wakes the task of a [`run_until`] and notes that the token woke it.
struct TokenWake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for TokenWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Runs `fut` until it ends, calling `on_cancel` once when `token` is
/// cancelled: `Continue` keeps running `fut` (it was told to finish),
/// `Break` drops it, and the result is `None`.
///
/// The token is polled only when it woke the task (a token's wait takes a
/// lock on every poll; a connection's task wakes many times per request).
pub(crate) async fn run_until<F, C>(
    fut: F,
    token: &CancellationToken,
    on_cancel: C,
) -> Option<F::Output>
where
    F: Future,
    C: FnOnce(Pin<&mut F>) -> ControlFlow<()>,
{
    let mut fut = pin!(fut);
    let mut cancelled = pin!(token.cancelled());
    let wake = Arc::new(TokenWake {
        woken: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    let token_waker = Waker::from(wake.clone());
    let mut on_cancel = Some(on_cancel);
    std::future::poll_fn(|cx| {
        if on_cancel.is_some() {
            wake.task.register(cx.waker());
            if wake.woken.swap(false, Ordering::AcqRel)
                && cancelled
                    .as_mut()
                    .poll(&mut Context::from_waker(&token_waker))
                    .is_ready()
                && let Some(on_cancel) = on_cancel.take()
                && on_cancel(fut.as_mut()).is_break()
            {
                return Poll::Ready(None);
            }
        }
        fut.as_mut().poll(cx).map(Some)
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[tokio::test]
    async fn run_until_completes_keeps_or_drops() {
        let token = CancellationToken::new();
        let done = run_until(async { 7 }, &token, |_| ControlFlow::Break(())).await;
        assert_eq!(done, Some(7));

        // Cancelled while pending: `Break` drops the future.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let cancel = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            cancel.cancel();
        });
        let cut = run_until(rx, &token, |_| ControlFlow::Break(())).await;
        assert!(cut.is_none());
        drop(tx);

        // Already cancelled, `Continue`: told once, then runs to its end.
        let told = AtomicUsize::new(0);
        let kept = run_until(
            async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                "finished"
            },
            &token,
            |_| {
                told.fetch_add(1, Ordering::Relaxed);
                ControlFlow::Continue(())
            },
        )
        .await;
        assert_eq!((kept, told.load(Ordering::Relaxed)), (Some("finished"), 1));
    }

    #[tokio::test]
    async fn drain_waits_for_quick_tasks_and_cuts_slow_ones() {
        let tasks = Tasks::default();
        let finished = Arc::new(AtomicUsize::new(0));
        for wait in [10, 20, 10_000] {
            let finished = finished.clone();
            tasks.spawn(async move {
                tokio::time::sleep(Duration::from_millis(wait)).await;
                finished.fetch_add(1, Ordering::Relaxed);
            });
        }
        let started = std::time::Instant::now();
        let drained = tasks.drain(Duration::from_millis(300)).await;
        assert_eq!(
            drained,
            Drained {
                finished: 2,
                cut: 1
            }
        );
        assert_eq!(finished.load(Ordering::Relaxed), 2);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(tasks.tracker.is_empty());

        let idle = Tasks::default();
        assert_eq!(idle.drain(Duration::from_secs(5)).await, Drained::default());
    }
}
