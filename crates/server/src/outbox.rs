//! The router-to-connection queue. A mutex-protected `Vec` plus the waker of the connection
//! task: the router pushes packets, the connection task swaps the whole vector out in one go.
//! Unlike a channel it allocates nothing while idle (an idle connection should cost almost no
//! memory), one wake-up hands the writer everything queued so far, and waiting for it is a
//! poll with no future of its own to keep in the connection's state.
//!
//! The same allocation carries the state the router and the connection task share (`X`:
//! queued bytes, keep-alive stamps), so a connection costs the router one `Arc`.

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

#[derive(Debug)]
struct State<T> {
    queue: Vec<T>,
    /// The receiver waiting for an item, woken by the push that makes the queue non-empty.
    waker: Option<Waker>,
    tx_alive: bool,
    rx_alive: bool,
}

#[derive(Debug)]
struct Inner<T, X> {
    state: Mutex<State<T>>,
    shared: X,
}

/// The router's side.
#[derive(Debug)]
pub(crate) struct OutboxTx<T, X = ()> {
    inner: Arc<Inner<T, X>>,
}

/// The connection task's side.
#[derive(Debug)]
pub(crate) struct OutboxRx<T, X = ()> {
    inner: Arc<Inner<T, X>>,
}

/// A new, empty outbox (no allocation for the queue) carrying `shared`.
pub(crate) fn outbox<T, X>(shared: X) -> (OutboxTx<T, X>, OutboxRx<T, X>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            queue: Vec::new(),
            waker: None,
            tx_alive: true,
            rx_alive: true,
        }),
        shared,
    });
    (
        OutboxTx {
            inner: inner.clone(),
        },
        OutboxRx { inner },
    )
}

impl<T, X> Inner<T, X> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T, X> OutboxTx<T, X> {
    /// Queue an item; fails (giving it back) when the connection task is gone.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        let waker = {
            let mut s = self.inner.lock();
            if !s.rx_alive {
                return Err(item);
            }
            s.queue.push(item);
            if s.queue.len() == 1 {
                s.waker.take()
            } else {
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// The state shared with the connection task.
    pub(crate) fn shared(&self) -> &X {
        &self.inner.shared
    }
}

impl<T, X> Drop for OutboxTx<T, X> {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.inner.lock();
            s.tx_alive = false;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T, X> OutboxRx<T, X> {
    /// Move every queued item into `buf` (appended) and return how many; 0 means the router
    /// dropped its side and nothing is left. Pending (with the task's waker kept) while the
    /// queue is empty.
    pub(crate) fn poll_recv_all(&mut self, cx: &mut Context<'_>, buf: &mut Vec<T>) -> Poll<usize> {
        let mut s = self.inner.lock();
        if !s.queue.is_empty() {
            let n = s.queue.len();
            if buf.is_empty() {
                std::mem::swap(&mut s.queue, buf);
            } else {
                buf.append(&mut s.queue);
            }
            return Poll::Ready(n);
        }
        if !s.tx_alive {
            return Poll::Ready(0);
        }
        match &mut s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// [`OutboxRx::poll_recv_all`] as a future (cancel safe: items are taken only in the poll
    /// that returns them).
    #[cfg(test)]
    pub(crate) async fn recv_all(&mut self, buf: &mut Vec<T>) -> usize {
        std::future::poll_fn(|cx| self.poll_recv_all(cx, buf)).await
    }

    /// Have `waker` woken by the next item (or when the sender goes) instead of the task
    /// that polled last, which is ending (`crate::park`). True, with the waker not kept, if
    /// an item is already queued or the sender is gone.
    pub(crate) fn park(&mut self, waker: Waker) -> bool {
        let mut s = self.inner.lock();
        if !s.queue.is_empty() || !s.tx_alive {
            s.waker = None;
            return true;
        }
        s.waker = Some(waker);
        false
    }

    /// Whether nothing is queued right now.
    pub(crate) fn is_empty(&self) -> bool {
        self.inner.lock().queue.is_empty()
    }

    /// The state shared with the router.
    pub(crate) fn shared(&self) -> &X {
        &self.inner.shared
    }
}

impl<T, X> Drop for OutboxRx<T, X> {
    fn drop(&mut self) {
        let mut s = self.inner.lock();
        s.rx_alive = false;
        s.waker = None;
        s.queue = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn items_arrive_in_order_in_one_batch_and_close_is_seen() {
        let (tx, mut rx) = outbox(());
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        let mut buf = Vec::new();
        assert_eq!(rx.recv_all(&mut buf).await, 5);
        assert_eq!(buf, vec![0, 1, 2, 3, 4]);
        assert!(rx.is_empty());
        let waiter = tokio::spawn(async move {
            let mut b = Vec::new();
            let n = rx.recv_all(&mut b).await;
            (n, b, rx)
        });
        tokio::task::yield_now().await;
        tx.send(9).unwrap();
        let (n, b, mut rx) = waiter.await.unwrap();
        assert_eq!((n, b), (1, vec![9]));
        drop(tx);
        assert_eq!(rx.recv_all(&mut Vec::new()).await, 0);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_when_the_sender_goes() {
        let (tx, mut rx) = outbox::<u8, ()>(());
        let waiter = tokio::spawn(async move { rx.recv_all(&mut Vec::new()).await });
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(waiter.await.unwrap(), 0);
    }

    #[tokio::test]
    async fn send_fails_after_the_receiver_is_gone() {
        let (tx, rx) = outbox(7u8);
        assert_eq!((*tx.shared(), *rx.shared()), (7, 7));
        drop(rx);
        assert_eq!(tx.send(1), Err(1));
    }
}
