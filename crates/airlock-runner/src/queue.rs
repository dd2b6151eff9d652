//! A byte-bounded queue.
//!
//! russh grants the client more window as soon as data *arrives* (not when it
//! is consumed), and its session loop blocks when a channel's message queue is
//! full — which also stops it from processing the WINDOW_ADJUSTs our own
//! output is waiting for. Channel readers therefore hand data to consumers
//! through this queue, which never blocks below its (large) byte budget.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};

/// Sending half.
#[derive(Debug)]
pub struct QueueTx<T> {
    tx: mpsc::UnboundedSender<(T, u32)>,
    sem: Arc<Semaphore>,
    cap: u32,
}

/// Receiving half.
#[derive(Debug)]
pub struct QueueRx<T> {
    rx: mpsc::UnboundedReceiver<(T, u32)>,
    sem: Arc<Semaphore>,
}

/// A queue holding at most about `cap` bytes.
pub fn queue<T>(cap: usize) -> (QueueTx<T>, QueueRx<T>) {
    let cap = u32::try_from(cap).unwrap_or(u32::MAX / 2).max(1);
    let sem = Arc::new(Semaphore::new(cap as usize));
    let (tx, rx) = mpsc::unbounded_channel();
    (
        QueueTx {
            tx,
            sem: sem.clone(),
            cap,
        },
        QueueRx { rx, sem },
    )
}

impl<T> QueueTx<T> {
    /// Queue `item` weighing `size` bytes; waits only when the budget is used up.
    pub async fn send(&self, item: T, size: usize) -> Result<(), T> {
        let n = u32::try_from(size).unwrap_or(u32::MAX).min(self.cap);
        if n > 0 {
            match self.sem.acquire_many(n).await {
                Ok(p) => p.forget(),
                Err(_) => return Err(item),
            }
        }
        self.tx.send((item, n)).map_err(|e| e.0.0)
    }
}

impl<T> QueueRx<T> {
    /// Next item.
    pub async fn recv(&mut self) -> Option<T> {
        let (item, n) = self.rx.recv().await?;
        self.sem.add_permits(n as usize);
        Some(item)
    }
}

impl<T> Drop for QueueRx<T> {
    fn drop(&mut self) {
        // Wake blocked senders.
        self.sem.close();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn bounded_by_bytes() {
        let (tx, mut rx) = queue::<Vec<u8>>(10);
        tx.send(vec![0; 6], 6).await.unwrap();
        let blocked =
            tokio::time::timeout(std::time::Duration::from_millis(50), tx.send(vec![0; 6], 6))
                .await;
        assert!(blocked.is_err());
        assert_eq!(rx.recv().await.unwrap().len(), 6);
        tx.send(vec![0; 6], 6).await.unwrap();
        drop(rx);
        assert!(tx.send(vec![1], 1).await.is_err());
    }
}
