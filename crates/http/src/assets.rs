//! The dashboard's files, embedded in the binary (plain HTML, CSS and JavaScript: no build
//! step, nothing loaded from elsewhere).

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::ApiError;

const INDEX: &str = include_str!("../assets/index.html");
/// The page's scripts, one per tab plus the shared helpers (`common.js`, loaded first) and
/// the header and tab switching (`app.js`, loaded last).
const SCRIPTS: &[(&str, &str)] = &[
    ("common.js", include_str!("../assets/common.js")),
    ("widgets.js", include_str!("../assets/widgets.js")),
    ("dashboard.js", include_str!("../assets/dashboard.js")),
    ("devices.js", include_str!("../assets/devices.js")),
    ("console.js", include_str!("../assets/console.js")),
    ("data.js", include_str!("../assets/data.js")),
    ("rules.js", include_str!("../assets/rules.js")),
    ("alarms.js", include_str!("../assets/alarms.js")),
    ("mqtt.js", include_str!("../assets/mqtt.js")),
    ("client.js", include_str!("../assets/client.js")),
    ("login.js", include_str!("../assets/login.js")),
    ("app.js", include_str!("../assets/app.js")),
];
const STYLES: &[(&str, &str)] = &[
    ("app.css", include_str!("../assets/app.css")),
    ("login.css", include_str!("../assets/login.css")),
    ("console.css", include_str!("../assets/console.css")),
    ("client.css", include_str!("../assets/client.css")),
];
const CLIENT: &str = include_str!("../assets/client.html");
/// The login page of a locked listener (`{{error}}`, `{{username}}`, `{{next}}` filled in
/// by `auth::page`).
pub(crate) const LOGIN: &str = include_str!("../assets/login.html");
const ICON: &str = include_str!("../assets/icon.svg");

/// Scripts and styles only from here; map tiles (an optional widget setting) from anywhere.
const CSP: &str = "default-src 'self'; img-src 'self' data: http: https:; \
                   style-src 'self'; script-src 'self'; connect-src 'self'; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The MQTT web client's page: the same, and WebSocket connections to the broker's ws/wss
/// listeners (another port, perhaps another host).
const CLIENT_CSP: &str = "default-src 'self'; img-src 'self' data:; \
                          style-src 'self'; script-src 'self'; connect-src 'self' ws: wss:; \
                          frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    asset_with(body, content_type, CSP)
}

fn asset_with(body: &'static str, content_type: &'static str, csp: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(csp),
            ),
        ],
        body,
    )
        .into_response()
}

pub(crate) async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

/// The MQTT web client: connects to midge's WebSocket listener from the browser.
pub(crate) async fn client() -> Response {
    asset_with(CLIENT, "text/html; charset=utf-8", CLIENT_CSP)
}

pub(crate) async fn file(Path(name): Path<String>) -> Response {
    match name.as_str() {
        name if name.ends_with(".js") => match SCRIPTS.iter().find(|(n, _)| *n == name) {
            Some((_, body)) => asset(body, "text/javascript; charset=utf-8"),
            None => {
                ApiError::new(StatusCode::NOT_FOUND, format!("no asset {name:?}")).into_response()
            }
        },
        name if name.ends_with(".css") => match STYLES.iter().find(|(n, _)| *n == name) {
            Some((_, body)) => asset(body, "text/css; charset=utf-8"),
            None => {
                ApiError::new(StatusCode::NOT_FOUND, format!("no asset {name:?}")).into_response()
            }
        },
        "icon.svg" => asset(ICON, "image/svg+xml"),
        _ => ApiError::new(StatusCode::NOT_FOUND, format!("no asset {name:?}")).into_response(),
    }
}
