//! Rules that change while midge runs: the rules of the configuration file plus rules
//! added through the HTTP API (kept in `<state dir>/rules.json`), run by one [`Hub`] that
//! is restarted when they change. The hub's session is persistent, so messages that arrive
//! during a restart wait in it and are handled by the new rules.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use midge_client::Connector;
use midge_series::SeriesStore;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::{ActionConfig, Hub, HubConfig, HubError, RuleConfig, RuleSpec, RuleStatus};

/// File (in the state folder) holding the rules added through the API.
pub const RULES_FILE: &str = "rules.json";

/// File (in the state folder) holding every rule's counts, so they go on across restarts.
pub const COUNTS_FILE: &str = "rule_counts.json";

/// How often the counts are saved (and at every stop and change of the rules).
const COUNTS_SAVE_INTERVAL: Duration = Duration::from_secs(10);

/// Why a file of the state folder (rules, counts, alarms) could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// Writing, syncing or renaming the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The contents could not be made into JSON.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

/// Where a rule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleSource {
    /// The configuration file (changed by editing it).
    Config,
    /// Added through the API (removable there).
    Api,
}

/// Why a rule could not be added or removed.
#[derive(Debug, thiserror::Error)]
pub enum RuleChangeError {
    /// The rule is invalid (every problem).
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// A rule of that name exists.
    #[error("a rule named {0:?} exists")]
    Exists(String),
    /// No rule of that name.
    #[error("no rule named {0:?}")]
    NotFound(String),
    /// The rule comes from the configuration file; edit the file to change it.
    #[error("rule {0:?} comes from the configuration file; edit the file to change it")]
    FromConfig(String),
    /// The rules could not be saved.
    #[error("cannot save the rules: {0}")]
    Save(#[from] SaveError),
}

/// A rule's counts as saved in [`COUNTS_FILE`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedCounts {
    name: String,
    sql: String,
    matched: u64,
    passed: u64,
    failed: u64,
    #[serde(default)]
    last_error: Option<String>,
}

impl SavedCounts {
    fn of(s: &RuleStatus) -> SavedCounts {
        SavedCounts {
            name: s.name.clone(),
            sql: s.sql.clone(),
            matched: s.matched,
            passed: s.passed,
            failed: s.failed,
            last_error: s.last_error.clone(),
        }
    }

    fn status(&self) -> RuleStatus {
        RuleStatus {
            name: self.name.clone(),
            sql: self.sql.clone(),
            filters: Vec::new(),
            actions: Vec::new(),
            matched: self.matched,
            passed: self.passed,
            failed: self.failed,
            last_error: self.last_error.clone(),
        }
    }
}

#[derive(Debug)]
struct State {
    hub: Option<Hub>,
    file_rules: Vec<RuleConfig>,
    api_rules: Vec<RuleSpec>,
    /// Counts of rules not running now (saved ones at start, disabled ones), carried over
    /// when they run again with the same SQL.
    carried: Vec<RuleStatus>,
}

/// Runs the hub and changes its rules (see the module docs).
#[derive(Debug)]
pub struct HubService {
    base: HubConfig,
    connector: Connector,
    series: Option<Arc<SeriesStore>>,
    state: tokio::sync::Mutex<State>,
    /// The running hub's status source (swapped at every restart).
    status: Mutex<Option<Arc<crate::Shared>>>,
    /// Names of the file's rules, for [`RuleSource`].
    file_names: Mutex<Vec<String>>,
    /// The task saving the counts now and then.
    saver: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The alarms the rules raise (kept across restarts of the hub and of midge).
    alarms: Arc<crate::Alarms>,
    /// The task saving the alarms after each change.
    alarm_saver: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl HubService {
    /// Start with the configuration file's rules (`config.rules`) and those saved from the
    /// API. A saved rule that no longer validates (a store that is gone, a name now taken
    /// by the file) is skipped with a warning rather than stopping midge.
    pub async fn start(
        config: HubConfig,
        connector: Connector,
        series: Option<Arc<SeriesStore>>,
    ) -> Result<Arc<HubService>, HubError> {
        let file_rules = config.rules.clone();
        crate::validate(&config, series.is_some()).map_err(HubError::Invalid)?;
        let mut api_rules = Vec::new();
        let carried = load_counts(config.state_dir.as_deref());
        for spec in load_rules(config.state_dir.as_deref()) {
            let mut trial = config.clone();
            match spec.to_config() {
                Ok(rule) => {
                    trial.rules.push(rule);
                    match crate::validate(&trial, series.is_some()) {
                        Ok(()) => api_rules.push(spec),
                        Err(p) => {
                            let problems = crate::HubError::Invalid(p);
                            warn!(rule = %spec.name, %problems, "saved rule skipped")
                        }
                    }
                }
                Err(p) => warn!(rule = %spec.name, problems = %p, "saved rule skipped"),
            }
        }
        let alarms = crate::Alarms::open(config.state_dir.as_deref());
        let alarm_saver = Mutex::new(alarms.start_saver());
        let service = Arc::new(HubService {
            alarms,
            alarm_saver,
            base: HubConfig {
                rules: Vec::new(),
                ..config
            },
            connector,
            series,
            state: tokio::sync::Mutex::new(State {
                hub: None,
                file_rules,
                api_rules,
                carried,
            }),
            status: Mutex::new(None),
            file_names: Mutex::new(Vec::new()),
            saver: Mutex::new(None),
        });
        {
            let mut state = service.state.lock().await;
            service.restart(&mut state).await?;
        }
        if service.base.state_dir.is_some() {
            let weak = Arc::downgrade(&service);
            let saver = tokio::spawn(async move {
                let mut tick = tokio::time::interval(COUNTS_SAVE_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(service) = weak.upgrade() else {
                        return;
                    };
                    service.save_counts().await;
                }
            });
            if let Ok(mut t) = service.saver.lock() {
                *t = Some(saver);
            }
        }
        Ok(service)
    }

    /// Every rule's counts (running ones and carried ones) to [`COUNTS_FILE`].
    async fn save_counts(&self) {
        let Some(dir) = self.base.state_dir.clone() else {
            return;
        };
        let mut all: Vec<SavedCounts> = self
            .status()
            .iter()
            .map(|(s, _)| SavedCounts::of(s))
            .collect();
        {
            let state = self.state.lock().await;
            for c in &state.carried {
                if !all.iter().any(|a| a.name == c.name) {
                    all.push(SavedCounts::of(c));
                }
            }
        }
        let write = tokio::task::spawn_blocking(move || -> Result<(), SaveError> {
            let text = serde_json::to_vec_pretty(&all)?;
            write_atomically(&dir, COUNTS_FILE, &text)
        });
        match write.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot save the rule counts"),
            Err(e) => warn!(error = %e, "saving the rule counts failed"),
        }
    }

    /// The rules that run: the file's and the enabled API rules.
    fn rules_of(&self, state: &State) -> Result<Vec<RuleConfig>, Vec<crate::RuleProblem>> {
        let mut rules = state.file_rules.clone();
        for spec in state.api_rules.iter().filter(|s| s.enabled) {
            let config = spec.to_config().map_err(|p| {
                p.0.into_iter()
                    .map(|source| crate::RuleProblem::Spec {
                        rule: spec.name.clone(),
                        source,
                    })
                    .collect::<Vec<_>>()
            })?;
            rules.push(config);
        }
        Ok(rules)
    }

    /// Check `specs` (the API rules as they would be) with the file's rules; disabled
    /// rules are checked too, so enabling one cannot fail.
    fn check(&self, state: &State, specs: &[RuleSpec]) -> Result<(), RuleChangeError> {
        let mut all = state.file_rules.clone();
        for spec in specs {
            all.push(
                spec.to_config()
                    .map_err(|p| RuleChangeError::Invalid(p.lines()))?,
            );
        }
        let trial = HubConfig {
            rules: all,
            ..self.base.clone()
        };
        crate::validate(&trial, self.series.is_some())
            .map_err(|p| RuleChangeError::Invalid(p.iter().map(ToString::to_string).collect()))
    }

    /// Save `next` as the API rules and run them.
    async fn commit(&self, state: &mut State, next: Vec<RuleSpec>) -> Result<(), RuleChangeError> {
        save_rules(self.base.state_dir.as_deref(), &next).map_err(RuleChangeError::Save)?;
        state.api_rules = next;
        self.restart(state)
            .await
            .map_err(|e| RuleChangeError::Invalid(vec![e.to_string()]))
    }

    /// Replace the API rule `name` with `spec` (same name): checked, saved, and running
    /// when this returns. Its counts go on when its SQL stays the same.
    pub async fn replace(&self, name: &str, spec: RuleSpec) -> Result<(), RuleChangeError> {
        let mut state = self.state.lock().await;
        if state.file_rules.iter().any(|r| r.name == name) {
            return Err(RuleChangeError::FromConfig(name.into()));
        }
        let Some(i) = state.api_rules.iter().position(|r| r.name == name) else {
            return Err(RuleChangeError::NotFound(name.into()));
        };
        if spec.name != name {
            return Err(RuleChangeError::Invalid(vec![format!(
                "name: {:?} in the body, {name:?} in the path (renaming is not supported: add the new rule, remove the old one)",
                spec.name
            )]));
        }
        let mut next = state.api_rules.clone();
        if let Some(slot) = next.get_mut(i) {
            *slot = spec;
        }
        self.check(&state, &next)?;
        info!(rule = %name, "rule changed");
        self.commit(&mut state, next).await
    }

    /// Enable or disable the API rule `name` (a disabled rule keeps its settings and counts).
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), RuleChangeError> {
        let mut state = self.state.lock().await;
        if state.file_rules.iter().any(|r| r.name == name) {
            return Err(RuleChangeError::FromConfig(name.into()));
        }
        let Some(i) = state.api_rules.iter().position(|r| r.name == name) else {
            return Err(RuleChangeError::NotFound(name.into()));
        };
        let mut next = state.api_rules.clone();
        if let Some(r) = next.get_mut(i) {
            if r.enabled == enabled {
                return Ok(());
            }
            r.enabled = enabled;
        }
        info!(rule = %name, enabled, "rule {}", if enabled { "enabled" } else { "disabled" });
        self.commit(&mut state, next).await
    }

    async fn restart(&self, state: &mut State) -> Result<(), HubError> {
        let mut before = Vec::new();
        if let Some(hub) = state.hub.take() {
            hub.stop().await;
            before = hub_status_after_stop(&self.status);
        }
        // rules that stop running (disabled, changed) keep their counts for later
        for c in std::mem::take(&mut state.carried) {
            if !before.iter().any(|b| b.name == c.name) {
                before.push(c);
            }
        }
        let rules = self.rules_of(state).map_err(HubError::Invalid)?;
        let config = HubConfig {
            rules,
            ..self.base.clone()
        };
        let hub = Hub::start_with_alarms(
            config,
            self.connector.clone(),
            self.series.clone(),
            self.alarms.clone(),
        )
        .await?;
        // counts go on across a change of the rules for the rules that stay
        hub.shared.carry_over(&before);
        let running = hub.shared.status();
        let known = |name: &str| {
            state.file_rules.iter().any(|r| r.name == name)
                || state.api_rules.iter().any(|r| r.name == name)
        };
        let carried: Vec<RuleStatus> = before
            .into_iter()
            .filter(|b| {
                known(&b.name) && !running.iter().any(|r| r.name == b.name && r.sql == b.sql)
            })
            .collect();
        state.carried = carried;
        if let Ok(mut s) = self.status.lock() {
            *s = Some(hub.shared.clone());
        }
        if let Ok(mut n) = self.file_names.lock() {
            *n = state.file_rules.iter().map(|r| r.name.clone()).collect();
        }
        state.hub = Some(hub);
        Ok(())
    }

    /// The rules added through the API that are disabled, with their counts (as far as
    /// known) and FROM filters.
    pub async fn disabled(&self) -> Vec<RuleStatus> {
        let state = self.state.lock().await;
        state
            .api_rules
            .iter()
            .filter(|s| !s.enabled)
            .map(|spec| {
                let mut s = state
                    .carried
                    .iter()
                    .find(|c| c.name == spec.name && c.sql == spec.sql)
                    .cloned()
                    .unwrap_or_else(|| {
                        SavedCounts {
                            name: spec.name.clone(),
                            sql: spec.sql.clone(),
                            matched: 0,
                            passed: 0,
                            failed: 0,
                            last_error: None,
                        }
                        .status()
                    });
                if let Ok(r) = midge_rules::Rule::parse(&spec.sql) {
                    s.filters = r.filters().iter().map(|f| f.as_str().to_owned()).collect();
                }
                if let Ok(c) = spec.to_config() {
                    s.actions = c.actions.iter().map(ActionConfig::describe).collect();
                }
                s
            })
            .collect()
    }

    /// Every running rule with its counters (kept across restarts with a state folder) and
    /// its source.
    pub fn status(&self) -> Vec<(RuleStatus, RuleSource)> {
        let f = self.status.lock().ok().and_then(|s| s.clone());
        let names = self
            .file_names
            .lock()
            .map(|n| n.clone())
            .unwrap_or_default();
        f.map(|f| f.status())
            .unwrap_or_default()
            .into_iter()
            .map(|s| {
                let source = if names.contains(&s.name) {
                    RuleSource::Config
                } else {
                    RuleSource::Api
                };
                (s, source)
            })
            .collect()
    }

    /// The rules added through the API, as given.
    pub async fn api_rules(&self) -> Vec<RuleSpec> {
        self.state.lock().await.api_rules.clone()
    }

    /// Add a rule: checked, saved, and running when this returns.
    pub async fn add(&self, spec: RuleSpec) -> Result<(), RuleChangeError> {
        let mut state = self.state.lock().await;
        let taken = state.file_rules.iter().any(|r| r.name == spec.name)
            || state.api_rules.iter().any(|r| r.name == spec.name);
        if taken {
            return Err(RuleChangeError::Exists(spec.name));
        }
        let mut next = state.api_rules.clone();
        next.push(spec.clone());
        self.check(&state, &next)?;
        info!(rule = %spec.name, "rule added");
        self.commit(&mut state, next).await
    }

    /// Remove a rule added through the API.
    pub async fn remove(&self, name: &str) -> Result<(), RuleChangeError> {
        let mut state = self.state.lock().await;
        if state.file_rules.iter().any(|r| r.name == name) {
            return Err(RuleChangeError::FromConfig(name.into()));
        }
        let Some(i) = state.api_rules.iter().position(|r| r.name == name) else {
            return Err(RuleChangeError::NotFound(name.into()));
        };
        let mut next = state.api_rules.clone();
        next.remove(i);
        state.carried.retain(|c| c.name != name);
        info!(rule = %name, "rule removed");
        self.commit(&mut state, next).await
    }

    /// Stop the hub (the batch being stored is finished and acknowledged first) and its
    /// tasks. (Retention is the series store's own: see `SeriesOptions::prune_every`.)
    pub async fn stop(&self) {
        for task in [&self.saver, &self.alarm_saver] {
            if let Some(p) = task.lock().ok().and_then(|mut p| p.take()) {
                p.abort();
            }
        }
        {
            let mut state = self.state.lock().await;
            if let Some(hub) = state.hub.take() {
                hub.stop().await;
            }
        }
        self.save_counts().await;
        self.alarms.save().await;
    }

    /// The alarms (active and past) the rules raise.
    pub fn alarms(&self) -> Arc<crate::Alarms> {
        self.alarms.clone()
    }
}

impl Drop for HubService {
    fn drop(&mut self) {
        for task in [&mut self.saver, &mut self.alarm_saver] {
            if let Some(p) = task.get_mut().ok().and_then(Option::take) {
                p.abort();
            }
        }
    }
}

/// The counts of the hub that just stopped.
fn hub_status_after_stop(status: &Mutex<Option<Arc<crate::Shared>>>) -> Vec<RuleStatus> {
    status
        .lock()
        .ok()
        .and_then(|s| s.clone())
        .map(|s| s.status())
        .unwrap_or_default()
}

fn load_rules(dir: Option<&Path>) -> Vec<RuleSpec> {
    let Some(dir) = dir else { return Vec::new() };
    let path = dir.join(RULES_FILE);
    match std::fs::read(&path) {
        Ok(b) => match serde_json::from_slice::<Vec<RuleSpec>>(&b) {
            Ok(r) => r,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "saved rules unreadable; starting without them");
                Vec::new()
            }
        },
        Err(_) => Vec::new(),
    }
}

/// Save atomically: a new file, fsynced, renamed over the old one.
fn save_rules(dir: Option<&Path>, rules: &[RuleSpec]) -> Result<(), SaveError> {
    let Some(dir) = dir else {
        // a memory-only broker: rules last until it stops
        return Ok(());
    };
    let text = serde_json::to_vec_pretty(rules)?;
    write_atomically(dir, RULES_FILE, &text)
}

/// The saved counts (none without a state folder or file; an unreadable file is reported).
fn load_counts(dir: Option<&Path>) -> Vec<RuleStatus> {
    let Some(dir) = dir else { return Vec::new() };
    let path = dir.join(COUNTS_FILE);
    match std::fs::read(&path) {
        Ok(b) => match serde_json::from_slice::<Vec<SavedCounts>>(&b) {
            Ok(c) => c.iter().map(SavedCounts::status).collect(),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "saved rule counts unreadable; counting from 0");
                Vec::new()
            }
        },
        Err(_) => Vec::new(),
    }
}

/// Write `name` in `dir` atomically: a new file, fsynced, renamed over the old one.
pub(crate) fn write_atomically(dir: &Path, name: &str, text: &[u8]) -> Result<(), SaveError> {
    let path: PathBuf = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        std::fs::create_dir_all(dir)?;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|source| SaveError::Io { path, source })
}
