//! # midge-hub
//!
//! The IoT-hub layer: rules such as `SELECT * FROM 'sensors/#' WHERE temp > 30` run over
//! the messages devices publish and feed actions: the time-series store
//! ([`midge_series::SeriesStore`]: rows, and datapoints with `tsdb`), republishing, HTTP
//! webhooks.
//!
//! The hub is an in-process MQTT 5 client of the broker (any [`midge_client::Connector`]:
//! in `midge serve` the broker's own [`Transport::Custom`] pipe), so it sees exactly what a
//! subscriber would see and nothing is special-cased in the broker. Its session is
//! persistent when it has a state folder, and it acknowledges a message (manual acks) only
//! once the rows and datapoints it produced are committed to the store: a message the broker
//! accepted for the hub is stored even if midge is killed in between, because the broker
//! redelivers what the hub did not acknowledge. A message's time is when the broker accepted
//! it (the `midge-time` user property, kept in the broker's store), so a redelivered message
//! rewrites the same datapoints instead of adding new ones.
//!
//! Rows are written in batches: while one batch is being committed the next one fills up
//! (group commit), so a burst of messages costs a few fsyncs, not one each.
//!
//! [`Transport::Custom`]: midge_client::Transport::Custom

pub mod alarm;
mod config;
mod service;
mod spec;
mod template;
mod tsdb;
mod webhook;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use midge_client::codec::{
    Publish, RetainHandling, SubscribeProperties, SubscriptionOptions, TopicFilter, TopicName,
    UnsubscribeProperties,
};
use midge_client::{
    Client, ClientError, ClientOptions, Connector, Event, Protocol, QoS, Reconnect, Transport,
};
use midge_series::points::{Datapoint, FieldType};
use midge_series::{Row, SeriesError, SeriesStore};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

pub use alarm::{
    AlarmConfig, AlarmConfigError, AlarmError, AlarmRecord, AlarmSource, AlarmStatus, Alarms,
    ConditionError,
};
pub use config::{ActionConfig, HubConfig, RuleConfig};
/// The rule language, for callers that try a rule without running it (the HTTP dry run).
pub use midge_rules;
pub use service::{COUNTS_FILE, HubService, RULES_FILE, RuleChangeError, RuleSource, SaveError};
pub use spec::{RuleSpec, SpecProblem, SpecProblems, did_you_mean, field_names};
pub use template::TemplateError;
pub use webhook::WebhookTargetError;

use template::Template;

/// What the HTTP API shows about one rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleStatus {
    /// The rule's name (unique).
    pub name: String,
    /// Its SQL text.
    pub sql: String,
    /// The topic filters of its FROM clause.
    pub filters: Vec<String>,
    /// Its actions, described in one line each (`store telemetry`, `republish alerts/${topic}`).
    pub actions: Vec<String>,
    /// Messages whose topic matched the FROM clause.
    pub matched: u64,
    /// Messages that passed WHERE and produced a row.
    pub passed: u64,
    /// Messages whose evaluation or actions failed.
    pub failed: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The rules are invalid (every problem, one per line).
    #[error("{}", lines(.0))]
    Invalid(Vec<RuleProblem>),
}

fn lines(problems: &[RuleProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One problem [`validate`] finds in the rules; each names its rule.
#[derive(Debug, thiserror::Error)]
pub enum RuleProblem {
    /// A rule without a name.
    #[error("a rule has an empty name")]
    EmptyName,
    /// Two rules with one name.
    #[error("rule {0:?}: the name is used twice")]
    NameTwice(String),
    /// The SQL is not a rule.
    #[error("rule {rule:?}: {source}")]
    Sql {
        /// The rule.
        rule: String,
        /// Why.
        source: midge_rules::RuleError,
    },
    /// A rule that does nothing.
    #[error("rule {0:?}: no action (store, tsdb, republish, webhook or alarm)")]
    NoAction(String),
    /// `store` or `tsdb` without the time-series store.
    #[error("rule {rule:?}: `{action}` needs the time-series store, which is off")]
    NeedsStore {
        /// The rule.
        rule: String,
        /// `store` or `tsdb`.
        action: &'static str,
    },
    /// `store` into a table that cannot be one.
    #[error("rule {rule:?}: store: {source}")]
    Table {
        /// The rule.
        rule: String,
        /// Why.
        source: midge_series::InvalidTableName,
    },
    /// A republish topic template that cannot make a topic.
    #[error("rule {rule:?}: republish topic: {source}")]
    RepublishTopic {
        /// The rule.
        rule: String,
        /// Why.
        source: TemplateError,
    },
    /// A republish payload template that does not parse.
    #[error("rule {rule:?}: republish payload: {source}")]
    RepublishPayload {
        /// The rule.
        rule: String,
        /// Why.
        source: TemplateError,
    },
    /// A webhook's URL or headers.
    #[error("rule {rule:?}: webhook: {source}")]
    Webhook {
        /// The rule.
        rule: String,
        /// Why.
        source: webhook::WebhookTargetError,
    },
    /// An alarm's definition.
    #[error("rule {rule:?}: {source}")]
    Alarm {
        /// The rule.
        rule: String,
        /// Why.
        source: AlarmConfigError,
    },
    /// The rule's keys as given ([`RuleSpec::check`]).
    #[error("rule {rule:?}: {source}")]
    Spec {
        /// The rule.
        rule: String,
        /// Why.
        source: SpecProblem,
    },
}

/// A rule ready to run.
#[derive(Debug)]
struct Compiled {
    name: String,
    sql: String,
    rule: midge_rules::Rule,
    actions: Vec<Action>,
    described: Vec<String>,
}

#[derive(Debug)]
enum Action {
    Store {
        table: String,
    },
    Tsdb,
    Republish {
        topic: Template,
        payload: Option<Template>,
        qos: QoS,
        retain: bool,
    },
    Webhook(Arc<webhook::Target>),
    Alarm(Box<alarm::CompiledAlarm>),
}

/// Check every rule: its SQL, unique names, at least one action, valid tables, templates and
/// URLs, and a store for `store` and `tsdb` actions. Every problem is returned, naming its rule.
pub fn validate(config: &HubConfig, have_store: bool) -> Result<(), Vec<RuleProblem>> {
    compile(config, have_store).map(|_| ())
}

fn compile(config: &HubConfig, have_store: bool) -> Result<Vec<Compiled>, Vec<RuleProblem>> {
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for r in &config.rules {
        let name = || r.name.clone();
        if r.name.trim().is_empty() {
            problems.push(RuleProblem::EmptyName);
        } else if !names.insert(r.name.clone()) {
            problems.push(RuleProblem::NameTwice(name()));
        }
        let rule = match midge_rules::Rule::parse(&r.sql) {
            Ok(rule) => Some(rule),
            Err(source) => {
                problems.push(RuleProblem::Sql {
                    rule: name(),
                    source,
                });
                None
            }
        };
        if r.actions.is_empty() {
            problems.push(RuleProblem::NoAction(name()));
        }
        let mut actions = Vec::new();
        for a in &r.actions {
            match a {
                ActionConfig::Store { table } => {
                    if !have_store {
                        problems.push(RuleProblem::NeedsStore {
                            rule: name(),
                            action: "store",
                        });
                    }
                    if let Err(source) = midge_series::TableName::new(table) {
                        problems.push(RuleProblem::Table {
                            rule: name(),
                            source,
                        });
                    }
                    actions.push(Action::Store {
                        table: table.clone(),
                    });
                }
                ActionConfig::Tsdb => {
                    if !have_store {
                        problems.push(RuleProblem::NeedsStore {
                            rule: name(),
                            action: "tsdb",
                        });
                    }
                    actions.push(Action::Tsdb);
                }
                ActionConfig::Republish {
                    topic,
                    payload,
                    qos,
                    retain,
                } => {
                    let topic = Template::parse(topic).and_then(|t| {
                        let cols = rule.as_ref().and_then(midge_rules::Rule::column_names);
                        t.check_topic(cols.as_deref()).map(|()| t)
                    });
                    let topic = topic.map_err(|source| RuleProblem::RepublishTopic {
                        rule: name(),
                        source,
                    });
                    let payload =
                        payload
                            .as_deref()
                            .map(Template::parse)
                            .transpose()
                            .map_err(|source| RuleProblem::RepublishPayload {
                                rule: name(),
                                source,
                            });
                    match (topic, payload) {
                        (Ok(topic), Ok(payload)) => actions.push(Action::Republish {
                            topic,
                            payload,
                            qos: *qos,
                            retain: *retain,
                        }),
                        (t, p) => problems.extend(t.err().into_iter().chain(p.err())),
                    }
                }
                ActionConfig::Webhook {
                    url,
                    headers,
                    timeout,
                } => match webhook::Target::parse(url, headers.clone(), *timeout) {
                    Ok(t) => actions.push(Action::Webhook(Arc::new(t))),
                    Err(source) => problems.push(RuleProblem::Webhook {
                        rule: name(),
                        source,
                    }),
                },
                ActionConfig::Alarm(a) => match a.compile() {
                    Ok(c) => actions.push(Action::Alarm(Box::new(c))),
                    Err(p) => problems.extend(p.into_iter().map(|source| RuleProblem::Alarm {
                        rule: name(),
                        source,
                    })),
                },
            }
        }
        if let Some(rule) = rule {
            out.push(Compiled {
                name: r.name.clone(),
                sql: r.sql.clone(),
                rule,
                actions,
                described: r.actions.iter().map(ActionConfig::describe).collect(),
            });
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Counters of one rule, shared with [`Hub::status`].
#[derive(Debug, Default)]
struct Counters {
    matched: AtomicU64,
    passed: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    fn fail(&self, error: impl Into<String>) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(error.into());
        }
    }
}

/// What [`Hub::status`] reads.
#[derive(Debug)]
struct Shared {
    rules: Vec<(RuleStatus, Counters)>,
}

impl Shared {
    fn status(&self) -> Vec<RuleStatus> {
        self.rules
            .iter()
            .map(|(s, c)| RuleStatus {
                matched: c.matched.load(Ordering::Relaxed),
                passed: c.passed.load(Ordering::Relaxed),
                failed: c.failed.load(Ordering::Relaxed),
                last_error: c.last_error.lock().ok().and_then(|e| e.clone()),
                ..s.clone()
            })
            .collect()
    }

    fn counters(&self, rule: usize) -> Option<&Counters> {
        self.rules.get(rule).map(|(_, c)| c)
    }

    /// Continue the counts of rules that ran before (same name and SQL).
    fn carry_over(&self, before: &[RuleStatus]) {
        for (s, c) in &self.rules {
            let Some(old) = before.iter().find(|o| o.name == s.name && o.sql == s.sql) else {
                continue;
            };
            c.matched.fetch_add(old.matched, Ordering::Relaxed);
            c.passed.fetch_add(old.passed, Ordering::Relaxed);
            c.failed.fetch_add(old.failed, Ordering::Relaxed);
            if let Ok(mut e) = c.last_error.lock()
                && e.is_none()
            {
                e.clone_from(&old.last_error);
            }
        }
    }
}

/// The running hub.
#[derive(Debug)]
pub struct Hub {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Hub {
    /// Check the rules and start running them through `connector`. With no rules nothing is
    /// started (no session, no subscription).
    pub async fn start(
        config: HubConfig,
        connector: Connector,
        series: Option<Arc<SeriesStore>>,
    ) -> Result<Hub, HubError> {
        let alarms = Alarms::open(None);
        Hub::start_with_alarms(config, connector, series, alarms).await
    }

    /// [`Hub::start`] with the alarms its `alarm` actions raise and clear (kept by the
    /// caller across restarts of the hub).
    pub async fn start_with_alarms(
        config: HubConfig,
        connector: Connector,
        series: Option<Arc<SeriesStore>>,
        alarms: Arc<Alarms>,
    ) -> Result<Hub, HubError> {
        let rules = compile(&config, series.is_some()).map_err(HubError::Invalid)?;
        let shared = Arc::new(Shared {
            rules: rules
                .iter()
                .map(|r| {
                    (
                        RuleStatus {
                            name: r.name.clone(),
                            sql: r.sql.clone(),
                            filters: r
                                .rule
                                .filters()
                                .iter()
                                .map(|f| f.as_str().to_string())
                                .collect(),
                            actions: r.described.clone(),
                            matched: 0,
                            passed: 0,
                            failed: 0,
                            last_error: None,
                        },
                        Counters::default(),
                    )
                })
                .collect(),
        });
        if rules.is_empty() {
            return Ok(Hub {
                shared,
                stop: None,
                task: None,
            });
        }
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run(
            config,
            rules,
            connector,
            series,
            shared.clone(),
            alarms,
            stop_rx,
        ));
        Ok(Hub {
            shared,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// Every rule with its counters.
    pub fn status(&self) -> Vec<RuleStatus> {
        self.shared.status()
    }

    /// A function giving [`Hub::status`] that outlives borrows of the hub (for the HTTP API).
    pub fn status_fn(&self) -> Arc<dyn Fn() -> Vec<RuleStatus> + Send + Sync> {
        let shared = self.shared.clone();
        Arc::new(move || shared.status())
    }

    /// Stop: the batch being stored is finished (and acknowledged), then the session is
    /// left with DISCONNECT. Rows not yet stored stay unacknowledged in the broker and are
    /// stored after the next start (with a persistent session).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The user property the broker adds to messages for in-process clients: the publisher.
const PUBLISHER_CLIENT_ID: &str = midge_client::codec::origin::CLIENT_ID;
/// ... and its user name.
const PUBLISHER_USERNAME: &str = midge_client::codec::origin::USERNAME;
/// ... and when the broker accepted the message (ms since the Unix epoch): the message's
/// time, the same when it is redelivered.
const MESSAGE_TIME: &str = midge_client::codec::origin::TIME;

/// The hub's Receive Maximum: how many messages the broker sends it before it acknowledges
/// (after the batch holding them is committed).
const HUB_RECEIVE_MAXIMUM: u16 = 16_384;

/// Rows and datapoints of one batch, the messages to acknowledge once they are committed.
#[derive(Debug, Default)]
struct Batch {
    /// Table, row, index of the rule that made it.
    rows: Vec<(String, Row, usize)>,
    /// Datapoints (`tsdb` actions), written in one transaction.
    points: Vec<Datapoint>,
    /// The rule that made each point.
    point_rules: Vec<usize>,
    acks: Vec<Publish>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.points.is_empty() && self.acks.is_empty()
    }

    /// Rows and points waiting to be written.
    fn len(&self) -> usize {
        self.rows.len() + self.points.len()
    }
}

/// A batch after a write: what is left of it (nothing on success), the points the store
/// refused (rule, reason), and the result.
type Stored = (Batch, Vec<(usize, String)>, Result<(), SeriesError>);

struct Runtime {
    rules: Vec<Compiled>,
    shared: Arc<Shared>,
    client: Client,
    series: Option<Arc<SeriesStore>>,
    webhooks: Option<mpsc::Sender<webhook::Job>>,
    /// Rows waiting for the batch in flight to finish.
    pending: Batch,
    state_dir: Option<PathBuf>,
    alarms: Arc<Alarms>,
    /// `HubConfig::share_group`.
    share_group: Option<String>,
    /// The hub's client id (its own republishes are skipped in a share group).
    client_id: String,
}

async fn run(
    config: HubConfig,
    rules: Vec<Compiled>,
    connector: Connector,
    series: Option<Arc<SeriesStore>>,
    shared: Arc<Shared>,
    alarms: Arc<Alarms>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut options = ClientOptions::new("local", 0, &config.client_id);
    options.transport = Transport::Custom(connector);
    options.connect = midge_client::codec::Connect::new(Protocol::V5, config.client_id.as_str());
    options.connect.keep_alive = 0;
    let persistent = config.state_dir.is_some();
    options.connect.clean_start = !persistent;
    if persistent {
        // long enough to survive any restart; the broker caps it at its max_session_expiry
        options.connect.properties.session_expiry_interval = Some(u32::MAX);
    }
    options.manual_acks = true;
    // messages unacknowledged at once: they are acknowledged a batch at a time after its
    // commit, so this bounds the batch size (the broker does not cap its own clients at
    // max_inflight_messages, see midge_core::INTERNAL_CLIENT_ID_PREFIX)
    options.connect.properties.receive_maximum = Some(HUB_RECEIVE_MAXIMUM);
    options.reconnect = Some(Reconnect {
        min: Duration::from_millis(100),
        max: Duration::from_secs(5),
    });
    let (client, mut event_loop) = Client::new(options);
    let (etx, mut events) = mpsc::channel::<Result<Event, ClientError>>(1024);
    let poller = tokio::spawn(async move {
        loop {
            let e = event_loop.poll().await;
            let end = matches!(e, Err(_) | Ok(Event::Closed));
            if etx.send(e).await.is_err() || end {
                return;
            }
        }
    });
    let webhooks = rules
        .iter()
        .any(|r| r.actions.iter().any(|a| matches!(a, Action::Webhook(_))))
        .then(|| start_webhooks(&config, shared.clone()));
    let mut rt = Runtime {
        rules,
        shared,
        client,
        series: series.clone(),
        webhooks,
        pending: Batch::default(),
        state_dir: config.state_dir.clone(),
        alarms,
        share_group: config.share_group.clone(),
        client_id: config.client_id.clone(),
    };
    // acknowledged or cleared through the API before this hub ran
    rt.publish_alarm_outbox().await;
    let mut inflight: Option<JoinHandle<Stored>> = None;
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let room = rt.pending.len() < config.max_pending_rows;
        tokio::select! {
            _ = &mut stop => break,
            () = rt.alarms.wake.notified() => rt.publish_alarm_outbox().await,
            e = events.recv(), if room => match e {
                Some(Ok(Event::Connected(ack))) => rt.connected(ack.session_present).await,
                Some(Ok(Event::Message(p))) => rt.message(p).await,
                Some(Ok(Event::ConnectionLost(e))) => warn!(error = %e, "hub: connection to the broker lost"),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    warn!(error = %e, "hub: connection to the broker ended");
                    break;
                }
                None => break,
            },
            done = async { match inflight.as_mut() { Some(h) => h.await, None => std::future::pending().await } } => {
                inflight = None;
                match done {
                    Ok((batch, refused, Ok(()))) => {
                        rt.refused(refused);
                        rt.stored(batch).await;
                    }
                    Ok((batch, refused, Err(e))) => {
                        rt.refused(refused);
                        warn!(error = %e, rows = batch.rows.len(), points = batch.points.len(), "hub: storing rows failed; retrying in 1 s");
                        rt.store_failed(batch, &e);
                        retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                    }
                    Err(e) => warn!(error = %e, "hub: store task failed"),
                }
            }
            _ = async { match retry_at { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                retry_at = None;
            }
        }
        if inflight.is_none() && retry_at.is_none() && !rt.pending.is_empty() {
            inflight = rt.start_batch().await;
        }
    }
    // finish the batch being stored, so what it acknowledges is on disk
    if let Some(h) = inflight
        && let Ok((batch, refused, Ok(()))) = h.await
    {
        rt.refused(refused);
        rt.stored(batch).await;
    }
    let _ = rt.client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), poller).await;
}

fn start_webhooks(config: &HubConfig, shared: Arc<Shared>) -> mpsc::Sender<webhook::Job> {
    let (tx, mut rx) = mpsc::channel::<webhook::Job>(config.webhook_queue.max(1));
    let permits = Arc::new(tokio::sync::Semaphore::new(
        config.webhook_concurrency.max(1),
    ));
    let tls = Arc::new(
        midge_client::tls_config(&midge_client::TlsOptions::default())
            .unwrap_or_else(|_| empty_tls_config()),
    );
    tokio::spawn(async move {
        while let Some(job) = rx.recv().await {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let shared = shared.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let mut delay = Duration::from_millis(500);
                let mut last = String::new();
                for attempt in 0..3 {
                    if attempt > 0 {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    match webhook::post(&job.target, job.body.clone(), &tls).await {
                        Ok(_) => {
                            drop(permit);
                            return;
                        }
                        Err(e) => last = e.to_string(),
                    }
                }
                debug!(url = %job.target.uri, error = %last, "webhook failed");
                if let Some(c) = shared.counters(job.rule) {
                    c.fail(format!("webhook {}: {last}", job.target.uri));
                }
                drop(permit);
            });
        }
    });
    tx
}

/// A TLS configuration trusting nothing (only if the webpki roots could not be loaded).
fn empty_tls_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
}

impl Runtime {
    /// Publish what acknowledging or clearing alarms through the API left to say.
    async fn publish_alarm_outbox(&mut self) {
        for (topic, body) in self.alarms.take_outbox() {
            let Ok(name) = TopicName::new(topic) else {
                continue;
            };
            let mut out = Publish::new(name, body);
            out.qos = QoS::AtLeastOnce;
            let _ = self.client.publish_packet(out).await;
        }
    }

    /// (Re)connected: subscribe to every rule's filters and forget those of rules that are
    /// gone (the persistent session may still hold them).
    async fn connected(&mut self, session_present: bool) {
        let mut filters: Vec<TopicFilter> = Vec::new();
        for r in &self.rules {
            for f in r.rule.filters() {
                if !filters.iter().any(|g| g.as_str() == f.as_str()) {
                    filters.push(f.clone());
                }
            }
        }
        // in a cluster, one hub of all the nodes' hubs takes each message (a share group);
        // the group cannot have No Local [MQTT-3.8.3-4]: the hub skips its own messages
        if let Some(group) = &self.share_group {
            filters = filters
                .iter()
                .filter_map(|f| TopicFilter::new(format!("$share/{group}/{}", f.as_str())).ok())
                .collect();
        }
        let wanted: BTreeSet<String> = filters.iter().map(|f| f.as_str().to_string()).collect();
        if session_present {
            let stale: Vec<TopicFilter> = read_filters(self.state_dir.as_deref())
                .into_iter()
                .filter(|f| !wanted.contains(f))
                .filter_map(|f| TopicFilter::new(f).ok())
                .collect();
            if !stale.is_empty() {
                info!(filters = ?stale.iter().map(|f| f.as_str()).collect::<Vec<_>>(), "hub: unsubscribing from filters of removed rules");
                let _ = self
                    .client
                    .unsubscribe_many(stale, UnsubscribeProperties::default())
                    .await;
            }
        }
        let options = SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            // the hub's own republishes never come back to it: no rule loops
            no_local: self.share_group.is_none(),
            retain_as_published: true,
            // retained messages are state, not new readings: do not store them again at
            // every start
            retain_handling: RetainHandling::DoNotSend,
        };
        let subs = filters.into_iter().map(|f| (f, options)).collect();
        let _ = self
            .client
            .subscribe_many(subs, SubscribeProperties::default())
            .await;
        write_filters(self.state_dir.as_deref(), &wanted);
        info!(rules = self.rules.len(), "hub: rules running");
    }

    /// Run every matching rule on one message.
    async fn message(&mut self, p: Publish) {
        let mut client_id = "";
        let mut username = None;
        let mut time = None;
        // the broker adds its properties after the publisher's own: the last one of a name
        // is the broker's, so a device cannot pass itself off as another or choose its time
        for (k, v) in &p.properties.user_properties {
            match k.as_ref() {
                PUBLISHER_CLIENT_ID => client_id = v.as_ref(),
                PUBLISHER_USERNAME => username = Some(v.as_ref()),
                MESSAGE_TIME => time = v.parse::<i64>().ok().filter(|t| *t > 0),
                _ => {}
            }
        }
        // a republish of a hub (this node's or, in a cluster, another's: they share the
        // client id) never runs the rules again: no rule loops
        if self.share_group.is_some() && client_id == self.client_id {
            return;
        }
        // the time the broker accepted it (kept through a redelivery), else now
        let ts = time.unwrap_or_else(now_ms);
        let input = midge_rules::Input {
            topic: p.topic.as_str(),
            payload: &p.payload,
            client_id,
            username,
            qos: p.qos as u8,
            retain: p.retain,
            timestamp_ms: ts,
        };
        let mut stored = false;
        let mut publishes = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            if !r.rule.matches(input.topic) {
                continue;
            }
            let Some(counters) = self.shared.counters(i) else {
                continue;
            };
            counters.matched.fetch_add(1, Ordering::Relaxed);
            let Some(row) = r.rule.apply(&input) else {
                continue;
            };
            counters.passed.fetch_add(1, Ordering::Relaxed);
            let meta = template::Meta {
                topic: input.topic,
                client_id,
                timestamp_ms: ts,
            };
            for a in &r.actions {
                match a {
                    Action::Store { table } => {
                        stored = true;
                        self.pending.rows.push((
                            table.clone(),
                            Row::new(ts, input.topic, client_id, row.clone()),
                            i,
                        ));
                    }
                    Action::Tsdb => match tsdb::points(&row, ts) {
                        Ok(points) => {
                            stored = true;
                            self.pending.point_rules.extend(points.iter().map(|_| i));
                            self.pending.points.extend(points);
                        }
                        Err(reason) => counters.fail(format!("tsdb: {reason}")),
                    },
                    Action::Republish {
                        topic,
                        payload,
                        qos,
                        retain,
                    } => {
                        let t = match topic.render_topic(&row, &meta) {
                            Ok(t) => t,
                            Err(e) => {
                                counters.fail(format!("republish: {e}"));
                                continue;
                            }
                        };
                        let Ok(name) = TopicName::new(t.clone()) else {
                            counters.fail(format!("republish: {t:?} is not a valid topic"));
                            continue;
                        };
                        let body: Bytes = match payload {
                            Some(tpl) => tpl.render(&row, &meta).into(),
                            None => Value::Object(row.clone()).to_string().into(),
                        };
                        let mut out = Publish::new(name, body);
                        out.qos = *qos;
                        out.retain = *retain;
                        publishes.push(out);
                    }
                    Action::Alarm(alarm) => {
                        if let Some((topic, body)) =
                            self.alarms
                                .evaluate(alarm, &r.name, &row, input.topic, client_id, ts)
                        {
                            match TopicName::new(topic.clone()) {
                                Ok(name) => {
                                    let mut out = Publish::new(name, body);
                                    out.qos = QoS::AtLeastOnce;
                                    publishes.push(out);
                                }
                                Err(_) => {
                                    counters.fail(format!("alarm: {topic:?} is not a valid topic"))
                                }
                            }
                        }
                    }
                    Action::Webhook(target) => {
                        let Some(tx) = &self.webhooks else { continue };
                        let job = webhook::Job {
                            target: target.clone(),
                            body: Value::Object(row.clone()).to_string().into(),
                            rule: i,
                        };
                        if tx.try_send(job).is_err() {
                            counters.fail("webhook queue full: request dropped");
                        }
                    }
                }
            }
        }
        for out in publishes {
            let _ = self.client.publish_packet(out).await;
        }
        if stored {
            self.pending.acks.push(p);
        } else {
            let _ = self.client.ack(&p).await;
        }
    }

    /// Hand the pending rows and points to a blocking task (see [`store_batch`]).
    async fn start_batch(&mut self) -> Option<JoinHandle<Stored>> {
        let batch = std::mem::take(&mut self.pending);
        let Some(series) = self.series.clone() else {
            // no store (rules without store actions): nothing to wait for
            for p in &batch.acks {
                let _ = self.client.ack(p).await;
            }
            return None;
        };
        Some(tokio::task::spawn_blocking(move || {
            let mut batch = batch;
            let mut refused = Vec::new();
            let result = store_batch(&series, &mut batch, &mut refused);
            (batch, refused, result)
        }))
    }

    /// A batch is committed: acknowledge its messages.
    async fn stored(&mut self, batch: Batch) {
        for p in &batch.acks {
            let _ = self.client.ack(p).await;
        }
    }

    /// Points the store refused (each a failure of its rule; its message is acknowledged
    /// with the batch, as a message whose rule failed otherwise is).
    fn refused(&self, refused: Vec<(usize, String)>) {
        for (rule, reason) in refused {
            if let Some(c) = self.shared.counters(rule) {
                c.fail(reason);
            }
        }
    }

    /// A batch could not be stored: count it against its rules and put what is left of it
    /// (what was committed is out of it) back in front of what is pending (it is retried;
    /// its messages stay unacknowledged meanwhile).
    fn store_failed(&mut self, mut batch: Batch, error: &SeriesError) {
        let mut seen = BTreeSet::new();
        let rules = batch
            .rows
            .iter()
            .map(|(_, _, rule)| (*rule, "store"))
            .chain(batch.point_rules.iter().map(|rule| (*rule, "tsdb")));
        for (rule, action) in rules {
            if seen.insert(rule)
                && let Some(c) = self.shared.counters(rule)
            {
                c.fail(format!("{action}: {error}"));
            }
        }
        batch.rows.append(&mut self.pending.rows);
        batch.points.append(&mut self.pending.points);
        batch.point_rules.append(&mut self.pending.point_rules);
        batch.acks.append(&mut self.pending.acks);
        self.pending = batch;
    }
}

/// Write a batch: its datapoints in one transaction, then its rows, one transaction per
/// table. What is committed is taken out of `batch`, so that a retry after an error writes
/// only the rest (points first: writing a point again replaces it, so even a retry of
/// them makes no duplicate).
///
/// The hub checks points before they enter a batch, so the store refuses one only when its
/// field already holds text (written through the API). Such points are taken out of the
/// batch and reported in `refused` (rule, reason), and the rest written: one bad message
/// never holds up the others.
fn store_batch(
    series: &SeriesStore,
    batch: &mut Batch,
    refused: &mut Vec<(usize, String)>,
) -> Result<(), SeriesError> {
    let mut checked_types = false;
    while !batch.points.is_empty() {
        match series.write_points(&batch.points) {
            Ok(()) => {
                batch.points.clear();
                batch.point_rules.clear();
            }
            Err(SeriesError::InvalidPoint { index, reason }) if index < batch.points.len() => {
                batch.points.remove(index);
                let rule = batch.point_rules.remove(index);
                refused.push((rule, format!("tsdb: {reason}")));
                if !checked_types {
                    // one refusal may be one of many (a whole field of text): take out every
                    // point whose field holds text, rather than one per write
                    checked_types = true;
                    drop_text_fields(series, batch, refused)?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    while let Some(table) = batch.rows.first().map(|(t, _, _)| t.clone()) {
        let rows: Vec<Row> = batch
            .rows
            .iter()
            .filter(|(t, _, _)| *t == table)
            .map(|(_, r, _)| r.clone())
            .collect();
        series.insert(&table, &rows)?;
        batch.rows.retain(|(t, _, _)| *t != table);
    }
    Ok(())
}

/// Take out of `batch` the points whose field is stored as text (the hub writes numbers).
fn drop_text_fields(
    series: &SeriesStore,
    batch: &mut Batch,
    refused: &mut Vec<(usize, String)>,
) -> Result<(), SeriesError> {
    let metrics: BTreeSet<String> = batch.points.iter().map(|p| p.metric.clone()).collect();
    let mut text: BTreeSet<(String, String)> = BTreeSet::new();
    for m in metrics {
        for (field, ty) in series.metric_fields(&m)? {
            if ty == FieldType::String {
                text.insert((m.clone(), field));
            }
        }
    }
    if text.is_empty() {
        return Ok(());
    }
    let points = std::mem::take(&mut batch.points);
    let rules = std::mem::take(&mut batch.point_rules);
    for (p, rule) in points.into_iter().zip(rules) {
        if text.contains(&(p.metric.clone(), p.field.clone())) {
            refused.push((
                rule,
                format!(
                    "tsdb: field {:?} of metric {:?} holds String values; this value is a Number",
                    p.field, p.metric
                ),
            ));
        } else {
            batch.points.push(p);
            batch.point_rules.push(rule);
        }
    }
    Ok(())
}

const FILTERS_FILE: &str = "hub-filters.json";

fn read_filters(dir: Option<&Path>) -> Vec<String> {
    let Some(dir) = dir else { return Vec::new() };
    std::fs::read(dir.join(FILTERS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<String>>(&b).ok())
        .unwrap_or_default()
}

fn write_filters(dir: Option<&Path>, filters: &BTreeSet<String>) {
    let Some(dir) = dir else { return };
    let path = dir.join(FILTERS_FILE);
    let tmp = dir.join(format!("{FILTERS_FILE}.tmp"));
    let text = serde_json::to_vec(&filters.iter().collect::<Vec<_>>()).unwrap_or_default();
    let result = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, text))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = result {
        warn!(path = %path.display(), error = %e, "hub: cannot save its subscription list");
    }
}
