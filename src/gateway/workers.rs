//! The threads that serve connections: one single-threaded runtime per CPU, nginx's worker
//! model.
//!
//! A connection stays on the worker it was handed to for its whole life, with everything it
//! starts (its upstream connections, its tunnel, its HTTP/2 streams), so a request never crosses
//! a thread: no cross-thread wake-ups, no work-stealing bookkeeping. Against tokio's
//! multi-threaded scheduler this measured about 8 µs less CPU per proxied request (of ~31 µs in
//! user space; BENCHMARKS.md). The accept loop, signals and reloads stay on the caller's runtime.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use tokio::runtime::{Builder, Handle};
use tokio_util::sync::CancellationToken;

/// The most workers `workers = 0` starts: a GPU box has many cores, and a front door for a few
/// users needs few of them (8 serve well over 100,000 small requests per second).
pub const AUTO_MAX: usize = 8;

/// The worker threads; they stop when this is dropped (what they still run is dropped with
/// them).
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stop: CancellationToken,
}

impl Workers {
    /// Starts `count` workers; when `count` is 0, one per CPU this process may use, at most
    /// [`AUTO_MAX`].
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let count = match count {
            0 => thread::available_parallelism()
                .map_or(1, usize::from)
                .min(AUTO_MAX),
            n => n,
        };
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = Builder::new_current_thread()
                .enable_all()
                .thread_name("vastgate-worker")
                .build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            thread::Builder::new()
                .name(format!("vastgate-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(stop.cancelled());
                    // Whatever is still running (connections past the grace period) is dropped
                    // here, without waiting for blocking jobs.
                    runtime.shutdown_background();
                })?;
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            stop,
        })
    }

    /// How many workers run.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Always false: there is at least one worker.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Runs `task` on the next worker, round robin.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        drop(self.handles[i].spawn(task));
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::mpsc;

    #[test]
    fn tasks_spread_over_the_workers_and_stay_on_their_thread() {
        let workers = Workers::start(3).unwrap();
        assert_eq!(workers.len(), 3);
        let (tx, rx) = mpsc::channel();
        for _ in 0..6 {
            let tx = tx.clone();
            workers.spawn(async move {
                let before = thread::current().id();
                tokio::task::yield_now().await;
                // What a task spawns runs on the same worker.
                let inner = tokio::spawn(async { thread::current().id() })
                    .await
                    .unwrap();
                tx.send((before, thread::current().id(), inner)).unwrap();
            });
        }
        let mut threads = HashSet::new();
        for _ in 0..6 {
            let (before, after, inner) =
                rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
            assert_eq!(before, after);
            assert_eq!(before, inner);
            threads.insert(before);
        }
        assert_eq!(threads.len(), 3);
    }

    #[test]
    fn dropping_the_workers_drops_their_tasks() {
        let workers = Workers::start(1).unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        workers.spawn(async move {
            let _tx = tx; // dropped when the task is
            std::future::pending::<()>().await;
        });
        drop(workers);
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(5)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
