//! # midge-http
//!
//! One HTTP listener for midge: the REST API (`/api/v1/...`), Prometheus `/metrics` and the
//! web dashboard (`/`), whose files are embedded in the binary (plain HTML, CSS and
//! JavaScript: no build step, nothing fetched from elsewhere).
//!
//! The API reaches the broker the way any internal client does: figures through
//! [`midge_server::ServerHandle`], publishes and live subscriptions through in-process MQTT 5
//! connections opened with a [`midge_client::Connector`] (trusted: no password, no ACL).
//! Stored device data comes from a [`midge_series::SeriesStore`], rule figures from a
//! closure the hub provides.
//!
//! ```text
//! GET  /api/v1/health                         {"status":"ok"} (never needs a password)
//! GET  /api/v1/stats                          broker figures as JSON
//! GET  /api/v1/cluster                        this node and the other nodes of its cluster
//! GET  /api/v1/listeners                      the broker's listeners (kind tcp/tls/ws/wss,
//!                                             address, port, WebSocket path)
//! GET  /metrics                               the same in Prometheus text format
//! GET  /api/v1/rules                          rule statuses (and where each comes from)
//! POST /api/v1/rules                          add a rule {"name","sql","store"|"republish"|"webhook"}
//! DELETE /api/v1/rules/{name}                 remove a rule added through the API
//! PUT  /api/v1/rules/{name}                   change a rule added through the API in place
//! PATCH /api/v1/rules/{name}                  {"enabled": false} disables it (true: again)
//! POST /api/v1/rules/test                     dry run {"sql","topic","payload"}: the row,
//!                                             or why there is none
//! GET  /api/v1/tables                         series tables
//! GET  /api/v1/tables/{table}/topics          topics seen in a table
//! GET  /api/v1/tables/{table}/rows            stored rows (topic, client_id, since, until,
//!                                             limit, order, cursor); a cut answer says
//!                                             "truncated": true and gives "next" (a cursor)
//! GET  /api/v1/tables/{table}/series          one field over time (field, topic, client_id,
//!                                             since, until, bucket, agg, limit, cursor, or
//!                                             points=N: N buckets with min/max for a chart)
//! POST /api/v1/publish                        {"topic", "payload" | "json", "qos", "retain"}
//! GET  /api/v1/live?filter=a/%23&filter=b/+   server-sent events, one MQTT subscription
//!                                             (an `id` per event; Last-Event-ID replays
//!                                             the topics changed since from the last values)
//! GET  /api/v1/last?topic=a/%23               the last message of each matching topic
//! GET  /api/v1/topics?filter=%23&limit=100     the topics published, with their last
//!                                             message and count (the first-run list)
//! POST /api/v1/tokens                         a share link {"ttl","dashboard"}: token + URL
//!                                             opening the dashboard read-only (Bearer too)
//! GET  /api/v1/tokens, DELETE /api/v1/tokens/{id}  list (never the tokens) / revoke
//! GET  /api/v1/dashboards                     the dashboards (ids, names; `config` is the
//!                                             configuration's, read-only)
//! POST /api/v1/dashboards                     a new one, or an exported one imported
//! GET|PUT|DELETE /api/v1/dashboards/{id}      one: its widgets; rename or replace them
//! GET  /api/v1/dashboards/{id}/export         the JSON as a file to download
//! GET  /api/v1/dashboard                      the first dashboard's widgets
//! PUT  /api/v1/dashboard                      replace them (saved atomically)
//! GET  /                                      the dashboard page
//! GET  /client                                the MQTT web client (over the ws/wss listener)
//! GET  /login, POST /login, GET /logout       the login page of a locked listener (a
//!                                             session cookie the API accepts)
//! GET  /api/v1/session                        who the caller is, whether by a session
//! POST /topics/{topic}?qos=&retain=           a device publishes (HTTP Basic with its
//!                                             registry credentials; AWS IoT's shape)
//! POST /api/v1/access-keys                    make an access key {"description"} (201,
//!                                             the secret shown once)
//! GET  /api/v1/access-keys                    the keys, never their secrets
//! DELETE /api/v1/access-keys/{id}             revoke one made through the API
//! GET  /v1/metric                             the Baidu TSDB data API: metrics, their
//! GET  /v1/metric/{m}/field, /v1/metric/{m}/tag  fields and tags; datapoints written
//! POST /v1/datapoint                          (all or none), queried (PUT ?query, or GET
//! PUT  /v1/datapoint?query | ?export          ?query=<json>) and exported (streamed)
//! ```
//!
//! Errors are `{"error": "..."}` with a 4xx/5xx status. Request bodies are limited to
//! [`MAX_BODY_BYTES`]. With `allow_anonymous` off, every route but `/api/v1/health` needs
//! HTTP Basic credentials from a mosquitto-format password file; with it on, requests whose
//! `Host` is not an IP address, `localhost` or one of [`HttpConfig::allowed_hosts`] are
//! refused with 421 (a web page whose domain was rebound to this address names its domain
//! there). A request signed with an access key (`bce-auth-v1`, Baidu Cloud's signature;
//! [`HttpConfig::access_keys`] and the keys made through the API) is an operator's whatever
//! the above says; a wrong, expired or unknown-key signature is refused with 403.
//!
//! Connections: a request head must arrive within [`HttpConfig::header_read_timeout`] (idle
//! keep-alive connections close after it too; answers in progress, such as live streams, are
//! not limited), at most [`HttpConfig::max_connections`] are open at once (one more is
//! answered 503 and closed at once), and a JSON request body must arrive within
//! [`BODY_READ_TIMEOUT`].
//!
//! ## Starting it next to a broker
//!
//! ```no_run
//! use std::sync::Arc;
//! use midge_http::{HttpConfig, HttpDeps, HttpServer, Widget, WidgetKind};
//!
//! # async fn run(
//! #     broker: &midge_server::Server,
//! #     store: Arc<midge_series::SeriesStore>,
//! # ) -> Result<(), midge_http::HttpError> {
//! let mut config = HttpConfig::new("127.0.0.1:8080".parse().unwrap());
//! config.dashboard_file = Some("data/dashboard.json".into());
//! let mut gauge = Widget::new(WidgetKind::Gauge, "sensors/boiler");
//! gauge.field = "temp".into();
//! config.widgets = vec![gauge];
//!
//! let mut deps = HttpDeps::new(broker); // the broker's handle and in-process connector
//! deps.series = Some(store);
//! // deps.hub = Some(hub_service); // the rules, from midge_hub::HubService::start
//! let http = HttpServer::start(config, deps).await?;
//! println!("dashboard on http://{}/", http.local_addr());
//! // ... on shutdown:
//! http.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod alarms;
mod api;
mod assets;
mod auth;
mod dashboard;
mod data;
mod devices;
mod host;
mod ingest;
mod last;
mod listeners;
mod live;
mod publish;
mod rules_api;
mod serve;
mod share;
mod time;
mod tsdb;
mod widget;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

pub use listeners::ListenerInfo;
pub use widget::{Series, Widget, WidgetKind, validate as validate_widgets};

/// Largest request body accepted (bytes).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Time a JSON request body has to arrive once its head has (408 after it).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how the HTTP listener runs (plain data; the binary fills it from its
/// configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// Address to listen on (port 0 picks a free port; see [`HttpServer::local_addr`]).
    pub bind: SocketAddr,
    /// Serve without credentials. When off, every route but `/api/v1/health` needs HTTP
    /// Basic credentials found in `password_file`. When on and a request brings
    /// credentials anyway, they must be right.
    pub allow_anonymous: bool,
    /// A password file in mosquitto's format (`midge passwd`), read at start.
    pub password_file: Option<PathBuf>,
    /// Where the dashboards made in the web page are saved (JSON); without a path, they last
    /// until the server stops. They are listed beside `widgets`, never instead of them.
    pub dashboard_file: Option<PathBuf>,
    /// The configuration file's widgets: the read-only dashboard `config`.
    pub widgets: Vec<Widget>,
    /// Most live streams (`/api/v1/live`) open at once; more are refused with 503.
    pub max_live_streams: usize,
    /// Messages buffered per live stream; a browser that cannot keep up loses the messages
    /// that do not fit (counted in `/metrics`).
    pub live_buffer: usize,
    /// Most HTTP connections open at once (keep-alive connections and live streams count);
    /// one more is answered 503 and closed at once. At least 1.
    pub max_connections: usize,
    /// Time a client has to send a whole request head (request line and headers), counted
    /// from the connection's start and from the end of each answer, so idle keep-alive
    /// connections close after it too. Answers in progress (live streams) are not limited.
    /// Zero turns it off.
    pub header_read_timeout: Duration,
    /// Host names, besides IP addresses and `localhost`, under which anonymous requests are
    /// served (`"midge.lan"`; a port is ignored; `"*"` allows any name). Only used when
    /// `allow_anonymous` is on: a web page whose domain was rebound to this address sends
    /// its own domain as `Host`, and is refused with 421.
    pub allowed_hosts: Vec<String>,
    /// Serve HTTPS with this certificate and key (and, with `ca_file`, ask browsers for a
    /// client certificate; `require_certificate` refuses those without one). The same
    /// files and rules as the broker's TLS listeners.
    pub tls: Option<midge_server::TlsConfig>,
    /// When set, only these users of the password file may use the API (others get 403):
    /// the operators, when the file is the broker's and MQTT users are held to an ACL that
    /// the API (which publishes and reads anything) would let them step around.
    pub users: Option<Vec<String>>,
    /// Access keys for signed requests (`bce-auth-v1`, the Baidu Cloud signature): a
    /// request signed with one of them is an operator's, whatever `allow_anonymous`,
    /// `users` and the `Host` check say. Keys made through `POST /api/v1/access-keys`
    /// come on top (kept in `access_keys.json` next to the dashboard file).
    pub access_keys: Vec<AccessKey>,
    /// Deprecated: the broker keeps the last values now (`midge_core::Config::
    /// last_values_topics`, `[limits] last_values_topics`, whose alias `[http]
    /// last_values_topics` the command line maps there). Here only 0 counts: it turns
    /// `GET /api/v1/last`, `GET /api/v1/topics` and live-stream resumes off (503); any
    /// other value (the default 10,000) serves what the broker keeps.
    pub last_values_topics: usize,
}

/// An access key of the configuration: its id (the `ak` of a signed request) and the
/// secret both sides sign with.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// The access key id.
    pub id: String,
    /// The secret access key.
    pub secret: String,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("secret", &"<hidden>")
            .finish()
    }
}

impl HttpConfig {
    /// A configuration listening on `bind`, anonymous, no files, no widgets, 64 live streams
    /// of 256 buffered messages each, at most 1024 connections, 10 s to send a request head,
    /// no host names allowed besides IP addresses and `localhost`.
    pub fn new(bind: SocketAddr) -> HttpConfig {
        HttpConfig {
            bind,
            allow_anonymous: true,
            password_file: None,
            dashboard_file: None,
            widgets: Vec::new(),
            max_live_streams: 64,
            live_buffer: 256,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            allowed_hosts: Vec::new(),
            tls: None,
            users: None,
            access_keys: Vec::new(),
            last_values_topics: 10_000,
        }
    }
}

/// What the HTTP listener talks to.
#[derive(Clone)]
pub struct HttpDeps {
    /// The running broker's figures.
    pub server: midge_server::ServerHandle,
    /// Opens in-process MQTT connections to the broker (publishes, live streams).
    pub connector: midge_client::Connector,
    /// The time-series store; without it the data routes answer 503.
    pub series: Option<Arc<midge_series::SeriesStore>>,
    /// The rules: listed with their figures, added and removed through the API. Without it
    /// the list is empty and changes answer 503.
    pub hub: Option<Arc<midge_hub::HubService>>,
    /// The broker's listeners, for `GET /api/v1/listeners` (the MQTT web client finds the
    /// WebSocket listener there); empty unless set.
    pub listeners: Vec<ListenerInfo>,
    /// The cluster this node is part of, for `GET /api/v1/cluster` (`None`: on its own).
    pub cluster: Option<Arc<dyn midge_server::cluster::ClusterView>>,
}

impl HttpDeps {
    /// Dependencies on a running broker: its handle and its in-process connector; no series
    /// store and no rules (set the fields to add them).
    pub fn new(server: &midge_server::Server) -> HttpDeps {
        HttpDeps {
            server: server.handle(),
            connector: connector(server.local_connector()),
            series: None,
            hub: None,
            listeners: Vec::new(),
            cluster: None,
        }
    }
}

impl std::fmt::Debug for HttpDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpDeps")
            .field("server", &self.server)
            .field("series", &self.series.as_ref().map(|s| s.path().to_owned()))
            .finish_non_exhaustive()
    }
}

/// The HTTPS acceptor for `t`: the broker's rustls setup, speaking HTTP/1.1 (ALPN).
fn tls_acceptor(t: &midge_server::TlsConfig) -> Result<tokio_rustls::TlsAcceptor, HttpError> {
    let mut c = (*midge_server::tls_server_config(t).map_err(HttpError::Tls)?).clone();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(c)))
}

/// A [`midge_client::Connector`] opening in-process connections through `local`.
pub fn connector(local: midge_server::LocalConnector) -> midge_client::Connector {
    midge_client::Connector::new(move || {
        let local = local.clone();
        async move { local.connect() }
    })
}

/// Why the HTTP listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listening socket could not be bound.
    #[error("HTTP: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The password file could not be read or parsed.
    #[error("HTTP: {0}")]
    PasswordFile(#[from] midge_auth::PasswordFileError),
    /// Anonymous access is off but no password file was given: nobody could log in.
    #[error("HTTP: allow_anonymous is off and no password_file is set: nobody could log in")]
    NoPasswordFile,
    /// The saved dashboard file exists but could not be read or is not a valid dashboard.
    #[error("HTTP: dashboard file {}: {reason}", path.display())]
    DashboardFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS certificate, key or CA file could not be used.
    #[error("HTTP TLS: {0}")]
    Tls(String),
    /// The access keys saved by the API exist but could not be read.
    #[error("HTTP: access key file {}: {reason}", path.display())]
    AccessKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The configured widgets are not valid (every problem, one per line).
    #[error("HTTP: dashboard widgets:\n{}", .0.join("\n"))]
    Widgets(Vec<String>),
}

/// A running HTTP listener.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    /// The HTTPS acceptor new connections use, and the files it is made from (re-read by
    /// [`HttpServer::reload`]).
    tls: Option<(serve::SharedAcceptor, midge_server::TlsConfig)>,
    state: api::AppState,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// How long [`HttpServer::shutdown`] waits for requests in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl HttpServer {
    /// Bind the listener and serve on the current tokio runtime.
    pub async fn start(config: HttpConfig, deps: HttpDeps) -> Result<HttpServer, HttpError> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tls = match &config.tls {
            Some(t) => Some(serve::SharedAcceptor::new(tls_acceptor(t)?)),
            None => None,
        };
        let state = api::AppState::new(&config, deps, shutdown_rx.clone()).await?;
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|source| HttpError::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| HttpError::Bind {
            addr: config.bind,
            source,
        })?;
        let app = api::router(state.clone());
        info!(
            %addr,
            tls = tls.is_some(),
            anonymous = config.allow_anonymous,
            max_connections = config.max_connections,
            "HTTP listening (API, /metrics, dashboard)"
        );
        let header_read_timeout =
            (!config.header_read_timeout.is_zero()).then_some(config.header_read_timeout);
        let task = tokio::spawn(serve::serve(
            listener,
            tls.clone(),
            app,
            state.0.conns.clone(),
            header_read_timeout,
            shutdown_rx,
        ));
        Ok(HttpServer {
            addr,
            tls: tls.zip(config.tls),
            state,
            shutdown,
            task: Some(task),
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Re-read the password file and the HTTPS certificate files (SIGHUP in `midge serve`,
    /// like the broker's own files). A file that fails to load keeps the previous one in
    /// force; the problems are returned (and should be logged). Requests from now on use
    /// the new passwords, and handshakes from now on the new certificates (open
    /// connections keep theirs).
    pub async fn reload(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = self.state.0.auth.reload().await {
            problems.push(e.to_string());
        }
        if let Some((shared, config)) = &self.tls {
            match tls_acceptor(config) {
                Ok(a) => shared.replace(a),
                Err(e) => problems.push(e.to_string()),
            }
        }
        problems
    }

    /// Stop accepting, end live streams, let requests in progress finish (at most a few
    /// seconds), then return.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            warn!("HTTP requests still running after the grace period: aborted");
            task.abort();
            let _ = task.await;
        }
        info!(addr = %self.addr, "HTTP listener stopped");
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        // a server dropped without shutdown() still stops (in the background)
        let _ = self.shutdown.send(true);
    }
}
