//! `[[bridge]]`: MQTT bridges to other brokers (mosquitto's `connection` sections).

use std::path::PathBuf;
use std::time::Duration;

use midge_bridge::{BridgeConfig, BridgeProtocol, BridgeTls, RestartTimeout, TopicConfig};
use midge_codec::QoS;

use super::{Checker, MidgeConfig};

/// Read every `[[bridge]]`, reporting all problems.
pub(crate) fn bridges(c: &mut Checker<'_>, root: &toml::Table, cfg: &mut MidgeConfig) {
    let Some(v) = c.get(root, "", "bridge") else {
        return;
    };
    let Some(list) = v.as_array() else {
        c.err("", "bridge", "must be an array of tables ([[bridge]])");
        return;
    };
    let mut out: Vec<BridgeConfig> = Vec::new();
    for (i, b) in list.iter().enumerate() {
        let mut section = format!("bridge #{}", i + 1);
        let Some(t) = b.as_table() else {
            c.err(&section, "", "must be a table ([[bridge]])");
            continue;
        };
        let name = match c.string(t, &section, "name") {
            Some(n) => {
                section = format!("bridge {n:?}");
                n
            }
            None => {
                c.err(&section, "name", "missing: the connection's name");
                String::new()
            }
        };
        let s = section.as_str();
        let mut bridge = BridgeConfig::new(name, "", 0);
        bridge.addresses.clear();
        // addresses = ["host:port", ...] (or address = "host:port host2:port", as mosquitto)
        let mut words: Vec<String> = Vec::new();
        for key in ["address", "addresses"] {
            match c.get(t, s, key) {
                None => {}
                Some(toml::Value::String(a)) => {
                    words.extend(
                        a.split([' ', ','])
                            .filter(|w| !w.is_empty())
                            .map(str::to_owned),
                    );
                }
                Some(toml::Value::Array(a)) => {
                    for v in a {
                        match v.as_str() {
                            Some(a) => words.push(a.to_owned()),
                            None => c.err(s, key, "must be a list of \"host:port\" strings"),
                        }
                    }
                }
                Some(other) => c.err(
                    s,
                    key,
                    format!(
                        "must be a list of \"host:port\" (found {})",
                        other.type_str()
                    ),
                ),
            }
        }
        for w in &words {
            match midge_bridge::parse_address(w) {
                Ok(a) => bridge.addresses.push(a),
                Err(e) => c.err(s, "addresses", e),
            }
        }
        if words.is_empty() {
            c.err(
                s,
                "addresses",
                "missing: the remote broker, [\"host:port\", ...]",
            );
        }
        if let Some(v) = c.boolean(t, s, "round_robin") {
            bridge.round_robin = v;
        }
        for key in ["topic", "topics"] {
            let items: Vec<&toml::Value> = match c.get(t, s, key) {
                None => continue,
                Some(toml::Value::Array(a)) => a.iter().collect(),
                Some(v) => vec![v],
            };
            for (k, item) in items.into_iter().enumerate() {
                match topic(item) {
                    Ok(tc) => bridge.topics.push(tc),
                    Err(e) => c.err(s, &format!("{key} #{}", k + 1), e),
                }
            }
        }
        if bridge.topics.is_empty() {
            c.err(
                s,
                "topics",
                "missing: at least one, as \"pattern [out|in|both [qos [local-prefix remote-prefix]]]\" or {pattern, direction, qos, local_prefix, remote_prefix}",
            );
        }
        if let Some(p) = c.string(t, s, "protocol") {
            match p.as_str() {
                "3.1.1" | "311" | "mqttv311" | "4" => bridge.protocol = BridgeProtocol::V311,
                "5" | "5.0" | "mqttv5" | "mqttv50" => bridge.protocol = BridgeProtocol::V5,
                "3.1" | "31" | "mqttv31" | "3" => bridge.protocol = BridgeProtocol::V31,
                other => c.err(
                    s,
                    "protocol",
                    format!("must be \"3.1.1\", \"5\" or \"3.1\" (found {other:?})"),
                ),
            }
        }
        if let Some(v) = c.boolean(t, s, "try_private") {
            bridge.try_private = v;
        }
        if let Some(v) = c.string(t, s, "clientid") {
            bridge.remote_clientid = v;
        } else {
            bridge.remote_clientid = midge_bridge::default_remote_clientid(&bridge.name);
        }
        bridge.remote_username = c.string(t, s, "username");
        bridge.remote_password = c.string(t, s, "password");
        if let Some(v) = c.boolean(t, s, "clean_session") {
            bridge.clean_session = v;
        }
        if let Some(v) = c.int(t, s, "keepalive", 5, 65_535) {
            bridge.keepalive = v as u16;
        }
        let file = |c: &mut Checker<'_>, key: &str| c.string(t, s, key).map(PathBuf::from);
        let tls = BridgeTls {
            cafile: file(c, "cafile"),
            capath: file(c, "capath"),
            certfile: file(c, "certfile"),
            keyfile: file(c, "keyfile"),
            insecure: c.boolean(t, s, "insecure").unwrap_or(false),
        };
        if tls != BridgeTls::default() {
            for (key, path) in [
                ("cafile", &tls.cafile),
                ("certfile", &tls.certfile),
                ("keyfile", &tls.keyfile),
            ] {
                if let Some(p) = path
                    && !p.is_file()
                {
                    c.err(s, key, format!("{}: no such file", p.display()));
                }
            }
            bridge.tls = Some(tls);
        }
        if let Some(v) = c.boolean(t, s, "notifications") {
            bridge.notifications = v;
        }
        if let Some(v) = c.boolean(t, s, "notifications_local_only") {
            bridge.notifications_local_only = v;
        }
        bridge.notification_topic = c.string(t, s, "notification_topic");
        match c.get(t, s, "restart_timeout") {
            None => {}
            Some(v) => match restart_timeout(v) {
                Ok(r) => bridge.restart_timeout = r,
                Err(e) => c.err(s, "restart_timeout", e),
            },
        }
        if let Some(v) = c.boolean(t, s, "outgoing_retain") {
            bridge.outgoing_retain = v;
        }
        for p in bridge.problems() {
            // the missing pieces were reported above by key
            if p.starts_with("addresses: at least") || p.starts_with("topics: at least") {
                continue;
            }
            if p.starts_with("name:") && bridge.name.is_empty() {
                continue;
            }
            c.err(s, "", p);
        }
        if !bridge.name.is_empty() && out.iter().any(|o| o.name == bridge.name) {
            c.err(s, "name", "used by another bridge");
        }
        out.push(bridge);
    }
    cfg.bridges = out;
}

/// A topic: mosquitto's line as a string, or a table.
fn topic(v: &toml::Value) -> Result<TopicConfig, String> {
    match v {
        toml::Value::String(line) => {
            midge_bridge::parse_topic_line(line).map_err(|e| e.to_string())
        }
        toml::Value::Table(t) => {
            // the keys read are the keys known
            let mut asked: Vec<&str> = Vec::new();
            let mut get = |k: &'static str| {
                asked.push(k);
                t.get(k)
            };
            let str_of = |k: &str, v: Option<&toml::Value>| -> Result<Option<String>, String> {
                match v {
                    None => Ok(None),
                    Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                    Some(o) => Err(format!("{k}: must be a string (found {})", o.type_str())),
                }
            };
            let pattern = str_of("pattern", get("pattern"));
            let direction = str_of("direction", get("direction"));
            let qos = get("qos");
            let local_prefix = str_of("local_prefix", get("local_prefix"));
            let remote_prefix = str_of("remote_prefix", get("remote_prefix"));
            if let Some(k) = t.keys().find(|k| !asked.contains(&k.as_str())) {
                let hint = match midge_hub::did_you_mean(k, &asked) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => asked.join(", "),
                };
                return Err(format!("{k}: unknown key ({hint})"));
            }
            let mut tc = TopicConfig::new(pattern?.ok_or("pattern: missing")?);
            if let Some(d) = direction? {
                tc.direction = midge_bridge::parse_direction(&d).map_err(|e| e.to_string())?;
            }
            match qos {
                None => {}
                Some(toml::Value::Integer(0)) => tc.qos = QoS::AtMostOnce,
                Some(toml::Value::Integer(1)) => tc.qos = QoS::AtLeastOnce,
                Some(toml::Value::Integer(2)) => tc.qos = QoS::ExactlyOnce,
                Some(o) => return Err(format!("qos: must be 0, 1 or 2 (found {o})")),
            }
            tc.local_prefix = local_prefix?.unwrap_or_default();
            tc.remote_prefix = remote_prefix?.unwrap_or_default();
            Ok(tc)
        }
        other => Err(format!(
            "must be a string or a table (found {})",
            other.type_str()
        )),
    }
}

/// `restart_timeout = 20` (constant) or `[base, cap]` (jitter), seconds.
fn restart_timeout(v: &toml::Value) -> Result<RestartTimeout, String> {
    let secs = |v: &toml::Value| -> Result<Duration, String> {
        match v.as_integer() {
            Some(n) if (1..=86_400).contains(&n) => Ok(Duration::from_secs(n as u64)),
            _ => Err(format!("must be seconds between 1 and 86400 (found {v})")),
        }
    };
    match v {
        toml::Value::Array(a) => match a.as_slice() {
            [base, cap] => {
                let (base, cap) = (secs(base)?, secs(cap)?);
                if cap < base {
                    return Err("the cap is below the base".into());
                }
                Ok(RestartTimeout::Backoff { base, cap })
            }
            _ => Err("must be seconds, or [base, cap] seconds".into()),
        },
        other => secs(other).map(RestartTimeout::Constant),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::super::parse;
    use midge_bridge::Direction;

    #[test]
    fn bridges_are_read() {
        let cfg = parse(
            r#"
[[bridge]]
name = "cloud"
addresses = ["a.example:8883", "b.example"]
topics = ["sensors/# out 1", { pattern = "cmd/#", direction = "in", qos = 1, remote_prefix = "site/" }]
protocol = "5"
clientid = "site-1"
username = "u"
password = "p"
clean_session = true
keepalive = 30
restart_timeout = [2, 10]
notification_topic = "bridges/cloud"
"#,
            "t",
        )
        .unwrap();
        let b = &cfg.bridges[0];
        assert_eq!(b.name, "cloud");
        assert_eq!(
            b.addresses,
            vec![("a.example".into(), 8883), ("b.example".into(), 1883)]
        );
        assert_eq!(b.topics.len(), 2);
        assert_eq!(b.topics[1].direction, Direction::In);
        assert_eq!(b.topics[1].remote_filter(), "site/cmd/#");
        assert_eq!(b.protocol, midge_bridge::BridgeProtocol::V5);
        assert_eq!(b.remote_clientid, "site-1");
        assert!(b.clean_session);
        assert_eq!(b.keepalive, 30);
        assert_eq!(b.state_topic(), "bridges/cloud");
    }

    #[test]
    fn the_printed_example_parses() {
        let text = super::super::DEFAULT_CONFIG;
        let start = text.find("# [[bridge]]").unwrap();
        let example: String = text[start..]
            .lines()
            // the example ends at the first blank line
            .take_while(|l| !l.trim().is_empty())
            .filter(|l| l.starts_with("# ") && !l.starts_with("# # "))
            .map(|l| &l[2..])
            // the certificate files do not exist here
            .filter(|l| {
                !["cafile", "capath", "certfile", "keyfile"]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
            .collect::<Vec<_>>()
            .join("\n");
        let cfg = parse(&example, "example").unwrap();
        let b = &cfg.bridges[0];
        assert_eq!(b.addresses.len(), 2);
        assert_eq!(b.topics.len(), 2);
        assert_eq!(b.topics[0].remote_filter(), "site-1/sensors/#");
    }

    #[test]
    fn every_bridge_problem_is_reported_at_once() {
        let e = parse(
            r#"
[[bridge]]
addresses = ["h:x"]
topics = ["a sideways", { pattern = "b", qos = 3 }]
protocol = "7"
keepalive = 1
password = "p"
certfile = "/nonexistent.crt"
restart_timeout = [10, 5]
colour = 1

[[bridge]]
name = "x"
"#,
            "t",
        )
        .unwrap_err();
        for want in [
            "[bridge #1] name: missing",
            "[bridge #1] addresses: \"h:x\": bad port",
            "[bridge #1] topics #1: direction must be out, in or both",
            "[bridge #1] topics #2: qos: must be 0, 1 or 2",
            "[bridge #1] protocol: must be",
            "[bridge #1] keepalive: must be between 5",
            "[bridge #1] certfile: /nonexistent.crt: no such file",
            "[bridge #1] restart_timeout: the cap is below the base",
            "[bridge #1] colour: unknown key",
            "password: needs username",
            "[bridge \"x\"] addresses: missing",
            "[bridge \"x\"] topics: missing",
        ] {
            assert!(e.contains(want), "{want:?} not in\n{e}");
        }
    }
}
