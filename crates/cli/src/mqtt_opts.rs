//! Connection options shared by `midge pub` and `midge sub`, spelled like mosquitto's
//! clients, and the helpers both tools use: MQTT 5 `-D` properties, `-L` URLs, mosquitto-style
//! `-d` debug lines and error texts.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use midge_client::codec::{
    ConnectProperties, DisconnectProperties, LastWill, Packet, Protocol, PublishProperties, QoS,
    SubscribeProperties, TopicName, UnsubscribeProperties, WillProperties,
};
use midge_client::{
    ClientError, ClientOptions, Direction, PacketHook, TlsOptions, TlsVersion, Transport,
    refusal_text,
};

/// A command-line mistake: printed as `Error: ...` plus the usage hint, exit code 1.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl UsageError {
    pub(crate) fn new(msg: impl Into<String>) -> UsageError {
        UsageError(msg.into())
    }

    /// Print mosquitto's way and return exit code 1.
    pub(crate) fn report(&self, tool: &str) -> ExitCode {
        eprintln!(
            "Error: {}\n\nUse 'midge {tool} --help' to see usage.",
            self.0
        );
        ExitCode::from(1)
    }
}

/// Options every MQTT tool takes (mosquitto's client_shared options).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ConnOpts {
    /// MQTT host to connect to. Defaults to localhost.
    #[arg(short = 'h', long = "host", value_name = "HOST")]
    pub(crate) host: Option<String>,
    /// Network port. Defaults to 1883 for plain MQTT and 8883 for MQTT over TLS.
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    pub(crate) port: Option<u16>,
    /// Client id. Defaults to midge-pub-/midge-sub- followed by the process id.
    #[arg(short = 'i', long = "id", value_name = "ID")]
    pub(crate) id: Option<String>,
    /// Client id prefix: the id is the prefix followed by the process id.
    #[arg(short = 'I', long = "id-prefix", value_name = "PREFIX")]
    pub(crate) id_prefix: Option<String>,
    /// Keep alive in seconds. Defaults to 60.
    #[arg(
        short = 'k',
        long = "keepalive",
        value_name = "SECONDS",
        default_value_t = 60
    )]
    pub(crate) keepalive: u16,
    /// User name.
    #[arg(short = 'u', long = "username", value_name = "USER")]
    pub(crate) username: Option<String>,
    /// Password.
    #[arg(short = 'P', long = "pw", value_name = "PASSWORD")]
    pub(crate) password: Option<String>,
    /// Print debug messages (every packet sent and received).
    #[arg(short = 'd', long = "debug")]
    pub(crate) debug: bool,
    /// MQTT protocol version: mqttv31 (31), mqttv311 (311) or mqttv5 (5).
    #[arg(short = 'V', long = "protocol-version", value_name = "VERSION", value_parser = parse_version)]
    pub(crate) protocol_version: Option<Protocol>,
    /// Disable clean session / clean start (persistent client mode).
    #[arg(short = 'c', long = "disable-clean-session")]
    pub(crate) disable_clean_session: bool,
    /// MQTT 5 session expiry interval in seconds (-1: never expires).
    #[arg(
        short = 'x',
        long = "session-expiry-interval",
        value_name = "SECONDS",
        allow_negative_numbers = true
    )]
    pub(crate) session_expiry: Option<i64>,
    /// MQTT 5 property: -D COMMAND IDENTIFIER VALUE (user-property takes NAME VALUE).
    #[arg(short = 'D', long = "property", num_args = 3..=4, action = clap::ArgAction::Append,
          value_names = ["COMMAND", "IDENTIFIER", "VALUE"])]
    pub(crate) properties: Vec<String>,
    /// URL: mqtt(s)://[user[:password]@]host[:port]/topic, or ws(s)://[user[:password]@]host[:port]/path
    /// for MQTT over WebSocket (the path is the WebSocket path; give the topic with -t).
    #[arg(short = 'L', long = "url", value_name = "URL")]
    pub(crate) url: Option<String>,
    /// Will topic.
    #[arg(long = "will-topic", value_name = "TOPIC")]
    pub(crate) will_topic: Option<String>,
    /// Will payload.
    #[arg(long = "will-payload", value_name = "PAYLOAD")]
    pub(crate) will_payload: Option<String>,
    /// Will QoS.
    #[arg(long = "will-qos", value_name = "QOS", default_value_t = 0)]
    pub(crate) will_qos: u8,
    /// Make the will retained.
    #[arg(long = "will-retain")]
    pub(crate) will_retain: bool,
    /// File of trusted CA certificates (enables TLS).
    #[arg(long = "cafile", value_name = "FILE")]
    pub(crate) cafile: Option<PathBuf>,
    /// Directory of trusted CA certificates (enables TLS).
    #[arg(long = "capath", value_name = "DIR")]
    pub(crate) capath: Option<PathBuf>,
    /// Client certificate.
    #[arg(long = "cert", value_name = "FILE")]
    pub(crate) cert: Option<PathBuf>,
    /// Client private key.
    #[arg(long = "key", value_name = "FILE")]
    pub(crate) key: Option<PathBuf>,
    /// Do not verify the server certificate (testing only).
    #[arg(long = "insecure")]
    pub(crate) insecure: bool,
    /// TLS version: tlsv1.3 or tlsv1.2.
    #[arg(long = "tls-version", value_name = "VERSION")]
    pub(crate) tls_version: Option<String>,
    /// Trust the built-in web PKI roots (enables TLS).
    #[arg(long = "tls-use-os-certs")]
    pub(crate) tls_use_os_certs: bool,
    /// ALPN protocol to offer in TLS.
    #[arg(long = "tls-alpn", value_name = "PROTOCOL")]
    pub(crate) tls_alpn: Option<String>,
    /// WebSocket path for ws:// and wss:// URLs without a path.
    #[arg(long = "ws-path", value_name = "PATH", default_value = "/mqtt")]
    pub(crate) ws_path: String,
    /// Bind the outgoing socket to this local IP address.
    #[arg(short = 'A', value_name = "ADDRESS")]
    pub(crate) bind_address: Option<std::net::IpAddr>,
    /// Connect through a Unix domain socket instead of TCP.
    #[arg(long = "unix", value_name = "PATH")]
    pub(crate) unix: Option<PathBuf>,
    /// Disable Nagle's algorithm (always on in midge; accepted for compatibility).
    #[arg(long = "nodelay")]
    pub(crate) nodelay: bool,
    /// Do not print error messages.
    #[arg(long = "quiet")]
    pub(crate) quiet: bool,
    /// mosquitto options midge does not support; accepted only to say so clearly.
    #[command(flatten)]
    pub(crate) unsupported: Unsupported,
}

/// mosquitto client options without a midge equivalent (OpenSSL engines and PSK, SOCKS).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Unsupported {
    #[arg(long = "psk", hide = true)]
    psk: Option<String>,
    #[arg(long = "psk-identity", hide = true)]
    psk_identity: Option<String>,
    #[arg(long = "proxy", hide = true)]
    proxy: Option<String>,
    #[arg(long = "ciphers", hide = true)]
    ciphers: Option<String>,
    #[arg(long = "keyform", hide = true)]
    keyform: Option<String>,
    #[arg(long = "tls-engine", hide = true)]
    tls_engine: Option<String>,
    #[arg(long = "tls-engine-kpass-sha1", hide = true)]
    tls_engine_kpass_sha1: Option<String>,
}

impl Unsupported {
    fn check(&self) -> Result<(), UsageError> {
        let why = if self.psk.is_some() || self.psk_identity.is_some() {
            "--psk/--psk-identity: TLS-PSK is not supported (midge uses rustls, which has no PSK cipher suites)."
        } else if self.proxy.is_some() {
            "--proxy: SOCKS5 proxies are not supported yet."
        } else if self.ciphers.is_some() {
            "--ciphers: OpenSSL cipher lists are not supported; midge uses rustls' safe defaults (use --tls-version to pin a version)."
        } else if self.keyform.is_some()
            || self.tls_engine.is_some()
            || self.tls_engine_kpass_sha1.is_some()
        {
            "--keyform/--tls-engine: OpenSSL engines are not supported; give a PEM key with --key."
        } else {
            return Ok(());
        };
        Err(UsageError::new(why))
    }
}

fn parse_version(s: &str) -> Result<Protocol, String> {
    match s {
        "mqttv31" | "31" => Ok(Protocol::V31),
        "mqttv311" | "311" => Ok(Protocol::V311),
        "mqttv5" | "5" => Ok(Protocol::V5),
        other => Err(format!("Invalid protocol version '{other}'.")),
    }
}

/// Parse a QoS argument with mosquitto's message.
pub(crate) fn parse_qos(q: u8, what: &str) -> Result<QoS, UsageError> {
    match q {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        _ => Err(UsageError::new(format!("Invalid {what} given: {q}"))),
    }
}

/// MQTT 5 properties given with `-D`, by packet.
#[derive(Debug, Default, Clone)]
pub(crate) struct Properties {
    pub(crate) connect: ConnectProperties,
    pub(crate) publish: PublishProperties,
    pub(crate) subscribe: SubscribeProperties,
    pub(crate) unsubscribe: UnsubscribeProperties,
    pub(crate) disconnect: DisconnectProperties,
    pub(crate) will: WillProperties,
}

fn num<T: std::str::FromStr>(value: &str, name: &str) -> Result<T, UsageError> {
    value
        .parse()
        .map_err(|_| UsageError::new(format!("Invalid property value for {name}: {value}")))
}

fn byte_flag(value: &str, name: &str) -> Result<u8, UsageError> {
    match num::<u8>(value, name)? {
        v @ (0 | 1) => Ok(v),
        _ => Err(UsageError::new(format!(
            "Invalid property value for {name}: {value}"
        ))),
    }
}

/// Parse the `-D` arguments.
pub(crate) fn parse_properties(args: &[String]) -> Result<Properties, UsageError> {
    let mut p = Properties::default();
    // clap gives the values of every -D in one list; the property name says how many
    // values follow it (two for user-property, one otherwise).
    let mut groups: Vec<&[String]> = Vec::new();
    let mut rest = args;
    while !rest.is_empty() {
        let n = if rest.get(1).is_some_and(|n| n == "user-property") {
            4
        } else {
            3
        };
        let Some((group, tail)) = rest.split_at_checked(n) else {
            return Err(UsageError::new("Invalid property (-D) arguments."));
        };
        groups.push(group);
        rest = tail;
    }
    for d in groups {
        let (cmd, name, rest) = match d {
            [cmd, name, rest @ ..] => (cmd.as_str(), name.as_str(), rest),
            _ => return Err(UsageError::new("Invalid property (-D) arguments.")),
        };
        let value = rest.first().map(String::as_str).unwrap_or_default();
        let expect = if name == "user-property" { 2 } else { 1 };
        if rest.len() != expect {
            return Err(UsageError::new(format!(
                "Invalid number of values for property {name}."
            )));
        }
        if name == "user-property" {
            let v = rest.get(1).map(String::as_str).unwrap_or_default();
            let pair = (value.into(), v.into());
            match cmd {
                "connect" => p.connect.user_properties.push(pair),
                "publish" => p.publish.user_properties.push(pair),
                "subscribe" => p.subscribe.user_properties.push(pair),
                "unsubscribe" => p.unsubscribe.user_properties.push(pair),
                "disconnect" => p.disconnect.user_properties.push(pair),
                "will" => p.will.user_properties.push(pair),
                _ => return Err(invalid_prop(cmd, name)),
            }
            continue;
        }
        match (cmd, name) {
            ("connect", "session-expiry-interval") => {
                p.connect.session_expiry_interval = Some(num(value, name)?)
            }
            ("connect", "receive-maximum") => p.connect.receive_maximum = Some(num(value, name)?),
            ("connect", "maximum-packet-size") => {
                p.connect.maximum_packet_size = Some(num(value, name)?)
            }
            ("connect", "topic-alias-maximum") => {
                p.connect.topic_alias_maximum = Some(num(value, name)?)
            }
            ("connect", "request-response-information") => {
                p.connect.request_response_information = Some(byte_flag(value, name)?)
            }
            ("connect", "request-problem-information") => {
                p.connect.request_problem_information = Some(byte_flag(value, name)?)
            }
            ("connect", "authentication-method") => {
                p.connect.authentication_method = Some(value.into())
            }
            ("connect", "authentication-data") => {
                p.connect.authentication_data = Some(value.as_bytes().to_vec().into())
            }
            ("publish", "payload-format-indicator") => {
                p.publish.payload_format_indicator = Some(byte_flag(value, name)?)
            }
            ("publish", "message-expiry-interval") => {
                p.publish.message_expiry_interval = Some(num(value, name)?)
            }
            ("publish", "content-type") => p.publish.content_type = Some(value.into()),
            ("publish", "response-topic") => p.publish.response_topic = Some(value.into()),
            ("publish", "correlation-data") => {
                p.publish.correlation_data = Some(value.as_bytes().to_vec().into())
            }
            ("publish", "topic-alias") => p.publish.topic_alias = Some(num(value, name)?),
            ("subscribe", "subscription-identifier") => {
                p.subscribe.subscription_identifier = Some(num(value, name)?)
            }
            ("disconnect", "session-expiry-interval") => {
                p.disconnect.session_expiry_interval = Some(num(value, name)?)
            }
            ("disconnect", "reason-string") => p.disconnect.reason_string = Some(value.into()),
            ("will", "will-delay-interval") => p.will.will_delay_interval = Some(num(value, name)?),
            ("will", "payload-format-indicator") => {
                p.will.payload_format_indicator = Some(byte_flag(value, name)?)
            }
            ("will", "message-expiry-interval") => {
                p.will.message_expiry_interval = Some(num(value, name)?)
            }
            ("will", "content-type") => p.will.content_type = Some(value.into()),
            ("will", "response-topic") => p.will.response_topic = Some(value.into()),
            ("will", "correlation-data") => {
                p.will.correlation_data = Some(value.as_bytes().to_vec().into())
            }
            _ => return Err(invalid_prop(cmd, name)),
        }
    }
    Ok(p)
}

fn invalid_prop(cmd: &str, name: &str) -> UsageError {
    UsageError::new(format!(
        "Invalid property '{name}' for command '{cmd}', or invalid command."
    ))
}

/// The parts of a `-L` URL.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    pub(crate) scheme: String,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
    /// The path without its leading slash: the topic for mqtt(s)://.
    pub(crate) path: String,
}

/// Parse `scheme://[user[:pass]@]host[:port][/path]`.
pub(crate) fn parse_url(url: &str) -> Result<Url, UsageError> {
    let bad = || UsageError::new(format!("Invalid URL for -L argument specified: {url}"));
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    if !matches!(scheme, "mqtt" | "mqtts" | "ws" | "wss") {
        return Err(UsageError::new(
            "Unsupported URL scheme (use mqtt, mqtts, ws or wss).",
        ));
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((user, pass)) => (Some(user.to_string()), Some(pass.to_string())),
            None => (Some(u.to_string()), None),
        },
        None => (None, None),
    };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, after) = h.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().map_err(|_| bad())?),
            None => None,
        };
        (h.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.parse().map_err(|_| bad())?)),
            None => (hostport.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok(Url {
        scheme: scheme.to_string(),
        username,
        password,
        host,
        port,
        path: path.to_string(),
    })
}

/// The result of turning [`ConnOpts`] into client options.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) options: ClientOptions,
    pub(crate) properties: Properties,
    /// Topic from the `-L` URL, if any.
    pub(crate) url_topic: Option<String>,
}

impl ConnOpts {
    /// Build client options. `tool` is `pub` or `sub` (for the default client id).
    pub(crate) fn prepare(&self, tool: &str) -> Result<Prepared, UsageError> {
        self.unsupported.check()?;
        let protocol = self.protocol_version.unwrap_or(Protocol::V311);
        if self.keepalive != 0 && self.keepalive < 5 {
            return Err(UsageError::new(
                "Invalid keepalive given, it must be between 5 and 65535 inclusive.",
            ));
        }
        let properties = parse_properties(&self.properties)?;
        if !self.properties.is_empty() && !protocol.is_v5() {
            return Err(UsageError::new(
                "You must use --protocol-version mqttv5 (-V 5) to use properties.",
            ));
        }
        let url = self.url.as_deref().map(parse_url).transpose()?;

        let tls_requested = self.cafile.is_some()
            || self.capath.is_some()
            || self.tls_use_os_certs
            || url
                .as_ref()
                .is_some_and(|u| u.scheme == "mqtts" || u.scheme == "wss");
        let tls = TlsOptions {
            ca_file: self.cafile.clone(),
            ca_path: self.capath.clone(),
            client_cert: self.cert.clone(),
            client_key: self.key.clone(),
            insecure: self.insecure,
            version: match self.tls_version.as_deref() {
                None => None,
                Some("tlsv1.2") => Some(TlsVersion::Tls12),
                Some("tlsv1.3") => Some(TlsVersion::Tls13),
                Some(other) => {
                    return Err(UsageError::new(format!(
                        "Unsupported TLS version '{other}' (use tlsv1.2 or tlsv1.3)."
                    )));
                }
            },
            server_name: None,
            alpn: self
                .tls_alpn
                .iter()
                .map(|a| a.as_bytes().to_vec())
                .collect(),
        };
        if self.cert.is_some() != self.key.is_some() {
            return Err(UsageError::new(
                "Both certfile and keyfile must be provided if one of them is set.",
            ));
        }
        let scheme = url.as_ref().map_or("mqtt", |u| u.scheme.as_str());
        // for ws:// and wss:// the URL's path is the WebSocket path
        let ws_path = match url.as_ref().map(|u| u.path.as_str()) {
            Some(p) if !p.is_empty() => format!("/{p}"),
            _ => self.ws_path.clone(),
        };
        let transport = match scheme {
            "ws" => Transport::Ws(ws_path),
            "wss" => Transport::Wss(ws_path, tls),
            _ if tls_requested || scheme == "mqtts" => Transport::Tls(tls),
            _ => Transport::Tcp,
        };
        let transport = match &self.unix {
            Some(path) => Transport::Unix(path.clone()),
            None => transport,
        };
        let default_port = match &transport {
            Transport::Tcp | Transport::Unix(_) | Transport::Custom(_) => 1883,
            Transport::Tls(_) => 8883,
            Transport::Ws(_) => 80,
            Transport::Wss(..) => 443,
        };
        let host = url
            .as_ref()
            .map(|u| u.host.clone())
            .or_else(|| self.host.clone())
            .unwrap_or_else(|| "localhost".to_string());
        let port = url
            .as_ref()
            .and_then(|u| u.port)
            .or(self.port)
            .unwrap_or(default_port);

        let client_id = match (&self.id, &self.id_prefix) {
            (Some(_), Some(_)) => {
                return Err(UsageError::new(
                    "-i and -I argument cannot be used together.",
                ));
            }
            (Some(id), None) => id.clone(),
            (None, Some(prefix)) => format!("{prefix}{}", std::process::id()),
            (None, None) => format!("midge-{tool}-{}", std::process::id()),
        };
        if client_id.len() > 65535 {
            return Err(UsageError::new("Client id is too long."));
        }

        let mut options = ClientOptions::new(host, port, &client_id);
        options.transport = transport;
        options.bind_address = self.bind_address;
        options.connect.protocol = protocol;
        options.connect.keep_alive = self.keepalive;
        options.connect.clean_start = !self.disable_clean_session;
        options.connect.properties = properties.connect.clone();
        if protocol.is_v5() {
            match self.session_expiry {
                Some(-1) => options.connect.properties.session_expiry_interval = Some(u32::MAX),
                Some(x) => {
                    let x = u32::try_from(x).map_err(|_| {
                        UsageError::new("session expiry interval must be -1 or 0..4294967295")
                    })?;
                    options.connect.properties.session_expiry_interval = Some(x);
                }
                None if self.disable_clean_session
                    && options.connect.properties.session_expiry_interval.is_none() =>
                {
                    options.connect.properties.session_expiry_interval = Some(u32::MAX);
                }
                None => {}
            }
        }
        let username = url
            .as_ref()
            .and_then(|u| u.username.clone())
            .or_else(|| self.username.clone());
        let password = url
            .as_ref()
            .and_then(|u| u.password.clone())
            .or_else(|| self.password.clone());
        if password.is_some() && username.is_none() && !protocol.is_v5() {
            return Err(UsageError::new(
                "Cannot use a password without a username in MQTT 3.x.",
            ));
        }
        options.connect.username = username.map(Into::into);
        options.connect.password = password.map(|p| p.into_bytes().into());

        match (&self.will_topic, &self.will_payload) {
            (None, Some(_)) => {
                return Err(UsageError::new(
                    "Will payload given, but no will topic given.",
                ));
            }
            (Some(topic), payload) => {
                let topic = TopicName::new(topic.as_str()).map_err(|_| {
                    UsageError::new(format!(
                        "Invalid will topic '{topic}', does it contain '+' or '#'?"
                    ))
                })?;
                options.connect.will = Some(LastWill {
                    topic,
                    payload: payload.clone().unwrap_or_default().into_bytes().into(),
                    qos: parse_qos(self.will_qos, "will QoS")?,
                    retain: self.will_retain,
                    properties: properties.will.clone(),
                });
            }
            (None, None) => {}
        }
        options.connect_timeout = Duration::from_secs(30);
        options.qos2_deliver_on_pubrel = true;

        let shown_id = Arc::new(Mutex::new(client_id));
        if self.debug {
            options.packet_hook = Some(debug_hook(shown_id.clone(), protocol));
        }
        let url_topic = url
            .filter(|u| u.scheme == "mqtt" || u.scheme == "mqtts")
            .map(|u| u.path)
            .filter(|p| !p.is_empty());
        Ok(Prepared {
            options,
            properties,
            url_topic,
        })
    }
}

/// A packet hook that prints mosquitto's `-d` lines to stdout.
pub(crate) fn debug_hook(id: Arc<Mutex<String>>, protocol: Protocol) -> PacketHook {
    let last_mid = Mutex::new(0u16);
    PacketHook::new(move |direction, packet| {
        let Ok(mut id) = id.lock() else {
            return;
        };
        // mosquitto numbers every outgoing message, QoS 0 included, from one counter
        if direction == Direction::Sent
            && let Ok(mut last) = last_mid.lock()
        {
            let shown = match packet {
                Packet::Publish(p) if p.packet_id == 0 => {
                    *last = last.wrapping_add(1).max(1);
                    let mut p = p.clone();
                    p.packet_id = *last;
                    Some(Packet::Publish(p))
                }
                Packet::Publish(p) if !p.dup => {
                    *last = p.packet_id;
                    None
                }
                Packet::Subscribe(s) => {
                    *last = s.packet_id;
                    None
                }
                Packet::Unsubscribe(u) => {
                    *last = u.packet_id;
                    None
                }
                _ => None,
            };
            if let Some(p) = shown {
                for line in debug_lines(direction, &p, protocol) {
                    println!("Client {id} {line}");
                }
                return;
            }
        }
        if let (Direction::Received, Packet::ConnAck(c)) = (direction, packet)
            && let Some(assigned) = &c.properties.assigned_client_identifier
        {
            *id = assigned.to_string();
        }
        for line in debug_lines(direction, packet, protocol) {
            println!("Client {id} {line}");
        }
    })
}

/// The text after `Client <id> ` for one packet (several lines for SUBSCRIBE).
pub(crate) fn debug_lines(
    direction: Direction,
    packet: &Packet,
    protocol: Protocol,
) -> Vec<String> {
    let verb = match direction {
        Direction::Sent => "sending",
        Direction::Received => "received",
    };
    let sent = direction == Direction::Sent;
    let line = match packet {
        Packet::Connect(_) => "CONNECT".to_string(),
        Packet::ConnAck(c) => {
            let rc = if protocol.is_v5() {
                c.reason.0
            } else {
                c.reason.to_v3_connack()
            };
            format!("CONNACK ({rc})")
        }
        Packet::Publish(p) => format!(
            "PUBLISH (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
            u8::from(p.dup),
            p.qos.as_u8(),
            u8::from(p.retain),
            p.packet_id,
            p.topic,
            p.payload.len()
        ),
        Packet::PubAck(a) if sent => format!("PUBACK (m{}, rc{})", a.packet_id, a.reason.0),
        Packet::PubAck(a) => format!("PUBACK (Mid: {}, RC:{})", a.packet_id, a.reason.0),
        Packet::PubRec(a) if sent => format!("PUBREC (m{}, rc{})", a.packet_id, a.reason.0),
        Packet::PubRec(a) => format!("PUBREC (Mid: {})", a.packet_id),
        Packet::PubRel(a) if sent => format!("PUBREL (m{})", a.packet_id),
        Packet::PubRel(a) => format!("PUBREL (Mid: {})", a.packet_id),
        Packet::PubComp(a) if sent => format!("PUBCOMP (m{})", a.packet_id),
        Packet::PubComp(a) => format!("PUBCOMP (Mid: {}, RC:{})", a.packet_id, a.reason.0),
        Packet::Subscribe(s) => {
            return s
                .filters
                .iter()
                .map(|(f, o)| {
                    let opts = if protocol.is_v5() {
                        (u8::from(o.no_local) << 2)
                            | (u8::from(o.retain_as_published) << 3)
                            | ((o.retain_handling as u8) << 4)
                    } else {
                        0
                    };
                    format!(
                        "{verb} SUBSCRIBE (Mid: {}, Topic: {}, QoS: {}, Options: 0x{opts:02x})",
                        s.packet_id,
                        f,
                        o.qos.as_u8()
                    )
                })
                .collect();
        }
        Packet::SubAck(_) => "SUBACK".to_string(),
        Packet::Unsubscribe(u) => {
            return u
                .filters
                .iter()
                .map(|f| format!("{verb} UNSUBSCRIBE (Mid: {}, Topic: {})", u.packet_id, f))
                .collect();
        }
        Packet::UnsubAck(_) => "UNSUBACK".to_string(),
        Packet::PingReq => "PINGREQ".to_string(),
        Packet::PingResp => "PINGRESP".to_string(),
        Packet::Disconnect(_) if sent || !protocol.is_v5() => "DISCONNECT".to_string(),
        Packet::Disconnect(d) => format!("DISCONNECT ({})", d.reason.0),
        Packet::Auth(a) => format!("AUTH ({})", a.reason.0),
    };
    vec![format!("{verb} {line}")]
}

/// Report a connection failure the way mosquitto does and give the exit code.
pub(crate) fn connect_failure(error: &ClientError, quiet: bool) -> ExitCode {
    match error {
        ClientError::Refused {
            protocol, reason, ..
        } => {
            if !quiet {
                eprintln!("Connection error: {}", refusal_text(*protocol, *reason));
            }
            let code = if protocol.is_v5() {
                reason.0
            } else {
                reason.to_v3_connack()
            };
            ExitCode::from(code)
        }
        ClientError::Io(e) => {
            if !quiet {
                let text = io_text(e);
                if text.starts_with("Unable to connect") {
                    eprintln!("{text}");
                } else {
                    eprintln!("Error: {text}");
                }
            }
            ExitCode::from(1)
        }
        other => {
            if !quiet {
                eprintln!("Error: {}", capitalise(&other.to_string()));
            }
            ExitCode::from(1)
        }
    }
}

fn io_text(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "Connection refused".to_string(),
        ConnectionReset => "Connection reset by peer".to_string(),
        TimedOut => "Connection timed out".to_string(),
        _ if e.to_string().starts_with("failed to lookup address") => {
            "Unable to connect (Lookup error.).".to_string()
        }
        _ => {
            let s = e.to_string();
            // "Connection refused (os error 111)" -> "Connection refused"
            match s.find(" (os error") {
                Some(i) => s.get(..i).unwrap_or(&s).to_string(),
                None => s,
            }
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_credentials_port_and_topic() {
        let u = parse_url("mqtts://alice:s3cret@broker.example:8884/a/b/c").unwrap();
        assert_eq!(u.scheme, "mqtts");
        assert_eq!(u.username.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("s3cret"));
        assert_eq!(u.host, "broker.example");
        assert_eq!(u.port, Some(8884));
        assert_eq!(u.path, "a/b/c");
    }

    #[test]
    fn url_without_port_or_user() {
        let u = parse_url("mqtt://localhost/t").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("localhost", None, "t")
        );
        assert!(parse_url("http://x/t").is_err());
        assert!(parse_url("mqtt://:1883/t").is_err());
    }

    #[test]
    fn properties_go_to_their_packets() {
        let args: Vec<String> = [
            "publish",
            "user-property",
            "k",
            "v",
            "connect",
            "session-expiry-interval",
            "30",
            "publish",
            "content-type",
            "text/plain",
        ]
        .map(String::from)
        .to_vec();
        let p = parse_properties(&args).unwrap();
        assert_eq!(p.publish.user_properties.len(), 1);
        assert_eq!(p.connect.session_expiry_interval, Some(30));
        assert_eq!(p.publish.content_type.as_deref(), Some("text/plain"));
        let bad: Vec<String> = ["connect", "topic-alias", "1"].map(String::from).to_vec();
        assert!(parse_properties(&bad).is_err());
    }

    #[test]
    fn debug_lines_match_mosquitto() {
        let mut p = midge_client::codec::Publish::new(TopicName::new("a/b").unwrap(), "hi");
        p.qos = QoS::ExactlyOnce;
        p.packet_id = 1;
        let l = debug_lines(Direction::Sent, &Packet::Publish(p), Protocol::V311);
        assert_eq!(
            l,
            ["sending PUBLISH (d0, q2, r0, m1, 'a/b', ... (2 bytes))"]
        );
        let ack = midge_client::codec::PubAck::new(1);
        let l = debug_lines(
            Direction::Received,
            &Packet::PubComp(ack.clone()),
            Protocol::V311,
        );
        assert_eq!(l, ["received PUBCOMP (Mid: 1, RC:0)"]);
        let l = debug_lines(Direction::Sent, &Packet::PubRel(ack), Protocol::V311);
        assert_eq!(l, ["sending PUBREL (m1)"]);
    }
}
