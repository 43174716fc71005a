//! A deadline that moves with every request and almost never passes.
//!
//! A keep-alive connection has a deadline for the client's next request head, and an upstream
//! connection one for each answer's head. Moving a timer on every request costs a lock and two
//! operations on the runtime's timer wheel; the deadline here only records where it now lies,
//! and the timer under it stays where it was. A timer that fires before the deadline is moved
//! to it then, once, and waited on again. Deadlines only move later in practice, so the timer
//! fires about once per timeout period of a busy connection instead of being moved per request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

pub struct Deadline {
    /// When the deadline is.
    at: Instant,
    /// Fires at or before `at`. Boxed: it is pinned, and it lives in values that move (an idle
    /// upstream connection moves in and out of its pool).
    timer: Pin<Box<Sleep>>,
}

impl Deadline {
    pub fn new(at: Instant) -> Deadline {
        Deadline {
            at,
            timer: Box::pin(tokio::time::sleep_until(at)),
        }
    }

    /// Moves the deadline to `at`. Only a deadline earlier than the timer moves the timer.
    pub fn set(&mut self, at: Instant) {
        self.at = at;
        if at < self.timer.deadline() {
            self.timer.as_mut().reset(at);
        }
    }

    /// `Ready` once the deadline has passed.
    pub fn poll_passed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if self.timer.deadline() >= self.at {
                return Poll::Ready(());
            }
            // It fired early: the deadline moved on since.
            self.timer.as_mut().reset(self.at);
        }
    }

    /// Waits until the deadline has passed.
    pub async fn passed(&mut self) {
        std::future::poll_fn(|cx| self.poll_passed(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn passes_at_its_latest_place_not_where_the_timer_was_first_set() {
        let start = Instant::now();
        let mut deadline = Deadline::new(start + Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(4)).await;
        deadline.set(start + Duration::from_secs(14));
        tokio::time::sleep(Duration::from_secs(4)).await;
        deadline.set(start + Duration::from_secs(18));
        deadline.passed().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(18));
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_moves_the_timer() {
        let start = Instant::now();
        let mut deadline = Deadline::new(start + Duration::from_secs(60));
        deadline.set(start + Duration::from_secs(5));
        deadline.passed().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn is_not_passed_before_its_time_and_stays_passed_after() {
        let start = Instant::now();
        let mut deadline = Deadline::new(start + Duration::from_secs(3));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(deadline.poll_passed(&mut cx).is_pending());
        tokio::time::sleep(Duration::from_secs(2)).await;
        deadline.set(start + Duration::from_secs(6));
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The timer's first place (3 s) is behind; the deadline (6 s) is not.
        assert!(deadline.poll_passed(&mut cx).is_pending());
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(deadline.poll_passed(&mut cx).is_ready());
        assert!(deadline.poll_passed(&mut cx).is_ready());
    }
}
