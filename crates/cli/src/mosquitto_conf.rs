//! mosquitto's own configuration format (`mosquitto.conf`), read by `midge serve -c` and
//! turned into midge's TOML by `midge config convert`.
//!
//! The file is converted into the TOML configuration it means (so every value goes through
//! the same checks as a TOML file), plus notes: each key midge does not support is named
//! with its file and line and what midge does instead, never silently ignored. Values midge
//! cannot read (`port abc`) are errors, with their file and line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use toml::{Table, Value};

/// What a mosquitto.conf says, as midge's TOML.
#[derive(Debug, Default)]
pub(crate) struct Converted {
    /// The equivalent midge configuration.
    pub(crate) toml: Table,
    /// Keys midge reads differently or not at all: `file:line: key: what midge does`.
    pub(crate) notes: Vec<String>,
    /// Values that cannot be read: `file:line: key: why`.
    pub(crate) errors: Vec<String>,
}

/// Keys that only mosquitto.conf has: a file that fails to parse as TOML and has a line
/// starting with one of them is taken for a mosquitto.conf.
const MOSQUITTO_KEYS: &[&str] = &[
    "listener",
    "port",
    "bind_address",
    "allow_anonymous",
    "password_file",
    "acl_file",
    "persistence",
    "persistence_location",
    "persistence_file",
    "log_dest",
    "log_type",
    "include_dir",
    "pid_file",
    "per_listener_settings",
    "connection",
    "protocol",
    "certfile",
    "cafile",
    "user",
    "sys_interval",
    "max_queued_messages",
    "autosave_interval",
];

/// Whether `text` is a mosquitto.conf rather than a TOML file.
pub(crate) fn looks_like_mosquitto(text: &str) -> bool {
    if text.parse::<Table>().is_ok() {
        return false;
    }
    text.lines().any(|l| {
        let mut words = l.split_whitespace();
        matches!(words.next(), Some(k) if MOSQUITTO_KEYS.contains(&k))
            && words.next().is_some_and(|w| !w.starts_with('='))
    })
}

/// One listener being built.
#[derive(Debug, Default)]
struct Listener {
    table: Table,
    at: String,
}

#[derive(Debug, Default)]
struct State {
    out: Converted,
    per_listener: bool,
    /// The listener that `port`/`bind_address` (and options before any `listener` line)
    /// configure.
    default_listener: Option<Listener>,
    listeners: Vec<Listener>,
    security: Table,
    limits: Table,
    server: Table,
    persistence: Table,
    log_types: Vec<String>,
    /// `connection` sections as `[[bridge]]` tables.
    bridges: Vec<Table>,
    in_bridge: Option<String>,
    depth: usize,
}

/// Reads and converts the mosquitto.conf at `path` (and the files its `include_dir` lines
/// name).
pub(crate) fn convert(path: &Path) -> Converted {
    let mut st = State::default();
    match std::fs::read_to_string(path) {
        Ok(text) => st.file(path, &text),
        Err(e) => st
            .out
            .errors
            .push(format!("cannot read {}: {e}", path.display())),
    }
    st.finish()
}

/// Converts mosquitto.conf text (for tests and `convert`).
#[cfg(test)]
pub(crate) fn convert_text(text: &str, file: &str) -> Converted {
    let mut st = State::default();
    st.file(Path::new(file), text);
    st.finish()
}

fn boolean(v: &str) -> Option<bool> {
    match v {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// mosquitto's durations: a number and h, d, w, m (months) or y.
fn duration_secs(v: &str) -> Option<i64> {
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: i64 = n.parse().ok()?;
    let mult = match unit {
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "m" => 30 * 86_400,
        "y" => 365 * 86_400,
        _ => return None,
    };
    n.checked_mul(mult)
}

impl State {
    fn note(&mut self, at: &str, key: &str, what: &str) {
        self.out.notes.push(format!("{at}: {key}: {what}"));
    }

    fn error(&mut self, at: &str, key: &str, what: &str) {
        self.out.errors.push(format!("{at}: {key}: {what}"));
    }

    /// The listener the listener-specific keys now apply to.
    fn current(&mut self, at: &str) -> &mut Table {
        if self.listeners.is_empty() {
            let l = self.default_listener.get_or_insert_with(|| Listener {
                table: Table::new(),
                at: at.to_owned(),
            });
            &mut l.table
        } else {
            let i = self.listeners.len() - 1;
            match self.listeners.get_mut(i) {
                Some(l) => &mut l.table,
                None => &mut self.security,
            }
        }
    }

    fn file(&mut self, path: &Path, text: &str) {
        self.depth += 1;
        for (n, line) in text.lines().enumerate() {
            let at = format!("{}:{}", path.display(), n + 1);
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = match line.split_once(char::is_whitespace) {
                Some((k, v)) => (k, v.trim()),
                None => (line, ""),
            };
            self.line(path, &at, key, value);
        }
        self.depth -= 1;
    }

    fn int(&mut self, at: &str, key: &str, value: &str) -> Option<i64> {
        match value.parse::<i64>() {
            Ok(v) => Some(v),
            Err(_) => {
                self.error(at, key, &format!("not a whole number: {value:?}"));
                None
            }
        }
    }

    fn flag(&mut self, at: &str, key: &str, value: &str) -> Option<bool> {
        let b = boolean(value);
        if b.is_none() {
            self.error(at, key, &format!("must be true or false (found {value:?})"));
        }
        b
    }

    fn line(&mut self, path: &Path, at: &str, key: &str, value: &str) {
        // the settings of a bridge (`connection`) go with it
        if self.in_bridge.is_some() && bridge_key(key) {
            self.bridge_line(at, key, value);
            return;
        }
        match key {
            "listener" => {
                self.in_bridge = None;
                let mut words = value.split_whitespace();
                let Some(port) = words.next().and_then(|p| p.parse::<u16>().ok()) else {
                    self.error(at, key, &format!("needs a port number (found {value:?})"));
                    return;
                };
                let mut t = Table::new();
                if port == 0 {
                    self.note(
                        at,
                        key,
                        "unix sockets (port 0) are not supported: the listener is left out",
                    );
                    return;
                }
                t.insert("port".into(), Value::Integer(i64::from(port)));
                match words.next() {
                    Some(host) => match resolve(host) {
                        Some(ip) => {
                            t.insert("bind".into(), Value::String(ip.to_string()));
                        }
                        None => self.error(
                            at,
                            key,
                            &format!("cannot resolve the address {host:?} to listen on"),
                        ),
                    },
                    None => {
                        t.insert("bind".into(), Value::String("0.0.0.0".into()));
                    }
                }
                self.listeners.push(Listener {
                    table: t,
                    at: at.to_owned(),
                });
            }
            "port" => {
                if let Some(p) = self.int(at, key, value) {
                    self.current(at).insert("port".into(), Value::Integer(p));
                }
            }
            "bind_address" => match resolve(value) {
                Some(ip) => {
                    self.current(at)
                        .insert("bind".into(), Value::String(ip.to_string()));
                }
                None => self.error(at, key, &format!("cannot resolve {value:?}")),
            },
            "socket_domain" => {
                let ip = match value {
                    "ipv4" => "0.0.0.0",
                    "ipv6" => "::",
                    _ => {
                        self.error(at, key, "must be ipv4 or ipv6");
                        return;
                    }
                };
                let t = self.current(at);
                if t.get("bind").and_then(Value::as_str) == Some("0.0.0.0") || !t.contains_key("bind") {
                    t.insert("bind".into(), Value::String(ip.into()));
                }
            }
            "protocol" => match value {
                "mqtt" | "websockets" => {
                    self.current(at)
                        .insert("protocol".into(), Value::String(value.into()));
                }
                _ => self.error(at, key, "must be mqtt or websockets"),
            },
            "certfile" | "keyfile" | "cafile" => {
                self.current(at)
                    .insert(key.into(), Value::String(value.into()));
            }
            "require_certificate" | "use_identity_as_username" => {
                if let Some(b) = self.flag(at, key, value) {
                    self.current(at).insert(key.into(), Value::Boolean(b));
                }
            }
            "use_subject_as_username" => {
                if let Some(true) = self.flag(at, key, value) {
                    self.current(at)
                        .insert("use_identity_as_username".into(), Value::Boolean(true));
                    self.note(
                        at,
                        key,
                        "midge takes the certificate's CN (use_identity_as_username), not the whole subject, as the username",
                    );
                }
            }
            "capath" => self.note(
                at,
                key,
                "not supported: midge reads one cafile; concatenate the CA certificates of that folder into one file and set cafile",
            ),
            "tls_version" => match value {
                "tlsv1.2" | "tlsv1.3" => self.note(
                    at,
                    key,
                    "midge accepts TLS 1.2 and 1.3 on every TLS listener (TLSv1 and TLSv1.1 never)",
                ),
                _ => self.error(
                    at,
                    key,
                    &format!("{value:?}: midge supports TLS 1.2 and 1.3 only"),
                ),
            },
            "allow_anonymous" | "password_file" | "acl_file" => {
                let v = if key == "allow_anonymous" {
                    match self.flag(at, key, value) {
                        Some(b) => Value::Boolean(b),
                        None => return,
                    }
                } else {
                    Value::String(value.into())
                };
                if self.per_listener && !self.listeners.is_empty() {
                    self.current(at).insert(key.into(), v);
                } else {
                    self.security.insert(key.into(), v);
                }
            }
            "per_listener_settings" => {
                if let Some(b) = self.flag(at, key, value) {
                    self.per_listener = b;
                }
            }
            "persistence" => {
                if let Some(b) = self.flag(at, key, value) {
                    self.persistence.insert("enabled".into(), Value::Boolean(b));
                }
            }
            "persistence_location" => {
                self.persistence
                    .insert("dir".into(), Value::String(value.into()));
            }
            "persistence_file" => self.note(
                at,
                key,
                "midge keeps its own store in the persistence folder (its files, not mosquitto.db); `midge import` carries a mosquitto.db over",
            ),
            "autosave_interval" | "autosave_on_changes" => self.note(
                at,
                key,
                "not needed: midge writes every change to disk as it happens (group commit), so nothing waits for an autosave",
            ),
            "sys_interval" => {
                if let Some(v) = self.int(at, key, value) {
                    self.server.insert("sys_interval".into(), Value::Integer(v));
                }
            }
            "max_connections" => {
                if let Some(v) = self.int(at, key, value) {
                    let v = if v < 0 { 0 } else { v };
                    self.server
                        .insert("max_connections".into(), Value::Integer(v));
                    if !self.listeners.is_empty() {
                        self.note(
                            at,
                            key,
                            "midge limits connections for the whole broker, not per listener",
                        );
                    }
                }
            }
            "max_inflight_messages" => {
                if let Some(v) = self.int(at, key, value) {
                    let v = if v <= 0 { i64::from(u16::MAX) } else { v };
                    self.limits.insert(key.into(), Value::Integer(v));
                }
            }
            "max_queued_messages" | "max_queued_bytes" => {
                if let Some(v) = self.int(at, key, value) {
                    self.limits.insert(key.into(), Value::Integer(v.max(0)));
                }
            }
            "max_packet_size" => {
                if let Some(v) = self.int(at, key, value) {
                    let v = if v <= 0 {
                        i64::from(midge_codec::MAX_PACKET_SIZE)
                    } else {
                        v
                    };
                    self.limits.insert(key.into(), Value::Integer(v));
                }
            }
            "message_size_limit" => {
                if let Some(v) = self.int(at, key, value)
                    && v > 0
                {
                    let v = (v + 65_536).min(i64::from(midge_codec::MAX_PACKET_SIZE));
                    self.limits
                        .insert("max_packet_size".into(), Value::Integer(v));
                    self.note(
                        at,
                        key,
                        "midge limits whole packets: max_packet_size = the payload limit + 64 KiB for topic and properties",
                    );
                }
            }
            "max_keepalive" => {
                if let Some(v) = self.int(at, key, value) {
                    self.limits.insert(key.into(), Value::Integer(v));
                }
            }
            "max_qos" => {
                if let Some(v) = self.int(at, key, value) {
                    self.limits.insert(key.into(), Value::Integer(v));
                }
            }
            "retain_available" => {
                if let Some(b) = self.flag(at, key, value) {
                    self.limits.insert(key.into(), Value::Boolean(b));
                }
            }
            "queue_qos0_messages" => {
                if let Some(b) = self.flag(at, key, value) {
                    self.limits
                        .insert("queue_qos0_offline".into(), Value::Boolean(b));
                }
            }
            "persistent_client_expiration" => match duration_secs(value) {
                Some(s) => {
                    self.limits.insert(
                        "max_session_expiry".into(),
                        Value::Integer(s.min(i64::from(u32::MAX))),
                    );
                    self.note(
                        at,
                        key,
                        "midge caps every session's expiry at this (max_session_expiry), MQTT 5 sessions included",
                    );
                }
                None => self.error(
                    at,
                    key,
                    &format!("{value:?} is not a duration such as 1h, 14d, 2w, 1m or 1y"),
                ),
            },
            "allow_zero_length_clientid" => match self.flag(at, key, value) {
                Some(true) | None => {}
                Some(false) => self.note(
                    at,
                    key,
                    "not supported: midge accepts an empty client id where MQTT allows it and assigns one",
                ),
            },
            "log_type" => self.log_types.push(value.to_owned()),
            "log_dest" => {
                if value != "stderr" {
                    self.note(
                        at,
                        key,
                        &format!(
                            "{value:?}: midge logs to standard error only (redirect it, or run under systemd/journald)"
                        ),
                    );
                }
            }
            "include_dir" => self.include_dir(path, at, value),
            "connection" => {
                if value.is_empty() {
                    self.error(at, key, "needs the bridge's name");
                    return;
                }
                self.in_bridge = Some(value.to_owned());
                let mut t = Table::new();
                t.insert("name".into(), Value::String(value.to_owned()));
                self.bridges.push(t);
            }
            "pid_file" | "user" => self.note(
                at,
                key,
                "not needed: midge runs as the user that starts it and writes no pid file (systemd tracks it)",
            ),
            "set_tcp_nodelay" => self.note(at, key, "midge always sets TCP_NODELAY"),
            "log_timestamp" | "log_timestamp_format" | "connection_messages" | "websockets_log_level" => {
                self.note(at, key, "midge's log lines always carry a timestamp and log connections at info level")
            }
            "http_dir" => self.note(
                at,
                key,
                "not supported: midge serves its own dashboard on [http] (port 18083)",
            ),
            "crlfile" => self.note(
                at,
                key,
                "NOT SUPPORTED: midge does not check certificate revocation lists; a revoked client certificate is still accepted",
            ),
            "plugin" | "auth_plugin" => self.note(
                at,
                key,
                "NOT SUPPORTED: midge loads no plugins; authentication uses password_file, acl_file and client certificates",
            ),
            _ if key.starts_with("plugin_opt_") || key.starts_with("auth_opt_") => {
                self.note(at, key, "not supported: midge loads no plugins")
            }
            _ => self.note(
                at,
                key,
                "not supported by midge: left out",
            ),
        }
    }

    fn include_dir(&mut self, from: &Path, at: &str, dir: &str) {
        if self.depth > 8 {
            self.error(at, "include_dir", "included too deeply (a loop?)");
            return;
        }
        let dir = resolve_path(from, dir);
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "conf"))
                .collect(),
            Err(e) => {
                self.error(
                    at,
                    "include_dir",
                    &format!("cannot read {}: {e}", dir.display()),
                );
                return;
            }
        };
        files.sort();
        for f in files {
            match std::fs::read_to_string(&f) {
                Ok(text) => self.file(&f, &text),
                Err(e) => self.error(
                    at,
                    "include_dir",
                    &format!("cannot read {}: {e}", f.display()),
                ),
            }
        }
    }

    fn finish(mut self) -> Converted {
        let mut root = Table::new();
        if !self.log_types.is_empty() {
            let level = if self.log_types.iter().any(|t| t == "all" || t == "debug") {
                "debug"
            } else if self.log_types.iter().any(|t| {
                t == "notice" || t == "information" || t == "subscribe" || t == "unsubscribe"
            }) {
                "info"
            } else if self.log_types.iter().any(|t| t == "warning") {
                "warn"
            } else {
                "error"
            };
            self.server
                .insert("log_level".into(), Value::String(level.into()));
        }
        let mut listeners: Vec<Value> = Vec::new();
        if let Some(mut d) = self.default_listener.take() {
            d.table.entry("port").or_insert(Value::Integer(1883));
            d.table
                .entry("bind")
                .or_insert(Value::String("0.0.0.0".into()));
            let _ = d.at;
            listeners.push(Value::Table(d.table));
        }
        for l in self.listeners.drain(..) {
            listeners.push(Value::Table(l.table));
        }
        if !listeners.is_empty() {
            root.insert("listener".into(), Value::Array(listeners));
        }
        for (name, t) in [
            ("server", std::mem::take(&mut self.server)),
            ("security", std::mem::take(&mut self.security)),
            ("limits", std::mem::take(&mut self.limits)),
            ("persistence", std::mem::take(&mut self.persistence)),
        ] {
            if !t.is_empty() {
                root.insert(name.into(), Value::Table(t));
            }
        }
        if !self.bridges.is_empty() {
            let bridges = std::mem::take(&mut self.bridges);
            root.insert(
                "bridge".into(),
                Value::Array(bridges.into_iter().map(Value::Table).collect()),
            );
        }
        self.out.toml = root;
        self.out
    }

    /// A key of the current `connection` section, as a key of its `[[bridge]]` table.
    fn bridge_line(&mut self, at: &str, key: &str, value: &str) {
        let name = self.in_bridge.clone().unwrap_or_default();
        let mut set: Option<(&str, Value)> = None;
        let mut push: Option<(&str, Value)> = None;
        match key {
            "address" | "addresses" => {
                for w in value.split([' ', '\t', ',']).filter(|w| !w.is_empty()) {
                    match midge_bridge::parse_address(w) {
                        Ok(_) => {
                            if let Some(t) = self.bridges.last_mut() {
                                append(t, "addresses", Value::String(w.to_owned()));
                            }
                        }
                        Err(e) => self.error(at, key, &e.to_string()),
                    }
                }
                if value.is_empty() {
                    self.error(at, key, "needs host[:port]");
                }
            }
            "topic" => match midge_bridge::parse_topic_line(value) {
                Ok(_) => push = Some(("topics", Value::String(value.to_owned()))),
                Err(e) => self.error(at, key, &e.to_string()),
            },
            "bridge_protocol_version" => match value {
                "mqttv31" => set = Some(("protocol", Value::String("3.1".into()))),
                "mqttv311" => set = Some(("protocol", Value::String("3.1.1".into()))),
                "mqttv50" | "mqttv5" => set = Some(("protocol", Value::String("5".into()))),
                _ => self.error(
                    at,
                    key,
                    &format!("must be mqttv31, mqttv311 or mqttv50 (found {value:?})"),
                ),
            },
            "remote_clientid" | "clientid" => {
                set = Some(("clientid", Value::String(value.to_owned())));
            }
            "remote_username" => set = Some(("username", Value::String(value.to_owned()))),
            "remote_password" => set = Some(("password", Value::String(value.to_owned()))),
            "bridge_cafile" | "bridge_capath" | "bridge_certfile" | "bridge_keyfile" => {
                let k = key.trim_start_matches("bridge_");
                set = Some((k, Value::String(value.to_owned())));
            }
            "keepalive_interval" => {
                if let Some(v) = self.int(at, key, value) {
                    set = Some(("keepalive", Value::Integer(v)));
                }
            }
            "restart_timeout" => {
                let nums: Vec<Option<i64>> =
                    value.split_whitespace().map(|w| w.parse().ok()).collect();
                match nums.as_slice() {
                    [Some(c)] => set = Some(("restart_timeout", Value::Integer(*c))),
                    [Some(b), Some(c)] => {
                        set = Some((
                            "restart_timeout",
                            Value::Array(vec![Value::Integer(*b), Value::Integer(*c)]),
                        ));
                    }
                    _ => self.error(at, key, &format!("needs `base cap` or `constant` seconds (found {value:?})")),
                }
            }
            "notification_topic" => {
                set = Some(("notification_topic", Value::String(value.to_owned())));
            }
            "cleansession" | "try_private" | "bridge_insecure" | "notifications"
            | "notifications_local_only" | "round_robin" | "bridge_outgoing_retain" => {
                let k = match key {
                    "cleansession" => "clean_session",
                    "bridge_insecure" => "insecure",
                    "bridge_outgoing_retain" => "outgoing_retain",
                    k => k,
                };
                if let Some(b) = self.flag(at, key, value) {
                    set = Some((k, Value::Boolean(b)));
                }
            }
            "local_clientid" | "local_username" | "local_password" => self.note(
                at,
                key,
                &format!("bridge {name:?}: the local side is midge's in-process client `$midge/bridge/{name}`, which needs no client id or credentials of its own"),
            ),
            "local_cleansession" => self.note(
                at,
                key,
                &format!("bridge {name:?}: the local session is always persistent (it holds the messages waiting for the link)"),
            ),
            "start_type" if value == "automatic" => {}
            "start_type" | "idle_timeout" | "threshold" => self.note(
                at,
                key,
                &format!("bridge {name:?}: midge starts every bridge at once and keeps it connected (start_type automatic)"),
            ),
            "bridge_attempt_unsubscribe" => self.note(
                at,
                key,
                &format!("bridge {name:?}: midge does not unsubscribe `out` topics on the remote"),
            ),
            _ => self.note(
                at,
                key,
                &format!("bridge {name:?}: NOT SUPPORTED by midge's bridges (left out)"),
            ),
        }
        if let Some(t) = self.bridges.last_mut() {
            if let Some((k, v)) = set {
                t.insert(k.into(), v);
            }
            if let Some((k, v)) = push {
                append(t, k, v);
            }
        }
    }
}

/// Add `v` to the array `key` of `t`.
fn append(t: &mut Table, key: &str, v: Value) {
    match t.get_mut(key) {
        Some(Value::Array(a)) => a.push(v),
        _ => {
            t.insert(key.into(), Value::Array(vec![v]));
        }
    }
}

/// Keys that belong to a bridge section (`connection`).
fn bridge_key(key: &str) -> bool {
    key.starts_with("bridge_")
        || key.starts_with("remote_")
        || key.starts_with("local_")
        || key.starts_with("notification")
        || matches!(
            key,
            "address"
                | "addresses"
                | "topic"
                | "cleansession"
                | "clientid"
                | "keepalive_interval"
                | "idle_timeout"
                | "restart_timeout"
                | "round_robin"
                | "start_type"
                | "threshold"
                | "try_private"
        )
}

fn resolve(host: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    if host == "localhost" {
        return Some(IpAddr::from([127, 0, 0, 1]));
    }
    (host, 0)
        .to_socket_addrs()
        .ok()?
        .map(|a| a.ip())
        .find(IpAddr::is_ipv4)
}

fn resolve_path(from: &Path, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        p
    } else {
        from.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// The converted file as commented TOML (`midge config convert`).
pub(crate) fn to_toml_text(source: &Path, c: &Converted) -> String {
    let mut out = format!(
        "# midge configuration converted from {} (mosquitto format).\n",
        source.display()
    );
    if c.notes.is_empty() {
        out.push_str("# Every setting carried over.\n");
    } else {
        out.push_str("# What midge does differently:\n");
        for n in &c.notes {
            let _ = writeln!(out, "#   {n}");
        }
    }
    out.push('\n');
    // listeners last reads better after the global sections
    let mut rest = c.toml.clone();
    let listeners = rest.remove("listener");
    let ordered: BTreeMap<String, Value> = rest.into_iter().collect();
    let mut first = Table::new();
    for (k, v) in ordered {
        first.insert(k, v);
    }
    out.push_str(&toml::to_string(&first).unwrap_or_default());
    if let Some(Value::Array(list)) = listeners {
        for l in list {
            out.push_str("\n[[listener]]\n");
            if let Value::Table(t) = l {
                out.push_str(&toml::to_string(&t).unwrap_or_default());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn a_toml_file_is_not_taken_for_a_mosquitto_conf() {
        assert!(!looks_like_mosquitto("[server]\nsys_interval = 5\n"));
        assert!(looks_like_mosquitto(
            "listener 1883\nallow_anonymous true\n"
        ));
        assert!(looks_like_mosquitto("# comment\npersistence true\n"));
        assert!(!looks_like_mosquitto("port = \n"));
    }

    #[test]
    fn listeners_security_tls_and_limits_are_carried_over() {
        let c = convert_text(
            "per_listener_settings false\nallow_anonymous false\npassword_file /etc/mosquitto/passwd\n\
             acl_file /etc/mosquitto/acl\n\nlistener 1883 127.0.0.1\n\nlistener 8883\ncafile /c/ca.crt\n\
             certfile /c/server.crt\nkeyfile /c/server.key\nrequire_certificate true\n\
             use_identity_as_username true\ntls_version tlsv1.2\n\nlistener 8080\nprotocol websockets\n\
             max_inflight_messages 0\nmax_queued_messages 1000\nmessage_size_limit 1000\n\
             persistent_client_expiration 14d\nsys_interval 30\nlog_type error\nlog_type warning\n\
             persistence true\npersistence_location /var/lib/mosquitto/\n",
            "m.conf",
        );
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        let t = &c.toml;
        let l = t["listener"].as_array().unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0]["bind"].as_str(), Some("127.0.0.1"));
        assert_eq!(l[1]["port"].as_integer(), Some(8883));
        assert_eq!(l[1]["bind"].as_str(), Some("0.0.0.0"));
        assert_eq!(l[1]["require_certificate"].as_bool(), Some(true));
        assert_eq!(l[2]["protocol"].as_str(), Some("websockets"));
        assert_eq!(t["security"]["allow_anonymous"].as_bool(), Some(false));
        assert_eq!(
            t["security"]["acl_file"].as_str(),
            Some("/etc/mosquitto/acl")
        );
        assert_eq!(
            t["limits"]["max_inflight_messages"].as_integer(),
            Some(65535)
        );
        assert_eq!(t["limits"]["max_packet_size"].as_integer(), Some(66_536));
        assert_eq!(
            t["limits"]["max_session_expiry"].as_integer(),
            Some(14 * 86_400)
        );
        assert_eq!(t["server"]["log_level"].as_str(), Some("warn"));
        assert_eq!(
            t["persistence"]["dir"].as_str(),
            Some("/var/lib/mosquitto/")
        );
        assert!(
            c.notes
                .iter()
                .any(|n| n.starts_with("m.conf:14: tls_version"))
        );
        // and it is a valid midge configuration
        let text = to_toml_text(Path::new("m.conf"), &c);
        crate::config::parse(&text, "converted").unwrap();
    }

    #[test]
    fn per_listener_settings_put_auth_on_the_listener() {
        let c = convert_text(
            "per_listener_settings true\nlistener 1883\nallow_anonymous true\nlistener 1884\npassword_file /p\n",
            "m.conf",
        );
        let l = c.toml["listener"].as_array().unwrap();
        assert_eq!(l[0]["allow_anonymous"].as_bool(), Some(true));
        assert_eq!(l[1]["password_file"].as_str(), Some("/p"));
        assert!(c.toml.get("security").is_none());
    }

    #[test]
    fn unsupported_keys_are_named_with_file_and_line() {
        let c = convert_text(
            "pid_file /run/m.pid\nplugin /usr/lib/x.so\ncrlfile /c.crl\nconnection cloud\naddress a:1883\ntopic # both 1\nnonsense 3\n",
            "m.conf",
        );
        let notes = c.notes.join("\n");
        assert!(notes.contains("m.conf:1: pid_file"), "{notes}");
        assert!(notes.contains("m.conf:2: plugin: NOT SUPPORTED"), "{notes}");
        assert!(
            notes.contains("m.conf:3: crlfile: NOT SUPPORTED"),
            "{notes}"
        );
        // the bridge is converted, not noted
        assert!(!notes.contains("m.conf:4"), "{notes}");
        assert_eq!(c.toml["bridge"][0]["name"].as_str(), Some("cloud"));
        assert!(
            notes.contains("m.conf:7: nonsense: not supported"),
            "{notes}"
        );
        // the bridge's own keys are part of the bridge, not unknown keys
        assert!(!notes.contains("m.conf:5"), "{notes}");
    }

    #[test]
    fn connection_sections_become_bridges() {
        let c = convert_text(
            "connection cloud\naddress a.example:8883 b.example\ntopic sensors/# out 1 \"\" site/\n\
             topic cmd/# in 2\nbridge_protocol_version mqttv50\nremote_clientid site-1\n\
             remote_username u\nremote_password p\ncleansession true\nkeepalive_interval 30\n\
             bridge_cafile /c/ca.crt\nbridge_insecure true\nnotifications false\n\
             restart_timeout 2 10\nlocal_clientid x\nstart_type lazy\nbridge_bind_address 10.0.0.1\n\
             bridge_attempt_unsubscribe false\ntry_private false\n\
             connection two\naddress c:1883\ntopic # both\nrestart_timeout 20\n\
             listener 1884\n",
            "m.conf",
        );
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        let b = c.toml["bridge"].as_array().unwrap();
        assert_eq!(b.len(), 2);
        let one = b[0].as_table().unwrap();
        assert_eq!(one["addresses"].as_array().unwrap().len(), 2);
        assert_eq!(
            one["topics"][0].as_str(),
            Some("sensors/# out 1 \"\" site/")
        );
        assert_eq!(one["protocol"].as_str(), Some("5"));
        assert_eq!(one["clientid"].as_str(), Some("site-1"));
        assert_eq!(one["username"].as_str(), Some("u"));
        assert_eq!(one["clean_session"].as_bool(), Some(true));
        assert_eq!(one["keepalive"].as_integer(), Some(30));
        assert_eq!(one["cafile"].as_str(), Some("/c/ca.crt"));
        assert_eq!(one["insecure"].as_bool(), Some(true));
        assert_eq!(one["notifications"].as_bool(), Some(false));
        assert_eq!(one["try_private"].as_bool(), Some(false));
        assert_eq!(b[1]["restart_timeout"].as_integer(), Some(20));
        let notes = c.notes.join("\n");
        for want in [
            "m.conf:15: local_clientid: bridge \"cloud\": the local side",
            "m.conf:16: start_type: bridge \"cloud\": midge starts every bridge",
            "m.conf:17: bridge_bind_address: bridge \"cloud\": NOT SUPPORTED",
            "m.conf:18: bridge_attempt_unsubscribe",
        ] {
            assert!(notes.contains(want), "{want} not in {notes}");
        }
        // `listener` ends the bridge section
        assert_eq!(c.toml["listener"].as_array().unwrap().len(), 1);
        let bad = convert_text("connection x\naddress h:x\ntopic a sideways\n", "m.conf");
        let e = bad.errors.join("\n");
        assert!(e.contains("m.conf:2: address"), "{e}");
        assert!(e.contains("m.conf:3: topic: direction"), "{e}");
    }

    #[test]
    fn bad_values_are_errors_with_their_line() {
        let c = convert_text(
            "listener abc\nallow_anonymous maybe\npersistent_client_expiration 3x\ntls_version tlsv1\n",
            "m.conf",
        );
        let e = c.errors.join("\n");
        assert!(e.contains("m.conf:1: listener: needs a port"), "{e}");
        assert!(
            e.contains("m.conf:2: allow_anonymous: must be true or false"),
            "{e}"
        );
        assert!(e.contains("m.conf:3: persistent_client_expiration"), "{e}");
        assert!(e.contains("m.conf:4: tls_version"), "{e}");
    }

    #[test]
    fn the_default_listener_takes_port_and_bind_address() {
        let c = convert_text("port 1884\nbind_address 127.0.0.1\n", "m.conf");
        let l = c.toml["listener"].as_array().unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0]["port"].as_integer(), Some(1884));
        assert_eq!(l[0]["bind"].as_str(), Some("127.0.0.1"));
    }

    #[test]
    fn durations_in_mosquitto_units() {
        assert_eq!(duration_secs("1h"), Some(3600));
        assert_eq!(duration_secs("2w"), Some(14 * 86_400));
        assert_eq!(duration_secs("1y"), Some(365 * 86_400));
        assert_eq!(duration_secs("5"), None);
        assert_eq!(duration_secs(""), None);
    }
}
