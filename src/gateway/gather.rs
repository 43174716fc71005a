//! Streamed bodies handed on in batches, so that a large transfer is written with few system
//! calls.
//!
//! A body crossing the gateway is produced by one connection's task and written by another's.
//! hyper writes what a body has ready as one `writev` of up to 16 pieces, but a body decoded from
//! `Transfer-Encoding: chunked` (or from HTTP/2 frames) yields one chunk per turn of its producer:
//! without help every chunk, however small, costs a `writev` and a wake-up of the reader on the
//! other side. [`Gather`] holds the frames that arrive within one turn of the scheduler and hands
//! them on together: when the producer has nothing more, the writer's task steps back (so the
//! producer runs, decoding what its buffer already holds) before the held frames go out.
//!
//! A last frame (its body then known to be complete) and a stream that has nothing held pass
//! straight through, so a small response or a server-sent event waits for no one.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};

/// hyper queues up to 16 pieces for one `writev`.
const MAX_FRAMES: usize = 16;

/// Enough for one large write; hyper's own write buffer stops taking pieces at ~400 KiB.
const MAX_BYTES: usize = 256 * 1024;

/// Polls that find nothing new before the held frames go out. hyper polls a body that is not
/// ready twice in one turn of its connection's task (the second time to check that nothing came
/// meanwhile), so the third is the first after the producer has had its turn.
const IDLE_POLLS: u8 = 3;

/// A body whose frames are handed on in batches (see the module's documentation).
pub struct Gather<B> {
    inner: B,
    held: VecDeque<Frame<Bytes>>,
    held_bytes: usize,
    /// The held frames are being handed on.
    releasing: bool,
    /// Polls in a row that found nothing new while frames were held.
    idle_polls: u8,
    /// `inner` has ended; what is held is the rest.
    ended: bool,
}

impl<B> Gather<B> {
    pub fn new(inner: B) -> Gather<B> {
        Gather {
            inner,
            held: VecDeque::new(),
            held_bytes: 0,
            releasing: false,
            idle_polls: 0,
            ended: false,
        }
    }
}

fn data_len(frame: &Frame<Bytes>) -> usize {
    frame.data_ref().map_or(0, Buf::remaining)
}

impl<B> HttpBody for Gather<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        while !this.releasing {
            if this.held.len() >= MAX_FRAMES || this.held_bytes >= MAX_BYTES {
                this.releasing = true;
                break;
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if this.held.is_empty() && (this.inner.is_end_stream() || !frame.is_data()) {
                        // The last frame, or trailers (which are last): nothing to wait for.
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    this.held_bytes += data_len(&frame);
                    let last = !frame.is_data() || this.inner.is_end_stream();
                    this.held.push_back(frame);
                    this.idle_polls = 0;
                    if last {
                        this.releasing = true;
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    // What is held belongs to an exchange that fails now.
                    this.held.clear();
                    this.held_bytes = 0;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    this.releasing = true;
                }
                Poll::Pending if this.held.is_empty() => return Poll::Pending,
                Poll::Pending => {
                    this.idle_polls += 1;
                    if this.idle_polls >= IDLE_POLLS {
                        this.releasing = true;
                    } else {
                        // Let the producer run: it may have more decoded by then. Waking this
                        // task first means the held frames never wait on anything else.
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
            }
        }
        match this.held.pop_front() {
            Some(frame) => {
                this.held_bytes -= data_len(&frame);
                if this.held.is_empty() {
                    this.releasing = this.ended;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            // Only an ended body releases with nothing held.
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_empty() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.held_bytes as u64;
        if self.ended {
            return SizeHint::with_exact(held);
        }
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(held));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::task::Waker;

    use http::HeaderMap;

    /// A scripted body: `None` in the script is a turn with nothing ready.
    struct Script {
        steps: VecDeque<Option<Frame<Bytes>>>,
        end_known: bool,
    }

    impl HttpBody for Script {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            match self.steps.pop_front() {
                Some(Some(frame)) => Poll::Ready(Some(Ok(frame))),
                Some(None) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                None => Poll::Ready(None),
            }
        }

        fn is_end_stream(&self) -> bool {
            self.end_known && self.steps.is_empty()
        }
    }

    fn data(s: &'static str) -> Option<Frame<Bytes>> {
        Some(Frame::data(Bytes::from_static(s.as_bytes())))
    }

    /// Polls to the end; `D(text)` for data, `T` for trailers, `-` for a turn without a frame.
    fn drain(body: &mut Gather<Script>) -> Vec<String> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut seen = Vec::new();
        for _ in 0..1000 {
            match Pin::new(&mut *body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(d) => seen.push(format!("D({})", String::from_utf8_lossy(&d))),
                    Err(_) => seen.push("T".to_owned()),
                },
                Poll::Ready(Some(Err(e))) => match e {},
                Poll::Ready(None) => return seen,
                Poll::Pending => seen.push("-".to_owned()),
            }
        }
        panic!("the body never ended: {seen:?}");
    }

    #[test]
    fn frames_of_one_turn_go_out_together() {
        // The producer has three chunks decoded across two turns, then waits for its socket.
        let mut body = Gather::new(Script {
            steps: [
                data("a"),
                None,
                data("b"),
                data("c"),
                None,
                None,
                None,
                data("d"),
                None,
                None,
                None,
            ]
            .into(),
            end_known: false,
        });
        assert_eq!(
            drain(&mut body),
            ["-", "-", "-", "D(a)", "D(b)", "D(c)", "-", "-", "D(d)"]
        );
        assert!(body.is_end_stream());
    }

    #[test]
    fn a_last_frame_passes_straight_through() {
        let mut body = Gather::new(Script {
            steps: [data("whole")].into(),
            end_known: true,
        });
        assert_eq!(drain(&mut body), ["D(whole)"]);
    }

    #[test]
    fn held_frames_come_out_before_the_end_and_the_trailers_in_order() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", "7".parse().unwrap());
        let mut body = Gather::new(Script {
            steps: [data("a"), data("b"), Some(Frame::trailers(trailers))].into(),
            end_known: false,
        });
        assert_eq!(drain(&mut body), ["D(a)", "D(b)", "T"]);
    }

    #[test]
    fn a_batch_is_bounded() {
        let steps: VecDeque<_> = (0..40).map(|_| data("x")).collect();
        let mut body = Gather::new(Script {
            steps,
            end_known: false,
        });
        let seen = drain(&mut body);
        assert_eq!(seen.len(), 40, "all frames, none waited for: {seen:?}");
        // 16 were held at once at most: the hint never counts more than that.
        let mut body = Gather::new(Script {
            steps: (0..40).map(|_| data("x")).collect(),
            end_known: false,
        });
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        assert_eq!(body.held.len(), MAX_FRAMES - 1);
    }

    #[test]
    fn the_size_hint_counts_what_is_held() {
        let mut body = Gather::new(Script {
            steps: [data("abc"), None, None].into(),
            end_known: false,
        });
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        assert_eq!(body.size_hint().lower(), 3);
        assert!(!body.is_end_stream());
    }
}
