//! A resumable tunnel's link over a WebSocket: the CLI's end, and the
//! embedded agent's end in `airlockd up`, which the gateway attaches to
//! the client's WebSocket directly (no relay, no second task between the
//! client and the runner's socket).

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::resume::{Encoded, JOIN_BELOW, Link, LinkRx, LinkTx};
use crate::{Counters, LINGER};

/// [`LinkRx`] over a WebSocket; counts the bytes of the binary messages it
/// receives in `from_ws` and remembers the peer's close frame.
#[derive(Debug)]
pub struct WsRx<S> {
    stream: SplitStream<WebSocketStream<S>>,
    close: Option<(u16, String)>,
    counters: Arc<Counters>,
}

impl<S> WsRx<S> {
    /// The close frame the peer sent, if any.
    pub fn close_frame(&self) -> Option<&(u16, String)> {
        self.close.as_ref()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> LinkRx for WsRx<S> {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        match self.stream.next().await {
            None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => Ok(None),
            Some(Err(e)) => Err(io::Error::other(e)),
            Some(Ok(Message::Binary(b))) => {
                self.counters
                    .from_ws
                    .fetch_add(b.len() as u64, Ordering::Relaxed);
                Ok(Some(b))
            }
            Some(Ok(Message::Close(f))) => {
                self.close = f.map(|f| (u16::from(f.code), f.reason.to_string()));
                Ok(None)
            }
            // Pings, pongs (and anything else) prove the link alive;
            // tungstenite answers pings itself.
            Some(Ok(_)) => Ok(Some(Bytes::new())),
        }
    }
}

/// [`LinkTx`] over a WebSocket; counts the bytes it sends in `to_ws`.
#[derive(Debug)]
pub struct WsTx<S> {
    sink: SplitSink<WebSocketStream<S>, Message>,
    counters: Arc<Counters>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsTx<S> {
    /// Sends a close frame with `code` and `reason` (flushed; the peer's
    /// answer ends the receiving half).
    pub async fn close(&mut self, code: CloseCode, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: reason.to_owned().into(),
        };
        let _ = self.sink.send(Message::Close(Some(frame))).await;
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> LinkTx for WsTx<S> {
    async fn send(&mut self, frame: Encoded) -> io::Result<()> {
        self.counters
            .to_ws
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        if frame.len() <= JOIN_BELOW {
            return self
                .sink
                .send(Message::Binary(frame.joined()))
                .await
                .map_err(io::Error::other);
        }
        // A large payload goes in a message of its own, uncopied.
        self.sink
            .feed(Message::Binary(frame.head))
            .await
            .map_err(io::Error::other)?;
        self.sink
            .send(Message::Binary(frame.body))
            .await
            .map_err(io::Error::other)
    }

    async fn ping(&mut self) -> io::Result<()> {
        self.sink
            .send(Message::Ping(Bytes::new()))
            .await
            .map_err(io::Error::other)
    }
}

/// A resumable tunnel's link over a WebSocket.
pub type WsLink<S> = Link<WsRx<S>, WsTx<S>>;

/// Wraps `ws` as a link, counting what crosses it in `counters`.
pub fn ws_link<S>(ws: WebSocketStream<S>, counters: Arc<Counters>) -> WsLink<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (sink, stream) = ws.split();
    Link::new(
        WsRx {
            stream,
            close: None,
            counters: counters.clone(),
        },
        WsTx { sink, counters },
    )
}

/// Ends a link's WebSocket: a close frame, then what the peer still sends
/// is drained (at most [`LINGER`]) until its close answer arrives, so the
/// frame is delivered before the connection goes.
pub async fn close_link<S>(link: &mut WsLink<S>, code: CloseCode, reason: &str)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    link.tx.close(code, reason).await;
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(Some(_)) = link.rx.recv().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::resume::Frame;

    #[tokio::test]
    async fn a_link_counts_what_crosses_and_closes_with_a_code() {
        let (server, client) = crate::tests::ws_pair().await;
        let counters = Arc::new(Counters::default());
        let mut ours = ws_link(server, counters.clone());
        let mut theirs = ws_link(client, Arc::default());
        // A large payload (its own message) and a small frame (one message).
        let payload = Bytes::from(vec![7u8; JOIN_BELOW * 2]);
        ours.send(&Frame::Data(payload.clone())).await.unwrap();
        assert_eq!(theirs.recv().await.unwrap(), Some(Frame::Data(payload)));
        theirs.send(&Frame::Fin).await.unwrap();
        assert_eq!(ours.recv().await.unwrap(), Some(Frame::Fin));
        assert_eq!(counters.get(), (5, 5 + 2 * JOIN_BELOW as u64));

        let closing = tokio::spawn(async move {
            close_link(&mut ours, CloseCode::Normal, "").await;
        });
        assert_eq!(theirs.recv().await.unwrap(), None);
        assert_eq!(theirs.rx.close_frame().map(|c| c.0), Some(1000));
        // Reading on flushes tungstenite's close answer, which ends the
        // drain at once instead of after LINGER.
        assert_eq!(theirs.rx.recv().await.unwrap(), None);
        tokio::time::timeout(LINGER - Duration::from_secs(5), closing)
            .await
            .expect("the close answer ended the drain")
            .unwrap();
    }
}
