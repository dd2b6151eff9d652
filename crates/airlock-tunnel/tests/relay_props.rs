//! Property tests of [`airlock_tunnel::relay`]: random message
//! and write chunking both ways, small socket buffers, and randomly slow
//! readers on either side always deliver every byte intact, in order, and
//! end cleanly. Time is tokio's paused clock, so "slow" costs no wall time
//! and a stall shows up as the deadline instead of a hung test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use airlock_tunnel::{relay, ws_config};
use futures_util::{SinkExt as _, StreamExt as _};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

/// Deadline per case beyond the readers' own pauses (virtual time: only a
/// real stall gets near it).
const DEADLINE: Duration = Duration::from_secs(600);

/// The case's deadline: [`DEADLINE`] plus the longest its readers can
/// legitimately sleep — each read takes at least one byte and pauses less
/// than 20 ms, so a reader of 18 bytes at a time with 16 ms pauses spends
/// over 600 s of virtual time on 675 KB (a case that once "stalled").
fn deadline(c: &Case) -> Duration {
    let bytes: usize = c.down.iter().chain(&c.up).sum();
    DEADLINE + Duration::from_millis(20 * bytes as u64)
}

/// The byte at `pos` of the stream numbered `seed` (distinct per direction,
/// so a crossed or reordered chunk is caught).
fn byte_at(seed: u64, pos: u64) -> u8 {
    let x = (pos ^ seed.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8
}

fn fill(seed: u64, from: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| byte_at(seed, from + i)).collect()
}

fn check(seed: u64, from: u64, got: &[u8]) {
    for (i, b) in got.iter().enumerate() {
        let pos = from + i as u64;
        assert_eq!(*b, byte_at(seed, pos), "stream {seed}: wrong byte at {pos}");
    }
}

/// How a reader behaves: read up to `n` bytes (or one message), then
/// maybe pause for `pause` ms of (virtual) time.
#[derive(Debug, Clone, Copy)]
struct Step {
    n: usize,
    pause: u64,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (
            prop_oneof![1usize..64, 64usize..8192, 8192usize..300_000],
            prop_oneof![3 => Just(0u64), 1 => 1u64..20],
        )
            .prop_map(|(n, pause)| Step { n, pause }),
        1..12,
    )
}

fn chunks() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![1usize..16, 16usize..4096, 4096usize..400_000],
        0..16,
    )
}

#[derive(Debug, Clone)]
struct Case {
    /// Binary message sizes the WebSocket peer sends.
    down: Vec<usize>,
    /// Write sizes the stream peer sends.
    up: Vec<usize>,
    /// How the stream peer reads.
    io_reader: Vec<Step>,
    /// How the WebSocket peer reads.
    ws_reader: Vec<Step>,
    /// Buffer of the in-memory link carrying the WebSocket.
    ws_buf: usize,
    /// Buffer of the in-memory stream.
    io_buf: usize,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        chunks(),
        chunks(),
        steps(),
        steps(),
        prop_oneof![512usize..4096, 4096usize..262_144],
        prop_oneof![64usize..4096, 4096usize..262_144],
    )
        .prop_map(|(down, up, io_reader, ws_reader, ws_buf, io_buf)| Case {
            down,
            up,
            io_reader,
            ws_reader,
            ws_buf,
            io_buf,
        })
}

const DOWN: u64 = 1;
const UP: u64 = 2;

async fn run_case(c: Case) {
    let down_total: usize = c.down.iter().sum();
    let up_total: usize = c.up.iter().sum();
    let (client_side, server_side) = tokio::io::duplex(c.ws_buf);
    let ws_server =
        WebSocketStream::from_raw_socket(server_side, Role::Server, Some(ws_config())).await;
    let ws_client =
        WebSocketStream::from_raw_socket(client_side, Role::Client, Some(ws_config())).await;
    let (io_ours, io_far) = tokio::io::duplex(c.io_buf);
    let relay_task = tokio::spawn(relay(ws_server, io_ours));
    let (mut sink, mut stream) = ws_client.split();
    let (mut far_rd, mut far_wr) = tokio::io::split(io_far);

    let ws_send = async {
        let mut pos = 0u64;
        for n in &c.down {
            let data = fill(DOWN, pos, *n);
            pos += *n as u64;
            sink.send(Message::Binary(data.into())).await.unwrap();
        }
    };
    let io_send = async {
        let mut pos = 0u64;
        for n in &c.up {
            let data = fill(UP, pos, *n);
            pos += *n as u64;
            far_wr.write_all(&data).await.unwrap();
        }
    };
    let io_recv = async {
        let mut got = 0usize;
        let mut buf = vec![0u8; 300_000];
        for s in c.io_reader.iter().cycle() {
            if got == down_total {
                break;
            }
            let want = s.n.min(down_total - got);
            let n = far_rd.read(&mut buf[..want]).await.unwrap();
            assert!(n > 0, "stream ended after {got} of {down_total} bytes");
            check(DOWN, got as u64, &buf[..n]);
            got += n;
            if s.pause > 0 {
                tokio::time::sleep(Duration::from_millis(s.pause)).await;
            }
        }
    };
    let ws_recv = async {
        let mut got = 0usize;
        for s in c.ws_reader.iter().cycle() {
            if got == up_total {
                break;
            }
            match stream.next().await {
                Some(Ok(Message::Binary(b))) => {
                    assert!(!b.is_empty(), "empty binary message");
                    check(UP, got as u64, &b);
                    got += b.len();
                }
                Some(Ok(_)) => {}
                other => panic!("websocket ended after {got} of {up_total} bytes: {other:?}"),
            }
            if s.pause > 0 {
                tokio::time::sleep(Duration::from_millis(s.pause)).await;
            }
        }
    };
    tokio::join!(ws_send, io_send, io_recv, ws_recv);

    // Everything arrived; the stream peer hangs up, the relay closes the
    // WebSocket with 1000 and ends.
    drop(far_wr);
    drop(far_rd);
    let mut close = None;
    while let Some(m) = stream.next().await {
        match m {
            Ok(Message::Close(f)) => close = f.map(|f| u16::from(f.code)),
            Ok(Message::Binary(b)) => panic!("{} unexpected bytes after the end", b.len()),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert_eq!(close, Some(1000), "relay must close with 1000 (Normal)");
    let stats = relay_task.await.unwrap();
    assert_eq!(stats.from_ws, down_total as u64);
    assert_eq!(stats.to_ws, up_total as u64);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn relay_delivers_every_byte_in_order(c in cases()) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(deadline(&c), run_case(c))
                .await
                .expect("the relay stalled (deadline passed in virtual time)");
        });
    }
}
