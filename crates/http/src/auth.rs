//! HTTP Basic authentication against a mosquitto-format password file. PBKDF2 is slow on
//! purpose (~150 ms), so it runs on the blocking pool, a few at a time; the password file
//! caches recent successes (see `midge_auth::PasswordFile`), so a browser sending the same
//! credentials with every request pays it once.
//!
//! A request signed with an access key (`bce-auth-v1`, see `tsdb::sign`) is judged by its
//! signature alone: right, it is an operator's (whatever `allow_anonymous` and `users` say);
//! wrong, expired or made with an unknown key, it is refused with 403 `AccessDenied`, even
//! where anonymous requests are served.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use midge_auth::PasswordFile;
use tokio::sync::Semaphore;
use tracing::warn;

use crate::api::{ApiError, AppState};
use crate::{HttpConfig, HttpError};

/// Who made a request (a request extension set by [`require`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// No credentials (an anonymous listener).
    Anonymous,
    /// A user of the password file, by HTTP Basic.
    User(String),
    /// A request signed with this access key.
    Key(String),
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Anonymous => f.write_str("anonymous"),
            Caller::User(u) => write!(f, "user {u}"),
            Caller::Key(k) => write!(f, "access key {k}"),
        }
    }
}

/// Password checks running at once (each can take a core for a while).
const PARALLEL_VERIFIES: usize = 2;

/// Who may use the HTTP listener.
pub(crate) struct Auth {
    anonymous: bool,
    /// Only these users may log in (`None`: every user of the file).
    users: Option<Vec<String>>,
    file: Option<PathBuf>,
    passwords: RwLock<Option<Arc<PasswordFile>>>,
    verifying: Arc<Semaphore>,
    /// Requests refused for missing or wrong credentials.
    pub(crate) refused: AtomicU64,
}

impl Auth {
    pub(crate) async fn load(config: &HttpConfig) -> Result<Auth, HttpError> {
        let passwords = match config.password_file.clone() {
            Some(path) => {
                let loaded = tokio::task::spawn_blocking(move || PasswordFile::load(&path))
                    .await
                    .map_err(|_| HttpError::NoPasswordFile)??;
                Some(Arc::new(loaded))
            }
            None if !config.allow_anonymous => return Err(HttpError::NoPasswordFile),
            None => None,
        };
        Ok(Auth {
            anonymous: config.allow_anonymous,
            users: config.users.clone(),
            file: config.password_file.clone(),
            passwords: RwLock::new(passwords),
            verifying: Arc::new(Semaphore::new(PARALLEL_VERIFIES)),
            refused: AtomicU64::new(0),
        })
    }

    /// Re-read the password file; on failure the one in force stays and the problem is
    /// returned.
    pub(crate) async fn reload(&self) -> Result<(), String> {
        let Some(path) = self.file.clone() else {
            return Ok(());
        };
        let loaded = tokio::task::spawn_blocking(move || PasswordFile::load(&path))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if let Ok(mut p) = self.passwords.write() {
            *p = Some(Arc::new(loaded));
        }
        Ok(())
    }

    /// Whether a password file is in force (then anonymous callers are not operators).
    pub(crate) fn has_passwords(&self) -> bool {
        self.passwords.read().map(|p| p.is_some()).unwrap_or(true)
    }

    /// Who made the request when it may go on; else the status (401 or 403) and why.
    async fn check(&self, headers: &HeaderMap) -> Result<Caller, (StatusCode, &'static str)> {
        let unauthorized = |why| (StatusCode::UNAUTHORIZED, why);
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return if self.anonymous {
                Ok(Caller::Anonymous)
            } else {
                Err(unauthorized("credentials required"))
            };
        };
        let current = self.passwords.read().ok().and_then(|p| p.clone());
        let Some(passwords) = current else {
            // anonymous, and nothing to check credentials against
            return Ok(Caller::Anonymous);
        };
        let (user, password) =
            basic(value).ok_or(unauthorized("malformed Authorization header"))?;
        let Ok(_permit) = self.verifying.acquire().await else {
            return Err(unauthorized("credentials cannot be checked now"));
        };
        let name = user.clone();
        let ok = tokio::task::spawn_blocking(move || passwords.verify(&name, password.as_bytes()))
            .await
            .unwrap_or(false);
        if !ok {
            warn!(username = %user, "HTTP login failed: bad username or password");
            return Err(unauthorized("bad username or password"));
        }
        match &self.users {
            Some(users) if !users.contains(&user) => {
                warn!(username = %user, "HTTP login refused: not one of [http] users");
                Err((StatusCode::FORBIDDEN, "this user may not use the HTTP API"))
            }
            _ => Ok(Caller::User(user)),
        }
    }
}

/// The user and password of a `Basic` Authorization header.
fn basic(value: &HeaderValue) -> Option<(String, String)> {
    let text = value.to_str().ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Middleware: every route but the health check needs the right credentials (when
/// anonymous access is off).
pub(crate) async fn require(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    if req.uri().path() == "/api/v1/health" || crate::share::granted(&req) {
        return next.run(req).await;
    }
    if let Some(auth) = crate::tsdb::sign::presented(&req) {
        let now = crate::time::now_ms().div_euclid(1000);
        return match crate::tsdb::sign::verify(&state.0.keys, &req, &auth, now) {
            Ok(key) => {
                req.extensions_mut().insert(Caller::Key(key));
                next.run(req).await
            }
            Err(why) => {
                state.0.auth.refused.fetch_add(1, Ordering::Relaxed);
                warn!(path = %req.uri().path(), reason = %why, "HTTP signed request refused");
                crate::tsdb::TsdbError::access_denied(why).into_response()
            }
        };
    }
    match state.0.auth.check(req.headers()).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err((status, why)) => {
            state.0.auth.refused.fetch_add(1, Ordering::Relaxed);
            let mut response = if req.uri().path().starts_with("/v1/") {
                crate::tsdb::TsdbError::new(status, "AccessDenied", why).into_response()
            } else {
                ApiError::new(status, why).into_response()
            };
            if status == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"midge\", charset=\"UTF-8\""),
                );
            }
            response
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_parsed() {
        let v = HeaderValue::from_static("Basic YWxpY2U6czNjcjp0"); // alice:s3cr:t
        assert_eq!(basic(&v), Some(("alice".into(), "s3cr:t".into())));
        for bad in ["Bearer abc", "Basic", "Basic !!!", "Basic YWxpY2U="] {
            assert_eq!(basic(&HeaderValue::from_static(bad)), None, "{bad}");
        }
    }
}
