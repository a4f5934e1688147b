//! Dashboards: `GET /api/v1/dashboards` (the list), `POST` (a new one, or an exported one
//! imported), `GET`/`PUT`/`DELETE /api/v1/dashboards/{id}`, `GET .../{id}/export` (the
//! JSON as a file to download), and the older `GET`/`PUT /api/v1/dashboard` (the first one).
//!
//! How the configuration's widgets and the page's combine (never one hiding the other):
//!
//! - the page's dashboards (made in the page or through the API) come first, in the order
//!   they were made, and are saved in `dashboard_file`;
//! - the `[[dashboard.widget]]` of the configuration form one more dashboard, id `config`,
//!   listed last and read-only (a `PUT` or `DELETE` is a 409 saying to edit the file; a copy
//!   made with `POST` can be edited);
//! - with neither, there is one empty dashboard `main` (saved once it is first changed);
//! - "the first dashboard" (the older `/api/v1/dashboard`, a share link without a
//!   `dashboard`, the page opened without `?d=`) is the first of the list; a `PUT
//!   /api/v1/dashboard` while the first is the configuration's makes a page dashboard `main`
//!   in front of it, so older scripts keep working and the configured widgets stay shown.
//!
//! Every change is validated, then saved atomically (temporary file, fsync, rename) before it
//! is answered. The file is `{"dashboards": [{"id", "name", "widgets"}]}`; an older file with
//! `{"widgets": [...]}` alone loads as the dashboard `main`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use crate::api::{ApiError, AppState, JsonBody, json_response};
use crate::widget::{Widget, validate};
use crate::{HttpConfig, HttpError};

/// The id of the dashboard the configuration's `[[dashboard.widget]]` form.
pub(crate) const CONFIG_ID: &str = "config";
/// The id of the dashboard there is when there is no other (and of an older file's).
pub(crate) const DEFAULT_ID: &str = "main";
/// Most dashboards made in the page.
const MAX_DASHBOARDS: usize = 100;
/// Longest dashboard name (characters).
const MAX_NAME: usize = 100;

/// One dashboard as saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Board {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) widgets: Vec<Widget>,
}

/// The saved file: `dashboards`, or (older files) `widgets` alone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    widgets: Option<Vec<Widget>>,
    #[serde(default)]
    dashboards: Option<Vec<Board>>,
}

#[derive(Serialize)]
struct SavedDoc<'a> {
    dashboards: &'a [Board],
}

/// The body of the older `PUT /api/v1/dashboard`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Document {
    /// The widgets, in display order.
    pub(crate) widgets: Vec<Widget>,
}

/// The body of `POST /api/v1/dashboards`: a new dashboard, or an exported one (whose
/// informative keys are accepted and ignored).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewBoard {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    widgets: Vec<Widget>,
    #[serde(default, rename = "midge_dashboard")]
    _format: Option<serde_json::Value>,
    #[serde(default, rename = "exported")]
    _exported: Option<serde_json::Value>,
    #[serde(default, rename = "source")]
    _source: Option<serde_json::Value>,
    #[serde(default, rename = "readonly")]
    _readonly: Option<serde_json::Value>,
    #[serde(default, rename = "persistent")]
    _persistent: Option<serde_json::Value>,
}

/// The body of `PUT /api/v1/dashboards/{id}`: a new name, new widgets, or both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Change {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    widgets: Option<Vec<Widget>>,
}

/// The dashboards of one HTTP server.
pub(crate) struct Dashboard {
    file: Option<PathBuf>,
    /// The configuration's widgets as a dashboard (none without widgets).
    configured: Option<Board>,
    /// The page's dashboards.
    boards: RwLock<Arc<Vec<Board>>>,
    saving: tokio::sync::Mutex<()>,
}

/// Why a dashboard's id or name is refused (400 through the API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum BoardError {
    #[error("an id is 1 to 64 letters, digits, `_` or `-`")]
    BadId,
    #[error("the id {CONFIG_ID:?} is the configuration's dashboard")]
    ConfigId,
    #[error("name: empty")]
    EmptyName,
    #[error("name: at most {MAX_NAME} characters")]
    LongName,
    #[error("name: no control characters")]
    ControlInName,
}

impl From<BoardError> for ApiError {
    fn from(e: BoardError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

/// Why the dashboard file cannot be used.
#[derive(Debug, thiserror::Error)]
enum FileError {
    #[error(transparent)]
    Read(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("neither \"dashboards\" nor \"widgets\"")]
    Empty,
    #[error("dashboard {0:?}: {1}")]
    Board(String, BoardError),
    #[error("dashboard {0:?} twice")]
    Twice(String),
    /// Its widgets' problems.
    #[error("dashboard {id:?}: {}", problems.join("; "))]
    Widgets { id: String, problems: Vec<String> },
}

fn read_file(path: &Path) -> Result<Option<Vec<Board>>, FileError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let doc: FileDoc = serde_json::from_slice(&text)?;
    let boards = match (doc.dashboards, doc.widgets) {
        (Some(b), _) => b,
        (None, Some(widgets)) => vec![Board {
            id: DEFAULT_ID.into(),
            name: "Dashboard".into(),
            widgets,
        }],
        (None, None) => return Err(FileError::Empty),
    };
    let mut out = Vec::with_capacity(boards.len());
    let mut ids = std::collections::HashSet::new();
    for mut b in boards {
        check_id(&b.id).map_err(|e| FileError::Board(b.id.clone(), e))?;
        if !ids.insert(b.id.clone()) {
            return Err(FileError::Twice(b.id));
        }
        b.name = check_name(&b.name).map_err(|e| FileError::Board(b.id.clone(), e))?;
        b.widgets = validate(b.widgets).map_err(|problems| FileError::Widgets {
            id: b.id.clone(),
            problems,
        })?;
        out.push(b);
    }
    Ok(Some(out))
}

fn check_id(id: &str) -> Result<(), BoardError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
    if !ok {
        return Err(BoardError::BadId);
    }
    if id == CONFIG_ID {
        return Err(BoardError::ConfigId);
    }
    Ok(())
}

fn check_name(name: &str) -> Result<String, BoardError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(BoardError::EmptyName);
    }
    if name.chars().count() > MAX_NAME {
        return Err(BoardError::LongName);
    }
    if name.chars().any(char::is_control) {
        return Err(BoardError::ControlInName);
    }
    Ok(name.to_owned())
}

/// A free id made from `name` (`Living room` → `living-room`, then `living-room-2`, ...).
fn new_id(name: &str, taken: &[Board]) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let base = if slug.is_empty() || slug == CONFIG_ID {
        "dashboard"
    } else {
        slug
    };
    let free = |id: &str| taken.iter().all(|b| b.id != id);
    if free(base) {
        return base.to_owned();
    }
    // `trucks-2` taken: `trucks-3`, not `trucks-2-2`
    let base = match base.rsplit_once('-') {
        Some((head, n)) if !head.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => head,
        _ => base,
    };
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|id| free(id))
        .unwrap_or_else(|| base.to_owned())
}

/// `name`, or `name (2)`, `name (3)`, ... when a dashboard is already called that (two tabs
/// of the same name could not be told apart).
fn free_name(name: String, taken: &[Board]) -> String {
    let free = |n: &str| taken.iter().all(|b| b.name != n);
    if free(&name) {
        return name;
    }
    // `Trucks (2)` taken: `Trucks (3)`, not `Trucks (2) (2)`
    let name = match name.strip_suffix(')').and_then(|n| n.rsplit_once(" (")) {
        Some((head, n)) if !head.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => {
            head.to_owned()
        }
        _ => name,
    };
    (2..)
        .map(|n| format!("{name} ({n})"))
        .find(|n| free(n))
        .unwrap_or(name)
}

fn conflict_config(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "the dashboard {CONFIG_ID:?} comes from the configuration file ([[dashboard.widget]] in midge.toml): edit the file to {what} it, or make an editable copy (POST /api/v1/dashboards with its widgets)"
        ),
    )
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no dashboard {id:?}"))
}

impl Dashboard {
    pub(crate) async fn load(config: &HttpConfig) -> Result<Dashboard, HttpError> {
        let configured = validate(config.widgets.clone()).map_err(HttpError::Widgets)?;
        let saved = match config.dashboard_file.clone() {
            None => None,
            Some(path) => {
                let p = path.clone();
                tokio::task::spawn_blocking(move || read_file(&p))
                    .await
                    .map_err(|e| HttpError::DashboardFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?
                    .map_err(|e| HttpError::DashboardFile {
                        path,
                        reason: e.to_string(),
                    })?
            }
        };
        if let (Some(b), Some(path)) = (&saved, &config.dashboard_file) {
            info!(file = %path.display(), dashboards = b.len(), configured = configured.len(),
                "dashboards: the page's from the file, the configuration's as the read-only dashboard \"config\"");
        }
        Ok(Dashboard {
            file: config.dashboard_file.clone(),
            configured: (!configured.is_empty()).then(|| Board {
                id: CONFIG_ID.into(),
                name: "Configured".into(),
                widgets: configured,
            }),
            boards: RwLock::new(Arc::new(saved.unwrap_or_default())),
            saving: tokio::sync::Mutex::new(()),
        })
    }

    /// The page's dashboards, or the empty `main` when there is no dashboard at all.
    fn page(&self) -> Vec<Board> {
        let boards = self
            .boards
            .read()
            .map(|b| b.as_ref().clone())
            .unwrap_or_default();
        if boards.is_empty() && self.configured.is_none() {
            return vec![Board {
                id: DEFAULT_ID.into(),
                name: "Dashboard".into(),
                widgets: Vec::new(),
            }];
        }
        boards
    }

    /// Every dashboard, in order: the page's, then the configuration's.
    fn all(&self) -> Vec<Board> {
        let mut all = self.page();
        all.extend(self.configured.clone());
        all
    }

    /// The first dashboard's id.
    pub(crate) fn first_id(&self) -> String {
        self.all()
            .first()
            .map(|b| b.id.clone())
            .unwrap_or_else(|| DEFAULT_ID.into())
    }

    /// The dashboard `id` names: an id, or `main` for the first one when no dashboard has
    /// that id (share links and scripts written for the single dashboard).
    pub(crate) fn resolve(&self, id: &str) -> Option<String> {
        let all = self.all();
        if all.iter().any(|b| b.id == id) {
            return Some(id.to_owned());
        }
        (id == DEFAULT_ID).then(|| all.first().map(|b| b.id.clone()))?
    }

    fn get(&self, id: &str) -> Option<Board> {
        self.all().into_iter().find(|b| b.id == id)
    }

    /// The topics (filters) the widgets of dashboard `id` show, for share links.
    pub(crate) fn widget_topics(&self, id: &str) -> Vec<String> {
        let Some(b) = self.resolve(id).and_then(|id| self.get(&id)) else {
            return Vec::new();
        };
        b.widgets
            .iter()
            .flat_map(Widget::topics)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn source(&self, b: &Board) -> &'static str {
        if b.id == CONFIG_ID {
            "config"
        } else if self.file.is_some() {
            "file"
        } else {
            "memory"
        }
    }

    fn answer(&self, b: &Board) -> serde_json::Value {
        json!({
            "id": b.id,
            "name": b.name,
            "widgets": b.widgets,
            "source": self.source(b),
            "readonly": b.id == CONFIG_ID,
            "persistent": self.file.is_some(),
        })
    }

    fn summary(&self, b: &Board) -> serde_json::Value {
        json!({
            "id": b.id,
            "name": b.name,
            "widget_count": b.widgets.len(),
            "source": self.source(b),
            "readonly": b.id == CONFIG_ID,
        })
    }

    /// Saves the page's dashboards (then keeps them), the caller holding `saving`.
    async fn store(&self, boards: Vec<Board>) -> Result<(), ApiError> {
        if let Some(path) = self.file.clone() {
            let text = serde_json::to_vec_pretty(&SavedDoc {
                dashboards: &boards,
            })
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            crate::api::save_file(&path, text, "the dashboards were").await?;
            info!(file = %path.display(), dashboards = boards.len(), "dashboards saved");
        }
        if let Ok(mut b) = self.boards.write() {
            *b = Arc::new(boards);
        }
        Ok(())
    }
}

fn checked_widgets(widgets: Vec<Widget>) -> Result<Vec<Widget>, ApiError> {
    validate(widgets).map_err(|p| {
        ApiError::bad_request(format!("the dashboard was not saved:\n{}", p.join("\n")))
    })
}

/// The dashboard a share link opens, when the request came with one.
fn shared(req: &Request) -> Option<String> {
    crate::share::granted_dashboard(req)
}

/// `GET /api/v1/dashboards`: `{"dashboards": [{"id", "name", "widget_count", "source",
/// "readonly"}], "first", "persistent", "shared"}` (a share link sees its dashboard alone,
/// `"shared": true`).
pub(crate) async fn list_handler(State(state): State<AppState>, req: Request) -> Response {
    let dash = &state.0.dashboard;
    // a share link sees its dashboard alone (none once it was deleted)
    let only = shared(&req).map(|id| dash.resolve(&id));
    let all: Vec<_> = dash
        .all()
        .iter()
        .filter(|b| only.as_ref().is_none_or(|id| id.as_ref() == Some(&b.id)))
        .map(|b| dash.summary(b))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "dashboards": all,
            "shared": only.is_some(),
            "first": match only {
                Some(id) => id,
                None => Some(dash.first_id()),
            },
            "persistent": dash.file.is_some(),
        }),
    )
}

/// `POST /api/v1/dashboards`: 201 with the new dashboard. Also imports an exported one: its
/// `id` is kept when free, a new one is made otherwise.
pub(crate) async fn create_handler(
    State(state): State<AppState>,
    JsonBody(b): JsonBody<NewBoard>,
) -> Result<Response, ApiError> {
    let dash = &state.0.dashboard;
    let widgets = checked_widgets(b.widgets)?;
    let _one_at_a_time = dash.saving.lock().await;
    let mut boards = dash.page();
    if boards.len() >= MAX_DASHBOARDS {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{MAX_DASHBOARDS} dashboards exist: delete some first"),
        ));
    }
    let name = match b.name {
        Some(n) => check_name(&n)?,
        None => format!("Dashboard {}", boards.len() + 1),
    };
    let mut taken = boards.clone();
    taken.extend(dash.configured.clone());
    let name = free_name(name, &taken);
    // an import keeps its id when free, else one near it; a new dashboard's comes from its name
    let id = match b.id {
        Some(id) if check_id(&id).is_ok() => new_id(&id, &taken),
        _ => new_id(&name, &taken),
    };
    let board = Board { id, name, widgets };
    boards.push(board.clone());
    dash.store(boards).await?;
    info!(id = %board.id, "dashboard made");
    Ok(json_response(StatusCode::CREATED, &dash.answer(&board)))
}

/// `GET /api/v1/dashboards/{id}`.
pub(crate) async fn get_handler(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let dash = &state.0.dashboard;
    if let Some(only) = shared(&req).map(|s| dash.resolve(&s))
        && (only.is_none() || dash.resolve(&id) != only)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "a share link opens one dashboard only",
        ));
    }
    let b = dash.get(&id).ok_or_else(|| not_found(&id))?;
    Ok(json_response(StatusCode::OK, &dash.answer(&b)))
}

/// `GET /api/v1/dashboards/{id}/export`: the dashboard as a JSON file to download, which
/// `POST /api/v1/dashboards` imports.
pub(crate) async fn export_handler(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let dash = &state.0.dashboard;
    let b = dash.get(&id).ok_or_else(|| not_found(&id))?;
    let doc = json!({
        "midge_dashboard": 1,
        "exported": crate::time::now_ms(),
        "id": b.id,
        "name": b.name,
        "widgets": b.widgets,
    });
    let mut r = json_response(StatusCode::OK, &doc);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"midge-dashboard-{}.json\"",
        b.id
    )) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

/// `PUT /api/v1/dashboards/{id}` `{"name"?, "widgets"?}`: rename, replace the widgets, or
/// both.
pub(crate) async fn put_handler(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    JsonBody(c): JsonBody<Change>,
) -> Result<Response, ApiError> {
    let dash = &state.0.dashboard;
    if id == CONFIG_ID && dash.configured.is_some() {
        return Err(conflict_config("change"));
    }
    if c.name.is_none() && c.widgets.is_none() {
        return Err(ApiError::bad_request("send \"name\", \"widgets\" or both"));
    }
    let name = c.name.map(|n| check_name(&n)).transpose()?;
    let widgets = c.widgets.map(checked_widgets).transpose()?;
    let _one_at_a_time = dash.saving.lock().await;
    let mut boards = dash.page();
    let b = boards
        .iter_mut()
        .find(|b| b.id == id)
        .ok_or_else(|| not_found(&id))?;
    if let Some(n) = name {
        b.name = n;
    }
    if let Some(w) = widgets {
        b.widgets = w;
    }
    let answer = b.clone();
    dash.store(boards).await?;
    Ok(json_response(StatusCode::OK, &dash.answer(&answer)))
}

/// `DELETE /api/v1/dashboards/{id}`: 204. The only dashboard there is cannot go (empty it
/// instead); the configuration's cannot either.
pub(crate) async fn delete_handler(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let dash = &state.0.dashboard;
    if id == CONFIG_ID && dash.configured.is_some() {
        return Err(conflict_config("remove"));
    }
    let _one_at_a_time = dash.saving.lock().await;
    let mut boards = dash.page();
    let before = boards.len();
    boards.retain(|b| b.id != id);
    if boards.len() == before {
        return Err(not_found(&id));
    }
    if boards.is_empty() && dash.configured.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{id:?} is the only dashboard: empty it instead, or make another first"),
        ));
    }
    dash.store(boards).await?;
    info!(id = %id, "dashboard deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/v1/dashboard`: the first dashboard (a share link's: its own), with `widgets`,
/// `source` and `persistent` as before there were several.
pub(crate) async fn legacy_get_handler(State(state): State<AppState>, req: Request) -> Response {
    let dash = &state.0.dashboard;
    let id = match shared(&req) {
        // a share link's own dashboard, never another once it is gone
        Some(s) => dash.resolve(&s).unwrap_or(s),
        None => dash.first_id(),
    };
    match dash.get(&id) {
        Some(b) => json_response(StatusCode::OK, &dash.answer(&b)),
        None => not_found(&id).into_response(),
    }
}

/// `PUT /api/v1/dashboard` `{"widgets"}`: replaces the first dashboard's widgets; when the
/// first is the configuration's, a page dashboard `main` is made in front of it.
pub(crate) async fn legacy_put_handler(
    State(state): State<AppState>,
    JsonBody(doc): JsonBody<Document>,
) -> Result<Response, ApiError> {
    let dash = &state.0.dashboard;
    let widgets = checked_widgets(doc.widgets)?;
    let _one_at_a_time = dash.saving.lock().await;
    let mut boards = dash.page();
    let answer = match boards.first_mut() {
        Some(b) => {
            b.widgets = widgets;
            b.clone()
        }
        None => {
            let b = Board {
                id: DEFAULT_ID.into(),
                name: "Dashboard".into(),
                widgets,
            };
            boards.push(b.clone());
            b
        }
    };
    dash.store(boards).await?;
    Ok(json_response(StatusCode::OK, &dash.answer(&answer)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_made_from_names_and_kept_free() {
        let taken = vec![Board {
            id: "living-room".into(),
            name: "x".into(),
            widgets: vec![],
        }];
        assert_eq!(new_id("Living room", &taken), "living-room-2");
        assert_eq!(new_id("living-room-7", &taken), "living-room-7");
        let more = [
            taken.clone(),
            vec![Board {
                id: "living-room-2".into(),
                name: "Living room (2)".into(),
                widgets: vec![],
            }],
        ]
        .concat();
        assert_eq!(new_id("living-room-2", &more), "living-room-3");
        assert_eq!(
            free_name("Living room (2)".into(), &more),
            "Living room (3)"
        );
        assert_eq!(free_name("y".into(), &more), "y");
        assert_eq!(free_name("x".into(), &more), "x (2)");
        assert_eq!(new_id("Cellar!", &taken), "cellar");
        assert_eq!(new_id("  ", &taken), "dashboard");
        assert_eq!(new_id("Config", &taken), "dashboard");
        assert_eq!(check_id("config"), Err(BoardError::ConfigId));
        assert_eq!(check_id("a b"), Err(BoardError::BadId));
    }
}
