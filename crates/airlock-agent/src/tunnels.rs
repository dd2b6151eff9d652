//! The agent's end of resumable tunnels (`airlock-resume.v1`, see
//! [`airlock_tunnel::resume`]).
//!
//! The agent owns the runner-side TCP connection and its replay buffer.
//! When the gateway's connection to us breaks, the tunnel stays here,
//! detached, for the grace period ([`AgentConfig::tunnel_grace`]); a resume
//! (`HELLO` with the tunnel id, through `GET /v1/sessions/{id}/connect?
//! resume=1`) reattaches it. After the grace period the runner connection
//! is closed. Tunnel ids are 128 random bits and bound to their session: a
//! resume through another session's path is answered as if the id were
//! unknown.
//!
//! [`AgentConfig::tunnel_grace`]: crate::AgentConfig::tunnel_grace

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use airlock_tunnel::resume::{
    Config, Detach, ERR_CONNECT, ERR_UNKNOWN, Endpoint, Frame, Link, LinkRx, LinkTx, StreamRx,
    StreamTx, TunnelId,
};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::Agent;

/// How long a new attachment may take to say HELLO.
const HELLO_TIMEOUT: Duration = Duration::from_secs(20);

/// Most detached tunnels kept per session (the oldest goes first): bounds
/// what clients that open and drop tunnels can leave behind (attached ones
/// are bounded by the gateway's tunnel permits).
pub const MAX_DETACHED_PER_SESSION: usize = 16;

/// Live resumable tunnels, attached or waiting for their client.
#[derive(Debug, Default)]
pub struct Tunnels {
    map: Mutex<HashMap<TunnelId, Arc<Entry>>>,
}

#[derive(Debug)]
struct Entry {
    session: String,
    ep: Endpoint,
    attach: Mutex<Attachment>,
}

/// Who holds a resumable tunnel now.
#[derive(Debug)]
struct Attachment {
    /// Counts attachments, so that a detach or an expiry acts only on the
    /// attachment it was started for.
    generation: u64,
    /// Whether a client is attached.
    attached: bool,
    /// When it was last attached or detached.
    since: Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn short(id: &TunnelId) -> String {
    // Enough to tell tunnels apart in logs, far too little to resume one.
    hex::encode(&id[..3])
}

impl Tunnels {
    /// How many tunnels exist (attached or not).
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn find(&self, id: &TunnelId, session: &str) -> Option<Arc<Entry>> {
        lock(&self.map)
            .get(id)
            .filter(|e| e.session == session)
            .cloned()
    }

    fn remove(&self, id: &TunnelId, entry: &Arc<Entry>) {
        let mut m = lock(&self.map);
        if m.get(id).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            m.remove(id);
        }
    }

    /// Drops the oldest detached tunnels of `session` beyond
    /// [`MAX_DETACHED_PER_SESSION`].
    fn trim(&self, session: &str) {
        let mut m = lock(&self.map);
        let mut detached: Vec<(Instant, TunnelId)> = m
            .iter()
            .filter(|(_, e)| e.session == session)
            .filter_map(|(id, e)| {
                let a = lock(&e.attach);
                (!a.attached).then_some((a.since, *id))
            })
            .collect();
        if detached.len() > MAX_DETACHED_PER_SESSION {
            detached.sort();
            let extra = detached.len() - MAX_DETACHED_PER_SESSION;
            for (_, id) in detached.into_iter().take(extra) {
                m.remove(&id);
                tracing::info!(session, tunnel = %short(&id), "dropped a detached tunnel (too many)");
            }
        }
    }

    /// Ends every tunnel of a session (it is being removed).
    pub fn drop_session(&self, session: &str) {
        lock(&self.map).retain(|_, e| e.session != session);
    }
}

/// Serves one attachment of a resumable tunnel to `session_id` over
/// `stream` (the gateway's upgraded connection).
/// `origin` is the client connection the gateway serves with it (for the
/// audit trail), remembered with a new tunnel's runner connection.
pub async fn serve<S>(
    agent: Arc<Agent>,
    session_id: String,
    stream: S,
    origin: Option<airlock_proto::agent::TunnelOrigin>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let mut link = Link::new(StreamRx::new(rd), StreamTx(wr));
    serve_link(&agent, &session_id, &mut link, origin.as_ref()).await;
}

/// [`serve`] over any transport (the client's WebSocket itself, for the
/// embedded agent of `airlockd up`); the caller closes the link after.
pub async fn serve_link<Rx: LinkRx, Tx: LinkTx>(
    agent: &Arc<Agent>,
    session_id: &str,
    link: &mut Link<Rx, Tx>,
    origin: Option<&airlock_proto::agent::TunnelOrigin>,
) {
    let (id, peer_received, peer_fin) = match tokio::time::timeout(HELLO_TIMEOUT, link.recv()).await
    {
        Ok(Ok(Some(Frame::Hello {
            id, received, fin, ..
        }))) => (id, received, fin),
        other => {
            tracing::debug!(session = %session_id, ?other, "tunnel: no HELLO");
            return;
        }
    };
    let grace = agent.config().tunnel_grace;
    let tunnels = &agent.tunnels;
    let (id, entry) = if id == TunnelId::default() {
        let tcp = match agent.connect(session_id).await {
            Ok(t) => t,
            Err(e) => {
                refuse(link, ERR_CONNECT, &e.to_string()).await;
                return;
            }
        };
        agent.note_origin(session_id, &tcp, origin);
        let (r, w) = tcp.into_split();
        let id: TunnelId = rand::random();
        let entry = Arc::new(Entry {
            session: session_id.to_owned(),
            ep: Endpoint::new(r, w, Config::default()),
            attach: Mutex::new(Attachment {
                generation: 0,
                attached: false,
                since: Instant::now(),
            }),
        });
        lock(&tunnels.map).insert(id, entry.clone());
        tracing::info!(session = %session_id, tunnel = %short(&id), "resumable tunnel opened");
        (id, entry)
    } else {
        match tunnels.find(&id, session_id) {
            Some(e) => {
                tracing::info!(session = %session_id, tunnel = %short(&id), "tunnel resumed");
                (id, e)
            }
            None => {
                refuse(
                    link,
                    ERR_UNKNOWN,
                    "the tunnel is gone (it ended, or waited longer than the grace period)",
                )
                .await;
                return;
            }
        }
    };
    let generation = {
        let mut a = lock(&entry.attach);
        a.generation += 1;
        a.attached = true;
        a.since = Instant::now();
        a.generation
    };
    let detach = match link.send(&entry.ep.hello(id, grace)).await {
        Ok(()) => entry.ep.attach(link, peer_received, peer_fin).await,
        Err(e) => Detach::Broken(e.to_string()),
    };
    match detach {
        Detach::Replaced => {}
        Detach::Broken(reason) => {
            {
                let mut a = lock(&entry.attach);
                if a.generation == generation {
                    a.attached = false;
                    a.since = Instant::now();
                }
            }
            tunnels.trim(session_id);
            tracing::info!(session = %session_id, tunnel = %short(&id), %reason, "tunnel detached; waiting for its client");
            let expiring = agent.clone();
            agent.spawn_until_shutdown(async move {
                tokio::time::sleep(grace).await;
                let expired = {
                    let a = lock(&entry.attach);
                    a.generation == generation && !a.attached
                };
                if expired {
                    expiring.tunnels.remove(&id, &entry);
                    tracing::info!(session = %entry.session, tunnel = %short(&id), "tunnel expired (its client did not come back)");
                }
            });
        }
        other => {
            tunnels.remove(&id, &entry);
            link.tx.shutdown().await;
            tracing::info!(session = %session_id, tunnel = %short(&id), end = ?other, "resumable tunnel closed");
        }
    }
}

async fn refuse<Rx: LinkRx, Tx: LinkTx>(link: &mut Link<Rx, Tx>, code: u16, reason: &str) {
    tracing::info!(code, reason, "tunnel refused");
    let _ = link
        .send(&Frame::Error {
            code,
            reason: reason.to_owned(),
        })
        .await;
    link.tx.shutdown().await;
}
