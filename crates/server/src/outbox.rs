//! The router-to-connection queue. A mutex-protected `Vec` plus a `Notify`: the router pushes
//! packets, the connection task swaps the whole vector out in one go. Unlike a channel it
//! allocates nothing while idle (an idle connection should cost almost no memory), and one
//! wake-up hands the writer everything queued so far.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

#[derive(Debug)]
struct State<T> {
    queue: Vec<T>,
    tx_alive: bool,
    rx_alive: bool,
}

#[derive(Debug)]
struct Inner<T> {
    state: Mutex<State<T>>,
    notify: Notify,
}

/// The router's side.
#[derive(Debug)]
pub(crate) struct OutboxTx<T> {
    inner: Arc<Inner<T>>,
}

/// The connection task's side.
#[derive(Debug)]
pub(crate) struct OutboxRx<T> {
    inner: Arc<Inner<T>>,
}

/// A new, empty outbox (no allocation for the queue).
pub(crate) fn outbox<T>() -> (OutboxTx<T>, OutboxRx<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            queue: Vec::new(),
            tx_alive: true,
            rx_alive: true,
        }),
        notify: Notify::new(),
    });
    (
        OutboxTx {
            inner: inner.clone(),
        },
        OutboxRx { inner },
    )
}

impl<T> OutboxTx<T> {
    /// Queue an item; fails (giving it back) when the connection task is gone.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        let was_empty = {
            let mut s = self
                .inner
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !s.rx_alive {
                return Err(item);
            }
            s.queue.push(item);
            s.queue.len() == 1
        };
        if was_empty {
            self.inner.notify.notify_one();
        }
        Ok(())
    }
}

impl<T> Drop for OutboxTx<T> {
    fn drop(&mut self) {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tx_alive = false;
        self.inner.notify.notify_one();
    }
}

impl<T> OutboxRx<T> {
    /// Wait for items and move all of them into `buf` (appended). Returns how many; 0 means
    /// the router dropped its side and nothing is left. Cancel safe: nothing is taken until
    /// the lock is held, and then it is returned in the same poll.
    pub(crate) async fn recv_all(&mut self, buf: &mut Vec<T>) -> usize {
        loop {
            {
                let mut s = self
                    .inner
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if !s.queue.is_empty() {
                    let n = s.queue.len();
                    if buf.is_empty() {
                        std::mem::swap(&mut s.queue, buf);
                    } else {
                        buf.append(&mut s.queue);
                    }
                    return n;
                }
                if !s.tx_alive {
                    return 0;
                }
            }
            // a send between the unlock and here leaves a permit, so no wake-up is lost
            self.inner.notify.notified().await;
        }
    }

    /// Whether nothing is queued right now.
    pub(crate) fn is_empty(&self) -> bool {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .queue
            .is_empty()
    }
}

impl<T> Drop for OutboxRx<T> {
    fn drop(&mut self) {
        let mut s = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        s.rx_alive = false;
        s.queue = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn items_arrive_in_order_in_one_batch_and_close_is_seen() {
        let (tx, mut rx) = outbox();
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
    async fn send_fails_after_the_receiver_is_gone() {
        let (tx, rx) = outbox();
        drop(rx);
        assert_eq!(tx.send(1), Err(1));
    }
}
