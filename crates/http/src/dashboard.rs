//! `GET`/`PUT /api/v1/dashboard`: the widgets, from the saved file when there is one, else
//! from the configuration. A PUT is validated, then saved atomically (temporary file, fsync,
//! rename) before it is answered.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use crate::api::{ApiError, AppState, JsonBody, json_response};
use crate::widget::{Widget, validate};
use crate::{HttpConfig, HttpError};

/// The dashboard document (the saved file and the PUT body).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Document {
    /// The widgets, in display order.
    pub(crate) widgets: Vec<Widget>,
}

/// The dashboard of one HTTP server.
pub(crate) struct Dashboard {
    file: Option<PathBuf>,
    widgets: RwLock<Arc<Vec<Widget>>>,
    from_file: RwLock<bool>,
    saving: tokio::sync::Mutex<()>,
}

fn read_file(path: &Path) -> Result<Option<Vec<Widget>>, String> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let doc: Document = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
    validate(doc.widgets).map(Some).map_err(|p| p.join("; "))
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
                    .map_err(|reason| HttpError::DashboardFile { path, reason })?
            }
        };
        let from_file = saved.is_some();
        if let (true, Some(path)) = (from_file, &config.dashboard_file) {
            info!(file = %path.display(), "dashboard: using the widgets saved from the web page");
        }
        Ok(Dashboard {
            file: config.dashboard_file.clone(),
            widgets: RwLock::new(Arc::new(saved.unwrap_or(configured))),
            from_file: RwLock::new(from_file),
            saving: tokio::sync::Mutex::new(()),
        })
    }

    /// The topics (filters) the widgets show, for share links.
    pub(crate) fn widget_topics(&self) -> Vec<String> {
        let (widgets, _) = self.current();
        widgets
            .iter()
            .map(|w| w.topic.clone())
            .filter(|t| !t.is_empty())
            .collect()
    }

    fn current(&self) -> (Arc<Vec<Widget>>, bool) {
        let widgets = self.widgets.read().map(|w| w.clone()).unwrap_or_default();
        let from_file = self.from_file.read().map(|f| *f).unwrap_or(false);
        (widgets, from_file)
    }

    fn answer(&self) -> Response {
        let (widgets, from_file) = self.current();
        json_response(
            StatusCode::OK,
            &json!({
                "widgets": *widgets,
                "source": if from_file { "file" } else { "config" },
                "persistent": self.file.is_some(),
            }),
        )
    }
}

pub(crate) async fn get_handler(State(state): State<AppState>) -> Response {
    state.0.dashboard.answer()
}

pub(crate) async fn put_handler(
    State(state): State<AppState>,
    JsonBody(doc): JsonBody<Document>,
) -> Result<Response, ApiError> {
    let dash = &state.0.dashboard;
    let widgets = validate(doc.widgets).map_err(|p| {
        ApiError::bad_request(format!("the dashboard was not saved:\n{}", p.join("\n")))
    })?;
    let _one_at_a_time = dash.saving.lock().await;
    if let Some(path) = dash.file.clone() {
        let text = serde_json::to_vec_pretty(&Document {
            widgets: widgets.clone(),
        })
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        crate::api::save_file(&path, text, "the dashboard was").await?;
        info!(file = %path.display(), widgets = widgets.len(), "dashboard saved");
        if let Ok(mut f) = dash.from_file.write() {
            *f = true;
        }
    }
    if let Ok(mut w) = dash.widgets.write() {
        *w = Arc::new(widgets);
    }
    Ok(dash.answer())
}
