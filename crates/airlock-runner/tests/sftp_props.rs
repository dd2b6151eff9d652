//! Property tests of the runner's SFTP server, through a russh
//! client against the standalone server: random interleavings of small and
//! large pipelined WRITEs (an upload) and READs (a download), request bytes
//! arriving in random bursts, a small client receive window, and a reader
//! that randomly stops reading — every request is answered, in order, and
//! the bytes are intact on disk and in the replies. A stall (the class of
//! the psftp upload bug) fails the per-case deadline.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf as _, BufMut as _, BytesMut};
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use russh::ChannelMsg;
use tokio::sync::Semaphore;

/// A case fails as stalled when neither a request byte goes out nor a reply
/// comes in for this long. (Progress, not total time, is what is bounded: a
/// case of tiny paused bursts is slow but not stalled.)
const STALL: Duration = Duration::from_secs(20);
/// The most bursts a case sends its requests in: bursts are at least the
/// stream's length over this, so a case of tiny bursts and pauses still
/// ends in seconds.
const MAX_BURSTS: usize = 4096;
/// Size of the file the READs come from.
const SOURCE: usize = 3 << 20;
/// Largest READ/WRITE the server advertises (limits@openssh.com).
const MAX_RW: usize = 255 * 1024;

struct Client;

impl russh::client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

fn byte_at(pos: u64, seed: u64) -> u8 {
    ((pos ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

#[derive(Debug, Clone)]
enum Op {
    /// Append this many bytes to the uploaded file.
    Write(usize),
    /// Read this range of the source file.
    Read(u64, usize),
}

#[derive(Debug, Clone)]
struct Case {
    ops: Vec<Op>,
    /// Requests in flight before the client waits for a reply.
    depth: usize,
    /// The client's receive window (bounds the server's replies in flight).
    window: u32,
    /// Sizes of the bursts the request stream is sent in.
    bursts: Vec<usize>,
    /// Pause (ms) after a burst, cycled.
    send_pauses: Vec<u64>,
    /// Pause (ms) after reading a message, cycled.
    read_pauses: Vec<u64>,
    seed: u64,
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..512, 512usize..32_768, 32_768usize..=MAX_RW]
}

fn cases() -> impl Strategy<Value = Case> {
    let op = prop_oneof![
        size().prop_map(Op::Write),
        (0u64..SOURCE as u64, size()).prop_map(|(off, n)| Op::Read(off, n)),
    ];
    (
        prop::collection::vec(op, 1..48),
        prop_oneof![Just(1usize), 2usize..16, Just(10_000)],
        prop_oneof![2048u32..32_768, 32_768u32..(2 << 20)],
        prop::collection::vec(
            prop_oneof![1usize..64, 64usize..65_536, 65_536usize..1 << 20],
            1..8,
        ),
        prop::collection::vec(prop_oneof![4 => Just(0u64), 1 => 1u64..4], 1..6),
        prop::collection::vec(prop_oneof![4 => Just(0u64), 1 => 1u64..4], 1..6),
        any::<u64>(),
    )
        .prop_map(
            |(ops, depth, window, bursts, send_pauses, read_pauses, seed)| Case {
                ops,
                depth,
                window,
                bursts,
                send_pauses,
                read_pauses,
                seed,
            },
        )
}

fn packet(kind: u8, body: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u32(0);
    b.put_u8(kind);
    body(&mut b);
    let len = (b.len() - 4) as u32;
    b[..4].copy_from_slice(&len.to_be_bytes());
    b
}

fn put_str(b: &mut BytesMut, s: &[u8]) {
    b.put_u32(s.len() as u32);
    b.put_slice(s);
}

/// Reads SFTP packets from a channel.
struct Replies {
    rx: russh::ChannelReadHalf,
    buf: BytesMut,
    pauses: Vec<u64>,
    n: usize,
}

impl Replies {
    async fn next(&mut self) -> (u8, BytesMut) {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize;
                if self.buf.len() >= 4 + len {
                    self.buf.advance(4);
                    let mut p = self.buf.split_to(len);
                    let kind = p.get_u8();
                    return (kind, p);
                }
            }
            match self.rx.wait().await {
                Some(ChannelMsg::Data { data }) => self.buf.extend_from_slice(&data),
                Some(ChannelMsg::Success) | Some(ChannelMsg::WindowAdjusted { .. }) => {}
                Some(other) => {
                    if matches!(other, ChannelMsg::Eof | ChannelMsg::Close) {
                        panic!("the server ended the channel: {other:?}");
                    }
                }
                None => panic!("the channel closed"),
            }
            let p = self.pauses[self.n % self.pauses.len()];
            self.n += 1;
            if p > 0 {
                tokio::time::sleep(Duration::from_millis(p)).await;
            }
        }
    }
}

fn get_str(p: &mut BytesMut) -> BytesMut {
    let n = p.get_u32() as usize;
    p.split_to(n)
}

/// Counts request bytes sent and replies read; the watchdog reads it.
type Progress = Arc<std::sync::atomic::AtomicU64>;

fn step(p: &Progress) {
    p.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Runs the case; panics if it makes no progress for [`STALL`].
async fn run_case_watched(s: &Server, source: &[u8], name: &str, c: Case) {
    let progress = Progress::default();
    let watchdog = async {
        let mut last = (u64::MAX, tokio::time::Instant::now());
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = progress.load(std::sync::atomic::Ordering::Relaxed);
            if now != last.0 {
                last = (now, tokio::time::Instant::now());
            } else if last.1.elapsed() > STALL {
                return;
            }
        }
    };
    tokio::select! {
        () = run_case(s, source, name, c, &progress) => {}
        () = watchdog => panic!("the SFTP server stalled: no progress for {STALL:?}"),
    }
}

async fn run_case(s: &Server, source: &[u8], name: &str, c: Case, progress: &Progress) {
    let config = Arc::new(russh::client::Config {
        window_size: c.window,
        maximum_packet_size: 32_768,
        ..Default::default()
    });
    let mut h = russh::client::connect(config, ("127.0.0.1", s.port), Client)
        .await
        .unwrap();
    let key = russh::keys::load_secret_key(&s.key, None).unwrap();
    let auth = h
        .authenticate_publickey(
            s.user.clone(),
            russh::keys::PrivateKeyWithHashAlg::new(Arc::new(key), None),
        )
        .await
        .unwrap();
    assert!(auth.success(), "public key refused");
    let ch = h.channel_open_session().await.unwrap();
    ch.request_subsystem(true, "sftp").await.unwrap();
    let (rx, tx) = ch.split();
    let mut replies = Replies {
        rx,
        buf: BytesMut::new(),
        pauses: c.read_pauses.clone(),
        n: 0,
    };

    // INIT, then open the upload target and the source.
    tx.data(&packet(1, |b| b.put_u32(3))[..]).await.unwrap();
    assert_eq!(replies.next().await.0, 2, "expected VERSION");
    let open = |id: u32, path: &str, flags: u32| {
        packet(3, |b| {
            b.put_u32(id);
            put_str(b, path.as_bytes());
            b.put_u32(flags);
            b.put_u32(0);
        })
    };
    tx.data(&open(1, name, 2 | 8 | 0x10)[..]).await.unwrap();
    tx.data(&open(2, "source.bin", 1)[..]).await.unwrap();
    let mut handles = Vec::new();
    for id in [1u32, 2] {
        let (kind, mut p) = replies.next().await;
        assert_eq!(kind, 102, "expected HANDLE");
        assert_eq!(p.get_u32(), id);
        handles.push(get_str(&mut p).to_vec());
    }
    let (wh, rh) = (handles[0].clone(), handles[1].clone());

    // The pipelined requests, sent in random bursts; replies read (slowly)
    // at the same time.
    let mut expected_upload = Vec::new();
    let mut stream = BytesMut::new();
    let mut boundaries = Vec::new();
    for (i, op) in c.ops.iter().enumerate() {
        let id = 10 + i as u32;
        match op {
            Op::Write(n) => {
                let off = expected_upload.len() as u64;
                let data: Vec<u8> = (0..*n as u64).map(|k| byte_at(off + k, c.seed)).collect();
                stream.extend_from_slice(&packet(6, |b| {
                    b.put_u32(id);
                    put_str(b, &wh);
                    b.put_u64(off);
                    put_str(b, &data);
                }));
                expected_upload.extend_from_slice(&data);
            }
            Op::Read(off, n) => stream.extend_from_slice(&packet(5, |b| {
                b.put_u32(id);
                put_str(b, &rh);
                b.put_u64(*off);
                b.put_u32(*n as u32);
            })),
        }
        boundaries.push(stream.len());
    }
    let in_flight = Arc::new(Semaphore::new(c.depth));
    let min_burst = stream.len() / MAX_BURSTS;
    let sender = {
        let in_flight = in_flight.clone();
        let c = c.clone();
        async move {
            let mut sent = 0usize;
            let mut k = 0usize;
            let mut next_req = 0usize;
            while sent < stream.len() {
                let burst = c.bursts[k % c.bursts.len()].max(min_burst);
                let mut end = (sent + burst).min(stream.len());
                // One permit per request whose first byte goes out now; when
                // none is left, send up to that request first (so the ones
                // before it are complete and can be answered), then wait.
                let start = |j: usize| if j == 0 { 0 } else { boundaries[j - 1] };
                while next_req < boundaries.len() && start(next_req) < end {
                    if let Ok(p) = in_flight.try_acquire() {
                        p.forget();
                        next_req += 1;
                    } else if start(next_req) > sent {
                        end = start(next_req);
                    } else {
                        in_flight.acquire().await.unwrap().forget();
                        next_req += 1;
                    }
                }
                tx.data(&stream[sent..end]).await.unwrap();
                step(progress);
                sent = end;
                let p = c.send_pauses[k % c.send_pauses.len()];
                if p > 0 {
                    tokio::time::sleep(Duration::from_millis(p)).await;
                }
                k += 1;
            }
            tx
        }
    };
    let receiver = async {
        for (i, op) in c.ops.iter().enumerate() {
            let id = 10 + i as u32;
            let (kind, mut p) = replies.next().await;
            step(progress);
            in_flight.add_permits(1);
            assert_eq!(p.get_u32(), id, "replies must come in request order");
            match op {
                Op::Write(_) => {
                    assert_eq!(kind, 101, "expected STATUS for WRITE {id}");
                    assert_eq!(p.get_u32(), 0, "WRITE {id} failed");
                }
                Op::Read(off, n) => {
                    let off = *off as usize;
                    let want = (*n).min(SOURCE - off);
                    assert_eq!(kind, 103, "expected DATA for READ {id}");
                    let data = get_str(&mut p);
                    assert!(
                        !data.is_empty() && data.len() <= want,
                        "READ {id}: {} bytes for {want}",
                        data.len()
                    );
                    assert!(
                        data[..] == source[off..off + data.len()],
                        "READ {id} at {off}: wrong bytes"
                    );
                }
            }
        }
    };
    let (tx, ()) = tokio::join!(sender, receiver);

    // Close both handles; the upload is on disk, intact.
    tx.data(
        &packet(4, |b| {
            b.put_u32(3);
            put_str(b, &wh);
        })[..],
    )
    .await
    .unwrap();
    let (kind, mut p) = replies.next().await;
    assert_eq!(
        (kind, p.get_u32(), p.get_u32()),
        (101, 3, 0),
        "CLOSE failed"
    );
    let on_disk = std::fs::read(s.home.join(name)).unwrap();
    assert_eq!(on_disk.len(), expected_upload.len(), "uploaded size");
    assert!(on_disk == expected_upload, "uploaded bytes differ");
    let _ = tx.eof().await;
    let _ = h
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
}

#[test]
fn sftp_server_answers_every_pipelined_request_intact() {
    let s = Server::start_with(ServerOpts {
        log: Some("info,russh=warn".into()),
        ..Default::default()
    });
    let source: Vec<u8> = (0..SOURCE as u64).map(|k| byte_at(k, 0xA11)).collect();
    std::fs::write(s.home.join("source.bin"), &source).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The same cases every run, so CI is repeatable; AIRLOCK_PROPTEST_RANDOM=1
    // explores new ones. (The "stall" random runs once reported was this
    // test's own pace: 1 MB sent in 1-48 byte bursts with 1 ms pauses took
    // longer than the old fixed deadline while the server kept up; hence the
    // progress watchdog and the burst floor.)
    let config = Config {
        cases: 24,
        max_shrink_iters: 32,
        // A stalled case costs STALL; bound the whole shrink so a failure
        // is reported in minutes, not hung on.
        max_shrink_time: 120_000,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = if std::env::var_os("AIRLOCK_PROPTEST_RANDOM").is_some() {
        TestRunner::new(config)
    } else {
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
    };
    let n = std::cell::Cell::new(0u32);
    let result = runner.run(&cases(), |c| {
        n.set(n.get() + 1);
        let name = format!("up-{}.bin", n.get());
        rt.block_on(async {
            run_case_watched(&s, &source, &name, c).await;
        });
        let _ = std::fs::remove_file(s.home.join(&name));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\nserver log tail:\n{}", tail(&s.log_text(), 30));
    }
}
