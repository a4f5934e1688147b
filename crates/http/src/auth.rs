//! HTTP Basic authentication against a mosquitto-format password file. PBKDF2 is slow on
//! purpose (~150 ms), so it runs on the blocking pool, a few at a time; the password file
//! caches recent successes (see `midge_auth::PasswordFile`), so a browser sending the same
//! credentials with every request pays it once.
//!
//! A browser that opens a locked page (a `GET` asking for `text/html`, no `Authorization`)
//! is sent to `/login`, a small HTML form; a right username and password there start a
//! session: a random token in a cookie (`HttpOnly`, `SameSite=Strict`, `Secure` over HTTPS,
//! expiring after [`SESSION_TTL`]) that the API accepts as it accepts Basic credentials.
//! `/logout` ends it. A failed login is answered after [`FAILED_LOGIN_DELAY`] (and at most
//! [`PARALLEL_VERIFIES`] passwords are checked at once), so guessing is slow. Scripts (no
//! `Accept: text/html`) keep getting a JSON 401 with `WWW-Authenticate`.
//!
//! Device credentials (a username of the device registry) never open the operator API:
//! they are refused with 403 whatever the password files say; devices publish with
//! `POST /topics/{topic}` (see `ingest`), which checks them against the registry here.
//!
//! A request signed with an access key (`bce-auth-v1`, see `tsdb::sign`) is judged by its
//! signature alone: right, it is an operator's (whatever `allow_anonymous` and `users` say);
//! wrong, expired or made with an unknown key, it is refused with 403 `AccessDenied`, even
//! where anonymous requests are served.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use midge_auth::{PasswordFile, Registry};
use serde_json::json;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::api::{ApiError, AppState, json_response};
use crate::{HttpConfig, HttpError};

/// Who made a request (a request extension set by [`require`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// No credentials (an anonymous listener).
    Anonymous,
    /// A user of the password file, by HTTP Basic or a login session.
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

/// How long a login session lasts.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// How long a failed login (page or device) waits before it is answered.
pub(crate) const FAILED_LOGIN_DELAY: Duration = Duration::from_secs(1);

/// Most login sessions kept (the oldest is ended for a new one beyond it).
const MAX_SESSIONS: usize = 10_000;

/// The session cookie's name.
const COOKIE: &str = "midge_session";

/// A login session.
#[derive(Debug, Clone)]
struct Session {
    user: String,
    expires: Instant,
}

/// Who may use the HTTP listener.
pub(crate) struct Auth {
    anonymous: bool,
    /// Only these users may log in (`None`: every user of the file).
    users: Option<Vec<String>>,
    file: Option<PathBuf>,
    passwords: RwLock<Option<Arc<PasswordFile>>>,
    verifying: Arc<Semaphore>,
    /// Login sessions by token.
    sessions: Mutex<HashMap<String, Session>>,
    /// Whether the listener speaks HTTPS (the cookie is then `Secure`).
    https: bool,
    /// Requests refused for missing or wrong credentials.
    pub(crate) refused: AtomicU64,
}

/// Why [`Auth::reload`] kept the password file in force (each message names the file).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    #[error("HTTP password file: {0}")]
    File(#[from] midge_auth::PasswordFileError),
    #[error("HTTP password file: the reading task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Why a request may not go on: status and message.
type Refusal = (StatusCode, &'static str);

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
            sessions: Mutex::new(HashMap::new()),
            https: config.tls.is_some(),
            refused: AtomicU64::new(0),
        })
    }

    /// Re-read the password file; on failure the one in force stays and the problem is
    /// returned. Sessions of users no longer in the file end.
    pub(crate) async fn reload(&self) -> Result<(), ReloadError> {
        let Some(path) = self.file.clone() else {
            return Ok(());
        };
        let loaded = tokio::task::spawn_blocking(move || PasswordFile::load(&path)).await??;
        if let Ok(mut s) = self.sessions.lock() {
            s.retain(|_, v| loaded.contains_user(&v.user));
        }
        if let Ok(mut p) = self.passwords.write() {
            *p = Some(Arc::new(loaded));
        }
        Ok(())
    }

    /// Whether a password file is in force (then anonymous callers are not operators).
    pub(crate) fn has_passwords(&self) -> bool {
        self.passwords.read().map(|p| p.is_some()).unwrap_or(true)
    }

    /// Whether a user and password of the password file are right and the user may use
    /// the API.
    async fn verify(&self, user: &str, password: String) -> Result<(), Refusal> {
        let unauthorized = |why| (StatusCode::UNAUTHORIZED, why);
        let current = self.passwords.read().ok().and_then(|p| p.clone());
        let Some(passwords) = current else {
            return Err(unauthorized("this listener has no password file"));
        };
        let Ok(_permit) = self.verifying.acquire().await else {
            return Err(unauthorized("credentials cannot be checked now"));
        };
        let name = user.to_owned();
        let ok = tokio::task::spawn_blocking(move || passwords.verify(&name, password.as_bytes()))
            .await
            .unwrap_or(false);
        if !ok {
            warn!(username = %user, "HTTP login failed: bad username or password");
            return Err(unauthorized("bad username or password"));
        }
        match &self.users {
            Some(users) if !users.iter().any(|u| u == user) => {
                warn!(username = %user, "HTTP login refused: not one of [http] users");
                Err((StatusCode::FORBIDDEN, "this user may not use the HTTP API"))
            }
            _ => Ok(()),
        }
    }

    /// Who made the request when it may go on; else the status (401 or 403) and why.
    async fn check(
        &self,
        headers: &HeaderMap,
        registry: Option<&Arc<Registry>>,
    ) -> Result<Caller, Refusal> {
        let unauthorized = |why| (StatusCode::UNAUTHORIZED, why);
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            if let Some(user) = self.session_user(headers) {
                return Ok(Caller::User(user));
            }
            return if self.anonymous {
                Ok(Caller::Anonymous)
            } else {
                Err(unauthorized("credentials required"))
            };
        };
        let parsed = basic(value);
        if let (Some((user, _)), Some(r)) = (&parsed, registry)
            && r.knows(user)
        {
            warn!(username = %user, "HTTP request with device credentials refused: devices do not use the operator API");
            return Err((
                StatusCode::FORBIDDEN,
                "device credentials do not open the operator API (a device publishes with POST /topics/{topic})",
            ));
        }
        if !self.has_passwords() {
            // anonymous, and nothing to check credentials against
            return Ok(Caller::Anonymous);
        }
        let (user, password) = parsed.ok_or(unauthorized("malformed Authorization header"))?;
        self.verify(&user, password).await?;
        Ok(Caller::User(user))
    }

    /// The user of a live session named by the request's cookie.
    fn session_user(&self, headers: &HeaderMap) -> Option<String> {
        let token = cookie(headers, COOKIE)?;
        let mut sessions = self.sessions.lock().ok()?;
        match sessions.get(&token) {
            Some(s) if s.expires > Instant::now() => Some(s.user.clone()),
            Some(_) => {
                sessions.remove(&token);
                None
            }
            None => None,
        }
    }

    /// A new session for `user`: its token.
    fn start_session(&self, user: &str) -> Option<String> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).ok()?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let mut sessions = self.sessions.lock().ok()?;
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            token.clone(),
            Session {
                user: user.to_owned(),
                expires: now + SESSION_TTL,
            },
        );
        Some(token)
    }

    /// The device a request's Basic credentials sign in as (its username), for the device
    /// routes; else the answer to give (401 with `WWW-Authenticate`, or 403 for a disabled
    /// device). A failure is answered after [`FAILED_LOGIN_DELAY`].
    pub(crate) async fn device_login(
        &self,
        registry: &Arc<Registry>,
        headers: &HeaderMap,
    ) -> Result<String, Response> {
        let refuse = |status: StatusCode, why: String| {
            self.refused.fetch_add(1, Ordering::Relaxed);
            let mut r = ApiError::new(status, why).into_response();
            if status == StatusCode::UNAUTHORIZED {
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, crate::ingest::challenge());
            }
            r
        };
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "a device signs in with HTTP Basic: its username and secret".into(),
            ));
        };
        let Some((user, secret)) = basic(value) else {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "malformed Authorization header (HTTP Basic is expected)".into(),
            ));
        };
        let login = match self.verifying.acquire().await {
            Ok(_permit) => {
                let (r, name) = (registry.clone(), user.clone());
                tokio::task::spawn_blocking(move || r.login(&name, secret.as_bytes()))
                    .await
                    .unwrap_or(midge_auth::Login::BadSecret)
            }
            Err(_) => midge_auth::Login::BadSecret,
        };
        match login {
            midge_auth::Login::Accepted => Ok(user),
            midge_auth::Login::Disabled => {
                warn!(username = %user, "HTTP device publish refused: the device is disabled");
                Err(refuse(
                    StatusCode::FORBIDDEN,
                    format!("device {user:?} is disabled"),
                ))
            }
            midge_auth::Login::Unknown | midge_auth::Login::BadSecret => {
                warn!(username = %user, "HTTP device login failed: unknown device or wrong secret");
                tokio::time::sleep(FAILED_LOGIN_DELAY).await;
                Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    "unknown device or wrong secret (a device of the registry signs in with its username and secret)"
                        .into(),
                ))
            }
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

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Paths served without credentials: the health check, the login page and what it shows,
/// and the device routes (which check device credentials themselves).
fn public(path: &str) -> bool {
    matches!(
        path,
        "/api/v1/health" | "/login" | "/logout" | "/assets/login.css" | "/assets/icon.svg"
    ) || path.starts_with("/topics/")
}

/// Whether a refused request is a browser opening a page (it gets the login page).
fn wants_page(req: &Request) -> bool {
    let method = req.method();
    (method == axum::http::Method::GET || method == axum::http::Method::HEAD)
        && !req.headers().contains_key(header::AUTHORIZATION)
        && req
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("text/html"))
}

/// Middleware: every route but the public ones needs the right credentials (when
/// anonymous access is off).
pub(crate) async fn require(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    if public(req.uri().path()) || crate::share::granted(&req) {
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
                crate::tsdb::TsdbError::from(why).into_response()
            }
        };
    }
    match state
        .0
        .auth
        .check(req.headers(), state.0.server.registry())
        .await
    {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err((status, why)) => {
            state.0.auth.refused.fetch_add(1, Ordering::Relaxed);
            if status == StatusCode::UNAUTHORIZED && wants_page(&req) {
                let next = req
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned();
                return redirect(&format!("/login?next={}", encode(&next)));
            }
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

// ---- the login page

/// Percent-encode a query value.
fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Text made safe inside HTML (text and double-quoted attributes).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Where to go after logging in: a path of this site only (never `//host` or a URL).
fn local_target(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The login page: the form, an error to show, the page to return to.
fn page(status: StatusCode, error: &str, username: &str, next: &str) -> Response {
    let html = crate::assets::LOGIN
        .replace("{{error}}", &escape(error))
        .replace(
            "{{error_hidden}}",
            if error.is_empty() { "hidden" } else { "" },
        )
        .replace("{{username}}", &escape(username))
        .replace("{{next}}", &escape(next));
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                ),
            ),
        ],
        html,
    )
        .into_response()
}

/// The `next` parameter of a query string.
fn next_of(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned())
}

/// `GET /login`: the form (without a password file there is nothing to log in to: `/`).
pub(crate) async fn login_page(State(state): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let next = local_target(next_of(q.as_deref()).as_deref());
    if !state.0.auth.has_passwords() {
        return redirect(&next);
    }
    page(StatusCode::OK, "", "", &next)
}

/// Whether a browser's `Origin` (if sent) is this site (a login form posted from another
/// site is refused: it could log the visitor in as someone else).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let authority = origin.split_once("://").map_or(origin, |(_, a)| a);
    authority.eq_ignore_ascii_case(host)
}

/// `POST /login` (a form: `username`, `password`, `next`): a session cookie and back to
/// `next`, or the form again with the reason.
pub(crate) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = &state.0.auth;
    let mut user = String::new();
    let mut password = String::new();
    let mut next = None;
    for (k, v) in form_urlencoded::parse(&body) {
        match k.as_ref() {
            "username" => user = v.into_owned(),
            "password" => password = v.into_owned(),
            "next" => next = Some(v.into_owned()),
            _ => {}
        }
    }
    let next = local_target(next.as_deref());
    if !same_origin(&headers) {
        return page(
            StatusCode::FORBIDDEN,
            "This login form was sent from another site.",
            &user,
            &next,
        );
    }
    if !auth.has_passwords() {
        return redirect(&next);
    }
    if user.is_empty() {
        return page(StatusCode::BAD_REQUEST, "Enter a username.", "", &next);
    }
    let device = state.0.server.registry().is_some_and(|r| r.knows(&user));
    let checked = if device {
        Err((
            StatusCode::FORBIDDEN,
            "device credentials do not open the operator API",
        ))
    } else {
        auth.verify(&user, password).await
    };
    match checked {
        Ok(()) => {
            let Some(token) = auth.start_session(&user) else {
                return page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "A session could not be started; try again.",
                    &user,
                    &next,
                );
            };
            info!(username = %user, "HTTP login: session started");
            let mut r = redirect(&next);
            let cookie = session_cookie(&token, SESSION_TTL, auth.https);
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err((status, why)) => {
            auth.refused.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(FAILED_LOGIN_DELAY).await;
            let text = if status == StatusCode::UNAUTHORIZED {
                "Wrong username or password.".to_owned()
            } else {
                format!("Refused: {why}.")
            };
            page(status, &text, &user, &next)
        }
    }
}

/// The `Set-Cookie` value of a session (an empty token and no time forget it).
fn session_cookie(token: &str, ttl: Duration, https: bool) -> String {
    format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        ttl.as_secs(),
        if https { "; Secure" } else { "" }
    )
}

/// `GET/POST /logout`: end the session, forget the cookie, back to the login page.
pub(crate) async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = cookie(&headers, COOKIE)
        && let Ok(mut s) = state.0.auth.sessions.lock()
    {
        s.remove(&token);
    }
    let mut r = redirect("/login");
    let cookie = session_cookie("", Duration::ZERO, state.0.auth.https);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `GET /api/v1/session`: who the caller is and whether a login session carries it (the
/// page shows "Log out" then).
pub(crate) async fn session(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    headers: HeaderMap,
) -> Response {
    let session = !headers.contains_key(header::AUTHORIZATION)
        && state.0.auth.session_user(&headers).is_some();
    let (kind, name) = match caller.map(|c| c.0) {
        Some(Caller::User(u)) => ("user", Some(u)),
        Some(Caller::Key(k)) => ("access_key", Some(k)),
        _ => ("anonymous", None),
    };
    json_response(
        StatusCode::OK,
        &json!({ "caller": kind, "name": name, "session": session }),
    )
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

    #[test]
    fn cookies_and_targets_are_read_safely() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; midge_session=abc ; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
        assert_eq!(local_target(Some("/x?y=1")), "/x?y=1");
        for bad in ["//evil.example/", "https://evil.example/", "/\\evil", "x"] {
            assert_eq!(local_target(Some(bad)), "/", "{bad}");
        }
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn the_session_cookie_is_strict_and_secure_over_https() {
        assert_eq!(
            session_cookie("t0k", SESSION_TTL, true),
            "midge_session=t0k; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200; Secure"
        );
        assert!(!session_cookie("t0k", SESSION_TTL, false).contains("Secure"));
        assert!(session_cookie("", Duration::ZERO, false).contains("Max-Age=0"));
    }
}
