//! Where the gateway is and how to authenticate: environment variables and a
//! `.env` file found from the current directory upward.
//!
//! Every setting is read as `AIRLOCK_<KEY>`, then `BACKEND_<KEY>` (the official
//! client's names, so one `.env` serves both tools). A variable set in the
//! environment wins over the same one in `.env`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use url::Url;

use crate::error::{CliError, CliResult};

/// Endpoint used when none is configured: a local `airlockd up`.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8090";

/// How requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointType {
    /// Login cookie, paths under `/func/` (Backend.AI's web server).
    Session,
    /// HMAC-signed with an access/secret keypair (Backend.AI's manager API).
    Api,
}

impl EndpointType {
    /// Config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointType::Session => "session",
            EndpointType::Api => "api",
        }
    }
}

/// The access/secret keypair for api mode.
#[derive(Clone)]
pub struct Keypair {
    /// Access key.
    pub access_key: String,
    /// Secret key (never printed).
    pub secret_key: String,
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keypair")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// Resolved client configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Gateway URL (no trailing slash in [`Config::endpoint_str`]).
    pub endpoint: Url,
    /// The endpoint exactly as configured (the login body is encrypted with it).
    pub endpoint_raw: String,
    /// Authentication mode.
    pub endpoint_type: EndpointType,
    /// Keypair (api mode).
    pub keypair: Option<Keypair>,
    /// Extra CA certificates (PEM) trusted besides the system's roots
    /// (`AIRLOCK_CA_FILE`), as an absolute path.
    pub ca_file: Option<PathBuf>,
    /// The `.env` file that was read, if any.
    pub dotenv: Option<PathBuf>,
}

/// A source of variables: the process environment plus a parsed `.env`.
#[derive(Debug, Default, Clone)]
pub struct Vars {
    env: HashMap<String, String>,
    file: HashMap<String, String>,
    dotenv: Option<PathBuf>,
}

impl Vars {
    /// Reads the process environment and the nearest `.env` above `cwd`.
    pub fn load(cwd: &Path) -> CliResult<Self> {
        let env = std::env::vars().collect();
        let mut vars = Vars {
            env,
            ..Vars::default()
        };
        if let Some(path) = find_dotenv(cwd) {
            vars.file = parse_dotenv(&path)?;
            vars.dotenv = Some(path);
        }
        Ok(vars)
    }

    /// Only the variables of an explicit env file (no search, no environment).
    pub fn load_file(path: &Path) -> CliResult<Self> {
        if !path.is_file() {
            return Err(CliError::new(format!("{} does not exist", path.display()))
                .hint("run `airlock config-ssh` again to recreate it"));
        }
        // An explicit file is authoritative: the environment is not read.
        Ok(Vars {
            env: HashMap::new(),
            file: parse_dotenv(path)?,
            dotenv: Some(path.to_owned()),
        })
    }

    /// Variables from explicit maps (tests).
    pub fn from_maps(env: HashMap<String, String>, file: HashMap<String, String>) -> Self {
        Vars {
            env,
            file,
            dotenv: None,
        }
    }

    fn raw(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .or_else(|| self.file.get(name))
            .map(String::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    /// `AIRLOCK_<key>` or `BACKEND_<key>`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.raw(&format!("AIRLOCK_{key}"))
            .or_else(|| self.raw(&format!("BACKEND_{key}")))
    }

    /// A path setting, made absolute: one from `.env` is relative to that
    /// file's directory, one from the environment to the working directory.
    pub fn get_path(&self, key: &str) -> CliResult<Option<PathBuf>> {
        let Some(raw) = self.get(key) else {
            return Ok(None);
        };
        let path = PathBuf::from(raw);
        if path.is_absolute() {
            return Ok(Some(path));
        }
        let in_env = [format!("AIRLOCK_{key}"), format!("BACKEND_{key}")]
            .iter()
            .any(|n| self.env.get(n).is_some_and(|v| !v.trim().is_empty()));
        let base = match (&self.dotenv, in_env) {
            (Some(file), false) => file.parent().map(Path::to_path_buf),
            _ => None,
        };
        let joined = match base {
            Some(dir) => dir.join(path),
            None => std::path::absolute(&path).map_err(|e| {
                CliError::new(format!("cannot make AIRLOCK_{key} {raw:?} absolute: {e}"))
            })?,
        };
        Ok(Some(joined))
    }
}

fn find_dotenv(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|d| d.join(".env"))
        .find(|p| p.is_file())
}

fn parse_dotenv(path: &Path) -> CliResult<HashMap<String, String>> {
    let iter = dotenvy::from_path_iter(path).map_err(|e| malformed(path, &e))?;
    let mut out = HashMap::new();
    for item in iter {
        let (k, v) = item.map_err(|e| malformed(path, &e))?;
        out.insert(k, v);
    }
    Ok(out)
}

fn malformed(path: &Path, e: &dotenvy::Error) -> CliError {
    let detail = match e {
        dotenvy::Error::LineParse(line, idx) => {
            format!("cannot parse {line:?} (at character {idx})")
        }
        other => other.to_string(),
    };
    CliError::new(format!("malformed .env file {}: {detail}", path.display()))
        .hint("each line must be NAME=value, e.g. BACKEND_ENDPOINT=http://127.0.0.1:8090")
}

impl Config {
    /// Resolves the configuration from `vars`.
    pub fn from_vars(vars: &Vars) -> CliResult<Self> {
        let raw = vars.get("ENDPOINT").unwrap_or(DEFAULT_ENDPOINT);
        // Backend.AI allows a comma-separated list; we use the first entry.
        let endpoint_raw = raw.split(',').next().unwrap_or(raw).trim().to_owned();
        let endpoint = Url::parse(&endpoint_raw).map_err(|e| {
            CliError::new(format!(
                "BACKEND_ENDPOINT {endpoint_raw:?} is not a valid URL: {e}"
            ))
            .hint("use the gateway address, e.g. BACKEND_ENDPOINT=http://127.0.0.1:8090")
        })?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
            return Err(CliError::new(format!(
                "BACKEND_ENDPOINT {endpoint_raw:?} must be an http:// or https:// URL"
            ))
            .hint("use the gateway address, e.g. BACKEND_ENDPOINT=http://127.0.0.1:8090"));
        }
        let keypair = match (vars.get("ACCESS_KEY"), vars.get("SECRET_KEY")) {
            (Some(a), Some(s)) => Some(Keypair {
                access_key: a.to_owned(),
                secret_key: s.to_owned(),
            }),
            _ => None,
        };
        let endpoint_type = match vars.get("ENDPOINT_TYPE").map(str::to_ascii_lowercase) {
            None => {
                if keypair.is_some() {
                    EndpointType::Api
                } else {
                    EndpointType::Session
                }
            }
            Some(t) if t == "session" => EndpointType::Session,
            Some(t) if t == "api" => EndpointType::Api,
            Some(t) => {
                return Err(CliError::new(format!(
                    "BACKEND_ENDPOINT_TYPE must be 'session' or 'api', not {t:?}"
                ))
                .hint("use 'session' to log in with email and password, 'api' for access keys"));
            }
        };
        if endpoint_type == EndpointType::Api && keypair.is_none() {
            return Err(CliError::new(
                "BACKEND_ENDPOINT_TYPE=api needs BACKEND_ACCESS_KEY and BACKEND_SECRET_KEY",
            )
            .hint("set both keys (see `airlockd user add`), or use BACKEND_ENDPOINT_TYPE=session and `airlock login`"));
        }
        Ok(Config {
            endpoint,
            endpoint_raw,
            endpoint_type,
            keypair,
            ca_file: vars.get_path("CA_FILE")?,
            dotenv: vars.dotenv.clone(),
        })
    }

    /// The endpoint without a trailing slash, for building URLs.
    pub fn base(&self) -> String {
        self.endpoint.as_str().trim_end_matches('/').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(file: &[(&str, &str)]) -> Vars {
        Vars::from_maps(
            HashMap::new(),
            file.iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        )
    }

    #[test]
    fn defaults_to_local_session() {
        let c = Config::from_vars(&vars(&[])).unwrap();
        assert_eq!(c.endpoint_type, EndpointType::Session);
        assert_eq!(c.base(), "http://127.0.0.1:8090");
    }

    #[test]
    fn airlock_names_win_and_env_beats_file() {
        let v = Vars::from_maps(
            [("BACKEND_ENDPOINT".to_owned(), "http://env:1".to_owned())].into(),
            [
                ("BACKEND_ENDPOINT".to_owned(), "http://file:1".to_owned()),
                ("AIRLOCK_ENDPOINT_TYPE".to_owned(), "API".to_owned()),
                ("BACKEND_ACCESS_KEY".to_owned(), "AK".to_owned()),
                ("BACKEND_SECRET_KEY".to_owned(), "SK".to_owned()),
            ]
            .into(),
        );
        let c = Config::from_vars(&v).unwrap();
        assert_eq!(c.base(), "http://env:1");
        assert_eq!(c.endpoint_type, EndpointType::Api);
    }

    #[test]
    fn rejects_bad_values() {
        assert!(Config::from_vars(&vars(&[("BACKEND_ENDPOINT_TYPE", "web")])).is_err());
        assert!(Config::from_vars(&vars(&[("BACKEND_ENDPOINT", "ftp://x")])).is_err());
        assert!(Config::from_vars(&vars(&[("BACKEND_ENDPOINT", "not a url")])).is_err());
        let e = Config::from_vars(&vars(&[("BACKEND_ENDPOINT_TYPE", "api")])).unwrap_err();
        assert!(e.message.contains("ACCESS_KEY"));
    }

    #[test]
    fn ca_file_is_absolute() {
        let mut v = vars(&[("AIRLOCK_CA_FILE", "certs/ca.pem")]);
        v.dotenv = Some(PathBuf::from("/home/u/project/.env"));
        let c = Config::from_vars(&v).unwrap();
        assert_eq!(
            c.ca_file,
            Some(PathBuf::from("/home/u/project/certs/ca.pem"))
        );
        let c = Config::from_vars(&vars(&[("AIRLOCK_CA_FILE", "/etc/ca.pem")])).unwrap();
        assert_eq!(c.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(Config::from_vars(&vars(&[])).unwrap().ca_file, None);
    }

    #[test]
    fn first_of_a_list() {
        let c =
            Config::from_vars(&vars(&[("BACKEND_ENDPOINT", "http://a:1, http://b:2")])).unwrap();
        assert_eq!(c.base(), "http://a:1");
    }

    #[test]
    fn malformed_dotenv_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".env"),
            "BACKEND_ENDPOINT=http://x\nthis is not valid\n",
        )
        .unwrap();
        let sub = dir.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        let e = Vars::load(&sub).unwrap_err();
        assert!(e.message.contains("malformed .env"), "{e:?}");
    }
}
