//! What a bridge is configured with (mosquitto's `connection` section), and mosquitto's
//! `topic pattern [[[ out | in | both ] qos-level] local-prefix remote-prefix]` line.

use std::path::PathBuf;
use std::time::Duration;

use midge_codec::{QoS, TopicFilter, TopicName};

/// Which way a topic is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Local messages go to the remote broker (mosquitto's default).
    #[default]
    Out,
    /// Remote messages come to the local broker.
    In,
    /// Both.
    Both,
}

impl Direction {
    /// Whether local messages are sent to the remote.
    pub fn out(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    /// Whether remote messages are brought in.
    pub fn incoming(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }

    /// mosquitto's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
            Direction::Both => "both",
        }
    }
}

/// One `topic` of a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// The pattern (may hold wildcards; may be empty when both prefixes are set: a single
    /// topic renamed).
    pub pattern: String,
    /// Which way.
    pub direction: Direction,
    /// QoS of the subscriptions (local for `out`, remote for `in`).
    pub qos: QoS,
    /// Prefix of the topics on the local broker.
    pub local_prefix: String,
    /// Prefix of the topics on the remote broker.
    pub remote_prefix: String,
}

impl TopicConfig {
    /// `pattern`, out, QoS 0, no prefixes.
    pub fn new(pattern: impl Into<String>) -> TopicConfig {
        TopicConfig {
            pattern: pattern.into(),
            direction: Direction::Out,
            qos: QoS::AtMostOnce,
            local_prefix: String::new(),
            remote_prefix: String::new(),
        }
    }

    /// The filter on the local broker (local prefix + pattern).
    pub fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.pattern)
    }

    /// The filter on the remote broker (remote prefix + pattern).
    pub fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.pattern)
    }

    /// The remote topic of a local message matching [`TopicConfig::local_filter`]: the
    /// local prefix removed, the remote prefix added.
    pub fn to_remote(&self, local: &str) -> Option<String> {
        if !midge_codec::matches_filter(&self.local_filter(), local) {
            return None;
        }
        let rest = local.strip_prefix(self.local_prefix.as_str())?;
        Some(format!("{}{rest}", self.remote_prefix))
    }

    /// The local topic of a remote message matching [`TopicConfig::remote_filter`].
    pub fn to_local(&self, remote: &str) -> Option<String> {
        if !midge_codec::matches_filter(&self.remote_filter(), remote) {
            return None;
        }
        let rest = remote.strip_prefix(self.remote_prefix.as_str())?;
        Some(format!("{}{rest}", self.local_prefix))
    }

    /// Problems with this topic (as mosquitto.conf(5) defines what is valid).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.pattern.is_empty() {
            // "" local remote: one topic renamed; both prefixes are then full topic names
            if self.local_prefix.is_empty() || self.remote_prefix.is_empty() {
                out.push(
                    "an empty pattern needs both a local and a remote prefix (the two topic names)"
                        .to_string(),
                );
            }
        }
        for (what, filter) in [
            ("local", self.local_filter()),
            ("remote", self.remote_filter()),
        ] {
            if filter.is_empty() {
                continue;
            }
            if let Err(e) = TopicFilter::new(filter.as_str()) {
                out.push(format!("{what} filter {filter:?}: {e}"));
            }
        }
        for (what, prefix) in [
            ("local_prefix", &self.local_prefix),
            ("remote_prefix", &self.remote_prefix),
        ] {
            if prefix.contains(['+', '#']) {
                out.push(format!("{what} {prefix:?} must not hold wildcards"));
            }
        }
        if self.pattern.is_empty()
            && !self.local_prefix.is_empty()
            && TopicName::new(self.local_prefix.as_str()).is_err()
        {
            out.push(format!("{:?} is not a topic name", self.local_prefix));
        }
        out
    }
}

/// What is wrong with a bridge's `topic` line (mosquitto's `topic`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicLineError {
    /// An empty line.
    #[error("missing the topic pattern")]
    MissingPattern,
    /// Not out, in or both.
    #[error("direction must be out, in or both (found {0:?})")]
    Direction(String),
    /// Not 0, 1 or 2.
    #[error("qos must be 0, 1 or 2 (found {0:?})")]
    Qos(String),
    /// A local prefix without a remote one.
    #[error("a local prefix needs a remote prefix too (use \"\" for an empty one)")]
    LonePrefix,
    /// More than five words.
    #[error(
        "too many words: topic pattern [[[ out | in | both ] qos-level] local-prefix remote-prefix]"
    )]
    TooManyWords,
}

/// Parse mosquitto's `topic` value: `pattern [[[ out | in | both ] qos-level] local-prefix
/// remote-prefix]`, where `""` stands for an empty string.
pub fn parse_topic_line(line: &str) -> Result<TopicConfig, TopicLineError> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let unquote = |w: &str| -> String {
        if w == "\"\"" {
            String::new()
        } else {
            w.to_string()
        }
    };
    let mut words = words.into_iter();
    let Some(pattern) = words.next() else {
        return Err(TopicLineError::MissingPattern);
    };
    let mut t = TopicConfig::new(unquote(pattern));
    if let Some(d) = words.next() {
        t.direction = parse_direction(d)?;
    }
    if let Some(q) = words.next() {
        t.qos = parse_qos(q)?;
    }
    match (words.next(), words.next()) {
        (None, None) => {}
        (Some(l), Some(r)) => {
            t.local_prefix = unquote(l);
            t.remote_prefix = unquote(r);
        }
        (Some(_), None) => return Err(TopicLineError::LonePrefix),
        (None, Some(_)) => {}
    }
    if words.next().is_some() {
        return Err(TopicLineError::TooManyWords);
    }
    Ok(t)
}

/// `out`, `in` or `both`.
pub fn parse_direction(s: &str) -> Result<Direction, TopicLineError> {
    match s {
        "out" => Ok(Direction::Out),
        "in" => Ok(Direction::In),
        "both" => Ok(Direction::Both),
        other => Err(TopicLineError::Direction(other.to_owned())),
    }
}

fn parse_qos(s: &str) -> Result<QoS, TopicLineError> {
    match s {
        "0" => Ok(QoS::AtMostOnce),
        "1" => Ok(QoS::AtLeastOnce),
        "2" => Ok(QoS::ExactlyOnce),
        other => Err(TopicLineError::Qos(other.to_owned())),
    }
}

/// The MQTT version spoken to the remote broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BridgeProtocol {
    /// MQTT 3.1 (`mqttv31`).
    V31,
    /// MQTT 3.1.1 (`mqttv311`, mosquitto's default).
    #[default]
    V311,
    /// MQTT 5 (`mqttv50`).
    V5,
}

/// Delay before reconnecting after the link failed (mosquitto's `restart_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartTimeout {
    /// Always this long.
    Constant(Duration),
    /// "Decorrelated jitter" between `base` and `cap`.
    Backoff {
        /// First delay, and the lower bound.
        base: Duration,
        /// Upper bound.
        cap: Duration,
    },
}

impl Default for RestartTimeout {
    /// mosquitto's default: jitter with a base of 5 s and a cap of 30 s.
    fn default() -> Self {
        RestartTimeout::Backoff {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(30),
        }
    }
}

/// TLS to the remote broker (mosquitto's `bridge_cafile`, `bridge_capath`,
/// `bridge_certfile`, `bridge_keyfile`, `bridge_insecure`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeTls {
    /// CA certificates (PEM).
    pub cafile: Option<PathBuf>,
    /// Directory of CA certificates.
    pub capath: Option<PathBuf>,
    /// Client certificate (PEM).
    pub certfile: Option<PathBuf>,
    /// Its key (PEM).
    pub keyfile: Option<PathBuf>,
    /// Do not check the remote's host name against its certificate (the chain is still
    /// checked when a CA is given; mosquitto's `bridge_insecure`).
    pub insecure: bool,
}

/// One bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// The connection name (mosquitto's `connection`).
    pub name: String,
    /// Remote `host:port` addresses, the first preferred (failover to the next).
    pub addresses: Vec<(String, u16)>,
    /// `round_robin`: stay on whichever address works (false: go back to the first one at
    /// every reconnect).
    pub round_robin: bool,
    /// Topics forwarded.
    pub topics: Vec<TopicConfig>,
    /// Protocol spoken to the remote.
    pub protocol: BridgeProtocol,
    /// `try_private`: tell an MQTT 3.x remote we are a bridge (protocol level | 0x80), so a
    /// mosquitto remote does not send our own messages back.
    pub try_private: bool,
    /// Client id on the remote broker.
    pub remote_clientid: String,
    /// User name on the remote broker.
    pub remote_username: Option<String>,
    /// Its password.
    pub remote_password: Option<String>,
    /// Clean session on the remote (false: the remote keeps our subscriptions and queues
    /// messages for us while the link is down).
    pub clean_session: bool,
    /// Keep alive with the remote, seconds.
    pub keepalive: u16,
    /// TLS (`None`: plain TCP).
    pub tls: Option<BridgeTls>,
    /// Publish the retained connection state ("1"/"0") locally and on the remote.
    pub notifications: bool,
    /// ... only locally.
    pub notifications_local_only: bool,
    /// The state topic (default `$SYS/broker/connection/<remote_clientid>/state`).
    pub notification_topic: Option<String>,
    /// Delay between connection attempts.
    pub restart_timeout: RestartTimeout,
    /// Keep the retain flag of messages sent out (`bridge_outgoing_retain`).
    pub outgoing_retain: bool,
}

impl BridgeConfig {
    /// A bridge `name` to `host:port` with mosquitto's defaults and no topics.
    pub fn new(name: impl Into<String>, host: impl Into<String>, port: u16) -> BridgeConfig {
        let name = name.into();
        BridgeConfig {
            remote_clientid: default_remote_clientid(&name),
            name,
            addresses: vec![(host.into(), port)],
            round_robin: false,
            topics: Vec::new(),
            protocol: BridgeProtocol::V311,
            try_private: true,
            remote_username: None,
            remote_password: None,
            clean_session: false,
            keepalive: 60,
            tls: None,
            notifications: true,
            notifications_local_only: false,
            notification_topic: None,
            restart_timeout: RestartTimeout::default(),
            outgoing_retain: true,
        }
    }

    /// The connection-state topic.
    pub fn state_topic(&self) -> String {
        self.notification_topic
            .clone()
            .unwrap_or_else(|| format!("$SYS/broker/connection/{}/state", self.remote_clientid))
    }

    /// The client id of the local side: `$midge/bridge/<name>`.
    pub fn local_clientid(&self) -> String {
        format!("$midge/bridge/{}", self.name)
    }

    /// Every problem of this bridge, each as "what: why".
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.name.is_empty() {
            out.push("name: must not be empty".into());
        } else if self.name.contains(['/', '+', '#']) {
            out.push(format!(
                "name {:?}: must not hold '/', '+' or '#'",
                self.name
            ));
        }
        if self.addresses.is_empty() {
            out.push("addresses: at least one remote address (host:port) is needed".into());
        }
        for (host, port) in &self.addresses {
            if host.is_empty() || *port == 0 {
                out.push(format!("addresses: {host}:{port} is not a host and port"));
            }
        }
        if self.topics.is_empty() {
            out.push("topics: at least one topic is needed".into());
        }
        for (i, t) in self.topics.iter().enumerate() {
            for p in t.problems() {
                out.push(format!("topics #{}: {p}", i + 1));
            }
        }
        if self.remote_clientid.is_empty() {
            out.push("clientid: must not be empty".into());
        }
        if self.remote_password.is_some() && self.remote_username.is_none() {
            out.push("password: needs username".into());
        }
        if self.keepalive != 0 && self.keepalive < 5 {
            out.push(format!(
                "keepalive: at least 5 seconds (found {})",
                self.keepalive
            ));
        }
        if let Some(t) = &self.notification_topic
            && TopicName::new(t.as_str()).is_err()
        {
            out.push(format!("notification_topic {t:?}: not a topic name"));
        }
        if let Some(tls) = &self.tls
            && tls.certfile.is_some() != tls.keyfile.is_some()
        {
            out.push("certfile and keyfile: give both or neither".into());
        }
        if let RestartTimeout::Backoff { base, cap } = self.restart_timeout
            && cap < base
        {
            out.push("restart_timeout: the cap is below the base".into());
        }
        out
    }
}

/// mosquitto's default remote client id: `<hostname>.<connection name>`.
pub fn default_remote_clientid(name: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "midge".into());
    format!("{host}.{name}")
}

/// Why [`parse_address`] refuses an address (the address is named in each message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Nothing was given.
    #[error("empty address")]
    Empty,
    /// `[v6]` without `:port`.
    #[error("{0:?}: an IPv6 address needs a port: [addr]:port")]
    V6NeedsPort(String),
    /// An IPv6 address without brackets.
    #[error("{0:?}: write an IPv6 address as [addr]:port")]
    V6NeedsBrackets(String),
    /// The port is not 1 to 65535.
    #[error("{address:?}: bad port {port:?}")]
    BadPort {
        /// The address as given.
        address: String,
        /// Its port part.
        port: String,
    },
    /// `:port` alone.
    #[error("{0:?}: missing the host")]
    NoHost(String),
}

/// Parse `host`, `host:port` or `[v6]:port` (port 1883 when left out, as mosquitto).
pub fn parse_address(s: &str) -> Result<(String, u16), AddressError> {
    let s = s.trim();
    let bad_port = |port: &str| AddressError::BadPort {
        address: s.to_owned(),
        port: port.to_owned(),
    };
    if let Some(rest) = s.strip_prefix('[') {
        let Some((host, port)) = rest.split_once("]:") else {
            return Err(AddressError::V6NeedsPort(s.to_owned()));
        };
        let port = port.parse::<u16>().map_err(|_| bad_port(port))?;
        return Ok((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        None if !s.is_empty() => Ok((s.to_string(), 1883)),
        None => Err(AddressError::Empty),
        Some((host, _)) if host.contains(':') => Err(AddressError::V6NeedsBrackets(s.to_owned())),
        Some((host, port)) => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad_port(port))?;
            if host.is_empty() {
                return Err(AddressError::NoHost(s.to_owned()));
            }
            Ok((host.to_string(), port))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn topic_lines_as_mosquitto_conf_defines_them() {
        let t = parse_topic_line("sensors/#").unwrap();
        assert_eq!(t.direction, Direction::Out);
        assert_eq!(t.qos, QoS::AtMostOnce);
        assert_eq!(t.local_filter(), "sensors/#");
        let t = parse_topic_line("# both 2 local/topic/ remote/topic/").unwrap();
        assert_eq!(t.direction, Direction::Both);
        assert_eq!(t.qos, QoS::ExactlyOnce);
        assert_eq!(t.local_filter(), "local/topic/#");
        assert_eq!(t.remote_filter(), "remote/topic/#");
        assert_eq!(
            t.to_remote("local/topic/a/b").as_deref(),
            Some("remote/topic/a/b")
        );
        assert_eq!(
            t.to_local("remote/topic/a/b").as_deref(),
            Some("local/topic/a/b")
        );
        assert_eq!(t.to_remote("other/a"), None);
        // the man page's example
        let t = parse_topic_line("clients/total in 0 test/mosquitto/org/ $SYS/broker/").unwrap();
        assert_eq!(t.remote_filter(), "$SYS/broker/clients/total");
        assert_eq!(
            t.to_local("$SYS/broker/clients/total").as_deref(),
            Some("test/mosquitto/org/clients/total")
        );
        // "" markers: the table of mosquitto.conf(5)
        let t = parse_topic_line("pattern out 0 L/ \"\"").unwrap();
        assert_eq!(t.to_remote("L/pattern").as_deref(), Some("pattern"));
        let t = parse_topic_line("pattern out 0 \"\" R/").unwrap();
        assert_eq!(t.to_remote("pattern").as_deref(), Some("R/pattern"));
        let t = parse_topic_line("\"\" out 0 local remote").unwrap();
        assert!(t.problems().is_empty());
        assert_eq!(t.to_remote("local").as_deref(), Some("remote"));
        assert_eq!(t.to_local("remote").as_deref(), Some("local"));
        for invalid in [
            "\"\" out 0 local \"\"",
            "\"\" out 0 \"\" remote",
            "\"\" out 0 \"\" \"\"",
        ] {
            let t = parse_topic_line(invalid).unwrap();
            assert!(!t.problems().is_empty(), "{invalid}");
        }
        assert_eq!(
            parse_topic_line("a sideways"),
            Err(TopicLineError::Direction("sideways".into()))
        );
        assert_eq!(
            parse_topic_line("a out 3"),
            Err(TopicLineError::Qos("3".into()))
        );
        assert_eq!(
            parse_topic_line("a out 1 L/"),
            Err(TopicLineError::LonePrefix)
        );
        assert_eq!(parse_topic_line(""), Err(TopicLineError::MissingPattern));
        assert!(parse_topic_line("a out 3").is_err());
        assert!(parse_topic_line("a out 1 L/").is_err());
        assert!(parse_topic_line("a out 1 L/ R/ extra").is_err());
        assert!(parse_topic_line("").is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_address("h").unwrap(), ("h".into(), 1883));
        assert_eq!(parse_address("h:8883").unwrap(), ("h".into(), 8883));
        assert_eq!(parse_address("[::1]:1884").unwrap(), ("::1".into(), 1884));
        assert_eq!(
            parse_address("::1"),
            Err(AddressError::V6NeedsBrackets("::1".into()))
        );
        assert_eq!(
            parse_address("h:x").unwrap_err().to_string(),
            "\"h:x\": bad port \"x\""
        );
        assert_eq!(parse_address(":1"), Err(AddressError::NoHost(":1".into())));
        assert_eq!(parse_address(" "), Err(AddressError::Empty));
    }

    #[test]
    fn problems_are_all_listed() {
        let mut b = BridgeConfig::new("", "h", 1);
        b.addresses.clear();
        b.keepalive = 2;
        b.remote_password = Some("p".into());
        b.topics.push(TopicConfig {
            local_prefix: "a/#".into(),
            ..TopicConfig::new("x")
        });
        let p = b.problems();
        assert!(p.iter().any(|p| p.starts_with("name")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("addresses")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("keepalive")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("password")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("topics #1")), "{p:?}");
        let b = BridgeConfig::new("cloud", "h", 1883);
        assert!(b.remote_clientid.ends_with(".cloud"));
        assert_eq!(
            b.state_topic(),
            format!("$SYS/broker/connection/{}/state", b.remote_clientid)
        );
    }
}
