//! The TOML configuration file of `midge serve`: parsed, validated into plain structs, with
//! every problem reported at once (file, section and key named).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use midge_codec::QoS;
use midge_server::{AuthConfig, ListenerConfig, ListenerProtocol, ServerConfig, TlsConfig};

/// The commented defaults printed by `midge serve --print-config`.
pub(crate) const DEFAULT_CONFIG: &str = r#"# midge configuration. Every key is optional; the values shown are the defaults.
# Durations are in seconds.

[server]
# Simultaneous network connections (0 = no limit).
max_connections = 0
# Seconds a new connection has to send its CONNECT.
connect_timeout = 10
# Seconds between $SYS/broker/... updates (0 = off).
sys_interval = 10
# Outbound bytes queued for one client before it counts as slow (QoS 0 to it is then
# dropped and counted; QoS 1/2 waits in its session).
outbound_high_water = 1048576
# Log level: error, warn, info, debug, trace (RUST_LOG overrides).
log_level = "info"

# Defaults for every listener's authentication and authorization (a listener may override
# each key). With a configuration file anonymous clients are refused unless allowed here
# or on the listener (as mosquitto 2 does); `midge serve` without -c allows them on
# 127.0.0.1 only.
[security]
# allow_anonymous = false
# Password file written by `midge passwd` or mosquitto_passwd.
# password_file = "/etc/midge/passwd"
# ACL file in mosquitto's format (user / topic / pattern lines with %u and %c).
# acl_file = "/etc/midge/acl"

# Any number of listeners. Without a [[listener]] table midge listens on 127.0.0.1:1883 only
# (local-only mode: anonymous clients allowed unless [security] sets allow_anonymous).
# protocol = "mqtt" or "websockets"; the port defaults to 1883 (mqtt), 8883 (mqtt with
# TLS), 8083 (websockets), 8084 (websockets with TLS). On listeners from this file
# anonymous clients are refused unless allow_anonymous = true ([security] or the listener).
# [[listener]]
# bind = "127.0.0.1"
# port = 1883

# MQTT over TLS (TLS 1.2 and 1.3 only; TLSv1 and TLSv1.1 are refused):
# [[listener]]
# bind = "0.0.0.0"
# port = 8883
# certfile = "/etc/midge/certs/server.crt"   # PEM chain, server certificate first
# keyfile = "/etc/midge/certs/server.key"    # PEM private key
# cafile = "/etc/midge/certs/ca.crt"         # CA for client certificates (optional)
# require_certificate = false                # refuse clients without a valid certificate
# use_identity_as_username = false           # username = certificate CN (else first SAN)
# password_file = "/etc/midge/passwd"        # overrides [security] for this listener
# acl_file = "/etc/midge/acl"
# allow_anonymous = false

# MQTT over WebSockets for browsers (paths /mqtt and / unless `path` is set); add
# certfile and keyfile for wss://.
# [[listener]]
# bind = "0.0.0.0"
# port = 8083
# protocol = "websockets"
# path = "/mqtt"

[limits]
# Largest packet accepted from a client, in bytes (also announced to MQTT 5 clients).
max_packet_size = 1048576
# QoS 1/2 messages in flight to one client (capped by its Receive Maximum).
max_inflight_messages = 256
# QoS 2 messages a client may have awaiting PUBREL (our Receive Maximum).
receive_maximum = 1024
# Messages queued per session beyond the in-flight window (offline or slow clients;
# 0 = no limit, as in mosquitto).
max_queued_messages = 10000
# Payload bytes queued per session (0 = no byte limit).
max_queued_bytes = 67108864
# Queue QoS 0 messages for offline persistent sessions.
queue_qos0_offline = false
# Topic aliases accepted per MQTT 5 connection (0 = none).
topic_alias_maximum = 64
# Upper bound on keep alive; MQTT 5 clients asking for more are told this one (0 = none).
max_keepalive = 0
# Upper bound on session expiry in seconds (4294967295 = sessions may never expire).
max_session_expiry = 4294967295
# Highest QoS accepted and granted.
max_qos = 2
retain_available = true
wildcard_subscriptions = true
subscription_identifiers = true
shared_subscriptions = true
# Levels in a topic name or filter (0 = no limit).
max_topic_levels = 128
# Subscriptions per client (0 = no limit).
max_subscriptions_per_client = 0
# Retained messages held (0 = no limit).
max_retained_messages = 0
# Topics whose last message the broker keeps for the dashboard (GET /api/v1/last,
# /api/v1/topics, live-stream resumes): one table entry per topic, updated on every publish
# ($ topics left out); when full, the least recently updated topics are forgotten first.
# 0 = none kept. ([http] last_values_topics is its old name and still accepted.)
last_values_topics = 10000

# Durable state: persistent sessions (subscriptions, queued and in-flight messages, inbound
# QoS 2 ids, pending wills) and retained messages. A PUBACK/PUBREC for a message that a
# persistent session must receive is sent only once that message is on disk.
# `persistence = false` (or `midge serve --no-persistence`) runs memory-only.
[persistence]
enabled = true
# Data folder (created if missing).
dir = "./data"
# "batch": group commit, many publishes share one fsync, acks wait for it (default).
# "always": one fsync per router batch, no coalescing (slower, same guarantee).
# "periodic": acks once written to the OS, fsync every sync_interval_ms: a broker crash
#             loses nothing, a power cut or kernel crash loses up to that interval.
sync = "batch"
sync_interval_ms = 1000
# Largest store file in bytes (0 = the disk's size). When full, new QoS 1/2 publishes are
# refused (MQTT 5: reason 0x97; 3.1.1: the connection is closed) instead of lost.
max_bytes = 0

# The IoT hub's time-series store, where rules with `store` write rows and rules with
# `tsdb` write datapoints: a SQLite file (embedded, the default) or a PostgreSQL database.
# Opened when a rule writes into it, the HTTP API is on, or the file exists. A memory-only
# broker has none unless `file` (or a PostgreSQL url) is set.
[series]
enabled = true
# "sqlite" (one file) or "postgres" (tables series_<name> and midge_* in the database of
# `url`, created on first use; the server is not started by midge).
backend = "sqlite"
# file = "./data/series.db"          # SQLite: default series.db in the [persistence] dir
# url = "postgres://midge:secret@127.0.0.1:5432/midge"   # PostgreSQL (or postgres_url)
# Days rows are kept (0 = forever).
retention_days = 0
# "full": a stored row survives a power cut; "normal": faster, a crash of the process
# loses nothing but a power cut may lose the last moments (PostgreSQL: synchronous_commit
# on / off, a crash of the server may lose the last moments).
synchronous = "full"
# Most rows or buckets one HTTP query returns.
max_rows_per_query = 10000
# A table that keeps its rows longer or shorter than retention_days (0 = forever). The Data
# tab (PUT /api/v1/tables/{t}/retention) can set one too, kept in the store; that one wins.
# [[series.table]]
# name = "alerts"
# retention_days = 365

# Rules: SQL over the JSON messages devices publish (AWS IoT / EMQX style). A bare name is
# a field of the payload (payload.a.b for nested fields); topic(), topic(2), clientid(),
# username(), timestamp(), qos() give the message's metadata. A payload that is a plain
# number (mosquitto_pub -m 15) is the column `value`. Each rule needs at least one action.
# A message reaches a rule once however many of its filters match; the hub acknowledges it
# only after its rows are stored, so nothing the broker accepted is lost in a crash.
# [[rule]]
# name = "hot"
# sql = "SELECT * FROM 'sensors/#' WHERE temp > 30"
# store = "telemetry"                       # append the row to this table (true = telemetry)
# tsdb = true                               # write the row as datapoints (see below)
# republish = { topic = "alerts/${topic}", payload = "${temp} is too hot", qos = 1, retain = false }
# webhook = { url = "https://example.com/hook", headers = { Authorization = "Bearer x" }, timeout = 5 }
# alarm = { name = "too-hot", raise = "temp > 30", clear = "temp < 28", severity = "major" }
# enabled = false                           # checked at start, but does not run
# tsdb: the row names its `metric` (a string) and its `value` (a number or numeric string;
# without `value`, each number column is a field); `timestamp` is optional (10 digits or
# fewer: seconds, else ms; default: when the broker accepted the message); every other
# column is a tag. E.g. sql = "SELECT metric, _value AS value, _timestamp AS timestamp, id
# FROM 'devices/+'". A row without a metric or a number counts as a failure of the rule.
# Templates: ${column} of the row, or ${topic}, ${clientid}, ${timestamp}. Without a
# payload template the row is published (or posted) as JSON. The hub never receives its
# own republishes (MQTT 5 No Local), so rules cannot loop. Rules can also be added and
# removed while midge runs: POST /api/v1/rules, DELETE /api/v1/rules/NAME (kept in
# rules.json in the data folder).

# The HTTP listener: the web dashboard (/), the REST API (/api/v1/...) and Prometheus
# metrics (/metrics). `midge serve` without -c serves it on 127.0.0.1:18083, anonymous.
[http]
enabled = true
# Setting bind or port makes a failure to listen stop midge; with neither, a taken port
# is only a warning and midge runs without the dashboard.
# bind = "127.0.0.1"
# port = 18083
# HTTPS: a PEM certificate chain and its key (the same files a TLS listener takes); with
# cafile, browsers are asked for a client certificate (require_certificate refuses those
# without one).
# certfile = "/etc/midge/certs/server.crt"
# keyfile = "/etc/midge/certs/server.key"
# cafile = "/etc/midge/certs/ca.crt"
# require_certificate = false
# Anonymous access is allowed on a loopback bind while no password file is set ([http] or
# [security]), and refused otherwise unless set here; then HTTP Basic auth against the
# password file ([security]'s unless set here).
# allow_anonymous = true
# password_file = "/etc/midge/passwd"
# Only these users of the password file may use the API (needed when it is [security]'s
# and an acl_file restricts MQTT users: the API publishes and reads anything).
# users = ["admin"]
# Live streams (browser tabs) open at once.
max_live_streams = 64
# HTTP connections open at once (one more gets 503); seconds a request head may take (0 =
# no limit; idle keep-alive connections close after it too).
max_connections = 1024
header_read_timeout = 10
# Host names (besides IP addresses and localhost) an anonymous listener answers to: a web
# page whose domain was rebound to this address is refused. "*" allows any.
allowed_hosts = []
# dashboard_file = "./data/dashboard.json"  # where edits made in the page are saved

# Access keys for the Baidu TSDB-compatible API (/v1/...) and signed requests
# (bce-auth-v1, as Baidu Cloud's SDKs sign). A request signed with a key is an operator's:
# it passes where `users` or a password is needed. More keys can be made and revoked
# while midge runs: POST /api/v1/access-keys, DELETE /api/v1/access-keys/ID (kept in
# access_keys.json next to the dashboard file).
# [[http.access_key]]
# id = "midge-ingest"
# secret = "at least 16 characters, e.g. from openssl rand -hex 16"

# Dashboard widgets: the page shows them as the read-only dashboard "Configured" (edit them
# here), beside the dashboards made in the page (saved to dashboard_file). kind = "gauge", "value",
# "chart" (history from the series table, then live), "map" (markers at lat/lon fields),
# "switch" (shows `topic`, publishes `on`/`off` to `command_topic`).
# [[dashboard.widget]]
# kind = "gauge"
# title = "Boiler"
# topic = "sensors/boiler"
# field = "temp"        # JSON path in the payload; `value` for a plain number like 15
# unit = "°C"
# min = 0
# max = 100
# [[dashboard.widget]]
# kind = "switch"
# title = "Porch lamp"
# topic = "home/lamp"
# command_topic = "home/lamp/set"
# on = "ON"
# off = "OFF"

# Bridges to other brokers (mosquitto's `connection` sections; `midge serve -c
# mosquitto.conf` reads those). Local messages on `out` topics go to the remote broker and
# remote messages on `in` topics come here. A QoS 1/2 message is acknowledged to this broker
# only once the remote acknowledged it: while the link is down they wait in the bridge's
# session (in the data folder), across restarts.
# [[bridge]]
# name = "cloud"
# addresses = ["mqtt.example.com:8883", "backup.example.com:8883"]  # failover in order
# round_robin = false           # false: back to the first address at every reconnect
# # mosquitto's `topic pattern [[[ out | in | both ] qos] local-prefix remote-prefix]`
# # ("" for an empty prefix), or a table:
# topics = ["sensors/# out 1 \"\" site-1/", { pattern = "cmd/#", direction = "in", qos = 1, local_prefix = "", remote_prefix = "site-1/" }]
# protocol = "3.1.1"            # or "5" (No Local keeps our messages from coming back) or "3.1"
# try_private = true            # 3.x: tell the remote we are a bridge (mosquitto's flag)
# clientid = "<hostname>.cloud" # the client id on the remote
# username = "site-1"
# password = "secret"
# clean_session = false         # false: the remote keeps our session while the link is down
# keepalive = 60
# cafile = "/etc/midge/certs/cloud-ca.crt"  # any TLS key turns TLS on; without cafile or
# capath = "/etc/ssl/certs"                 # capath, the webpki roots are trusted
# certfile = "/etc/midge/certs/site-1.crt"
# keyfile = "/etc/midge/certs/site-1.key"
# insecure = false              # true: the remote's certificate is not checked at all
# notifications = true          # retained "1"/"0" on the topic below, here and on the remote
# notifications_local_only = false
# notification_topic = "$SYS/broker/connection/<clientid>/state"
# restart_timeout = [5, 30]     # seconds: jittered backoff from base to cap, or one number
# outgoing_retain = true        # false: clear the retain flag of messages sent out

# Several midge nodes as one broker over NATS with JetStream (docs/cluster.md). Without
# this section midge is one process and needs no NATS. `midge serve --cluster URL[,URL]
# --node NAME` does the same from the command line.
# [cluster]
# node = "n1"                   # unique per node (default: the host name)
# nats = ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223", "nats://127.0.0.1:4224"]
# name = "midge"                # nodes with the same NATS and name form one broker
# replicas = 3                  # JetStream replicas (default: 3 with three or more URLs)
# user = "midge"                # NATS credentials: user + password, token, or creds file
# password = "..."
# token = "..."
# creds = "/etc/midge/nats.creds"
# tls_ca = "/etc/midge/nats-ca.crt"   # TLS to NATS
# tls_cert = "/etc/midge/nats-client.crt"
# tls_key = "/etc/midge/nats-client.key"
"#;

mod bridge;
mod cluster;
mod hub;

pub(crate) use cluster::default_node;
pub(crate) use hub::{HttpSettings, SeriesSettings};

/// A validated configuration.
#[derive(Debug, Clone)]
pub(crate) struct MidgeConfig {
    pub(crate) server: ServerConfig,
    pub(crate) log_level: String,
    /// Whether a config file with listeners was given (else the local-only default).
    pub(crate) explicit_listeners: bool,
    /// Rules of the IoT hub.
    pub(crate) hub: midge_hub::HubConfig,
    /// The time-series store (`None`: off).
    pub(crate) series: Option<SeriesSettings>,
    /// The HTTP API and dashboard (`None`: off).
    pub(crate) http: Option<HttpSettings>,
    /// What a converted mosquitto.conf does differently (logged as warnings at start).
    pub(crate) notes: Vec<String>,
    /// Bridges to other brokers (`[[bridge]]`).
    pub(crate) bridges: Vec<midge_bridge::BridgeConfig>,
    /// This node's cluster (`[cluster]`; `None`: one process on its own).
    pub(crate) cluster: Option<midge_cluster::ClusterConfig>,
}

impl Default for MidgeConfig {
    fn default() -> Self {
        let persistence = midge_store::StoreOptions::default();
        let series = SeriesSettings {
            path: persistence.dir.join("series.db"),
            options: midge_series::SeriesOptions::default(),
            in_data_dir: true,
            postgres_url: None,
        };
        let http = hub::default_http(Some(&persistence.dir));
        MidgeConfig {
            http: Some(http),
            server: ServerConfig {
                persistence: Some(persistence),
                ..ServerConfig::default()
            },
            log_level: "info".into(),
            explicit_listeners: false,
            hub: midge_hub::HubConfig::default(),
            series: Some(series),
            notes: Vec::new(),
            bridges: Vec::new(),
            cluster: None,
        }
    }
}

/// Collects problems while reading the table, and which keys of each table were read: the
/// reading code is the schema, so a key is known once some code reads it and any other key
/// is reported as unknown (with the nearest known one as a hint), with no list to keep.
pub(crate) struct Checker<'a> {
    file: &'a str,
    errors: Vec<String>,
    tables: Vec<ReadTable>,
}

/// One table of the file as read so far.
struct ReadTable {
    /// The table's address: the same table may be read under two section names (a bridge
    /// is `bridge #1` until its name is read).
    id: usize,
    /// The section name it was last read under.
    section: String,
    /// Its keys.
    present: Vec<String>,
    /// The keys some code asked for, whether present or not.
    asked: Vec<String>,
}

impl<'a> Checker<'a> {
    fn new(file: &'a str) -> Checker<'a> {
        Checker {
            file,
            errors: Vec::new(),
            tables: Vec::new(),
        }
    }

    fn err(&mut self, section: &str, key: &str, msg: impl std::fmt::Display) {
        if section.is_empty() && key.is_empty() {
            self.errors.push(format!("{}: {msg}", self.file));
            return;
        }
        let at = if section.is_empty() {
            key.to_string()
        } else if key.is_empty() {
            format!("[{section}]")
        } else {
            format!("[{section}] {key}")
        };
        self.errors.push(format!("{}: {at}: {msg}", self.file));
    }

    /// `t[key]`, noting that `key` is a key of `section`.
    fn get<'t>(&mut self, t: &'t toml::Table, section: &str, key: &str) -> Option<&'t toml::Value> {
        let id = std::ptr::from_ref(t) as usize;
        match self.tables.iter_mut().find(|r| r.id == id) {
            Some(r) => {
                if r.section != section {
                    section.clone_into(&mut r.section);
                }
                if !r.asked.iter().any(|k| k == key) {
                    r.asked.push(key.to_owned());
                }
            }
            None => self.tables.push(ReadTable {
                id,
                section: section.to_owned(),
                present: t.keys().cloned().collect(),
                asked: vec![key.to_owned()],
            }),
        }
        t.get(key)
    }

    /// A table read in one piece through serde: its keys are `T`'s fields (an unknown one is
    /// reported with the others, with a hint), a value of the wrong type is reported here.
    fn typed<T: serde::de::DeserializeOwned>(
        &mut self,
        t: &toml::Table,
        section: &str,
    ) -> Option<T> {
        let known = midge_hub::field_names::<T>();
        for k in known {
            self.get(t, section, k);
        }
        let mut clean = t.clone();
        clean.retain(|k, _| known.contains(&k));
        match toml::Value::Table(clean).try_into::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(section, "", e.message().trim());
                None
            }
        }
    }

    /// Every key of a table read that no code asked for.
    fn report_unknown_keys(&mut self) {
        let mut unknown = Vec::new();
        for r in &self.tables {
            for k in r.present.iter().filter(|k| !r.asked.contains(k)) {
                let asked: Vec<&str> = r.asked.iter().map(String::as_str).collect();
                let hint = midge_hub::did_you_mean(k, &asked)
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                unknown.push((r.section.clone(), k.clone(), format!("unknown key{hint}")));
            }
        }
        for (section, key, msg) in unknown {
            self.err(&section, &key, msg);
        }
    }

    fn int(
        &mut self,
        t: &toml::Table,
        section: &str,
        key: &str,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let v = self.get(t, section, key)?;
        match v.as_integer() {
            Some(i) if (min..=max).contains(&i) => Some(i),
            Some(i) => {
                self.err(
                    section,
                    key,
                    format!("must be between {min} and {max} (found {i})"),
                );
                None
            }
            None => {
                self.err(
                    section,
                    key,
                    format!("must be an integer (found {})", v.type_str()),
                );
                None
            }
        }
    }

    fn boolean(&mut self, t: &toml::Table, section: &str, key: &str) -> Option<bool> {
        let v = self.get(t, section, key)?;
        let b = v.as_bool();
        if b.is_none() {
            self.err(
                section,
                key,
                format!("must be true or false (found {})", v.type_str()),
            );
        }
        b
    }

    fn string(&mut self, t: &toml::Table, section: &str, key: &str) -> Option<String> {
        let v = self.get(t, section, key)?;
        let s = v.as_str().map(str::to_owned);
        if s.is_none() {
            self.err(
                section,
                key,
                format!("must be a string (found {})", v.type_str()),
            );
        }
        s
    }

    fn table<'t>(&mut self, root: &'t toml::Table, key: &str) -> Option<&'t toml::Table> {
        let v = self.get(root, "", key)?;
        let t = v.as_table();
        if t.is_none() {
            self.err(
                "",
                key,
                format!("must be a table [{key}] (found {})", v.type_str()),
            );
        }
        t
    }
}

/// `allow_anonymous`, `password_file`, `acl_file` of [security] or a listener.
fn read_auth(c: &mut Checker<'_>, t: &toml::Table, section: &str, auth: &mut AuthConfig) {
    if let Some(v) = c.boolean(t, section, "allow_anonymous") {
        auth.allow_anonymous = v;
    }
    if let Some(v) = c.string(t, section, "password_file") {
        auth.password_file = Some(PathBuf::from(v));
    }
    if let Some(v) = c.string(t, section, "acl_file") {
        auth.acl_file = Some(PathBuf::from(v));
    }
}

/// A listener's TLS keys (mosquitto's names); `None` without certfile and keyfile.
pub(super) fn read_tls(c: &mut Checker<'_>, t: &toml::Table, section: &str) -> Option<TlsConfig> {
    let cert = c.string(t, section, "certfile");
    let key = c.string(t, section, "keyfile");
    let ca = c.string(t, section, "cafile");
    let require = c
        .boolean(t, section, "require_certificate")
        .unwrap_or(false);
    let identity = c
        .boolean(t, section, "use_identity_as_username")
        .unwrap_or(false);
    let (cert, key) = match (cert, key) {
        (Some(cert), Some(key)) => (cert, key),
        (Some(_), None) => {
            c.err(section, "keyfile", "missing: certfile needs keyfile");
            return None;
        }
        (None, Some(_)) => {
            c.err(section, "certfile", "missing: keyfile needs certfile");
            return None;
        }
        (None, None) => {
            for (key, set) in [
                ("cafile", ca.is_some()),
                ("require_certificate", require),
                ("use_identity_as_username", identity),
            ] {
                if set {
                    c.err(section, key, "needs TLS: set certfile and keyfile");
                }
            }
            return None;
        }
    };
    if require && ca.is_none() {
        c.err(
            section,
            "require_certificate",
            "needs cafile (the CA that signs client certificates)",
        );
    }
    if identity && !require {
        c.err(
            section,
            "use_identity_as_username",
            "needs require_certificate = true",
        );
    }
    Some(TlsConfig {
        cert_file: PathBuf::from(cert),
        key_file: PathBuf::from(key),
        ca_file: ca.map(PathBuf::from),
        require_certificate: require,
        use_identity_as_username: identity,
    })
}

/// Read and validate a configuration file: midge's TOML, or mosquitto's own format
/// (recognised by its content; see [`crate::mosquitto_conf`]).
pub(crate) fn load(path: &Path) -> Result<MidgeConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if crate::mosquitto_conf::looks_like_mosquitto(&text) {
        let c = crate::mosquitto_conf::convert(path);
        if !c.errors.is_empty() {
            let mut msg = format!("{} problem(s) in the configuration:", c.errors.len());
            for e in &c.errors {
                msg.push_str("\n  ");
                msg.push_str(e);
            }
            return Err(msg);
        }
        let toml = toml::to_string(&c.toml).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut cfg = parse(&toml, &format!("{} (mosquitto format)", path.display()))?;
        cfg.notes = c.notes;
        cfg.notes.insert(
            0,
            format!(
                "{}: read as a mosquitto.conf (`midge config convert` prints the equivalent TOML)",
                path.display()
            ),
        );
        return Ok(cfg);
    }
    parse(&text, &path.display().to_string())
}

/// Validate configuration text; the error lists every problem, one per line.
pub(crate) fn parse(text: &str, file: &str) -> Result<MidgeConfig, String> {
    read(text, &mut Checker::new(file))
}

/// [`parse`] with the checker given (a test reads which keys were asked for).
fn read(text: &str, c: &mut Checker<'_>) -> Result<MidgeConfig, String> {
    let file = c.file;
    let root: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("{file}: {e}"))?;
    let mut cfg = MidgeConfig::default();

    // [security]: defaults for every listener from a file (anonymous off, as mosquitto 2)
    let mut security = AuthConfig::default();
    if let Some(t) = c.table(&root, "security") {
        read_auth(c, t, "security", &mut security);
    }
    // no [[listener]]: mosquitto 2's local-only mode (127.0.0.1, anonymous allowed unless
    // [security] says otherwise)
    if let Some(l) = cfg.server.listeners.first_mut() {
        let anonymous = root
            .get("security")
            .and_then(|s| s.get("allow_anonymous"))
            .and_then(toml::Value::as_bool)
            .unwrap_or(true);
        l.auth = AuthConfig {
            allow_anonymous: anonymous,
            ..security.clone()
        };
    }

    if let Some(t) = c.table(&root, "server") {
        let s = &mut cfg.server;
        if let Some(v) = c.int(t, "server", "max_connections", 0, i64::from(u32::MAX)) {
            s.max_connections = v as usize;
        }
        if let Some(v) = c.int(t, "server", "connect_timeout", 1, 3600) {
            s.connect_timeout = Duration::from_secs(v as u64);
        }
        if let Some(v) = c.int(t, "server", "sys_interval", 0, 86_400) {
            s.sys_interval = Duration::from_secs(v as u64);
        }
        if let Some(v) = c.int(t, "server", "outbound_high_water", 1024, 1 << 32) {
            s.outbound_high_water = v as usize;
        }
        if let Some(v) = c.string(t, "server", "log_level") {
            if ["error", "warn", "info", "debug", "trace"].contains(&v.as_str()) {
                cfg.log_level = v;
            } else {
                c.err(
                    "server",
                    "log_level",
                    format!("must be error, warn, info, debug or trace (found {v:?})"),
                );
            }
        }
    }

    if let Some(v) = c.get(&root, "", "listener") {
        match v.as_array() {
            Some(list) => {
                let mut listeners = Vec::new();
                for (i, l) in list.iter().enumerate() {
                    let section = format!("listener #{}", i + 1);
                    let Some(t) = l.as_table() else {
                        c.err(&section, "", "must be a table ([[listener]])");
                        continue;
                    };
                    let bind = c
                        .string(t, &section, "bind")
                        .unwrap_or_else(|| "127.0.0.1".into());
                    let protocol = match c.string(t, &section, "protocol").as_deref() {
                        None | Some("mqtt") => ListenerProtocol::Mqtt,
                        Some("websockets") => ListenerProtocol::WebSockets,
                        Some(p) => {
                            c.err(
                                &section,
                                "protocol",
                                format!("must be \"mqtt\" or \"websockets\" (found {p:?})"),
                            );
                            ListenerProtocol::Mqtt
                        }
                    };
                    let tls = read_tls(c, t, &section);
                    let default_port = match (protocol, tls.is_some()) {
                        (ListenerProtocol::Mqtt, false) => 1883,
                        (ListenerProtocol::Mqtt, true) => 8883,
                        (ListenerProtocol::WebSockets, false) => 8083,
                        (ListenerProtocol::WebSockets, true) => 8084,
                    };
                    let port = c.int(t, &section, "port", 0, 65535).unwrap_or(default_port) as u16;
                    let ws_path = c.string(t, &section, "path");
                    if let Some(p) = &ws_path {
                        if protocol != ListenerProtocol::WebSockets {
                            c.err(&section, "path", "only for protocol = \"websockets\"");
                        } else if !p.starts_with('/') {
                            c.err(&section, "path", format!("must start with / (found {p:?})"));
                        }
                    }
                    let mut auth = security.clone();
                    read_auth(c, t, &section, &mut auth);
                    match bind.parse::<IpAddr>() {
                        Ok(ip) => listeners.push(ListenerConfig {
                            bind: SocketAddr::new(ip, port),
                            protocol,
                            ws_path,
                            tls,
                            auth,
                        }),
                        Err(_) => c.err(&section, "bind", format!("not an IP address: {bind:?}")),
                    }
                }
                if !listeners.is_empty() {
                    cfg.server.listeners = listeners;
                    cfg.explicit_listeners = true;
                }
            }
            None => c.err("", "listener", "must be an array of tables ([[listener]])"),
        }
    }

    if let Some(t) = c.table(&root, "limits") {
        let b = &mut cfg.server.broker;
        let u16max = i64::from(u16::MAX);
        if let Some(v) = c.int(
            t,
            "limits",
            "max_packet_size",
            16,
            i64::from(midge_codec::MAX_PACKET_SIZE),
        ) {
            b.max_packet_size = v as u32;
        }
        if let Some(v) = c.int(t, "limits", "max_inflight_messages", 1, u16max) {
            b.max_inflight_messages = v as u16;
        }
        if let Some(v) = c.int(t, "limits", "receive_maximum", 1, u16max) {
            b.receive_maximum = v as u16;
        }
        if let Some(v) = c.int(t, "limits", "max_queued_messages", 0, i64::MAX) {
            b.max_queued_messages = v as usize;
        }
        if let Some(v) = c.int(t, "limits", "max_queued_bytes", 0, i64::MAX) {
            b.max_queued_bytes = v as usize;
        }
        if let Some(v) = c.boolean(t, "limits", "queue_qos0_offline") {
            b.queue_qos0_offline = v;
        }
        if let Some(v) = c.int(t, "limits", "topic_alias_maximum", 0, u16max) {
            b.topic_alias_maximum = v as u16;
        }
        if let Some(v) = c.int(t, "limits", "max_keepalive", 0, u16max) {
            b.max_keepalive = v as u16;
        }
        if let Some(v) = c.int(t, "limits", "max_session_expiry", 0, i64::from(u32::MAX)) {
            b.max_session_expiry = v as u32;
        }
        if let Some(v) = c.int(t, "limits", "max_qos", 0, 2) {
            b.max_qos = QoS::from_bits(v as u8).unwrap_or(QoS::ExactlyOnce);
        }
        if let Some(v) = c.boolean(t, "limits", "retain_available") {
            b.retain_available = v;
        }
        if let Some(v) = c.boolean(t, "limits", "wildcard_subscriptions") {
            b.wildcard_subscriptions = v;
        }
        if let Some(v) = c.boolean(t, "limits", "subscription_identifiers") {
            b.subscription_identifiers = v;
        }
        if let Some(v) = c.boolean(t, "limits", "shared_subscriptions") {
            b.shared_subscriptions = v;
        }
        if let Some(v) = c.int(t, "limits", "max_topic_levels", 0, 65535) {
            b.max_topic_levels = v as usize;
        }
        if let Some(v) = c.int(t, "limits", "max_subscriptions_per_client", 0, i64::MAX) {
            b.max_subscriptions_per_client = v as usize;
        }
        if let Some(v) = c.int(t, "limits", "max_retained_messages", 0, i64::MAX) {
            b.max_retained_messages = v as usize;
        }
        if let Some(v) = c.int(t, "limits", "last_values_topics", 0, 10_000_000) {
            b.last_values_topics = v as usize;
        }
    }

    persistence(c, &root, &mut cfg);
    hub::series(c, &root, &mut cfg);
    hub::rules(c, &root, &mut cfg);
    hub::http(c, &root, &mut cfg);
    bridge::bridges(c, &root, &mut cfg);
    cluster::cluster(c, &root, &mut cfg);
    c.report_unknown_keys();

    if c.errors.is_empty() {
        Ok(cfg)
    } else {
        let mut msg = format!("{} problem(s) in the configuration:", c.errors.len());
        for e in &c.errors {
            let _ = write!(msg, "\n  {e}");
        }
        Err(msg)
    }
}

/// `persistence = false`, or the `[persistence]` table.
fn persistence(c: &mut Checker<'_>, root: &toml::Table, cfg: &mut MidgeConfig) {
    use midge_store::SyncMode;
    let Some(v) = c.get(root, "", "persistence") else {
        return;
    };
    if let Some(on) = v.as_bool() {
        if !on {
            cfg.server.persistence = None;
        }
        return;
    }
    let Some(t) = v.as_table() else {
        c.err(
            "",
            "persistence",
            format!(
                "must be true, false or a table [persistence] (found {})",
                v.type_str()
            ),
        );
        return;
    };
    let mut o = midge_store::StoreOptions::default();
    let s = "persistence";
    if let Some(d) = c.string(t, s, "dir") {
        if d.is_empty() {
            c.err(s, "dir", "must not be empty");
        }
        o.dir = d.into();
    }
    let interval = c
        .int(t, s, "sync_interval_ms", 1, 3_600_000)
        .unwrap_or(1000) as u64;
    if let Some(m) = c.string(t, s, "sync") {
        o.sync = match m.as_str() {
            "always" => SyncMode::Always,
            "batch" => SyncMode::Batch,
            "periodic" => SyncMode::Periodic(Duration::from_millis(interval)),
            _ => {
                c.err(
                    s,
                    "sync",
                    format!("must be \"always\", \"batch\" or \"periodic\" (found {m:?})"),
                );
                SyncMode::Batch
            }
        };
    }
    if let Some(v) = c.int(t, s, "max_bytes", 0, i64::MAX) {
        if v != 0 && v < 64 * 1024 {
            c.err(
                s,
                "max_bytes",
                format!("must be 0 or at least 65536 (found {v})"),
            );
        }
        o.max_bytes = v as u64;
    }
    let enabled = c.boolean(t, s, "enabled").unwrap_or(true);
    cfg.server.persistence = enabled.then_some(o);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persistence_table_and_switch_are_read_with_every_problem_reported() {
        let d = parse(DEFAULT_CONFIG, "d").unwrap();
        assert_eq!(
            d.server.persistence,
            Some(midge_store::StoreOptions::default())
        );
        let off = parse("persistence = false\n", "t").unwrap();
        assert!(off.server.persistence.is_none());
        let cfg = parse(
            "[persistence]\ndir = \"/var/lib/midge\"\nsync = \"periodic\"\nsync_interval_ms = 250\nmax_bytes = 1048576\n",
            "t",
        )
        .unwrap();
        let p = cfg.server.persistence.unwrap();
        assert_eq!(p.dir, std::path::PathBuf::from("/var/lib/midge"));
        assert_eq!(
            p.sync,
            midge_store::SyncMode::Periodic(Duration::from_millis(250))
        );
        assert_eq!(p.max_bytes, 1_048_576);
        let err = parse(
            "[persistence]\nsync = \"sometimes\"\nmax_bytes = 10\nsync_intervalms = 5\n",
            "m.toml",
        )
        .unwrap_err();
        for needle in [
            "3 problem(s)",
            "[persistence] sync: must be \"always\", \"batch\" or \"periodic\"",
            "[persistence] max_bytes: must be 0 or at least 65536",
            "[persistence] sync_intervalms: unknown key (did you mean `sync_interval_ms`?)",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }

    #[test]
    fn rules_and_series_are_read_and_every_rule_problem_is_reported() {
        let cfg = parse(
            r#"
            [series]
            file = "/tmp/s.db"
            retention_days = 7
            synchronous = "normal"
            [[rule]]
            name = "hot"
            sql = "SELECT * FROM 'sensors/#' WHERE temp > 30"
            store = "telemetry"
            republish = { topic = "alerts/${topic}", qos = 1 }
            tsdb = true
            [[rule]]
            name = "hook"
            sql = "SELECT temp FROM 'sensors/+/t'"
            webhook = [{ url = "http://127.0.0.1:9/h", headers = { X-Token = "t" } }, { url = "https://example.com/" }]
            "#,
            "t",
        )
        .unwrap();
        let s = cfg.series.as_ref().unwrap();
        assert_eq!(s.path, PathBuf::from("/tmp/s.db"));
        assert_eq!(s.options.retention, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(s.options.synchronous, midge_series::Synchronous::Normal);
        assert_eq!(cfg.hub.rules.len(), 2);
        assert_eq!(
            cfg.hub.rules[0].actions,
            [
                midge_hub::ActionConfig::Store {
                    table: "telemetry".into()
                },
                midge_hub::ActionConfig::Tsdb,
                midge_hub::ActionConfig::Republish {
                    topic: "alerts/${topic}".into(),
                    payload: None,
                    qos: QoS::AtLeastOnce,
                    retain: false
                }
            ]
        );
        assert_eq!(cfg.hub.rules[1].actions.len(), 2);
        // the default store is in the data folder
        let d = parse("", "t").unwrap();
        assert_eq!(d.series.unwrap().path, PathBuf::from("./data/series.db"));

        let err = parse(
            r#"
            persistence = false
            [[rule]]
            name = "a"
            sql = "SELECT * FROM"
            store = true
            [[rule]]
            name = "b"
            sql = "SELECT * FROM 'x'"
            republish = { topik = "y" }
            [[rule]]
            name = "c"
            [[rule]]
            name = "d"
            sql = "SELECT * FROM 'x'"
            tsdb = "yes"
            [[rule]]
            name = "e"
            sql = "SELECT * FROM 'x'"
            tsdb = true
            "#,
            "m.toml",
        )
        .unwrap_err();
        for needle in [
            "m.toml: rule \"a\": ",
            "needs the time-series store, which is off (turn on [persistence] or set [series] file)",
            "[rule #2.republish] topik: unknown key (did you mean `topic`?)",
            "[rule #2.republish] topic: missing",
            "rule \"b\": no action",
            "[rule #3] sql: missing",
            "[rule #4] tsdb: must be true or false (found string)",
            "rule \"d\": no action",
            "rule \"e\": `tsdb` needs the time-series store, which is off (turn on [persistence] or set [series] file)",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }

    #[test]
    fn http_access_keys_are_read_and_every_problem_reported() {
        let cfg = parse(
            "[[http.access_key]]\nid = \"ak-1\"\nsecret = \"0123456789abcdef\"\n[[http.access_key]]\nid = \"ak.2\"\nsecret = \"fedcba9876543210\"\n",
            "t",
        )
        .unwrap();
        let keys = cfg.http.unwrap().config.access_keys;
        assert_eq!(keys.len(), 2);
        assert_eq!(
            (keys[0].id.as_str(), keys[0].secret.as_str()),
            ("ak-1", "0123456789abcdef")
        );
        assert_eq!(keys[1].id, "ak.2");
        let err = parse(
            "[[http.access_key]]\nid = \"a b\"\nsecret = \"short\"\n[[http.access_key]]\nsecret = \"0123456789abcdef\"\nsecrett = 1\n[[http.access_key]]\nid = \"x\"\nsecret = \"0123456789abcdef\"\n[[http.access_key]]\nid = \"x\"\nsecret = \"0123456789abcdef\"\n",
            "t",
        )
        .unwrap_err();
        for needle in [
            "[http.access_key #1] id: must be 1 to 128 letters",
            "[http.access_key #1] secret: must be at least 16 characters",
            "[http.access_key #2] id: is missing",
            "[http.access_key #2] secrett: unknown key (did you mean `secret`?)",
            "[http.access_key #4] id: \"x\" is given twice",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
        let err = parse("[http]\naccess_key = \"x\"\n", "t").unwrap_err();
        assert!(
            err.contains("[http] access_key: must be an array of tables"),
            "{err}"
        );
    }

    #[test]
    fn http_keys_are_read() {
        let cfg = parse(
            "[http]\nbind = \"0.0.0.0\"\nport = 8080\nallow_anonymous = true\nmax_connections = 10\nheader_read_timeout = 0\nallowed_hosts = [\"hub.local\"]\n",
            "t",
        )
        .unwrap();
        let h = cfg.http.unwrap();
        assert!(h.explicit);
        assert_eq!(h.config.bind, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(h.config.max_connections, 10);
        assert_eq!(h.config.header_read_timeout, Duration::ZERO);
        assert_eq!(h.config.allowed_hosts, ["hub.local"]);
        // a non-loopback bind refuses anonymous access unless told otherwise
        let err = parse("[http]\nbind = \"0.0.0.0\"\nallowed_hosts = \"x\"\n", "t").unwrap_err();
        assert!(
            err.contains("[http] allowed_hosts: must be a list"),
            "{err}"
        );
        assert!(err.contains("[http] allow_anonymous: is false"), "{err}");
        let d = parse("", "t").unwrap().http.unwrap();
        assert!(!d.explicit && d.config.allow_anonymous);
        assert_eq!(d.config.bind.port(), 18083);
        assert!(
            parse("[http]\nenabled = false\n", "t")
                .unwrap()
                .http
                .is_none()
        );
    }

    #[test]
    fn the_http_api_needs_passwords_once_mqtt_does_and_is_locked_behind_an_acl() {
        let http = |text: &str| parse(text, "t").unwrap().http.unwrap().config;
        let d = http("");
        assert!(d.allow_anonymous && d.password_file.is_none() && d.users.is_none());
        let p = http("[security]\npassword_file = \"/p\"\n");
        assert!(!p.allow_anonymous, "anonymous while MQTT needs passwords");
        assert_eq!(p.password_file.as_deref(), Some(std::path::Path::new("/p")));
        assert!(p.users.is_none());
        let locked = http("[security]\npassword_file = \"/p\"\nacl_file = \"/a\"\n");
        assert!(!locked.allow_anonymous);
        assert_eq!(locked.users, Some(Vec::new()), "no [http]: locked");
        let own = http(
            "[security]\npassword_file = \"/p\"\nacl_file = \"/a\"\n[http]\npassword_file = \"/ops\"\n",
        );
        assert!(own.users.is_none() && !own.allow_anonymous);
        let listed = http(
            "[security]\npassword_file = \"/p\"\nacl_file = \"/a\"\n[http]\nusers = [\"admin\"]\n",
        );
        assert_eq!(listed.users, Some(vec!["admin".to_string()]));
    }

    #[test]
    fn printed_defaults_parse_to_the_built_in_defaults() {
        let cfg = parse(DEFAULT_CONFIG, "defaults").unwrap();
        let d = MidgeConfig::default();
        assert_eq!(cfg.server.broker, d.server.broker);
        assert_eq!(cfg.server.listeners.len(), 1);
        assert_eq!(cfg.server.listeners[0].bind, d.server.listeners[0].bind);
        assert_eq!(cfg.server.listeners[0].tls, None);
        // the printed file is the local-only default: anonymous clients allowed
        assert_eq!(cfg.server.listeners, d.server.listeners);
        assert!(cfg.server.listeners[0].auth.allow_anonymous);
        // a listener from a file refuses them unless told otherwise
        let l = parse("[[listener]]\nport = 1884\n", "t").unwrap();
        assert!(!l.server.listeners[0].auth.allow_anonymous);
        assert_eq!(cfg.server.connect_timeout, d.server.connect_timeout);
        assert_eq!(cfg.server.sys_interval, d.server.sys_interval);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            colour = "blue"
            [server]
            max_conections = 5
            log_level = "loud"
            [[listener]]
            bind = "nowhere"
            port = 70000
            [limits]
            max_qos = 3
            retain_available = "yes"
        "#;
        let err = parse(text, "midge.toml").unwrap_err();
        for needle in [
            "7 problem(s)",
            "midge.toml: colour: unknown key",
            "[server] max_conections: unknown key (did you mean `max_connections`?)",
            "[server] log_level: must be",
            "[listener #1] port: must be between 0 and 65535 (found 70000)",
            "[listener #1] bind: not an IP address",
            "[limits] max_qos: must be between 0 and 2 (found 3)",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }

    #[test]
    fn listeners_and_limits_are_read() {
        let cfg = parse(
            "[[listener]]\nbind = \"0.0.0.0\"\nport = 1884\n[[listener]]\nport = 1885\n[limits]\nmax_qos = 1\n",
            "t",
        )
        .unwrap();
        assert_eq!(cfg.server.listeners.len(), 2);
        assert_eq!(
            cfg.server.listeners[0].bind,
            "0.0.0.0:1884".parse().unwrap()
        );
        assert_eq!(
            cfg.server.listeners[1].bind,
            "127.0.0.1:1885".parse().unwrap()
        );
        assert_eq!(cfg.server.broker.max_qos, QoS::AtLeastOnce);
        assert!(cfg.explicit_listeners);
    }

    #[test]
    fn without_listeners_the_local_only_default_allows_anonymous() {
        let cfg = parse("[server]\nsys_interval = 1\n", "t").unwrap();
        assert!(cfg.server.listeners[0].auth.allow_anonymous);
        let cfg = parse("[security]\nallow_anonymous = false\n", "t").unwrap();
        assert!(!cfg.server.listeners[0].auth.allow_anonymous);
    }

    #[test]
    fn listener_security_and_default_ports() {
        let cfg = parse(
            r#"
            [security]
            password_file = "/p"
            acl_file = "/a"
            [[listener]]
            certfile = "s.crt"
            keyfile = "s.key"
            cafile = "ca.crt"
            require_certificate = true
            use_identity_as_username = true
            acl_file = "/tls-acl"
            [[listener]]
            protocol = "websockets"
            allow_anonymous = true
            [[listener]]
            protocol = "websockets"
            certfile = "s.crt"
            keyfile = "s.key"
            path = "/ws"
            [[listener]]
            "#,
            "t",
        )
        .unwrap();
        let l = &cfg.server.listeners;
        assert_eq!(
            l.iter().map(|l| l.bind.port()).collect::<Vec<_>>(),
            [8883, 8083, 8084, 1883]
        );
        let tls = l[0].tls.as_ref().unwrap();
        assert!(tls.require_certificate && tls.use_identity_as_username);
        assert_eq!(l[0].auth.acl_file.as_deref(), Some(Path::new("/tls-acl")));
        assert_eq!(l[0].auth.password_file.as_deref(), Some(Path::new("/p")));
        assert!(!l[0].auth.allow_anonymous);
        assert!(l[1].auth.allow_anonymous);
        assert_eq!(l[1].protocol, ListenerProtocol::WebSockets);
        assert_eq!(l[2].ws_path.as_deref(), Some("/ws"));
        assert_eq!(l[3].auth.acl_file.as_deref(), Some(Path::new("/a")));
    }

    #[test]
    fn tls_problems_are_all_reported() {
        let err = parse(
            r#"
            [security]
            allow_anonymus = true
            [[listener]]
            certfile = "s.crt"
            require_certificate = true
            [[listener]]
            cafile = "ca.crt"
            path = "/x"
            protocol = "ws"
            [[listener]]
            certfile = "s.crt"
            keyfile = "s.key"
            use_identity_as_username = true
            "#,
            "m.toml",
        )
        .unwrap_err();
        for needle in [
            "6 problem(s)",
            "[security] allow_anonymus: unknown key (did you mean `allow_anonymous`?)",
            "[listener #1] keyfile: missing: certfile needs keyfile",
            "[listener #2] cafile: needs TLS: set certfile and keyfile",
            "[listener #2] protocol: must be \"mqtt\" or \"websockets\" (found \"ws\")",
            "[listener #2] path: only for protocol = \"websockets\"",
            "[listener #3] use_identity_as_username: needs require_certificate = true",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }

    #[test]
    fn last_values_topics_is_a_broker_limit_and_the_old_http_key_still_works() {
        let d = parse(DEFAULT_CONFIG, "d").unwrap();
        assert_eq!(d.server.broker.last_values_topics, 10_000);
        let cfg = parse("[limits]\nlast_values_topics = 5\n", "t").unwrap();
        assert_eq!(cfg.server.broker.last_values_topics, 5);
        let old = parse("[http]\nlast_values_topics = 0\n", "t").unwrap();
        assert_eq!(old.server.broker.last_values_topics, 0);
        assert_eq!(old.http.unwrap().config.last_values_topics, 0);
        let err = parse(
            "[limits]\nlast_values_topics = 5\n[http]\nlast_values_topics = 7\n",
            "t",
        )
        .unwrap_err();
        assert!(
            err.contains("old name of [limits] last_values_topics"),
            "{err}"
        );
        let err = parse("[limits]\nlast_values_topic = 5\n", "t").unwrap_err();
        assert!(err.contains("did you mean `last_values_topics`"), "{err}");
    }

    /// The printed defaults are the built-in ones, all of them: a default is written in the
    /// structs' `Default` and in the text, and this keeps the two the same.
    #[test]
    fn the_printed_defaults_are_exactly_the_built_in_defaults() {
        let printed = parse(DEFAULT_CONFIG, "defaults").unwrap();
        assert_eq!(
            format!("{printed:#?}"),
            format!("{:#?}", MidgeConfig::default())
        );
        // the one default that only shows once `sync = "periodic"`: the printed interval is
        // the one used without the key
        let periodic = DEFAULT_CONFIG.replace("sync = \"batch\"", "sync = \"periodic\"");
        let sync = |text: &str| parse(text, "t").unwrap().server.persistence.unwrap().sync;
        assert_eq!(
            sync(&periodic),
            sync("[persistence]\nsync = \"periodic\"\n")
        );
    }

    /// Every key the reader knows (a key is known by being read: there is no list) is in
    /// the printed defaults, as a setting or in a comment, so none goes undocumented.
    #[test]
    fn every_key_read_is_in_the_printed_defaults() {
        let every_table = r##"
            [server]
            [security]
            [[listener]]
            [limits]
            [persistence]
            [series]
            [[series.table]]
            name = "alerts"
            retention_days = 1
            [http]
            [[http.access_key]]
            id = "k"
            secret = "0123456789abcdef"
            [dashboard]
            [[bridge]]
            name = "b"
            addresses = ["h:1883"]
            topics = ["# out"]
            [cluster]
            nats = ["nats://127.0.0.1:4222"]
        "##;
        let mut c = Checker::new("t");
        read(every_table, &mut c).unwrap();
        let words: std::collections::BTreeSet<&str> = DEFAULT_CONFIG
            .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
            .collect();
        let mut missing = Vec::new();
        let mut count = 0;
        for t in &c.tables {
            for k in &t.asked {
                count += 1;
                if !words.contains(k.as_str()) {
                    missing.push(format!("[{}] {k}", t.section));
                }
            }
        }
        // a rule's keys are those of the API's rule type
        for k in midge_hub::field_names::<midge_hub::RuleSpec>() {
            count += 1;
            if !words.contains(k) {
                missing.push(format!("[[rule]] {k}"));
            }
        }
        assert!(count > 100, "only {count} keys read");
        assert!(missing.is_empty(), "not in DEFAULT_CONFIG: {missing:?}");
    }

    #[test]
    fn an_unknown_key_is_found_in_every_table_without_a_list() {
        let err = parse(
            r##"
            colour = 1
            [series]
            retention_dayz = 1
            [[series.table]]
            name = "a"
            retention_days = 1
            weeks = 2
            [http]
            max_conections = 5
            [[http.access_key]]
            id = "k"
            secret = "0123456789abcdef"
            secrett = 1
            [dashboard]
            widgets = []
            [[bridge]]
            name = "b"
            addresses = ["h:1883"]
            topics = [{ pattern = "#", directon = "out" }]
            keepalve = 30
            "##,
            "t",
        )
        .unwrap_err();
        for want in [
            "t: colour: unknown key",
            "[series] retention_dayz: unknown key (did you mean `retention_days`?)",
            "[series.table #1] weeks: unknown key",
            "[http] max_conections: unknown key (did you mean `max_connections`?)",
            "[http.access_key #1] secrett: unknown key (did you mean `secret`?)",
            "[dashboard] widgets: unknown key (did you mean `widget`?)",
            "[bridge \"b\"] topics #1: directon: unknown key (did you mean `direction`?)",
            "[bridge \"b\"] keepalve: unknown key (did you mean `keepalive`?)",
        ] {
            assert!(err.contains(want), "{want:?} not in\n{err}");
        }
    }

    /// A section read through serde (`[cluster]`) has its keys from the struct's fields.
    #[test]
    fn a_serde_section_finds_unknown_keys_from_its_fields() {
        let err = parse(
            "[cluster]\nnats = [\"nats://127.0.0.1:4222\"]\nreplica = 3\n",
            "t",
        )
        .unwrap_err();
        assert!(
            err.contains("t: [cluster] replica: unknown key (did you mean `replicas`?)"),
            "{err}"
        );
        let err = parse(
            "[cluster]\nnats = \"nats://h:4222\"\nreplicas = \"x\"\n",
            "t",
        )
        .unwrap_err();
        assert!(err.contains("t: [cluster]: invalid type"), "{err}");
        let ok = parse(
            "[cluster]\nnats = [\"nats://127.0.0.1:4222\"]\nnode = \"n1\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(ok.cluster.unwrap().node, "n1");
    }
}
