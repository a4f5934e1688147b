//! Access keys for signed requests: those of the configuration (`[[http.access_key]]`) and
//! those made through the API, kept in `access_keys.json` next to the dashboard file
//! (written atomically, mode 0600: the secrets must be kept to check signatures).
//!
//! ```text
//! POST   /api/v1/access-keys         {"description"} (optional) -> 201 {"id","secret",...}
//!                                    (the secret is shown this once)
//! GET    /api/v1/access-keys         {"access_keys":[{"id","description","created","source"}]}
//! DELETE /api/v1/access-keys/{id}    204; 409 for a key of the configuration
//! ```
//!
//! These routes need an operator: HTTP Basic credentials or a signed request (anonymous
//! requests only on a listener without a password file, where anonymous is the operator).

use std::path::PathBuf;
use std::sync::RwLock;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use crate::api::{ApiError, AppState, json_response};
use crate::auth::Caller;
use crate::{AccessKey, HttpConfig, HttpError};

/// A key made through the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    id: String,
    secret: String,
    #[serde(default)]
    description: String,
    /// ms since the epoch.
    created: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<StoredKey>,
}

/// Every access key.
pub(crate) struct Keys {
    config: Vec<AccessKey>,
    file: Option<PathBuf>,
    api: RwLock<Vec<StoredKey>>,
    saving: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("config", &self.config.len())
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// Where keys made through the API are kept: `access_keys.json` beside the dashboard file.
fn file_of(config: &HttpConfig) -> Option<PathBuf> {
    let dash = config.dashboard_file.as_ref()?;
    let dir = dash.parent().map(PathBuf::from).unwrap_or_default();
    Some(dir.join("access_keys.json"))
}

/// 32 random hex digits; 500 when the system has no randomness to give.
fn random_hex(what: &str) -> Result<String, ApiError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot make the {what}: no randomness: {e}"),
        )
    })?;
    Ok(super::sign::hex(&b))
}

impl Keys {
    pub(crate) async fn load(config: &HttpConfig) -> Result<Keys, HttpError> {
        let file = file_of(config);
        let mut api = Vec::new();
        if let Some(path) = &file {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let parsed: KeyFile =
                        serde_json::from_slice(&bytes).map_err(|e| HttpError::AccessKeyFile {
                            path: path.clone(),
                            reason: e.to_string(),
                        })?;
                    api = parsed.keys;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(HttpError::AccessKeyFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        Ok(Keys {
            config: config.access_keys.clone(),
            file,
            api: RwLock::new(api),
            saving: tokio::sync::Mutex::new(()),
        })
    }

    #[cfg(test)]
    pub(crate) fn for_test(keys: &[(&str, &str)]) -> Keys {
        Keys {
            config: keys
                .iter()
                .map(|(id, secret)| AccessKey {
                    id: (*id).to_owned(),
                    secret: (*secret).to_owned(),
                })
                .collect(),
            file: None,
            api: RwLock::new(Vec::new()),
            saving: tokio::sync::Mutex::new(()),
        }
    }

    /// The secret of key `id`.
    pub(crate) fn secret(&self, id: &str) -> Option<String> {
        if let Some(k) = self.config.iter().find(|k| k.id == id) {
            return Some(k.secret.clone());
        }
        self.api
            .read()
            .ok()?
            .iter()
            .find(|k| k.id == id)
            .map(|k| k.secret.clone())
    }

    fn snapshot(&self) -> Vec<StoredKey> {
        self.api.read().map(|k| k.clone()).unwrap_or_default()
    }

    /// Saves `keys` (when there is a file), then makes them the ones in force.
    async fn save(&self, keys: Vec<StoredKey>) -> Result<(), ApiError> {
        if let Some(path) = self.file.clone() {
            let text = serde_json::to_vec_pretty(&KeyFile { keys: keys.clone() })
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            crate::api::save_file(&path, text, "the access keys were").await?;
        }
        if let Ok(mut k) = self.api.write() {
            *k = keys;
        }
        Ok(())
    }
}

/// 401 unless the caller is an operator.
fn operator(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Key(_) | Caller::User(_) => Ok(()),
        Caller::Anonymous if !state.0.auth.has_passwords() => Ok(()),
        Caller::Anonymous => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "access keys are managed by an operator: send HTTP Basic credentials or sign the request with an access key",
        )),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    #[serde(default)]
    description: String,
}

/// `POST /api/v1/access-keys`.
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    operator(&state, &caller)?;
    let new: NewKey = if body.iter().all(u8::is_ascii_whitespace) {
        NewKey::default()
    } else {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().starts_with("application/json"));
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))?
    };
    if new.description.len() > 1024 {
        return Err(ApiError::bad_request("description: at most 1024 bytes"));
    }
    let keys = &state.0.keys;
    let _one_at_a_time = keys.saving.lock().await;
    let key = StoredKey {
        id: random_hex("key id")?,
        secret: random_hex("secret")?,
        description: new.description,
        created: crate::time::now_ms(),
    };
    let mut all = keys.snapshot();
    all.push(key.clone());
    keys.save(all).await?;
    info!(id = %key.id, by = %caller, "access key made");
    Ok(json_response(
        StatusCode::CREATED,
        &json!({
            "id": key.id,
            "secret": key.secret,
            "description": key.description,
            "created": key.created,
            "source": "api",
        }),
    ))
}

/// `GET /api/v1/access-keys`: never the secrets.
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    operator(&state, &caller)?;
    let keys = &state.0.keys;
    let mut out: Vec<serde_json::Value> = keys
        .config
        .iter()
        .map(|k| json!({ "id": k.id, "description": "", "created": null, "source": "config" }))
        .collect();
    out.extend(keys.snapshot().into_iter().map(|k| {
        json!({ "id": k.id, "description": k.description, "created": k.created, "source": "api" })
    }));
    Ok(json_response(
        StatusCode::OK,
        &json!({ "access_keys": out }),
    ))
}

/// `DELETE /api/v1/access-keys/{id}`.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    operator(&state, &caller)?;
    let keys = &state.0.keys;
    if keys.config.iter().any(|k| k.id == id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("access key {id:?} comes from the configuration file: remove it there"),
        ));
    }
    let _one_at_a_time = keys.saving.lock().await;
    let mut all = keys.snapshot();
    let before = all.len();
    all.retain(|k| k.id != id);
    if all.len() == before {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no access key {id:?}"),
        ));
    }
    keys.save(all).await?;
    info!(id = %id, by = %caller, "access key revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}
