//! `midge pub`: publish messages, with mosquitto_pub's options.

use std::io::{BufRead, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use midge_client::codec::{Disconnect, Publish, QoS, ReasonCode, TopicName};
use midge_client::{Client, ClientError, Event};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::mqtt_opts::{ConnOpts, UsageError, connect_failure, parse_qos};

/// Publish a message (like mosquitto_pub).
#[derive(Debug, clap::Args)]
#[command(disable_version_flag = true)]
pub(crate) struct PubArgs {
    #[command(flatten)]
    conn: ConnOpts,
    /// MQTT topic to publish to.
    #[arg(short = 't', long = "topic", value_name = "TOPIC")]
    topic: Option<String>,
    /// Message payload to send.
    #[arg(short = 'm', long = "message", value_name = "MESSAGE")]
    message: Option<String>,
    /// Send a null (zero length) message.
    #[arg(short = 'n', long = "null-message")]
    null_message: bool,
    /// Send the contents of a file as the message.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Read messages from stdin, one message per line.
    #[arg(short = 'l', long = "stdin-line")]
    stdin_line: bool,
    /// Read the whole of stdin as one message.
    #[arg(short = 's', long = "stdin-file")]
    stdin_file: bool,
    /// Quality of service: 0, 1 or 2. Defaults to 0.
    #[arg(short = 'q', long = "qos", value_name = "QOS", default_value_t = 0)]
    qos: u8,
    /// Retain the message.
    #[arg(short = 'r', long = "retain")]
    retain: bool,
    /// Publish the message N times (with -m, -f, -n or -s).
    #[arg(long = "repeat", value_name = "N", default_value_t = 1)]
    repeat: u32,
    /// Seconds to wait between repeated publishes.
    #[arg(long = "repeat-delay", value_name = "SECONDS", default_value_t = 0.0)]
    repeat_delay: f64,
    /// Maximum QoS 1/2 messages in flight (line mode). Defaults to 20.
    #[arg(
        short = 'M',
        long = "max-inflight",
        value_name = "N",
        default_value_t = 20
    )]
    max_inflight: usize,
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
}

enum Source {
    Fixed(bytes::Bytes),
    Lines,
}

pub(crate) fn run(args: PubArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(match runtime.block_on(publish(args)) {
        Ok(code) => code,
        Err(usage) => usage.report("pub"),
    })
}

async fn publish(args: PubArgs) -> Result<ExitCode, UsageError> {
    let modes = [
        args.message.is_some(),
        args.null_message,
        args.file.is_some(),
        args.stdin_line,
        args.stdin_file,
    ];
    if modes.iter().filter(|m| **m).count() > 1 {
        return Err(UsageError::new(
            "Only one type of message can be sent at once.",
        ));
    }
    if args.conn.disable_clean_session && args.conn.id.is_none() && args.conn.id_prefix.is_none() {
        return Err(UsageError::new(
            "You must provide a client id if you are using the -c option.",
        ));
    }
    let prepared = args.conn.prepare("pub")?;
    let topic = args.topic.clone().or(prepared.url_topic.clone());
    let (Some(topic), true) = (topic, modes.iter().any(|m| *m)) else {
        return Err(UsageError::new("Both topic and message must be supplied."));
    };
    let qos = parse_qos(args.qos, "QoS")?;
    let topic_name = TopicName::new(topic.as_str()).map_err(|_| {
        UsageError::new(format!(
            "Invalid publish topic '{topic}', does it contain '+' or '#'?"
        ))
    })?;
    let source = if let Some(m) = &args.message {
        Source::Fixed(m.clone().into_bytes().into())
    } else if let Some(f) = &args.file {
        match std::fs::read(f) {
            Ok(data) => Source::Fixed(data.into()),
            Err(_) => {
                return Err(UsageError::new(format!(
                    "Unable to read file \"{}\".",
                    f.display()
                )));
            }
        }
    } else if args.stdin_file {
        let mut data = Vec::new();
        if std::io::stdin().read_to_end(&mut data).is_err() {
            return Err(UsageError::new("Unable to read from stdin."));
        }
        Source::Fixed(data.into())
    } else if args.stdin_line {
        Source::Lines
    } else {
        Source::Fixed(bytes::Bytes::new())
    };

    let mut template = Publish::new(topic_name, bytes::Bytes::new());
    template.qos = qos;
    template.retain = args.retain;
    template.properties = prepared.properties.publish.clone();
    let disconnect = Disconnect {
        reason: ReasonCode::NORMAL_DISCONNECTION,
        properties: prepared.properties.disconnect.clone(),
    };
    let quiet = args.conn.quiet;

    let mut options = prepared.options;
    options.max_inflight = u16::try_from(args.max_inflight.max(1)).ok();
    let (client, event_loop) = Client::new(options);
    // unbounded: the loop must keep running while we wait on its acknowledgements; a
    // yield after each event lets the printing run first, so message lines and -d lines
    // come out in wire order
    let (mut events, _) = event_loop.spawn(None, true);

    let mut lines = match source {
        Source::Lines => Some(spawn_line_reader()),
        Source::Fixed(_) => None,
    };
    let fixed = match &source {
        Source::Fixed(b) => Some(b.clone()),
        Source::Lines => None,
    };
    let total = u64::from(args.repeat.max(1));
    let delay = Duration::from_secs_f64(args.repeat_delay.max(0.0));
    let mut connected = false;
    let mut queued: u64 = 0;
    let mut done: u64 = 0;
    let mut input_done = fixed.is_some();
    let mut disconnecting = false;
    let mut exit = ExitCode::SUCCESS;
    let mut next_at: Option<Instant> = None;
    let far = || Instant::now() + Duration::from_secs(86_400);

    loop {
        let can_read_line = connected
            && !input_done
            && (qos == QoS::AtMostOnce || (queued - done) < args.max_inflight.max(1) as u64);
        let wait_until = next_at.unwrap_or_else(far);
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return Ok(ExitCode::from(1)) };
                match event {
                    Ok(Event::Connected(_)) => {
                        if !connected {
                            connected = true;
                            if let Some(payload) = &fixed {
                                let mut p = template.clone();
                                p.payload = payload.clone();
                                send(&client, p).await;
                                queued += 1;
                            }
                        }
                    }
                    Ok(Event::Published { packet_id, reason, .. }) => {
                        done += 1;
                        if reason.is_error() {
                            if !quiet {
                                eprintln!(
                                    "Warning: Publish {packet_id} failed: {}.",
                                    reason.description()
                                );
                            }
                            exit = ExitCode::from(reason.0);
                        }
                        if let Some(payload) = &fixed
                            && queued < total {
                                if delay.is_zero() {
                                    let mut p = template.clone();
                                    p.payload = payload.clone();
                                    send(&client, p).await;
                                    queued += 1;
                                } else {
                                    next_at = Some(Instant::now() + delay);
                                }
                            }
                    }
                    Ok(Event::Closed) => return Ok(exit),
                    Ok(_) => {}
                    Err(e) => {
                        if connected {
                            if !quiet {
                                eprintln!("Error: {e}");
                            }
                            return Ok(ExitCode::from(1));
                        }
                        return Ok(connect_failure(&e, quiet));
                    }
                }
            }
            line = async {
                match lines.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            }, if can_read_line => {
                match line {
                    Some(line) => {
                        let mut p = template.clone();
                        p.payload = line.into();
                        send(&client, p).await;
                        queued += 1;
                    }
                    None => input_done = true,
                }
            }
            _ = sleep_until(wait_until), if next_at.is_some() => {
                next_at = None;
                if let Some(payload) = &fixed {
                    let mut p = template.clone();
                    p.payload = payload.clone();
                    send(&client, p).await;
                    queued += 1;
                }
            }
        }
        let all_queued = if fixed.is_some() {
            queued >= total
        } else {
            input_done
        };
        if connected && all_queued && done >= queued && !disconnecting {
            disconnecting = true;
            let _ = client.disconnect_with(disconnect.clone()).await;
        }
    }
}

async fn send(client: &Client, publish: Publish) {
    if let Err(ClientError::Closed) = client.publish_packet(publish).await {
        // the event loop ended; its error arrives on the event channel
    }
}

/// Read stdin lines on a thread (stdin is blocking); each line without its newline.
fn spawn_line_reader() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        loop {
            let mut line = Vec::new();
            match lock.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    if tx.blocking_send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}
