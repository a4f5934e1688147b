//! `midge device ...` and `midge policy ...`: the device registry of a running server,
//! through its HTTP API (so they work wherever the API does, with the same credentials:
//! `--user`/`--password` or `MIDGE_USER`/`MIDGE_PASSWORD`; `--url` or `MIDGE_URL`, default
//! `http://127.0.0.1:18083`). Plain `http://` only: for an HTTPS API use curl.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use serde_json::{Value, json};

/// Where the API is and who asks.
#[derive(Debug, clap::Args)]
pub(crate) struct Remote {
    /// URL of the running server's HTTP API [env MIDGE_URL; default http://127.0.0.1:18083].
    #[arg(long, global = true, value_name = "URL")]
    url: Option<String>,
    /// API user (HTTP Basic) [env MIDGE_USER].
    #[arg(long, short = 'u', global = true, value_name = "USER")]
    user: Option<String>,
    /// API password [env MIDGE_PASSWORD].
    #[arg(long, short = 'P', global = true, value_name = "PASSWORD")]
    password: Option<String>,
    /// Print the server's JSON answer as it is.
    #[arg(long, global = true)]
    json: bool,
}

/// `midge device`.
#[derive(Debug, clap::Args)]
pub(crate) struct DeviceArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: DeviceCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DeviceCommand {
    /// Create a device; its secret is printed once.
    Add {
        /// Device name.
        name: String,
        /// Attach a policy (repeat for several).
        #[arg(long = "policy", short = 'p')]
        policies: Vec<String>,
        /// Put it in a group (repeat for several).
        #[arg(long = "group", short = 'g')]
        groups: Vec<String>,
        /// Its MQTT username (default: the registry's template, else the name).
        #[arg(long)]
        username: Option<String>,
        /// Log in by client certificate with this identity (CN) instead of a secret.
        #[arg(long = "cert-cn")]
        cert_cn: Option<String>,
        /// Free text.
        #[arg(long, short = 'd')]
        description: Option<String>,
        /// A label (repeat for several).
        #[arg(long = "tag", short = 't')]
        tags: Vec<String>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// List the devices.
    List,
    /// Show one device.
    Show {
        /// Device name.
        name: String,
    },
    /// Delete a device (its live connections are cut).
    Rm {
        /// Device name.
        name: String,
    },
    /// Give a device a new secret (printed once; the old one stops working at once).
    Rotate {
        /// Device name.
        name: String,
    },
    /// Let a device connect again.
    Enable {
        /// Device name.
        name: String,
    },
    /// Stop a device connecting (its live connections are cut).
    Disable {
        /// Device name.
        name: String,
    },
}

/// `midge policy`.
#[derive(Debug, clap::Args)]
pub(crate) struct PolicyArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PolicyCommand {
    /// Create a policy, or with --replace change one (narrowing drops subscriptions).
    Add {
        /// Policy name.
        name: String,
        /// A topic filter it may publish to (%u, %c, ${device} substituted; repeat).
        #[arg(long = "publish", short = 'w')]
        publish: Vec<String>,
        /// A topic filter it may subscribe with (repeat).
        #[arg(long = "subscribe", short = 'r')]
        subscribe: Vec<String>,
        /// Free text.
        #[arg(long, short = 'd', default_value = "")]
        description: String,
        /// Replace the policy of that name instead of creating one.
        #[arg(long)]
        replace: bool,
    },
    /// List the policies.
    List,
    /// Delete a policy no device or group uses.
    Rm {
        /// Policy name.
        name: String,
    },
}

pub(crate) fn run_device(args: DeviceArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.remote)?;
    let path = |name: &str| format!("/api/v1/devices/{}", encode(name));
    let answer = match args.command {
        DeviceCommand::Add {
            name,
            policies,
            groups,
            username,
            cert_cn,
            description,
            tags,
            disabled,
        } => {
            let mut body = json!({
                "name": name,
                "policies": policies,
                "groups": groups,
                "tags": tags,
                "enabled": !disabled,
            });
            if let Some(o) = body.as_object_mut() {
                for (k, v) in [
                    ("username", username),
                    ("cert_cn", cert_cn),
                    ("description", description),
                ] {
                    if let Some(v) = v {
                        o.insert(k.into(), json!(v));
                    }
                }
            }
            api.call("POST", "/api/v1/devices", Some(&body))?
        }
        DeviceCommand::List => api.call("GET", "/api/v1/devices", None)?,
        DeviceCommand::Show { name } => api.call("GET", &path(&name), None)?,
        DeviceCommand::Rm { name } => api.call("DELETE", &path(&name), None)?,
        DeviceCommand::Rotate { name } => {
            api.call("POST", &format!("{}/rotate", path(&name)), None)?
        }
        DeviceCommand::Enable { name } => {
            api.call("PATCH", &path(&name), Some(&json!({"enabled": true})))?
        }
        DeviceCommand::Disable { name } => {
            api.call("PATCH", &path(&name), Some(&json!({"enabled": false})))?
        }
    };
    api.print(&answer, print_device);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run_policy(args: PolicyArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.remote)?;
    let answer = match args.command {
        PolicyCommand::Add {
            name,
            publish,
            subscribe,
            description,
            replace,
        } => {
            let body = json!({
                "name": name,
                "publish": publish,
                "subscribe": subscribe,
                "description": description,
            });
            if replace {
                let p = format!("/api/v1/policies/{}", encode(&name));
                api.call("PUT", &p, Some(&body))?
            } else {
                api.call("POST", "/api/v1/policies", Some(&body))?
            }
        }
        PolicyCommand::List => api.call("GET", "/api/v1/policies", None)?,
        PolicyCommand::Rm { name } => api.call(
            "DELETE",
            &format!("/api/v1/policies/{}", encode(&name)),
            None,
        )?,
    };
    api.print(&answer, print_policy);
    Ok(ExitCode::SUCCESS)
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn list(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn print_device(v: &Value) {
    if let Some(all) = v.get("devices").and_then(Value::as_array) {
        for d in all {
            println!(
                "{}\t{}\t{}\t{} connection(s)\tpolicies={}",
                s(d, "name"),
                s(d, "username"),
                if d.get("enabled") == Some(&Value::Bool(false)) {
                    "disabled"
                } else {
                    "enabled"
                },
                d.get("connections").and_then(Value::as_u64).unwrap_or(0),
                list(d, "policies"),
            );
        }
        return;
    }
    if let Some(name) = v.get("deleted").and_then(Value::as_str) {
        println!("deleted {name}");
        return;
    }
    for k in ["name", "username", "secret"] {
        if let Some(x) = v.get(k).and_then(Value::as_str) {
            println!("{k}: {x}");
        }
    }
    for k in [
        "enabled",
        "cert_cn",
        "connections",
        "last_seen",
        "disconnected",
    ] {
        if let Some(x) = v.get(k).filter(|x| !x.is_null()) {
            println!("{k}: {x}");
        }
    }
    for k in ["policies", "groups", "tags"] {
        if v.get(k).is_some() {
            println!("{k}: {}", list(v, k));
        }
    }
}

fn print_policy(v: &Value) {
    let one = |p: &Value| {
        println!(
            "{}\tpublish={}\tsubscribe={}",
            s(p, "name"),
            list(p, "publish"),
            list(p, "subscribe")
        );
    };
    if let Some(all) = v.get("policies").and_then(Value::as_array) {
        all.iter().for_each(one);
    } else if let Some(name) = v.get("deleted").and_then(Value::as_str) {
        println!("deleted {name}");
    } else {
        one(v);
    }
}

/// A path segment, percent-encoded.
fn encode(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A tiny HTTP/1.1 client for the API (one request per connection).
struct Api {
    host: String,
    authority: String,
    base_path: String,
    auth: Option<String>,
    json: bool,
}

impl Api {
    fn new(r: &Remote) -> anyhow::Result<Api> {
        let url = r
            .url
            .clone()
            .or_else(|| std::env::var("MIDGE_URL").ok())
            .unwrap_or_else(|| "http://127.0.0.1:18083".into());
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("{url}: only http:// URLs are supported (use curl for https)");
        };
        let (authority, base_path) = match rest.find('/') {
            Some(i) => {
                let (a, p) = rest.split_at(i);
                (a, p.trim_end_matches('/'))
            }
            None => (rest, ""),
        };
        let host = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let user = r.user.clone().or_else(|| std::env::var("MIDGE_USER").ok());
        let password = r
            .password
            .clone()
            .or_else(|| std::env::var("MIDGE_PASSWORD").ok());
        let auth = user.map(|u| {
            let pair = format!("{u}:{}", password.unwrap_or_default());
            base64::engine::general_purpose::STANDARD.encode(pair)
        });
        Ok(Api {
            host,
            authority: authority.to_owned(),
            base_path: base_path.to_owned(),
            auth,
            json: r.json,
        })
    }

    /// Send one request; an answer other than 2xx is an error with the server's message.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let mut stream = TcpStream::connect(&self.host)
            .with_context(|| format!("cannot reach the midge API at http://{}", self.authority))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut req = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\nContent-Length: {}\r\n",
            self.base_path,
            self.authority,
            body.len()
        );
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        if let Some(a) = &self.auth {
            req.push_str(&format!("Authorization: Basic {a}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        stream.write_all(req.as_bytes())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let Some((head, rest)) = text.split_once("\r\n\r\n") else {
            bail!("the server sent no HTTP answer");
        };
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("the server sent no HTTP status")?;
        let chunked = head.lines().any(|l| {
            l.to_ascii_lowercase()
                .starts_with("transfer-encoding: chunked")
        });
        let body = if chunked {
            dechunk(rest)
        } else {
            rest.to_owned()
        };
        let value: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        if !(200..300).contains(&status) {
            let msg = value
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            bail!("{status}: {msg}");
        }
        Ok(value)
    }

    fn print(&self, v: &Value, human: fn(&Value)) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
            );
        } else {
            human(v);
        }
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(rest.get(..n).unwrap_or_default());
        s = rest.get(n..).unwrap_or_default().trim_start_matches("\r\n");
    }
    out
}
