//! HTTP client for the gateway: session (cookie) or api (HMAC) mode, with
//! every failure turned into an `error:`/`hint:` pair.

use airlock_proto::problem::Problem;
use airlock_proto::sign::{self, SignedParts};
use reqwest::header::{CONTENT_TYPE, COOKIE, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::config::{Config, EndpointType};
use crate::error::{CliError, CliResult};
use crate::state::{Login, StateDir};

/// A request body.
#[derive(Debug)]
pub enum Body {
    /// No body (`text/plain`, empty, as the official client does).
    Empty,
    /// JSON.
    Json(Vec<u8>),
    /// Raw bytes with a content type.
    Raw(Vec<u8>, &'static str),
    /// A streamed body with a content type (uploads).
    Stream(reqwest::Body, String),
}

impl Body {
    /// Serialises `value` as JSON.
    pub fn json<T: Serialize>(value: &T) -> CliResult<Self> {
        serde_json::to_vec(value)
            .map(Body::Json)
            .map_err(|e| CliError::new(format!("cannot encode the request: {e}")))
    }

    fn content_type(&self) -> String {
        match self {
            Body::Empty => "text/plain".into(),
            Body::Json(_) => "application/json".into(),
            Body::Raw(_, ct) => (*ct).into(),
            Body::Stream(_, ct) => ct.clone(),
        }
    }
}

/// The gateway API client.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    tls: std::sync::Arc<rustls::ClientConfig>,
    config: Config,
    state: StateDir,
    login: Option<Login>,
}

/// The deepest cause of an error, for a short message.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

impl ApiClient {
    /// A client for `config`; the saved login is used if it belongs to the
    /// same endpoint.
    pub fn new(config: Config, state: StateDir) -> CliResult<Self> {
        // One trust configuration for REST and tunnels (system roots plus
        // AIRLOCK_CA_FILE).
        let tls = crate::tls::client_config(config.ca_file.as_deref())?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls.clone())
            .user_agent(concat!("airlock-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| CliError::new(format!("cannot create the HTTP client: {e}")))?;
        let login = state.login().filter(|l| l.endpoint == config.base());
        Ok(Self {
            http,
            tls: std::sync::Arc::new(tls),
            config,
            state,
            login,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The state directory.
    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// The underlying HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The TLS client configuration (for `wss://` tunnels).
    pub fn tls(&self) -> std::sync::Arc<rustls::ClientConfig> {
        self.tls.clone()
    }

    /// The saved login for this endpoint.
    pub fn login(&self) -> Option<&Login> {
        self.login.as_ref()
    }

    /// The URL for an API path (`/func` is prepended in session mode, except
    /// for `/server/…`).
    pub fn url(&self, path: &str) -> CliResult<Url> {
        let path = if self.config.endpoint_type == EndpointType::Session
            && !path.starts_with("/server/")
        {
            format!("/func{path}")
        } else {
            path.to_owned()
        };
        let mut base = self.config.endpoint.clone();
        let prefix = base.path().trim_end_matches('/').to_owned();
        let (p, q) = match path.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (path, None),
        };
        base.set_path(&format!("{prefix}{p}"));
        base.set_query(q.as_deref());
        Ok(base)
    }

    /// Authentication headers for a request to `url` (cookie or signature).
    pub fn auth_headers(
        &self,
        method: &Method,
        url: &Url,
        content_type: &str,
    ) -> CliResult<HeaderMap> {
        let mut headers = HeaderMap::new();
        let date = sign::format_date(chrono::Utc::now());
        let hv = |v: &str| {
            HeaderValue::from_str(v)
                .map_err(|_| CliError::new(format!("invalid header value {v:?}")))
        };
        headers.insert("X-BackendAI-Version", hv(airlock_proto::API_VERSION)?);
        headers.insert("X-BackendAI-Domain", hv("default")?);
        headers.insert("Date", hv(&date)?);
        match self.config.endpoint_type {
            EndpointType::Session => {
                if let Some(login) = &self.login {
                    headers.insert(
                        COOKIE,
                        hv(&format!(
                            "{}={}",
                            airlock_proto::SESSION_COOKIE,
                            login.cookie
                        ))?,
                    );
                }
            }
            EndpointType::Api => {
                let Some(kp) = &self.config.keypair else {
                    return Err(CliError::new(
                        "api mode needs an access key and a secret key",
                    ));
                };
                // Sign with the Host header the HTTP client will actually send
                // (no default port), not the endpoint as written.
                let host = match (url.host_str(), url.port()) {
                    (Some(h), Some(p)) => format!("{h}:{p}"),
                    (Some(h), None) => h.to_owned(),
                    _ => String::new(),
                };
                let target = match url.query() {
                    Some(q) => format!("{}?{q}", url.path()),
                    None => url.path().to_owned(),
                };
                let parts = SignedParts {
                    method: method.as_str(),
                    target: &target,
                    date: &date,
                    host: &host,
                    content_type,
                    api_version: airlock_proto::API_VERSION,
                };
                let sig = parts
                    .sign(&kp.secret_key)
                    .map_err(|e| CliError::new(format!("cannot sign the request: {e}")))?;
                headers.insert(
                    reqwest::header::AUTHORIZATION,
                    hv(&sign::authorization_header(&kp.access_key, &sig))?,
                );
            }
        }
        Ok(headers)
    }

    /// A request with authentication and body set.
    pub fn request(&self, method: Method, path: &str, body: Body) -> CliResult<RequestBuilder> {
        let url = self.url(path)?;
        let ct = body.content_type();
        let headers = self.auth_headers(&method, &url, &ct)?;
        let builder = self
            .http
            .request(method, url)
            .headers(headers)
            .header(CONTENT_TYPE, ct);
        Ok(match body {
            Body::Empty => builder.body(Vec::new()),
            Body::Json(b) | Body::Raw(b, _) => builder.body(b),
            Body::Stream(b, _) => builder.body(b),
        })
    }

    /// Sends a request; non-2xx answers become errors.
    pub async fn send(&self, req: RequestBuilder) -> CliResult<Response> {
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.status_error(resp).await)
    }

    /// `method path` with a JSON (or empty) body, decoding a JSON answer.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Body,
    ) -> CliResult<T> {
        let resp = self.send(self.request(method, path, body)?).await?;
        let url = resp.url().clone();
        resp.json::<T>().await.map_err(|e| {
            CliError::new(format!("unexpected answer from {url}: {}", root_cause(&e)))
                .hint("is BACKEND_ENDPOINT the airlock gateway, and are the CLI and server versions compatible?")
        })
    }

    /// GET with JSON decoding.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> CliResult<T> {
        self.call(Method::GET, path, Body::Empty).await
    }

    /// Describes a failure to talk to the gateway at all.
    pub fn transport_error(&self, e: &reqwest::Error) -> CliError {
        let base = self.config.base();
        let reason = root_cause(e);
        let where_ = match &self.config.dotenv {
            Some(p) => format!("BACKEND_ENDPOINT (from {})", p.display()),
            None => "BACKEND_ENDPOINT".to_owned(),
        };
        if let Some(tls) = crate::tls::tls_failure(e) {
            return crate::tls::verification_error(&base, &tls);
        }
        if e.is_connect() || e.is_timeout() {
            CliError::new(format!(
                "cannot reach the airlock gateway at {base}: {reason}"
            ))
            .hint(format!("is `airlockd up` running there? check {where_}"))
        } else {
            CliError::new(format!("request to {base} failed: {reason}"))
                .hint(format!("check {where_} and your network"))
        }
    }

    /// Describes a non-2xx answer.
    pub async fn status_error(&self, resp: Response) -> CliError {
        let status = resp.status();
        let is_json = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.contains("json"));
        let problem = if is_json {
            resp.json::<Problem>().await.ok()
        } else {
            None
        };
        if status == StatusCode::UNAUTHORIZED {
            return match self.config.endpoint_type {
                EndpointType::Session if self.login.is_none() => {
                    CliError::new("you are not logged in").hint("run `airlock login`")
                }
                EndpointType::Session => {
                    CliError::new("your login has expired or was ended on the server")
                        .hint("run `airlock login` again")
                }
                EndpointType::Api => CliError::new(format!(
                    "the gateway rejected the request signature: {}",
                    problem.as_ref().map_or("unauthorized", |p| p.message())
                ))
                .hint(
                    problem
                        .as_ref()
                        .and_then(|p| p.hint.clone())
                        .unwrap_or_else(|| {
                            "check BACKEND_ACCESS_KEY and BACKEND_SECRET_KEY".into()
                        }),
                ),
            };
        }
        match problem {
            Some(p) => {
                let mut e = CliError::new(p.message().to_owned());
                if let Some(h) = p.hint {
                    e = e.hint(h);
                }
                e
            }
            None => CliError::new(format!(
                "the server at {} answered HTTP {status} without an API error body",
                self.config.base()
            ))
            .hint(format!(
                "is BACKEND_ENDPOINT the airlock gateway, and BACKEND_ENDPOINT_TYPE right (now '{}')?",
                self.config.endpoint_type.as_str()
            )),
        }
    }
}
