//! An in-process message pipe between a relay and a tunnel end in the same
//! process (the gateway and the embedded agent of `airlockd up`).
//!
//! A byte pipe (`tokio::io::duplex`) there cost two copies of every byte
//! (into the pipe's buffer and out of it), a fresh 1 MiB read buffer per
//! message on the far side and a wake-up per piece. The messages a
//! WebSocket delivers are whole `Bytes` already, and a resumable tunnel's
//! frames are a header and a slice of its replay buffer: handing those
//! over as they are costs a pointer each. Each direction holds at most
//! [`DEPTH`] messages, so a slow side slows the other instead of growing a
//! queue.

use std::io;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::resume::{Encoded, JOIN_BELOW, LinkRx, LinkTx};

/// Messages in flight per direction: up to about this many MiB during a
/// bulk transfer, a few bytes for a quiet tunnel.
pub const DEPTH: usize = 4;

/// The receiving half of one end of a [`pipe`].
#[derive(Debug)]
pub struct PipeRx(mpsc::Receiver<Bytes>);

/// The sending half of one end of a [`pipe`]; [`LinkTx::shutdown`] (or
/// dropping it) ends the other end's input.
#[derive(Debug)]
pub struct PipeTx(Option<mpsc::Sender<Bytes>>);

/// One end of a [`pipe`].
#[derive(Debug)]
pub struct PipeEnd {
    /// What the other end sent.
    pub rx: PipeRx,
    /// To the other end.
    pub tx: PipeTx,
}

/// Two connected ends.
pub fn pipe() -> (PipeEnd, PipeEnd) {
    let (a_tx, a_rx) = mpsc::channel(DEPTH);
    let (b_tx, b_rx) = mpsc::channel(DEPTH);
    (
        PipeEnd {
            rx: PipeRx(b_rx),
            tx: PipeTx(Some(a_tx)),
        },
        PipeEnd {
            rx: PipeRx(a_rx),
            tx: PipeTx(Some(b_tx)),
        },
    )
}

impl LinkRx for PipeRx {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        Ok(self.0.recv().await)
    }
}

impl PipeTx {
    async fn put(&mut self, b: Bytes) -> io::Result<()> {
        let closed = || io::Error::from(io::ErrorKind::BrokenPipe);
        let tx = self.0.as_ref().ok_or_else(closed)?;
        tx.send(b).await.map_err(|_| closed())
    }
}

impl LinkTx for PipeTx {
    async fn send(&mut self, frame: Encoded) -> io::Result<()> {
        if frame.len() <= JOIN_BELOW || frame.head.is_empty() {
            return self.put(frame.joined()).await;
        }
        self.put(frame.head).await?;
        self.put(frame.body).await
    }

    async fn shutdown(&mut self) {
        self.0 = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resume::Frame;

    #[tokio::test]
    async fn frames_cross_uncopied_and_shutdown_ends_the_other_side() {
        let (mut a, mut b) = pipe();
        let payload = Bytes::from(vec![7u8; JOIN_BELOW * 2]);
        a.tx.send(Frame::Data(payload.clone()).encoded())
            .await
            .unwrap();
        let head = b.rx.recv().await.unwrap().unwrap();
        assert_eq!(head.len(), 5);
        let body = b.rx.recv().await.unwrap().unwrap();
        assert_eq!(body.as_ptr(), payload.as_ptr(), "the payload was copied");
        // Small frames go whole.
        a.tx.send(Frame::Data(Bytes::from_static(b"hi")).encoded())
            .await
            .unwrap();
        assert_eq!(b.rx.recv().await.unwrap().unwrap().len(), 7);
        a.tx.shutdown().await;
        assert!(b.rx.recv().await.unwrap().is_none());
        assert!(a.tx.send(Encoded::relayed(payload)).await.is_err());
        // The other direction still works until its sender goes.
        b.tx.send(Encoded::relayed(Bytes::from_static(b"back")))
            .await
            .unwrap();
        assert_eq!(&a.rx.recv().await.unwrap().unwrap()[..], b"back");
        drop(b);
        assert!(a.rx.recv().await.unwrap().is_none());
    }
}
