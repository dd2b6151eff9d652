//! Starts a gateway for one test and stops it on drop.

use std::net::SocketAddr;
use std::time::Duration;

use airlock_gateway::store::{NewUser, Role};
use airlock_gateway::{AppState, GatewayConfig, Store};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

/// Every test runs under this deadline.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub struct TestUser {
    pub email: String,
    pub password: String,
    pub access_key: String,
    pub secret_key: String,
}

pub struct Gateway {
    pub addr: SocketAddr,
    pub admin: TestUser,
    pub user: TestUser,
    pub store: Store,
    /// The gateway's state (to register in-process agents).
    pub state: AppState,
    shutdown: CancellationToken,
    served: Option<tokio::task::JoinHandle<Result<(), airlock_gateway::ServeError>>>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    pub async fn start() -> Self {
        Self::start_with(GatewayConfig::default()).await
    }

    pub async fn start_with(config: GatewayConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("t.db")).await.unwrap();
        let mut users = Vec::new();
        for (email, role) in [
            ("admin@test.local", Role::Admin),
            ("user@test.local", Role::User),
        ] {
            let password = format!("pw-{email}");
            let (_, kp) = store
                .create_user(NewUser {
                    email,
                    password: &password,
                    role,
                })
                .await
                .unwrap();
            users.push(TestUser {
                email: email.into(),
                password,
                access_key: kp.access_key.clone(),
                secret_key: kp.secret_key.clone(),
            });
        }
        let user = users.pop().unwrap();
        let admin = users.pop().unwrap();
        let shutdown = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let storage =
            airlock_gateway::HostStorage::new(dir.path().join("vfolders"), 1000, 1000).unwrap();
        let state = AppState::new(
            store.clone(),
            config,
            std::sync::Arc::new(storage),
            shutdown.clone(),
        );
        let served = tokio::spawn(airlock_gateway::serve(listener, state.clone()));
        Gateway {
            addr,
            admin,
            user,
            store,
            state,
            shutdown,
            served: Some(served),
            _dir: dir,
        }
    }

    /// GET `path` with the `Cookie` header `cookie` (`AIOHTTP_SESSION=…`),
    /// as JSON.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        cookie: impl AsRef<str>,
    ) -> T {
        client()
            .get(self.url(path))
            .header("Cookie", cookie.as_ref())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Shuts the gateway down and waits until `serve` has returned.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(served) = self.served.take() {
            tokio::time::timeout(Duration::from_secs(60), served)
                .await
                .expect("the gateway stops within a minute")
                .unwrap()
                .unwrap();
        }
    }

    /// The gateway's temporary data directory (folders live in `vfolders/`).
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The `Cookie` header for a login cookie value.
pub fn cookie_header(cookie: &str) -> String {
    format!("AIOHTTP_SESSION={cookie}")
}

/// Logs in with a plain JSON body and returns the cookie value.
pub async fn login(gw: &Gateway, email: &str, password: &str) -> String {
    let resp = client()
        .post(gw.url("/server/login"))
        .json(&serde_json::json!({"username": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .expect("a login cookie")
        .to_str()
        .unwrap()
        .to_owned();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["authenticated"], true, "{body}");
    cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("AIOHTTP_SESSION=")
        .unwrap()
        .to_owned()
}

/// Runs a test body under [`DEADLINE`].
pub async fn within<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(DEADLINE, f)
        .await
        .expect("test exceeded its deadline");
}

/// A client's WebSocket tunnel to a session.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

pub async fn open_tunnel(gw: &Gateway, cookie: &str, session: &str) -> Result<Ws, u16> {
    let mut req = format!(
        "ws://{}/stream/session/{session}/tcpproxy?app=sshd",
        gw.host()
    )
    .into_client_request()
    .unwrap();
    req.headers_mut()
        .insert("cookie", cookie_header(cookie).parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("tunnel handshake failed: {e}"),
    }
}

/// Sends bytes through a tunnel and expects them echoed (the tunnel is up).
pub async fn echo(ws: &mut Ws, text: &str) {
    ws.send(Message::Binary(text.as_bytes().to_vec().into()))
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < text.len() {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => got.extend_from_slice(&b),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("tunnel ended: {other:?}"),
        }
    }
    assert_eq!(got, text.as_bytes());
}
