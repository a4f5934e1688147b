//! `[[rule]]` and `[series]`: the IoT hub's part of the configuration file.

use std::path::PathBuf;
use std::time::Duration;

use midge_hub::RuleSpec;
use midge_series::{SeriesOptions, Synchronous};

use super::{Checker, MidgeConfig};

/// The time-series store as configured: where, and how.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SeriesSettings {
    /// The SQLite file.
    pub(crate) path: PathBuf,
    /// Durability, retention, query limits.
    pub(crate) options: SeriesOptions,
    /// The file is the default one in the data folder (so a memory-only broker has none).
    pub(crate) in_data_dir: bool,
    /// `backend = "postgres"`: the PostgreSQL URL the store lives at instead of `path`.
    pub(crate) postgres_url: Option<String>,
}

/// `[series]`, after `[persistence]` was read (the default file lives in its data folder).
pub(crate) fn series(c: &mut Checker<'_>, root: &toml::Table, cfg: &mut MidgeConfig) {
    let default_path = cfg
        .server
        .persistence
        .as_ref()
        .map(|p| p.dir.join("series.db"));
    let mut options = SeriesOptions::default();
    let mut in_data_dir = default_path.is_some();
    let mut path = default_path;
    let mut enabled = true;
    let mut postgres_url = None;
    if let Some(t) = c.table(root, "series") {
        let s = "series";
        if let Some(v) = c.boolean(t, s, "enabled") {
            enabled = v;
        }
        let file = c.string(t, s, "file");
        if let Some(f) = &file {
            if f.is_empty() {
                c.err(s, "file", "must not be empty");
            }
            path = Some(PathBuf::from(f));
            in_data_dir = false;
        }
        postgres_url = postgres_backend(c, t, file.is_some());
        if let Some(d) = c.int(t, s, "retention_days", 0, 36_500) {
            options.retention = (d > 0).then(|| Duration::from_secs(d as u64 * 86_400));
        }
        if let Some(m) = c.string(t, s, "synchronous") {
            match m.as_str() {
                "full" => options.synchronous = Synchronous::Full,
                "normal" => options.synchronous = Synchronous::Normal,
                _ => c.err(
                    s,
                    "synchronous",
                    format!("must be \"full\" or \"normal\" (found {m:?})"),
                ),
            }
        }
        series_tables(c, t, &mut options);
        if let Some(n) = c.int(t, s, "max_rows_per_query", 1, 1_000_000) {
            options.max_rows_per_query = n as usize;
            options.default_rows_per_query = options.default_rows_per_query.min(n as usize);
        }
    }
    cfg.series = match (enabled, path, postgres_url) {
        (false, _, _) => None,
        (true, path, Some(url)) => Some(SeriesSettings {
            path: path.unwrap_or_default(),
            options,
            in_data_dir: false,
            postgres_url: Some(url),
        }),
        (true, Some(path), None) => Some(SeriesSettings {
            path,
            options,
            in_data_dir,
            postgres_url: None,
        }),
        (true, None, None) => None,
    };
}

/// `[[series.table]]`: `name` and `retention_days` (0: forever) of a table that keeps its
/// rows longer or shorter than `[series] retention_days` (a retention set from the API, kept
/// in the store, takes precedence).
fn series_tables(c: &mut Checker<'_>, t: &toml::Table, options: &mut SeriesOptions) {
    let Some(v) = c.get(t, "series", "table") else {
        return;
    };
    let Some(list) = v.as_array() else {
        c.err(
            "series",
            "table",
            "must be an array of tables ([[series.table]])",
        );
        return;
    };
    for (i, entry) in list.iter().enumerate() {
        let section = format!("series.table #{}", i + 1);
        let Some(e) = entry.as_table() else {
            c.err(&section, "", "must be a table ([[series.table]])");
            continue;
        };
        let name = c.string(e, &section, "name");
        let days = c.int(e, &section, "retention_days", 0, 36_500);
        let name = match name.map(|n| midge_series::SeriesStore::table_name(&n).map_err(|_| n)) {
            Some(Err(n)) => {
                c.err(
                    &section,
                    "name",
                    format!("{n:?} is not a table name (a letter or _, then letters, digits and _; up to 63)"),
                );
                continue;
            }
            Some(Ok(n)) => Some(n),
            None => None,
        };
        match (name, days) {
            (Some(n), Some(d)) => {
                if options
                    .table_retention
                    .insert(n.clone(), d as u32)
                    .is_some()
                {
                    c.err(&section, "name", format!("table {n:?} is listed twice"));
                }
            }
            (None, _) => c.err(&section, "name", "missing: the table's name"),
            (Some(_), None) => c.err(
                &section,
                "retention_days",
                "missing: days to keep the table's rows (0: forever)",
            ),
        }
    }
}

/// `backend` and `url` (or `postgres_url`) of `[series]`: the PostgreSQL URL when the
/// store is in PostgreSQL (`backend = "postgres"`, or a URL without a backend).
fn postgres_backend(c: &mut Checker<'_>, t: &toml::Table, has_file: bool) -> Option<String> {
    let s = "series";
    let backend = c.string(t, s, "backend");
    let mut url = None;
    for key in ["url", "postgres_url"] {
        if let Some(u) = c.string(t, s, key) {
            if url.is_some() {
                c.err(
                    s,
                    key,
                    "the PostgreSQL URL is given twice (url and postgres_url)",
                );
            }
            url = Some((key, u));
        }
    }
    let postgres = match backend.as_deref() {
        None => url.is_some(),
        Some("sqlite") => {
            if let Some((key, _)) = &url {
                c.err(
                    s,
                    key,
                    "is for backend = \"postgres\"; backend is \"sqlite\"",
                );
            }
            false
        }
        Some("postgres" | "postgresql") => true,
        Some(other) => {
            c.err(
                s,
                "backend",
                format!("must be \"sqlite\" or \"postgres\" (found {other:?})"),
            );
            return None;
        }
    };
    if !postgres {
        return None;
    }
    if has_file {
        c.err(
            s,
            "file",
            "is the SQLite file; the store is in PostgreSQL (backend = \"postgres\"): remove one",
        );
    }
    let Some((key, url)) = url else {
        c.err(
            s,
            "url",
            "missing: backend = \"postgres\" needs url = \"postgres://user:password@host:5432/db\"",
        );
        return None;
    };
    if let Err(problem) = midge_series::check_postgres_url(&url) {
        c.err(s, key, problem);
        return None;
    }
    Some(url)
}

/// `[[rule]]` tables, read as the API's JSON rules are ([`midge_hub::RuleSpec`]: the same
/// keys, limits and messages); then the rules themselves are checked (SQL, templates, URLs)
/// with every problem reported.
pub(crate) fn rules(c: &mut Checker<'_>, root: &toml::Table, cfg: &mut MidgeConfig) {
    let Some(v) = c.get(root, "", "rule") else {
        return;
    };
    let Some(list) = v.as_array() else {
        c.err("", "rule", "must be an array of tables ([[rule]])");
        return;
    };
    let mut rules = Vec::new();
    let mut disabled = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let section = format!("rule #{}", i + 1);
        let json = serde_json::to_value(r).unwrap_or(serde_json::Value::Null);
        let (spec, problems) = RuleSpec::read(&json);
        for p in problems {
            let at = if p.at.is_empty() {
                section.clone()
            } else {
                format!("{section}.{}", p.at)
            };
            c.err(&at, &p.key, p.message);
        }
        let Some(mut spec) = spec else { continue };
        if spec.name.is_empty() {
            spec.name = format!("rule-{}", i + 1);
        }
        if !spec.enabled {
            disabled.push(spec.name.clone());
        }
        rules.push(spec.check().0);
    }
    cfg.hub.rules = rules;
    if let Err(problems) = midge_hub::validate(&cfg.hub, cfg.series.is_some()) {
        for p in problems {
            if let midge_hub::RuleProblem::NeedsStore { .. } = p {
                c.err(
                    "",
                    "",
                    format!("{p} (turn on [persistence] or set [series] file)"),
                );
            } else {
                c.err("", "", p);
            }
        }
    }
    // a disabled rule is checked like the others, and does not run
    cfg.hub.rules.retain(|r| !disabled.contains(&r.name));
}

/// The HTTP listener as configured.
#[derive(Debug, Clone)]
pub(crate) struct HttpSettings {
    /// What the listener serves and to whom.
    pub(crate) config: midge_http::HttpConfig,
    /// Set in the configuration file (a failure to bind then stops midge; for the embedded
    /// default it is only a warning).
    pub(crate) explicit: bool,
}

/// Default port of the HTTP API and dashboard (EMQX's dashboard port, which IoT-hub users
/// know).
pub(crate) const HTTP_PORT: u16 = 18083;

/// The embedded default: the dashboard on 127.0.0.1:18083, anonymous (local only).
pub(crate) fn default_http(data_dir: Option<&std::path::Path>) -> HttpSettings {
    let mut config =
        midge_http::HttpConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], HTTP_PORT)));
    config.dashboard_file = data_dir.map(|d| d.join("dashboard.json"));
    HttpSettings {
        config,
        explicit: false,
    }
}

/// A list of strings (`what` names them in the error); `None` after reporting a problem.
fn string_list(
    c: &mut Checker<'_>,
    section: &str,
    key: &str,
    v: &toml::Value,
    what: &str,
) -> Option<Vec<String>> {
    let toml::Value::Array(items) = v else {
        c.err(
            section,
            key,
            format!("must be a list of {what} (found {})", v.type_str()),
        );
        return None;
    };
    let strings: Option<Vec<String>> = items
        .iter()
        .map(|i| i.as_str().map(str::to_owned))
        .collect();
    if strings.is_none() {
        c.err(section, key, format!("must be a list of {what}"));
    }
    strings
}

/// `[[http.access_key]]`: `id` and `secret` of each key that may sign requests
/// (`bce-auth-v1`); every problem reported.
fn access_keys(c: &mut Checker<'_>, t: &toml::Table) -> Vec<midge_http::AccessKey> {
    let mut keys: Vec<midge_http::AccessKey> = Vec::new();
    let list = match c.get(t, "http", "access_key") {
        None => return keys,
        Some(toml::Value::Array(list)) => list,
        Some(other) => {
            c.err(
                "http",
                "access_key",
                format!(
                    "must be an array of tables ([[http.access_key]]) (found {})",
                    other.type_str()
                ),
            );
            return keys;
        }
    };
    for (i, item) in list.iter().enumerate() {
        let s = format!("http.access_key #{}", i + 1);
        let Some(k) = item.as_table() else {
            c.err(
                &s,
                "",
                format!("must be a table (found {})", item.type_str()),
            );
            continue;
        };
        let id = c.string(k, &s, "id");
        let secret = c.string(k, &s, "secret");
        match &id {
            None if !k.contains_key("id") => c.err(&s, "id", "is missing"),
            Some(id)
                if id.is_empty()
                    || id.len() > 128
                    || !id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) =>
            {
                c.err(
                    &s,
                    "id",
                    format!("must be 1 to 128 letters, digits, '-', '_' or '.' (found {id:?})"),
                );
            }
            Some(id) if keys.iter().any(|k| &k.id == id) => {
                c.err(&s, "id", format!("{id:?} is given twice"));
            }
            _ => {}
        }
        match &secret {
            None if !k.contains_key("secret") => c.err(&s, "secret", "is missing"),
            Some(secret) if secret.len() < 16 => c.err(
                &s,
                "secret",
                "must be at least 16 characters (use `openssl rand -hex 16`)",
            ),
            _ => {}
        }
        if let (Some(id), Some(secret)) = (id, secret) {
            keys.push(midge_http::AccessKey { id, secret });
        }
    }
    keys
}

/// `[http]` and `[[dashboard.widget]]`, after `[persistence]` (the dashboard file lives in
/// the data folder).
pub(crate) fn http(c: &mut Checker<'_>, root: &toml::Table, cfg: &mut MidgeConfig) {
    let data_dir = cfg.server.persistence.as_ref().map(|p| p.dir.clone());
    let mut settings = default_http(data_dir.as_deref());
    let mut enabled = true;
    let security_passwords = root
        .get("security")
        .and_then(|s| s.get("password_file"))
        .and_then(toml::Value::as_str)
        .map(PathBuf::from);
    let security_acl = root
        .get("security")
        .and_then(|s| s.get("acl_file"))
        .is_some();
    if let Some(t) = c.table(root, "http") {
        let s = "http";
        // where to listen was chosen: failing to listen there is an error
        settings.explicit = t.contains_key("bind") || t.contains_key("port");
        if let Some(v) = c.boolean(t, s, "enabled") {
            enabled = v;
        }
        let bind = c.string(t, s, "bind").unwrap_or_else(|| "127.0.0.1".into());
        let port = c
            .int(t, s, "port", 0, 65535)
            .unwrap_or(i64::from(HTTP_PORT)) as u16;
        match bind.parse::<std::net::IpAddr>() {
            Ok(ip) => settings.config.bind = std::net::SocketAddr::new(ip, port),
            Err(_) => c.err(s, "bind", format!("not an IP address: {bind:?}")),
        }
        let own_passwords = c.string(t, s, "password_file").map(PathBuf::from);
        let shared_passwords = own_passwords.is_none() && security_passwords.is_some();
        settings.config.password_file = own_passwords.or(security_passwords);
        // anonymous by default only on loopback and only while no password file is set:
        // once MQTT users need passwords, the API (which publishes anything) does too
        settings.config.allow_anonymous = c.boolean(t, s, "allow_anonymous").unwrap_or_else(|| {
            settings.config.bind.ip().is_loopback() && settings.config.password_file.is_none()
        });
        match c.get(t, s, "users") {
            None => {
                if enabled && shared_passwords && security_acl && !settings.config.allow_anonymous {
                    c.err(
                        s,
                        "users",
                        "must list who may use the HTTP API: its password file is [security]'s and an acl_file restricts those users, which the API (it publishes and reads anything) would step around; or give [http] a password_file of its own",
                    );
                }
            }
            Some(v) => settings.config.users = string_list(c, s, "users", v, "user names"),
        }
        if enabled && !settings.config.allow_anonymous && settings.config.password_file.is_none() {
            c.err(
                s,
                "allow_anonymous",
                "is false and there is no password_file ([http] or [security]): nobody could log in",
            );
        }
        if let Some(n) = c.int(t, s, "max_live_streams", 1, 100_000) {
            settings.config.max_live_streams = n as usize;
        }
        // the old name of [limits] last_values_topics (the broker keeps the last values now)
        if let Some(n) = c.int(t, s, "last_values_topics", 0, 10_000_000) {
            let in_limits = root
                .get("limits")
                .and_then(|l| l.get("last_values_topics"))
                .is_some();
            if in_limits {
                c.err(
                    s,
                    "last_values_topics",
                    "is the old name of [limits] last_values_topics, which is set too: keep that one",
                );
            } else {
                cfg.server.broker.last_values_topics = n as usize;
                settings.config.last_values_topics = n as usize;
            }
        }
        if let Some(f) = c.string(t, s, "dashboard_file") {
            settings.config.dashboard_file = Some(PathBuf::from(f));
        }
        if let Some(n) = c.int(t, s, "max_connections", 1, 1_000_000) {
            settings.config.max_connections = n as usize;
        }
        if let Some(n) = c.int(t, s, "header_read_timeout", 0, 3600) {
            settings.config.header_read_timeout = std::time::Duration::from_secs(n as u64);
        }
        if let Some(v) = c.get(t, s, "allowed_hosts")
            && let Some(hosts) = string_list(c, s, "allowed_hosts", v, "host names")
        {
            settings.config.allowed_hosts = hosts;
        }
        // the same keys and checks as a TLS listener's (no certificate identity here)
        settings.config.tls = super::read_tls(c, t, s);
        settings.config.access_keys = access_keys(c, t);
    } else if let Some(file) = security_passwords {
        // no [http] section: once MQTT users need passwords, so does the API; and with an
        // ACL over those users nobody may use it until [http] users names the operators
        settings.config.password_file = Some(file);
        settings.config.allow_anonymous = false;
        if security_acl {
            settings.config.users = Some(Vec::new());
        }
    }
    if let Some(t) = c.table(root, "dashboard") {
        let mut widgets = Vec::new();
        match c.get(t, "dashboard", "widget") {
            None => {}
            Some(toml::Value::Array(list)) => {
                for (i, w) in list.iter().enumerate() {
                    let section = format!("dashboard.widget #{}", i + 1);
                    match w.clone().try_into::<midge_http::Widget>() {
                        Ok(w) => widgets.push(w),
                        Err(e) => c.err(&section, "", e.to_string().trim()),
                    }
                }
            }
            Some(other) => c.err(
                "dashboard",
                "widget",
                format!(
                    "must be an array of tables ([[dashboard.widget]]) (found {})",
                    other.type_str()
                ),
            ),
        }
        match midge_http::validate_widgets(widgets) {
            Ok(w) => settings.config.widgets = w,
            Err(problems) => {
                for p in problems {
                    c.err("dashboard", "", p);
                }
            }
        }
    }
    cfg.http = enabled.then_some(settings);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::super::parse;

    fn series(text: &str) -> Result<Option<super::SeriesSettings>, String> {
        parse(text, "t.toml").map(|c| c.series)
    }

    #[test]
    fn series_tables_give_their_own_retention() {
        let s = series(
            "[series]\nretention_days = 30\n[[series.table]]\nname = \"alerts\"\nretention_days = 365\n\
             [[series.table]]\nname = \"debug\"\nretention_days = 0",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            s.options.table_retention.into_iter().collect::<Vec<_>>(),
            [("alerts".to_owned(), 365), ("debug".to_owned(), 0)]
        );
        let err = series(
            "[series]\n[[series.table]]\nname = \"bad name\"\nretention_days = 1\n\
             [[series.table]]\nretention_days = -1\nweeks = 2",
        )
        .unwrap_err();
        for part in ["bad name", "retention_days", "weeks", "missing"] {
            assert!(err.contains(part), "{part}: {err}");
        }
    }

    #[test]
    fn the_postgres_backend_takes_a_url() {
        let url = "postgres://midge:pw@127.0.0.1:5432/iot";
        for text in [
            format!("[series]\nbackend = \"postgres\"\nurl = \"{url}\""),
            format!("[series]\nbackend = \"postgres\"\npostgres_url = \"{url}\""),
            format!("[series]\nurl = \"{url}\""),
        ] {
            let s = series(&text).unwrap().unwrap();
            assert_eq!(s.postgres_url.as_deref(), Some(url), "{text}");
            assert!(!s.in_data_dir);
        }
        // a memory-only broker (no [persistence]) still has a PostgreSQL store
        let s = series(&format!(
            "[persistence]\nenabled = false\n[series]\nbackend = \"postgres\"\nurl = \"{url}\""
        ));
        assert!(s.unwrap().unwrap().postgres_url.is_some());
        // the default stays SQLite in the data folder
        let s = series("[series]\nbackend = \"sqlite\"").unwrap().unwrap();
        assert!(s.postgres_url.is_none() && s.in_data_dir);
    }

    #[test]
    fn every_backend_problem_is_reported_at_once_without_the_password() {
        let err = series(
            "[series]\nbackend = \"postgres\"\nfile = \"x.db\"\nretention_days = -1\n\
             url = \"postgres://u:hunter2@h:notaport/db\"",
        )
        .unwrap_err();
        assert!(
            err.contains("file") && err.contains("retention_days"),
            "{err}"
        );
        assert!(err.contains("not a PostgreSQL URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = series("[series]\nbackend = \"postgres\"").unwrap_err();
        assert!(err.contains("url") && err.contains("missing"), "{err}");
        let err = series("[series]\nbackend = \"mysql\"").unwrap_err();
        assert!(err.contains("\"sqlite\" or \"postgres\""), "{err}");
        let err = series("[series]\nbackend = \"sqlite\"\nurl = \"postgres://h/db\"").unwrap_err();
        assert!(err.contains("backend = \"postgres\""), "{err}");
    }

    #[test]
    fn a_rule_takes_an_alarm_and_a_bad_one_is_reported() {
        let ok = parse(
            "[[rule]]\nname = \"boiler\"\nsql = \"SELECT temp FROM 'boiler/+'\"\n\
             alarm = { name = \"boiler-hot\", raise = \"temp > 80\", clear = \"temp < 75\", severity = \"Critical\" }\n",
            "t.toml",
        )
        .unwrap();
        let actions = &ok.hub.rules[0].actions;
        assert!(
            matches!(&actions[..], [midge_hub::ActionConfig::Alarm(a)]
                if a.name == "boiler-hot" && a.clear.as_deref() == Some("temp < 75") && a.severity == "critical"),
            "{actions:?}"
        );
        let bad = parse(
            "[[rule]]\nname = \"boiler\"\nsql = \"SELECT temp FROM 'boiler/+'\"\n\
             alarm = [{ name = \"x\", raise = \"temp >\" }, { name = \"y\", raise = \"t > 1\", level = 2 }]\n",
            "t.toml",
        )
        .unwrap_err();
        assert!(bad.contains("raise"), "{bad}");
        assert!(bad.contains("unknown field `level`"), "{bad}");
    }

    /// The rule read from the file's TOML and the rule sent to the API as JSON go through one
    /// type and one check: the same problem gets the same message, only where it is differs
    /// (`[rule #1.republish] qos:` in the file, `republish.qos:` from the API).
    #[test]
    fn a_bad_rule_gets_the_same_message_from_the_file_and_the_api() {
        let cases = [
            (
                "republish = { topic = \"a\", qos = 3 }",
                r#""republish": {"topic": "a", "qos": 3}"#,
            ),
            (
                "webhook = { url = \"http://h/\", timeout = 0 }",
                r#""webhook": {"url": "http://h/", "timeout": 0}"#,
            ),
            (
                "webhook = [{ url = \"http://h/\", headers = { X = 1 } }]",
                r#""webhook": [{"url": "http://h/", "headers": {"X": 1}}]"#,
            ),
            (
                "republish = { topik = \"a\" }",
                r#""republish": {"topik": "a"}"#,
            ),
            ("store = 5", r#""store": 5"#),
            ("tsdb = \"yes\"", r#""tsdb": "yes""#),
        ];
        for (toml_keys, json_keys) in cases {
            let file = parse(
                &format!("[[rule]]\nname = \"r\"\nsql = \"SELECT * FROM 'x'\"\n{toml_keys}\n"),
                "t.toml",
            )
            .unwrap_err();
            // what POST /api/v1/rules does with its body
            let body = format!(r#"{{"name": "r", "sql": "SELECT * FROM 'x'", {json_keys}}}"#);
            let spec: midge_hub::RuleSpec = serde_json::from_str(&body).unwrap();
            let api = spec.to_config().unwrap_err();
            assert!(!api.0.is_empty(), "{body}");
            for p in &api.0 {
                let section = match p.at.as_str() {
                    "" => "rule #1".to_owned(),
                    at => format!("rule #1.{at}"),
                };
                let in_file = format!("t.toml: [{section}] {}: {}", p.key, p.message);
                assert!(
                    file.contains(&in_file),
                    "the API says {p}; the file should say {in_file:?}:\n{file}"
                );
            }
        }
        // a bad table name is found by the rule check both share
        let file = parse(
            "[[rule]]\nname = \"r\"\nsql = \"SELECT * FROM 'x'\"\nstore = \"bad-name\"\n",
            "t.toml",
        )
        .unwrap_err();
        let spec: midge_hub::RuleSpec = serde_json::from_str(
            r#"{"name": "r", "sql": "SELECT * FROM 'x'", "store": "bad-name"}"#,
        )
        .unwrap();
        let hub = midge_hub::HubConfig {
            rules: vec![spec.to_config().unwrap()],
            ..midge_hub::HubConfig::default()
        };
        let api: Vec<String> = midge_hub::validate(&hub, true)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(api.len(), 1, "{api:?}");
        assert!(
            api[0].contains("invalid table name \"bad-name\""),
            "{api:?}"
        );
        assert!(file.contains(&format!("t.toml: {}", api[0])), "{file}");
    }

    /// `enabled = false`, as in the API: the rule is checked but does not run.
    #[test]
    fn a_disabled_rule_is_checked_and_does_not_run() {
        let cfg = parse(
            "[[rule]]\nname = \"off\"\nsql = \"SELECT * FROM 'x'\"\nstore = true\nenabled = false\n\
             [[rule]]\nname = \"on\"\nsql = \"SELECT * FROM 'y'\"\nstore = true\n",
            "t.toml",
        )
        .unwrap();
        let names: Vec<&str> = cfg.hub.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["on"]);
        let err = parse(
            "[[rule]]\nname = \"off\"\nsql = \"SELECT FROM\"\nstore = true\nenabled = false\n",
            "t.toml",
        )
        .unwrap_err();
        assert!(err.contains("t.toml: rule \"off\": "), "{err}");
    }
}
