//! `midge sub`: subscribe and print messages, with mosquitto_sub's options and output.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use midge_client::codec::{
    Disconnect, Publish, QoS, ReasonCode, SubscriptionOptions, TopicFilter, matches_filter,
};
use midge_client::{Client, Event, Reconnect};
use tokio::time::{Instant, sleep_until};

use crate::mqtt_opts::{ConnOpts, UsageError, connect_failure, parse_qos};
use crate::sub_format::{Output, format_message, now};

/// Subscribe and print messages (like mosquitto_sub).
#[derive(Debug, clap::Args)]
#[command(disable_version_flag = true)]
pub(crate) struct SubArgs {
    #[command(flatten)]
    conn: ConnOpts,
    /// MQTT topic to subscribe to. May be repeated.
    #[arg(short = 't', long = "topic", value_name = "TOPIC")]
    topics: Vec<String>,
    /// Topic filter to leave out of the output. May be repeated.
    #[arg(short = 'T', long = "filter-out", value_name = "TOPIC")]
    filter_out: Vec<String>,
    /// Unsubscribe from this topic on connect. May be repeated.
    #[arg(short = 'U', long = "unsubscribe", value_name = "TOPIC")]
    unsubscribe: Vec<String>,
    /// Quality of service for the subscriptions. Defaults to 0.
    #[arg(short = 'q', long = "qos", value_name = "QOS", default_value_t = 0)]
    qos: u8,
    /// Print the topic before each payload.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Disconnect and exit after this many messages.
    #[arg(short = 'C', long = "count", value_name = "COUNT")]
    count: Option<u64>,
    /// Exit after this many seconds (exit code 27).
    #[arg(short = 'W', long = "timeout", value_name = "SECONDS")]
    timeout: Option<u32>,
    /// Do not print retained (stale) messages.
    #[arg(short = 'R', long = "no-retain")]
    no_retain: bool,
    /// Do not add an end of line after each message.
    #[arg(short = 'N')]
    no_eol: bool,
    /// Output format (see mosquitto_sub(1)).
    #[arg(short = 'F', long = "format", value_name = "FORMAT")]
    format: Option<String>,
    /// Only handle retained messages; exit at the first non-retained one.
    #[arg(long = "retained-only")]
    retained_only: bool,
    /// Exit once all subscriptions are acknowledged.
    #[arg(short = 'E')]
    exit_after_sub: bool,
    /// Clear every retained message received (publish an empty retained message).
    #[arg(long = "remove-retained")]
    remove_retained: bool,
    /// Pretty-print JSON output (%j, %J).
    #[arg(long = "pretty")]
    pretty: bool,
    /// Print only this percentage of messages.
    #[arg(long = "random-filter", value_name = "PERCENT")]
    random_filter: Option<f64>,
    /// MQTT 5: do not receive our own publications.
    #[arg(long = "nl", alias = "no-local")]
    no_local: bool,
    /// MQTT 5: keep the retain flag as published.
    #[arg(long = "rap", alias = "retain-as-published")]
    retain_as_published: bool,
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
}

pub(crate) fn run(args: SubArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(match runtime.block_on(subscribe(args)) {
        Ok(code) => code,
        Err(usage) => usage.report("sub"),
    })
}

async fn subscribe(args: SubArgs) -> Result<ExitCode, UsageError> {
    if args.conn.disable_clean_session && args.conn.id.is_none() && args.conn.id_prefix.is_none() {
        return Err(UsageError::new(
            "You must provide a client id if you are using the -c option.",
        ));
    }
    let prepared = args.conn.prepare("sub")?;
    let mut topics = args.topics.clone();
    if let Some(t) = &prepared.url_topic {
        topics.push(t.clone());
    }
    if topics.is_empty() && args.unsubscribe.is_empty() {
        return Err(UsageError::new("You must specify a topic to subscribe to."));
    }
    let qos = parse_qos(args.qos, "QoS")?;
    let protocol = prepared.options.connect.protocol;
    let mut filters = Vec::new();
    for t in &topics {
        let f = TopicFilter::new(t.as_str()).map_err(|_| {
            UsageError::new(format!(
                "Invalid subscription topic '{t}', are all '+' and '#' wildcards correct?"
            ))
        })?;
        let mut o = SubscriptionOptions::qos(qos);
        if protocol.is_v5() {
            o.no_local = args.no_local;
            o.retain_as_published = args.retain_as_published;
        }
        filters.push((f, o));
    }
    for t in &args.filter_out {
        TopicFilter::new(t.as_str()).map_err(|_| {
            UsageError::new(format!(
                "Invalid filter topic '{t}', are all '+' and '#' wildcards correct?"
            ))
        })?;
    }
    let mut unsub = Vec::new();
    for t in &args.unsubscribe {
        unsub.push(TopicFilter::new(t.as_str()).map_err(|_| {
            UsageError::new(format!(
                "Invalid unsubscribe topic '{t}', are all '+' and '#' wildcards correct?"
            ))
        })?);
    }
    if let Some(0) = args.count {
        return Err(UsageError::new("Invalid message count \"0\"."));
    }
    let random = match args.random_filter {
        Some(p) if !(0.1..=100.0).contains(&p) => {
            return Err(UsageError::new(
                "Invalid --random-filter value (must be between 0.1-100.0).",
            ));
        }
        Some(p) => Some(p),
        None => None,
    };
    let output = Output {
        verbose: args.verbose,
        eol: !args.no_eol,
        format: args.format.clone(),
        pretty: args.pretty,
    };
    let quiet = args.conn.quiet;
    let debug = args.conn.debug;
    let disconnect = Disconnect {
        reason: ReasonCode::NORMAL_DISCONNECTION,
        properties: prepared.properties.disconnect.clone(),
    };

    let mut options = prepared.options;
    options.reconnect = Some(Reconnect {
        min: Duration::from_secs(1),
        max: Duration::from_secs(30),
    });
    let (client, event_loop) = Client::new(options);
    // unbounded: the loop must keep running while we wait on its acknowledgements; a
    // yield after each event lets the printing run first, so message lines and -d lines
    // come out in wire order
    let (mut events, _) = event_loop.spawn(None, true);

    let deadline = args
        .timeout
        .map(|s| Instant::now() + Duration::from_secs(u64::from(s)));
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let mut connected_once = false;
    let mut processing = true;
    let mut received: u64 = 0;
    let mut removals_pending: u64 = 0;
    let mut disconnecting = false;
    let mut timed_out = false;
    let mut exit = ExitCode::SUCCESS;
    let mut rng = seed();
    let mut stdout = std::io::stdout();

    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return Ok(ExitCode::from(1)) };
                match event {
                    Ok(Event::Connected(_)) => {
                        connected_once = true;
                        if !filters.is_empty() {
                            let _ = client
                                .subscribe_many(filters.clone(), prepared.properties.subscribe.clone())
                                .await;
                        }
                        if !unsub.is_empty() {
                            let _ = client
                                .unsubscribe_many(unsub.clone(), prepared.properties.unsubscribe.clone())
                                .await;
                        }
                    }
                    Ok(Event::SubAck(ack)) => {
                        if debug {
                            let codes: Vec<String> =
                                ack.reasons.iter().map(|r| r.0.to_string()).collect();
                            println!("Subscribed (mid: {}): {}", ack.packet_id, codes.join(", "));
                        }
                        if !ack.reasons.iter().any(|r| r.0 <= 2) {
                            if !quiet {
                                eprintln!("All subscription requests were denied.");
                            }
                            exit = ExitCode::from(1);
                            start_disconnect(&client, &disconnect, &mut disconnecting).await;
                        }
                        if args.exit_after_sub {
                            start_disconnect(&client, &disconnect, &mut disconnecting).await;
                        }
                    }
                    Ok(Event::Message(m)) => {
                        if !processing {
                            continue;
                        }
                        if args.remove_retained && m.retain {
                            let mut clear = Publish::new(m.topic.clone(), bytes::Bytes::new());
                            clear.qos = QoS::AtLeastOnce;
                            clear.retain = true;
                            let _ = client.publish_packet(clear).await;
                            removals_pending += 1;
                        }
                        if args.retained_only && !m.retain {
                            processing = false;
                            if removals_pending == 0 {
                                start_disconnect(&client, &disconnect, &mut disconnecting).await;
                            }
                            continue;
                        }
                        if m.retain && args.no_retain {
                            continue;
                        }
                        if args.filter_out.iter().any(|f| matches_filter(f, m.topic.as_str())) {
                            continue;
                        }
                        let shown = match random {
                            Some(pct) => (next_random(&mut rng) % 10_000) < (pct * 100.0) as u64,
                            None => true,
                        };
                        if shown {
                            let mut buf = Vec::with_capacity(m.payload.len() + 64);
                            format_message(&output, &m, protocol, now(), &mut buf);
                            if stdout.write_all(&buf).and_then(|()| stdout.flush()).is_err() {
                                // stdout closed (e.g. piped into head): stop like mosquitto_sub
                                // would on SIGPIPE
                                return Ok(ExitCode::from(1));
                            }
                        }
                        if let Some(count) = args.count {
                            received += 1;
                            if received >= count {
                                processing = false;
                                if removals_pending == 0 {
                                    start_disconnect(&client, &disconnect, &mut disconnecting).await;
                                }
                            }
                        }
                    }
                    Ok(Event::Published { .. }) => {
                        removals_pending = removals_pending.saturating_sub(1);
                        if !processing && removals_pending == 0 {
                            start_disconnect(&client, &disconnect, &mut disconnecting).await;
                        }
                    }
                    Ok(Event::ConnectionLost(e)) => {
                        if !connected_once {
                            return Ok(connect_failure(&e, quiet));
                        }
                    }
                    Ok(Event::Closed) => {
                        if timed_out {
                            if !quiet {
                                eprintln!("Timed out");
                            }
                            return Ok(ExitCode::from(27));
                        }
                        return Ok(exit);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if timed_out {
                            if !quiet {
                                eprintln!("Timed out");
                            }
                            return Ok(ExitCode::from(27));
                        }
                        return Ok(connect_failure(&e, quiet));
                    }
                }
            }
            _ = sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && !timed_out => {
                timed_out = true;
                processing = false;
                if connected_once {
                    disconnecting = false;
                    start_disconnect(&client, &disconnect, &mut disconnecting).await;
                } else {
                    if !quiet {
                        eprintln!("Timed out");
                    }
                    return Ok(ExitCode::from(27));
                }
            }
        }
    }
}

async fn start_disconnect(client: &Client, disconnect: &Disconnect, disconnecting: &mut bool) {
    if !*disconnecting {
        *disconnecting = true;
        let _ = client.disconnect_with(disconnect.clone()).await;
    }
}

fn seed() -> u64 {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    n | 1
}

fn next_random(state: &mut u64) -> u64 {
    // xorshift64
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}
