//! `midge serve`: run the broker.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use tracing::{info, warn};

use crate::config::{self, MidgeConfig};

/// Run the broker (embedded defaults: 127.0.0.1:1883, anonymous clients allowed).
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Configuration file (TOML). See --print-config for every setting and its default.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Port of the (first) listener; overrides the config file.
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    port: Option<u16>,
    /// Address of the (first) listener, e.g. 0.0.0.0 to accept remote clients.
    #[arg(long = "bind", value_name = "ADDR")]
    bind: Option<IpAddr>,
    /// Print the commented default configuration and exit.
    #[arg(long = "print-config")]
    print_config: bool,
    /// Log every packet (debug level).
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Keep everything in memory only: no data folder, nothing survives a restart.
    #[arg(long = "no-persistence")]
    no_persistence: bool,
    /// Port of the HTTP API and dashboard (default 18083); overrides the config file.
    #[arg(long = "http-port", value_name = "PORT")]
    http_port: Option<u16>,
    /// No HTTP API and dashboard.
    #[arg(long = "no-http")]
    no_http: bool,
    /// Join a cluster over these NATS servers (comma-separated URLs); overrides
    /// `[cluster] nats`. See docs/cluster.md.
    #[arg(long = "cluster", value_name = "NATS_URLS", value_delimiter = ',')]
    cluster: Vec<String>,
    /// This node's name in the cluster (default: `[cluster] node`, else the host name).
    #[arg(long = "node", value_name = "NAME")]
    node: Option<String>,
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if args.print_config {
        // a closed pipe (`| head`) is not an error
        let _ = std::io::Write::write_all(
            &mut std::io::stdout().lock(),
            config::DEFAULT_CONFIG.as_bytes(),
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut cfg = match &args.config {
        Some(path) => match config::load(path) {
            Ok(c) => c,
            Err(msg) => {
                eprintln!("midge: {msg}");
                return Ok(ExitCode::from(2));
            }
        },
        None => MidgeConfig::default(),
    };
    if args.port.is_some() || args.bind.is_some() {
        let first = cfg
            .server
            .listeners
            .first()
            .map(|l| l.bind)
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 1883)));
        let addr = SocketAddr::new(
            args.bind.unwrap_or(first.ip()),
            args.port.unwrap_or(first.port()),
        );
        match cfg.server.listeners.first_mut() {
            Some(l) => l.bind = addr,
            None => cfg
                .server
                .listeners
                .push(midge_server::ListenerConfig::mqtt(addr)),
        }
    }
    if args.no_persistence {
        cfg.server.persistence = None;
        if cfg.series.as_ref().is_some_and(|s| s.in_data_dir) {
            cfg.series = None;
        }
        if let Some(h) = cfg.http.as_mut()
            && h.config
                .dashboard_file
                .as_ref()
                .is_some_and(|f| f.starts_with(midge_store::StoreOptions::default().dir))
        {
            h.config.dashboard_file = None;
        }
    }
    if args.no_http {
        cfg.http = None;
    }
    if !args.cluster.is_empty() {
        let c = cfg.cluster.get_or_insert_with(|| {
            midge_cluster::ClusterConfig::new(&config::default_node(), Vec::new())
        });
        c.nats = args.cluster.clone();
    }
    if let Some(node) = &args.node {
        match cfg.cluster.as_mut() {
            Some(c) => c.node = node.clone(),
            None => {
                eprintln!(
                    "midge: --node names a cluster node: add --cluster NATS_URLS or [cluster]"
                );
                return Ok(ExitCode::from(2));
            }
        }
    }
    if let Some(Err(e)) = cfg
        .cluster
        .as_ref()
        .map(midge_cluster::ClusterConfig::validate)
    {
        eprintln!("midge: {e}");
        return Ok(ExitCode::from(2));
    }
    if let (Some(port), Some(h)) = (args.http_port, cfg.http.as_mut()) {
        h.config.bind.set_port(port);
        h.explicit = true;
    }
    let level = if args.verbose {
        "debug"
    } else {
        cfg.log_level.as_str()
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},midge={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // colours only on a terminal: log files and journald get plain text
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    for note in &cfg.notes {
        warn!("{note}");
    }
    if let Some(p) = &cfg.server.persistence {
        crate::import_cmd::import_at_first_start(&p.dir)?;
    }

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    // run tasks in the order their sockets became ready: with the LIFO slot, of two
    // connections whose packets arrive together the later one runs first (see
    // .cargo/config.toml)
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    let runtime = builder.build().context("starting the runtime")?;
    runtime.block_on(serve(cfg, args.config.is_some()))
}

async fn serve(cfg: MidgeConfig, from_file: bool) -> anyhow::Result<ExitCode> {
    let addrs: Vec<String> = cfg
        .server
        .listeners
        .iter()
        .map(|l| format!("{} ({})", l.bind, l.scheme()))
        .collect();
    if !from_file {
        info!(
            "midge {} starting with the embedded defaults: listening on {} only, anonymous clients allowed \
             (local-only mode, as mosquitto 2 does; use -c FILE or --bind to accept remote clients)",
            env!("CARGO_PKG_VERSION"),
            addrs.join(", ")
        );
    } else {
        info!(
            "midge {} starting: listeners {}",
            env!("CARGO_PKG_VERSION"),
            addrs.join(", ")
        );
        for l in &cfg.server.listeners {
            let at = format!("{}://{}", l.scheme(), l.bind);
            let identity = l.tls.as_ref().is_some_and(|t| t.use_identity_as_username);
            if l.auth.allow_anonymous && !l.bind.ip().is_loopback() {
                warn!(
                    "{at}: anonymous access beyond loopback: anyone who can reach this port can publish and subscribe"
                );
            } else if !l.auth.allow_anonymous && l.auth.password_file.is_none() && !identity {
                warn!(
                    "{at}: allow_anonymous is false and there is no password_file: every client will be refused"
                );
            }
            if l.auth.allow_anonymous {
                info!("{at}: anonymous clients allowed");
            }
        }
    }
    let state_dir = cfg.server.persistence.as_ref().map(|p| p.dir.clone());
    // the device registry: devices.json in the data folder (memory only without one)
    let registry = match &state_dir {
        Some(dir) => match midge_auth::Registry::open(&dir.join("devices.json")) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("midge: {e}");
                return Ok(ExitCode::from(1));
            }
        },
        None => midge_auth::Registry::in_memory(),
    };
    let registry = std::sync::Arc::new(registry);
    if !registry.is_empty() {
        info!(devices = registry.len(), "device registry loaded");
    }
    let listener_configs = cfg.server.listeners.clone();
    // a cluster node reaches NATS before it accepts a client
    let cluster = match cfg.cluster {
        Some(c) => match midge_cluster::Cluster::connect(c).await {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("midge: {e}");
                return Ok(ExitCode::from(1));
            }
        },
        None => None,
    };
    let link = cluster.as_ref().map(midge_cluster::Cluster::link);
    let server =
        match midge_server::Server::start_node(cfg.server, Some(registry.clone()), link).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("midge: {e}");
                return Ok(ExitCode::from(1));
            }
        };
    let cluster = match cluster {
        Some(c) => match c.run(server.cluster_port()).await {
            Ok(h) => {
                info!(node = h.node(), "cluster node running");
                Some(h)
            }
            Err(e) => {
                eprintln!("midge: {e}");
                server.shutdown().await;
                return Ok(ExitCode::from(1));
            }
        },
        None => None,
    };
    let series = match open_series(cfg.series.as_ref(), &cfg.hub, cfg.http.is_some()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("midge: {e}");
            server.shutdown().await;
            return Ok(ExitCode::from(1));
        }
    };
    let connector = midge_http::connector(server.local_connector());
    let bridge_connector = connector.clone();
    let hub_config = midge_hub::HubConfig {
        state_dir,
        // in a cluster each message runs the rules on one node only
        share_group: cluster.is_some().then(|| "midge-hub".to_owned()),
        ..cfg.hub
    };
    let hub =
        match midge_hub::HubService::start(hub_config, connector.clone(), series.clone()).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("midge: {e}");
                server.shutdown().await;
                return Ok(ExitCode::from(1));
            }
        };
    let http = match cfg.http {
        None => None,
        Some(settings) => {
            let deps = midge_http::HttpDeps {
                server: server.handle(),
                connector,
                series: series.clone(),
                hub: Some(hub.clone()),
                cluster: cluster.clone().map(|c| {
                    std::sync::Arc::new(c) as std::sync::Arc<dyn midge_server::cluster::ClusterView>
                }),
                listeners: listener_configs
                    .iter()
                    .zip(server.local_addrs())
                    .map(|(l, a)| midge_http::ListenerInfo::new(l, *a))
                    .collect(),
            };
            let bind = settings.config.bind;
            if settings.config.users.as_ref().is_some_and(Vec::is_empty) {
                warn!(
                    "HTTP API locked: its password file is [security]'s and an acl_file restricts those users; list the operators in [http] users (or give [http] its own password_file) to open it"
                );
            }
            let scheme = if settings.config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            match midge_http::HttpServer::start(settings.config, deps).await {
                Ok(h) => {
                    info!(
                        "dashboard and HTTP API on {scheme}://{}/ (API under /api/v1, Prometheus /metrics)",
                        h.local_addr()
                    );
                    Some((h, scheme))
                }
                Err(e) if !settings.explicit && matches!(e, midge_http::HttpError::Bind { .. }) => {
                    warn!("{e}; running without the dashboard (set [http] port or --http-port)");
                    let _ = bind;
                    None
                }
                Err(e) => {
                    eprintln!("midge: {e}");
                    hub.stop().await;
                    server.shutdown().await;
                    return Ok(ExitCode::from(1));
                }
            }
        }
    };
    let bridges = match midge_bridge::Bridges::start(cfg.bridges, bridge_connector).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("midge: {e}");
            if let Some((h, _)) = http {
                h.shutdown().await;
            }
            hub.stop().await;
            server.shutdown().await;
            return Ok(ExitCode::from(1));
        }
    };
    // one `ready` line per bound socket, in configuration order and the HTTP one last, with
    // the address actually bound (port 0 in the configuration: the one the OS chose)
    for (l, a) in listener_configs.iter().zip(server.local_addrs()) {
        info!(addr = %a, scheme = %l.scheme(), "ready");
    }
    if let Some((h, scheme)) = &http {
        info!(addr = %h.local_addr(), scheme = %scheme, "ready");
    }
    let http = http.map(|(h, _)| h);
    wait_for_signal(&server, http.as_ref()).await;
    info!("shutting down");
    if let Some(h) = http {
        h.shutdown().await;
    }
    // bridges before the broker: their state topics go to "0"
    bridges.stop().await;
    // the hub before the broker: the batch it is storing is finished and acknowledged
    hub.stop().await;
    server.shutdown().await;
    // last-seen times are kept in memory between changes
    if let Err(e) = registry.flush() {
        warn!("{e}");
    }
    info!("bye");
    Ok(ExitCode::SUCCESS)
}

/// Open the time-series store when it is configured and something uses it (a rule that
/// stores rows or datapoints, the HTTP API, where rules can be added, or data already there
/// to query).
async fn open_series(
    settings: Option<&config::SeriesSettings>,
    hub: &midge_hub::HubConfig,
    http: bool,
) -> anyhow::Result<Option<std::sync::Arc<midge_series::SeriesStore>>> {
    let Some(settings) = settings.cloned() else {
        return Ok(None);
    };
    let stores = hub
        .rules
        .iter()
        .any(|r| r.actions.iter().any(midge_hub::ActionConfig::needs_series));
    if !stores && !http && (settings.postgres_url.is_some() || !settings.path.exists()) {
        return Ok(None);
    }
    // the PostgreSQL client must not run on a runtime thread: connect on a blocking one
    let store = tokio::task::spawn_blocking(move || {
        if let Some(url) = &settings.postgres_url {
            // the error names the URL (without its password) and the reason
            return midge_series::SeriesStore::connect_postgres(url, settings.options)
                .map_err(|e| anyhow::anyhow!("time-series store: {e}"));
        }
        if let Some(dir) = settings.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        midge_series::SeriesStore::open(&settings.path, settings.options)
            .with_context(|| format!("time-series store {}", settings.path.display()))
    })
    .await
    .context("opening the time-series store")??;
    info!(store = %store.describe(), "time-series store open");
    Ok(Some(std::sync::Arc::new(store)))
}

/// Wait for SIGTERM or SIGINT; on SIGHUP re-read certificates, password and ACL files
/// (a broken file is reported and the old one stays in force).
#[cfg(unix)]
async fn wait_for_signal(server: &midge_server::Server, http: Option<&midge_http::HttpServer>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                info!("SIGHUP: reloading certificates, password and ACL files");
                let mut problems = server.reload().await;
                if let Some(h) = http {
                    problems.extend(h.reload().await);
                }
                if problems.is_empty() {
                    info!("reload done");
                } else {
                    for p in &problems {
                        warn!("reload: {p}; the previous version stays in force");
                    }
                }
            }
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal(_server: &midge_server::Server, _http: Option<&midge_http::HttpServer>) {
    let _ = tokio::signal::ctrl_c().await;
}
