use super::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::io::DuplexStream;

type DLink =
    Link<StreamRx<tokio::io::ReadHalf<DuplexStream>>, StreamTx<tokio::io::WriteHalf<DuplexStream>>>;

fn link_pair(cap: usize) -> (DLink, DLink) {
    let (a, b) = tokio::io::duplex(cap);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    (
        Link::new(StreamRx::new(ar), StreamTx(aw)),
        Link::new(StreamRx::new(br), StreamTx(bw)),
    )
}

#[test]
fn frames_round_trip_in_any_split() {
    let frames = vec![
        Frame::Hello {
            id: [7; 16],
            received: 1 << 40,
            fin: true,
            grace_ms: 120_000,
        },
        Frame::Data(Bytes::from_static(b"hello world")),
        Frame::Data(Bytes::new()),
        Frame::Ack {
            received: 12345,
            fin: false,
        },
        Frame::Fin,
        Frame::Error {
            code: ERR_UNKNOWN,
            reason: "gone".into(),
        },
    ];
    let mut wire = BytesMut::new();
    for f in &frames {
        f.encode(&mut wire);
    }
    let wire = wire.freeze();
    for step in [1, 2, 3, 7, 64, wire.len()] {
        let mut dec = Decoder::default();
        let mut got = Vec::new();
        for at in (0..wire.len()).step_by(step) {
            dec.push(wire.slice(at..wire.len().min(at + step)));
            while let Some(f) = dec.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(
            joined_data(got),
            joined_data(frames.clone()),
            "split every {step} bytes"
        );
    }
}

/// `frames` with each run of DATA frames as one (and no empty one): the
/// decoder hands a payload on in the pieces it arrived in.
fn joined_data(frames: Vec<Frame>) -> Vec<Frame> {
    let mut out: Vec<Frame> = Vec::new();
    for f in frames {
        match (out.last_mut(), f) {
            (_, Frame::Data(d)) if d.is_empty() => {}
            (Some(Frame::Data(prev)), Frame::Data(d)) => {
                let mut b = BytesMut::from(&prev[..]);
                b.extend_from_slice(&d);
                *prev = b.freeze();
            }
            (_, f) => out.push(f),
        }
    }
    out
}

#[test]
fn data_payloads_are_slices_of_what_arrived() {
    let mut wire = BytesMut::new();
    Frame::Data(Bytes::from(vec![7u8; 1000])).encode(&mut wire);
    Frame::Ack {
        received: 5,
        fin: false,
    }
    .encode(&mut wire);
    let wire = wire.freeze();
    let mut dec = Decoder::default();
    dec.push(wire.slice(..600));
    let Some(Frame::Data(first)) = dec.next_frame().unwrap() else {
        panic!("no first piece")
    };
    assert_eq!(first.len(), 595);
    assert_eq!(first.as_ptr(), wire[HEADER..].as_ptr(), "not copied");
    assert_eq!(dec.next_frame().unwrap(), None);
    dec.push(wire.slice(600..));
    let Some(Frame::Data(rest)) = dec.next_frame().unwrap() else {
        panic!("no second piece")
    };
    assert_eq!(rest.len(), 405);
    assert_eq!(
        dec.next_frame().unwrap(),
        Some(Frame::Ack {
            received: 5,
            fin: false
        })
    );
    assert_eq!(dec.next_frame().unwrap(), None);
}

#[test]
fn encoded_frames_match_their_encoding() {
    for f in [
        Frame::Data(Bytes::from_static(b"payload")),
        Frame::Data(Bytes::new()),
        Frame::Fin,
        Frame::Ack {
            received: 9,
            fin: true,
        },
    ] {
        assert_eq!(f.clone().encoded().joined(), f.to_bytes());
    }
}

#[test]
fn bad_frames_are_protocol_errors() {
    let mut dec = Decoder::default();
    dec.push(Bytes::from_static(&[9, 0, 0, 0, 0]));
    assert!(dec.next_frame().is_err());
    let mut dec = Decoder::default();
    dec.push(Bytes::from_static(&[T_DATA, 0xff, 0, 0, 0]));
    assert!(dec.next_frame().is_err(), "oversized frames are refused");
    let mut dec = Decoder::default();
    dec.push(Bytes::from_static(&[T_ACK, 0, 0, 0, 2, 0, 0]));
    assert!(dec.next_frame().is_err());
}

#[test]
fn acks_free_the_replay_and_never_overrun() {
    let mut st = State::default();
    st.replay.push_back(Bytes::from_static(b"abcdef"));
    st.replay.push_back(Bytes::from_static(b"ghij"));
    st.end = 10;
    st.next = 10;
    assert!(st.ack(4, false).unwrap());
    assert_eq!(st.acked, 4);
    st.next = 4;
    assert_eq!(&st.chunk_at(100)[..], b"ef");
    st.next = 6;
    assert_eq!(&st.chunk_at(3)[..], b"ghi");
    assert!(!st.ack(3, false).unwrap(), "an old ack changes nothing");
    assert!(st.ack(11, false).is_err(), "acking unsent bytes is refused");
    st.local_eof = true;
    st.ack(10, true).unwrap();
    assert!(st.fin_acked);
    assert!(st.replay.is_empty());
}

/// The counts in the `HELLO` that `link` receives next.
async fn hello_counts<Rx: LinkRx, Tx: LinkTx>(link: &mut Link<Rx, Tx>) -> (u64, bool) {
    match link.recv().await.unwrap() {
        Some(Frame::Hello { received, fin, .. }) => (received, fin),
        other => panic!("no hello: {other:?}"),
    }
}

/// Attaches `a` and `b` over the two ends of one link for at most `cut`;
/// whether the tunnel is over.
async fn attach_both<R1, T1, R2, T2>(
    a: &Endpoint,
    b: &Endpoint,
    mut la: Link<R1, T1>,
    mut lb: Link<R2, T2>,
    cut: Duration,
) -> bool
where
    R1: LinkRx,
    T1: LinkTx,
    R2: LinkRx,
    T2: LinkTx,
{
    // The handshake: each side says what it has received.
    let (ha, hb) = (
        a.hello([1; 16], Duration::ZERO),
        b.hello([1; 16], Duration::ZERO),
    );
    la.send(&ha).await.unwrap();
    lb.send(&hb).await.unwrap();
    let (rb, fb) = hello_counts(&mut lb).await;
    let (ra, fa) = hello_counts(&mut la).await;
    let both = async { tokio::join!(a.attach(&mut la, ra, fa), b.attach(&mut lb, rb, fb)) };
    match tokio::time::timeout(cut, both).await {
        Ok((Detach::Done, Detach::Done)) => true,
        Ok((da, db)) => {
            assert!(
                matches!(da, Detach::Done | Detach::Broken(_))
                    && matches!(db, Detach::Done | Detach::Broken(_)),
                "{da:?} {db:?}"
            );
            a.is_done() && b.is_done()
        }
        Err(_) => false, // cut
    }
}

/// Sends `up` from A to B and `down` from B to A through endpoints whose
/// links are cut at random moments (mid-frame included), with slow local
/// readers, and checks both streams arrive intact and the tunnel ends.
async fn cut_and_resume(seed: u64, size: usize, buffer: usize) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let up: Vec<u8> = (0..size).map(|_| rng.random()).collect();
    let down: Vec<u8> = (0..size / 2).map(|_| rng.random()).collect();
    let cfg = Config {
        buffer,
        ..Config::default()
    };
    let (a_local, a_far) = tokio::io::duplex(rng.random_range(1..64 * 1024));
    let (b_local, b_far) = tokio::io::duplex(rng.random_range(1..64 * 1024));
    let (ar, aw) = tokio::io::split(a_local);
    let (br, bw) = tokio::io::split(b_local);
    let a = Endpoint::new(ar, aw, cfg.clone());
    let b = Endpoint::new(br, bw, cfg);

    // The far ends: write one stream in random pieces, read the other
    // slowly, then close.
    let far = |io: DuplexStream, send: Vec<u8>, expect: usize, seed: u64| async move {
        let mut rng = StdRng::seed_from_u64(seed);
        let (mut r, mut w) = tokio::io::split(io);
        let writer = async {
            let mut off = 0;
            while off < send.len() {
                let n = rng.random_range(1..=64 * 1024).min(send.len() - off);
                w.write_all(&send[off..off + n]).await.unwrap();
                off += n;
            }
            w.shutdown().await.unwrap();
        };
        let mut rng2 = StdRng::seed_from_u64(seed ^ 1);
        let reader = async {
            let mut got = Vec::with_capacity(expect);
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let want = rng2.random_range(1..=buf.len());
                let n = r.read(&mut buf[..want]).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                if rng2.random_range(0..8) == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            got
        };
        let ((), got) = tokio::join!(writer, reader);
        got
    };
    let fa = tokio::spawn(far(a_far, up.clone(), down.len(), seed ^ 2));
    let fb = tokio::spawn(far(b_far, down.clone(), up.len(), seed ^ 3));

    let mut attaches = 0;
    loop {
        attaches += 1;
        assert!(attaches < 2000, "no progress");
        let cut = Duration::from_micros(rng.random_range(100..20_000));
        // Over a byte stream (to a remote agent) or a WebSocket (the
        // CLI's link, and the embedded agent's), chosen per attachment.
        let over = if rng.random_bool(0.5) {
            let (la, lb) = link_pair(rng.random_range(64..256 * 1024));
            attach_both(&a, &b, la, lb, cut).await
        } else {
            let (server, client) = crate::tests::ws_pair().await;
            let la = crate::ws::ws_link(client, Default::default());
            let lb = crate::ws::ws_link(server, Default::default());
            attach_both(&a, &b, la, lb, cut).await
        };
        if over {
            break;
        }
    }
    let got_at_b = tokio::time::timeout(Duration::from_secs(30), fb)
        .await
        .unwrap()
        .unwrap();
    let got_at_a = tokio::time::timeout(Duration::from_secs(30), fa)
        .await
        .unwrap()
        .unwrap();
    assert!(got_at_b == up, "seed {seed}: A→B stream differs");
    assert!(got_at_a == down, "seed {seed}: B→A stream differs");
    attaches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_cuts_always_deliver_the_exact_streams() {
    let started = std::time::Instant::now();
    let mut big_attaches = 0;
    for seed in 0..24u64 {
        let size = [0, 1, 1000, 300_000, 2_000_000][seed as usize % 5];
        let buffer = [4096, 64 * 1024, 1 << 20][seed as usize % 3];
        let n = tokio::time::timeout(Duration::from_secs(60), cut_and_resume(seed, size, buffer))
            .await
            .unwrap_or_else(|_| panic!("seed {seed} hung"));
        if size == 2_000_000 {
            assert!(n > 1, "seed {seed}: never cut");
            big_attaches += n;
        }
    }
    eprintln!(
        "24 cases in {:?}, {big_attaches} attachments for the large ones",
        started.elapsed()
    );
}

#[tokio::test]
async fn uninterrupted_tunnel_delivers_and_ends() {
    cut_and_resume_never(5_000_000).await;
}

async fn cut_and_resume_never(size: usize) {
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let (a_local, mut a_far) = tokio::io::duplex(1 << 16);
    let (b_local, mut b_far) = tokio::io::duplex(1 << 16);
    let (ar, aw) = tokio::io::split(a_local);
    let (br, bw) = tokio::io::split(b_local);
    let a = Endpoint::new(ar, aw, Config::default());
    let b = Endpoint::new(br, bw, Config::default());
    let (mut la, mut lb) = link_pair(1 << 16);
    let writer = {
        let data = data.clone();
        tokio::spawn(async move {
            a_far.write_all(&data).await.unwrap();
            a_far.shutdown().await.unwrap();
            let mut rest = Vec::new();
            a_far.read_to_end(&mut rest).await.unwrap();
            rest
        })
    };
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        b_far.read_to_end(&mut got).await.unwrap();
        b_far.write_all(b"bye").await.unwrap();
        b_far.shutdown().await.unwrap();
        got
    });
    let (da, db) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(a.attach(&mut la, 0, false), b.attach(&mut lb, 0, false))
    })
    .await
    .unwrap();
    assert_eq!((da, db), (Detach::Done, Detach::Done));
    assert!(reader.await.unwrap() == data);
    assert_eq!(writer.await.unwrap(), b"bye");
}

#[tokio::test]
async fn a_newer_attach_replaces_the_old_one() {
    let (a_local, _a_far) = tokio::io::duplex(1024);
    let (ar, aw) = tokio::io::split(a_local);
    let a = Endpoint::new(ar, aw, Config::default());
    let (mut l1, _p1) = link_pair(1024);
    let (mut l2, mut p2) = link_pair(1024);
    let first = a.attach(&mut l1, 0, false);
    tokio::pin!(first);
    // Let the first one start.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut first)
            .await
            .is_err()
    );
    let second = a.attach(&mut l2, 0, false);
    tokio::pin!(second);
    let d1 = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::select! {
            d = &mut first => d,
            _ = &mut second => panic!("the second ended first"),
        }
    })
    .await
    .unwrap();
    assert_eq!(d1, Detach::Replaced);
    // The second one works: a peer error ends it.
    p2.send(&Frame::Error {
        code: ERR_UNKNOWN,
        reason: "x".into(),
    })
    .await
    .unwrap();
    let d2 = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .unwrap();
    assert_eq!(
        d2,
        Detach::Refused {
            code: ERR_UNKNOWN,
            reason: "x".into()
        }
    );
}

#[tokio::test]
async fn a_peer_claiming_unsent_bytes_is_refused() {
    let (a_local, _a_far) = tokio::io::duplex(1024);
    let (ar, aw) = tokio::io::split(a_local);
    let a = Endpoint::new(ar, aw, Config::default());
    let (mut l, mut p) = link_pair(1024);
    let d = a.attach(&mut l, 99, false).await;
    assert!(
        matches!(d, Detach::Failed(ref r) if r.contains("protocol")),
        "{d:?}"
    );
    assert!(matches!(
        p.recv().await.unwrap(),
        Some(Frame::Error {
            code: ERR_PROTOCOL,
            ..
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_silent_link_is_declared_dead() {
    let (a_local, _a_far) = tokio::io::duplex(1024);
    let (ar, aw) = tokio::io::split(a_local);
    let a = Endpoint::new(ar, aw, Config::client());
    let (mut l, _p) = link_pair(1024);
    let d = a.attach(&mut l, 0, false).await;
    assert!(
        matches!(d, Detach::Broken(ref r) if r.contains("no answer")),
        "{d:?}"
    );
}

/// A local peer that writes in blocking style — it reads nothing until
/// its whole write is taken (PuTTY's psftp on a ProxyCommand pipe) —
/// while the far side answers every 32 KiB with 1 KiB (SFTP status
/// replies). The answers must not hold up the ACKs behind them: this
/// deadlocked when the receiving loop waited on the local write.
#[tokio::test]
async fn a_blocking_local_writer_does_not_deadlock() {
    const UP: usize = 16 << 20;
    let cfg = Config {
        buffer: 1 << 20,
        ..Config::default()
    };
    let (a_local, a_far) = tokio::io::duplex(64 * 1024);
    let (b_local, b_far) = tokio::io::duplex(64 * 1024);
    let (ar, aw) = tokio::io::split(a_local);
    let (br, bw) = tokio::io::split(b_local);
    let a = Endpoint::new(ar, aw, cfg.clone());
    let b = Endpoint::new(br, bw, cfg);
    // psftp: write everything, then read the answers.
    let client = tokio::spawn(async move {
        let (mut r, mut w) = tokio::io::split(a_far);
        let data = vec![7u8; UP];
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
        let mut answers = Vec::new();
        r.read_to_end(&mut answers).await.unwrap();
        answers.len()
    });
    // The server: 1 KiB of answer per 32 KiB taken.
    let server = tokio::spawn(async move {
        let (mut r, mut w) = tokio::io::split(b_far);
        let mut buf = vec![0u8; 32 * 1024];
        let mut total = 0;
        loop {
            let mut got = 0;
            while got < buf.len() {
                let n = r.read(&mut buf[got..]).await.unwrap();
                if n == 0 {
                    break;
                }
                got += n;
            }
            if got == 0 {
                break;
            }
            total += got;
            w.write_all(&[1u8; 1024]).await.unwrap();
        }
        w.shutdown().await.unwrap();
        total
    });
    let (mut la, mut lb) = link_pair(256 * 1024);
    let ends = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(a.attach(&mut la, 0, false), b.attach(&mut lb, 0, false))
    })
    .await
    .expect("deadlocked: ACKs waited behind a local write");
    assert_eq!(ends, (Detach::Done, Detach::Done));
    assert_eq!(server.await.unwrap(), UP);
    assert_eq!(client.await.unwrap(), UP / 32);
}

#[test]
fn bulk_reads_reuse_slabs_once_every_slice_is_gone_and_quiet_lets_them_go() {
    let mut slabs = Slabs::default();
    let fill = |slabs: &mut Slabs| {
        let n = slabs.room(MAX_DATA);
        assert!(n > 0);
        slabs.current.resize(n, 1);
        slabs.current.split().freeze()
    };
    let first = fill(&mut slabs);
    let start = first.as_ptr();
    // Reads go on in the same slab…
    let second = fill(&mut slabs);
    assert_eq!(second.as_ptr(), start.wrapping_add(first.len()));
    // …and the next slab is a new one while slices of the first live.
    let third = fill(&mut slabs);
    assert!(third.as_ptr() < start || third.as_ptr() >= start.wrapping_add(SLAB));
    assert_eq!(&first[..3], &[1, 1, 1]);
    drop((first, second));
    let _fourth = fill(&mut slabs);
    // The first slab's slices are gone: it is read into again.
    assert_eq!(fill(&mut slabs).as_ptr(), start, "the slab was not reused");
    slabs.quiet();
    assert!(slabs.spare.is_empty() && slabs.current.capacity() == 0);
}

/// Attachments run on multi-threaded runtimes (`tokio::spawn`): the
/// future must stay `Send` (a lock guard held across an await would not).
#[tokio::test]
async fn an_attachment_is_send() {
    fn is_send<T: Send>(_: &T) {}
    let (a_local, _a_far) = tokio::io::duplex(1024);
    let (ar, aw) = tokio::io::split(a_local);
    let a = Endpoint::new(ar, aw, Config::default());
    let (mut l, _p) = link_pair(1024);
    is_send(&a.attach(&mut l, 0, false));
}

#[test]
fn slabs_are_reused_once_their_bytes_are_gone_even_when_filled_exactly() {
    let mut slabs = Slabs::default();
    let mut kept = Vec::new();
    for round in 0..10 {
        // Two reads of MAX_DATA fill a slab to the last byte.
        let n = slabs.room(MAX_DATA);
        assert_eq!(n, MAX_DATA);
        let mut buf = slabs.take();
        buf.extend_from_slice(&vec![round as u8; n]);
        let data = buf.split().freeze();
        slabs.restore(buf);
        // The first rounds' bytes stay alive (unacknowledged) for a while.
        kept.push(data);
        if kept.len() > 3 {
            kept.remove(0);
        }
    }
    // Ten reads, two per slab, at most four alive: three slabs suffice.
    assert!(slabs.fresh <= 3, "{} slabs allocated", slabs.fresh);
    drop(kept);
    slabs.quiet();
    assert!(slabs.is_empty());
}
