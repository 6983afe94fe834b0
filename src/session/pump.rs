//! Keeps a session actor running while its client is not reading, and measures the backlog.
//!
//! actix-web-actors runs a session actor *inside* the response body stream: the actor is polled
//! only when the HTTP/1 dispatcher polls the body, and the dispatcher stops polling as soon as its
//! write buffer is full — that is, as soon as the client stops reading. A stalled browser would
//! freeze its own session: no timers, no mailbox, no way to notice and close it.
//!
//! The pump polls the body on its own task and queues the encoded bytes for the dispatcher,
//! counting bytes produced (`pumped`) and bytes the dispatcher took (`taken`). The session always
//! runs, and `pumped - taken` is exactly what the socket has not yet accepted; the session's
//! backlog policy keeps that bounded.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::Stream;

use super::SessionStats;

#[derive(Default)]
struct Shared {
    queue: VecDeque<Bytes>,
    error: Option<actix_web::Error>,
    /// The body ended (the actor stopped).
    done: bool,
    /// The dispatcher dropped the response (connection gone).
    receiver_gone: bool,
    /// Wakes the dispatcher when bytes arrive.
    reader: Option<Waker>,
    /// Wakes the pump when the receiver goes away.
    pump: Option<Waker>,
}

/// The response body handed to actix-web; fed by the pump task.
pub struct PumpedBody {
    shared: Rc<RefCell<Shared>>,
    stats: Arc<SessionStats>,
}

/// Starts pumping `body` (a `WebsocketContext` stream) on the current arbiter.
pub fn pump<S>(body: S, stats: Arc<SessionStats>) -> PumpedBody
where
    S: Stream<Item = Result<Bytes, actix_web::Error>> + 'static,
{
    let shared = Rc::new(RefCell::new(Shared::default()));
    let task_shared = shared.clone();
    let task_stats = stats.clone();
    actix_web::rt::spawn(async move {
        let mut body = std::pin::pin!(body);
        loop {
            let item = poll_fn(|cx| {
                {
                    let mut s = task_shared.borrow_mut();
                    if s.receiver_gone {
                        // Dropping the body drops the actor; its Drop tells the registry.
                        return Poll::Ready(None);
                    }
                    register(&mut s.pump, cx);
                }
                body.as_mut().poll_next(cx)
            })
            .await;
            let mut s = task_shared.borrow_mut();
            match item {
                Some(Ok(bytes)) => {
                    task_stats
                        .pumped
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    s.queue.push_back(bytes);
                }
                Some(Err(e)) => {
                    s.error = Some(e);
                    s.done = true;
                }
                None => s.done = true,
            }
            if let Some(w) = s.reader.take() {
                w.wake();
            }
            if s.done {
                break;
            }
        }
    });
    PumpedBody { shared, stats }
}

fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

impl Stream for PumpedBody {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut s = self.shared.borrow_mut();
        if let Some(bytes) = s.queue.pop_front() {
            self.stats
                .taken
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            return Poll::Ready(Some(Ok(bytes)));
        }
        if let Some(e) = s.error.take() {
            return Poll::Ready(Some(Err(e)));
        }
        if s.done {
            return Poll::Ready(None);
        }
        register(&mut s.reader, cx);
        Poll::Pending
    }
}

impl Drop for PumpedBody {
    fn drop(&mut self) {
        let mut s = self.shared.borrow_mut();
        s.receiver_gone = true;
        s.queue.clear();
        if let Some(w) = s.pump.take() {
            w.wake();
        }
    }
}
