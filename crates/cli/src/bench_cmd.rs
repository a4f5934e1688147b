//! `midge bench`: the load generator (library in midge-bench).

use std::io::{BufRead, IsTerminal};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use midge_bench::report::{self, Tags};
use midge_bench::{Common, ConnConfig, Scenario, Spread, TlsSettings, Transport};
use midge_codec::{Protocol, QoS};

/// Benchmark an MQTT broker (midge, mosquitto, ...): connections, publish, subscribe,
/// fan-in, fan-out, latency; or the tool's own ceiling (sink).
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    cmd: BenchCmd,
}

#[derive(Debug, clap::Subcommand)]
enum BenchCmd {
    /// Open N idle connections (-c) at a rate, hold them; connects/s, failures, broker RSS.
    /// With --short: N short connections (CONNECT, CONNACK, DISCONNECT), the connect rate.
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Conn(ConnArgs),
    /// N publishers, flat out or at a rate (no subscribers).
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Pub(FlowArgs),
    /// N subscribers counting what arrives (-c = messages each expects).
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Sub(FlowArgs),
    /// Many publishers → one subscriber (default 4 → 1), loss/duplicates/order checked.
    #[command(name = "fan-in", disable_help_flag = true, disable_version_flag = true)]
    FanIn(FlowArgs),
    /// One publisher → many subscribers (default 1 → 100).
    #[command(
        name = "fan-out",
        disable_help_flag = true,
        disable_version_flag = true
    )]
    FanOut(FlowArgs),
    /// Timestamped messages at a fixed rate (default 10,000 msg/s, 10 s): latency percentiles.
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Latency(FlowArgs),
    /// The tool's own ceiling against a no-op MQTT peer in this process.
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Sink(FlowArgs),
    /// Medians and midge/mosquitto ratios from JSON lines tagged --label/--case; SVG chart.
    Report(ReportArgs),
}

#[derive(Debug, clap::Args)]
struct CommonArgs {
    /// Broker host.
    #[arg(short = 'h', long = "host", default_value = "127.0.0.1")]
    host: String,
    /// Broker port.
    #[arg(short = 'p', long = "port", default_value_t = 1883)]
    port: u16,
    /// MQTT version: 311 or 5.
    #[arg(short = 'V', long = "protocol-version", default_value = "311")]
    protocol_version: String,
    /// QoS of publishes and subscriptions (0, 1, 2).
    #[arg(short = 'q', long = "qos", default_value_t = 0)]
    qos: u8,
    /// Payload size in bytes (at least 20: publisher, sequence, timestamp).
    #[arg(short = 's', long = "size", default_value_t = 64)]
    size: usize,
    /// Messages to publish in total (conn: connections to open).
    #[arg(short = 'c', long = "count")]
    count: Option<u64>,
    /// Stop publishing after this many seconds.
    #[arg(short = 'd', long = "duration")]
    duration: Option<f64>,
    /// Print one JSON line instead of the table.
    #[arg(long = "json")]
    json: bool,
    /// Broker process to sample (CPU from /proc/PID/stat, RSS from /proc/PID/status).
    #[arg(long = "target-pid", value_name = "PID")]
    target_pid: Option<u32>,
    /// Tag the JSON with this broker label (e.g. midge, mosquitto).
    #[arg(long = "label")]
    label: Option<String>,
    /// Tag the JSON with this case name (for `midge bench report`).
    #[arg(long = "case")]
    case: Option<String>,
    /// No progress bar even on a terminal.
    #[arg(long = "quiet")]
    quiet: bool,
    /// Connect over TLS, trusting the CA certificates in this PEM file (as mosquitto_pub).
    #[arg(long = "cafile", value_name = "FILE")]
    cafile: Option<PathBuf>,
    /// TLS: resume earlier sessions (tickets or session ids); default: a full handshake
    /// for every connection.
    #[arg(long = "tls-resume", requires = "cafile")]
    tls_resume: bool,
    /// TLS: the name the server's certificate must carry (default: --host).
    #[arg(long = "tls-server-name", requires = "cafile")]
    tls_server_name: Option<String>,
    /// MQTT over WebSocket (ws://, subprotocol mqtt, binary messages).
    #[arg(long = "ws", conflicts_with = "cafile")]
    ws: bool,
    /// WebSocket request path.
    #[arg(long = "ws-path", default_value = "/mqtt")]
    ws_path: String,
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
}

#[derive(Debug, clap::Args)]
struct FlowArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Publishing connections (default depends on the mode).
    #[arg(short = 'P', long = "publishers")]
    publishers: Option<u32>,
    /// Subscribing connections (default depends on the mode).
    #[arg(short = 'S', long = "subscribers")]
    subscribers: Option<u32>,
    /// Total publish rate in msg/s (default: flat out; latency: 10000).
    #[arg(short = 'r', long = "rate")]
    rate: Option<f64>,
    /// Topic pattern; %i is the publisher's index.
    #[arg(short = 't', long = "topic", default_value = "bench/%i")]
    topic: String,
    /// Subscription filter (repeatable).
    #[arg(short = 'f', long = "filter", default_values_t = vec!["bench/#".to_string()])]
    filters: Vec<String>,
    /// Unacknowledged QoS 1/2 messages per publisher.
    #[arg(long = "inflight", default_value_t = 256)]
    inflight: u32,
    /// Publishes per write.
    #[arg(long = "batch", default_value_t = 64)]
    batch: usize,
    /// Seconds a subscriber waits with nothing arriving after the publishers finish.
    #[arg(long = "drain-timeout", default_value_t = 3.0)]
    drain_timeout: f64,
    /// Seconds subscribers stop reading after subscribing (provokes broker queueing).
    #[arg(long = "sub-pause", default_value_t = 0.0)]
    sub_pause: f64,
    /// Port of the subscribers' broker on --host (repeatable or comma-separated: subscribers
    /// take them in turn), e.g. another node of a cluster; default: --port.
    #[arg(long = "sub-port", value_name = "PORT", value_delimiter = ',')]
    sub_ports: Vec<u16>,
    /// Seconds between the last SUBACK/CONNACK and the start (lets a cluster announce the
    /// subscriptions to the other nodes).
    #[arg(long = "start-delay", default_value_t = 0.0)]
    start_delay: f64,
    /// Publishers wait while more than N messages are published but not yet received by
    /// the subscribers (the broker's rate with a bounded backlog).
    #[arg(long = "max-backlog", value_name = "N")]
    max_backlog: Option<u64>,
    /// Spread the publishes over this many topics w/A/B/C (instead of --topic), and give
    /// the subscribers --wildcard-subscriptions filters over them (exact, + and #, mixed);
    /// each subscriber expects what its filters match.
    #[arg(long = "wildcard-topics", value_name = "N")]
    wildcard_topics: Option<u32>,
    /// Subscriptions in all (with --wildcard-topics), dealt to the subscribers in turn.
    #[arg(
        long = "wildcard-subscriptions",
        value_name = "N",
        default_value_t = 100_000,
        requires = "wildcard_topics"
    )]
    wildcard_subscriptions: u64,
}

#[derive(Debug, clap::Args)]
struct ConnArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Connections per second (default: as fast as --concurrency allows).
    #[arg(short = 'r', long = "rate")]
    rate: Option<f64>,
    /// Handshakes in progress at once.
    #[arg(long = "concurrency", default_value_t = 256)]
    concurrency: usize,
    /// Seconds to hold the connections once all are open.
    #[arg(long = "hold", default_value_t = 3.0)]
    hold: f64,
    /// Seconds to wait after the last CONNACK before reading the broker's RSS.
    #[arg(long = "settle", default_value_t = 1.0)]
    settle: f64,
    /// Keep alive of each connection in seconds (0: none).
    #[arg(short = 'k', long = "keep-alive", default_value_t = 0)]
    keep_alive: u16,
    /// Length of each client id in bytes (default: short ids like midge-bench-conn-42).
    #[arg(long = "id-len")]
    id_len: Option<usize>,
    /// Username of each connection; %i is its number from 0 (user%i: user0, user1, ...).
    #[arg(long = "username")]
    username: Option<String>,
    /// Password of each connection; %i as in --username.
    #[arg(long = "password")]
    password: Option<String>,
    /// Short connections: CONNECT, CONNACK, DISCONNECT, close (the connect rate), none
    /// held.
    #[arg(long = "short")]
    short: bool,
}

#[derive(Debug, clap::Args)]
struct ReportArgs {
    /// Files of JSON lines (from --json --label --case); '-' for stdin.
    files: Vec<PathBuf>,
    /// Write an SVG chart here.
    #[arg(long = "svg")]
    svg: Option<PathBuf>,
    /// Title of the chart.
    #[arg(long = "title", default_value = "midge vs mosquitto")]
    title: String,
}

fn secs(x: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(x).with_context(|| format!("bad {what}: {x}"))
}

fn common(a: &CommonArgs) -> anyhow::Result<Common> {
    let addr: SocketAddr = (a.host.as_str(), a.port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", a.host))?
        .next()
        .with_context(|| format!("no address for {}", a.host))?;
    let mut c = Common::new(addr);
    c.protocol = match a.protocol_version.as_str() {
        "311" | "3.1.1" | "mqttv311" => Protocol::V311,
        "5" | "50" | "mqttv5" => Protocol::V5,
        "31" | "3.1" | "mqttv31" => Protocol::V31,
        v => bail!("unknown protocol version {v:?} (311 or 5)"),
    };
    c.qos = QoS::from_bits(a.qos).map_err(|_| anyhow::anyhow!("QoS must be 0, 1 or 2"))?;
    c.payload = a.size;
    c.count = a.count;
    c.duration = a.duration.map(|d| secs(d, "duration")).transpose()?;
    c.target_pid = a.target_pid;
    c.progress = !a.json && !a.quiet && std::io::stderr().is_terminal();
    if let Some(ca) = &a.cafile {
        let name = a.tls_server_name.as_deref().unwrap_or(&a.host);
        c.transport = Transport::Tls(TlsSettings::new(ca, name, a.tls_resume)?);
    } else if a.ws {
        c.transport = Transport::Ws {
            path: a.ws_path.clone(),
        };
    }
    Ok(c)
}

fn tags(a: &CommonArgs) -> Tags {
    Tags {
        label: a.label.clone(),
        case: a.case.clone(),
    }
}

pub(crate) fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let BenchCmd::Report(r) = &args.cmd {
        return report_cmd(r);
    }
    let rt = midge_bench::runtime()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.cmd {
        BenchCmd::Conn(a) => {
            let mut c = common(&a.common)?;
            let n = c.count.take().unwrap_or(1000);
            let cfg = ConnConfig {
                connections: n,
                rate: a.rate,
                concurrency: a.concurrency,
                hold: secs(a.hold, "hold")?,
                settle: secs(a.settle, "settle")?,
                keep_alive: a.keep_alive,
                id_len: a.id_len,
                username: a.username,
                password: a.password,
                short: a.short,
            };
            let r = midge_bench::run_conn(&c, &cfg).await?;
            if a.common.json {
                println!("{}", report::conn_json(&r, &tags(&a.common)));
            } else {
                print!("{}", report::conn_table(&r));
            }
            Ok(if r.connected == 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        BenchCmd::Sink(a) => {
            let c = common(&a.common)?;
            let r = midge_bench::run_sink(&c, a.publishers.unwrap_or(1)).await?;
            if a.common.json {
                println!("{}", report::sink_json(&r, &tags(&a.common)));
            } else {
                print!("{}", report::sink_table(&r));
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCmd::Pub(a) => flow(a, "pub", 1, 0, None).await,
        BenchCmd::Sub(a) => flow(a, "sub", 0, 1, None).await,
        BenchCmd::FanIn(a) => flow(a, "fan-in", 4, 1, None).await,
        BenchCmd::FanOut(a) => flow(a, "fan-out", 1, 100, None).await,
        BenchCmd::Latency(a) => flow(a, "latency", 1, 1, Some(10_000.0)).await,
        BenchCmd::Report(r) => report_cmd(&r),
    }
}

async fn flow(
    a: FlowArgs,
    name: &str,
    pubs: u32,
    subs: u32,
    rate: Option<f64>,
) -> anyhow::Result<ExitCode> {
    let mut c = common(&a.common)?;
    c.sub_addrs = a
        .sub_ports
        .iter()
        .map(|&p| SocketAddr::new(c.addr.ip(), p))
        .collect();
    let mut spec = Scenario::new(
        name,
        a.publishers.unwrap_or(pubs),
        a.subscribers.unwrap_or(subs),
    );
    spec.rate = a.rate.or(rate);
    spec.topic = a.topic;
    spec.filters = a.filters;
    spec.inflight = a.inflight;
    spec.batch = a.batch;
    spec.drain_timeout = secs(a.drain_timeout, "drain-timeout")?;
    spec.sub_pause = secs(a.sub_pause, "sub-pause")?;
    spec.start_delay = secs(a.start_delay, "start-delay")?;
    spec.max_backlog = a.max_backlog;
    if let Some(topics) = a.wildcard_topics {
        spec.spread = Some(std::sync::Arc::new(Spread::wildcard(
            topics,
            a.wildcard_subscriptions,
            spec.subscribers,
        )));
    }
    if c.count.is_none() && c.duration.is_none() {
        match name {
            "latency" | "sub" => c.duration = Some(Duration::from_secs(10)),
            "fan-out" => c.count = Some(10_000),
            _ => c.count = Some(100_000),
        }
    }
    let r = midge_bench::run_scenario(&c, &spec).await?;
    if a.common.json {
        println!("{}", report::run_json(&r, &tags(&a.common)));
    } else {
        print!("{}", report::run_table(&r));
    }
    Ok(
        if r.connect_failures > 0 && r.total_sent() == 0 && r.tracker.received == 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        },
    )
}

fn report_cmd(a: &ReportArgs) -> anyhow::Result<ExitCode> {
    let mut lines = Vec::new();
    let mut read = |r: &mut dyn BufRead, name: &str| -> anyhow::Result<()> {
        for line in r.lines() {
            let line = line.with_context(|| format!("reading {name}"))?;
            let line = line.trim();
            if line.starts_with('{')
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
            {
                lines.push(v);
            }
        }
        Ok(())
    };
    if a.files.is_empty() || a.files.iter().any(|f| f.as_os_str() == "-") {
        read(&mut std::io::stdin().lock(), "stdin")?;
    }
    for f in a.files.iter().filter(|f| f.as_os_str() != "-") {
        let file = std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?;
        read(&mut std::io::BufReader::new(file), &f.display().to_string())?;
    }
    let rows = report::compare(&lines);
    print!("{}", report::compare_markdown(&rows));
    if let Some(path) = &a.svg {
        std::fs::write(path, report::compare_svg(&rows, &a.title))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
