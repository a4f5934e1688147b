//! The one launcher of `midge serve` in the process tests: a builder that writes the
//! configuration into a folder of the broker's own, starts it with port 0 (`-p 0`,
//! `--http-port 0`, `{portN}` placeholders in the configuration become 0) and reads the
//! addresses it actually bound from its `ready addr=... scheme=...` log lines. The handle
//! kills and reaps the process on drop.
//!
//! ```ignore
//! let b = Midge::serve().config(toml).http(true).start();
//! Raw::v5(b.port, "c");
//! http_get(b.http_port(), "/api/v1/health");
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::strip_ansi;

pub const MIDGE: &str = env!("CARGO_BIN_EXE_midge");

/// How long a broker may take to log that it is ready (a loaded 2-core machine compiling
/// in parallel makes a start take seconds).
const START: Duration = Duration::from_secs(20);

/// What to start: built with [`Midge::serve`], run with [`Serve::start`] or [`Serve::spawn`].
#[derive(Clone, Debug)]
pub struct Serve {
    /// Configuration text, written to `midge.toml` in the broker's folder.
    config: Option<String>,
    /// The configuration is a mosquitto.conf.
    mosquitto: bool,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// `None`: on when the configuration has an `[http]` table.
    http: Option<Http>,
    /// Port of the first listener (`-p`); `None` keeps the configuration's.
    port: Option<u16>,
    /// The folder it runs in (its `./data`, config and log); `None`: a new temporary one.
    dir: Option<PathBuf>,
    /// How many MQTT listeners log `ready` (`None`: counted from the configuration).
    listeners: Option<usize>,
}

/// The HTTP API and dashboard of a [`Serve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Http {
    /// `--http-port 0`, and its `ready` line waited for.
    On,
    /// `--no-http`.
    Off,
    /// Whatever the configuration says.
    AsConfigured,
}

/// A running (or exited) `midge serve`, killed and reaped on drop.
pub struct Midge {
    child: Option<Child>,
    /// The first MQTT listener's port.
    pub port: u16,
    /// Every port it logged ready on, in configuration order, the HTTP listener last.
    pub ports: Vec<u16>,
    /// The HTTP listener's port, when it has one.
    pub http: Option<u16>,
    /// The folder it runs in: configuration, log, and its default data folder `./data`.
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    log: PathBuf,
    /// Launches so far (each has its own log file).
    launches: usize,
    spec: Serve,
}

impl Midge {
    /// A builder for `midge serve` with the embedded defaults, port 0 and no HTTP listener.
    pub fn serve() -> Serve {
        Serve {
            config: None,
            mosquitto: false,
            args: Vec::new(),
            env: Vec::new(),
            http: None,
            port: Some(0),
            dir: None,
            listeners: None,
        }
    }

    /// A broker with the embedded defaults.
    pub fn start() -> Midge {
        Midge::serve().start()
    }

    /// A broker with this TOML configuration (see [`Serve::config`]).
    pub fn with_config(toml: &str) -> Midge {
        Midge::serve().config(toml).start()
    }
}

impl Serve {
    /// This TOML configuration. Anonymous clients are allowed unless the text has its own
    /// `[security]` table (with a configuration file midge refuses them by default, as
    /// mosquitto 2 does). `{dir}` is replaced by the broker's folder and `{port0}`,
    /// `{port1}`... by 0: the ports it bound are in [`Midge::ports`], in the order of the
    /// listeners, the HTTP listener last.
    pub fn config(self, toml: &str) -> Serve {
        if has_table(toml, "[security]") {
            self.exact_config(toml)
        } else {
            self.exact_config(&format!("{toml}\n[security]\nallow_anonymous = true\n"))
        }
    }

    /// Exactly this TOML configuration (placeholders as in [`Serve::config`]).
    pub fn exact_config(mut self, toml: &str) -> Serve {
        self.config = Some(toml.to_owned());
        self
    }

    /// A mosquitto.conf (written to `midge.toml` all the same: midge knows it by its
    /// content). Its first listener's port is replaced by one from the OS (`-p 0`; port 0
    /// in a mosquitto.conf is a unix socket) unless `.config_ports()` keeps it; `{portN}`
    /// placeholders become ports that were free a moment ago ([`super::free_port`]).
    pub fn mosquitto_conf(mut self, conf: &str) -> Serve {
        self.config = Some(conf.to_owned());
        self.mosquitto = true;
        self
    }

    /// More command-line arguments after `serve`.
    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Serve {
        self.args.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// An environment variable of the broker process (`RUST_LOG` is unset unless given).
    pub fn env(mut self, key: &str, value: &str) -> Serve {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The HTTP API and dashboard on a port from the OS (`--http-port 0`), or none
    /// (`--no-http`). Without this it is on when the configuration has an `[http]` table.
    pub fn http(mut self, on: bool) -> Serve {
        self.http = Some(if on { Http::On } else { Http::Off });
        self
    }

    /// The HTTP listener as the configuration says (default port 18083, or none when it
    /// disables it): nothing on the command line, and no `ready` line waited for.
    pub fn http_as_configured(mut self) -> Serve {
        self.http = Some(Http::AsConfigured);
        self
    }

    /// The first listener on this port instead of one from the OS.
    pub fn port(mut self, port: u16) -> Serve {
        self.port = Some(port);
        self
    }

    /// Keep the listener ports the configuration names (no `-p`).
    pub fn config_ports(mut self) -> Serve {
        self.port = None;
        self
    }

    /// Run in this folder (created if missing), which outlives the broker: its `./data`,
    /// configuration and log stay there.
    pub fn dir(mut self, dir: &Path) -> Serve {
        self.dir = Some(dir.to_owned());
        self
    }

    /// The number of MQTT listeners that log `ready` (counted from the configuration's
    /// `[[listener]]` tables otherwise).
    pub fn listeners(mut self, n: usize) -> Serve {
        self.listeners = Some(n);
        self
    }

    fn http_mode(&self) -> Http {
        self.http.unwrap_or_else(|| {
            if self.config.as_ref().is_some_and(|t| has_table(t, "[http]")) {
                Http::On
            } else {
                Http::Off
            }
        })
    }

    fn expected_listeners(&self) -> usize {
        self.listeners.unwrap_or_else(|| match &self.config {
            Some(text) if self.mosquitto => text
                .lines()
                .filter(|l| l.starts_with("listener "))
                .count()
                .max(1),
            Some(text) => text
                .lines()
                .filter(|l| l.trim_start().starts_with("[[listener]]"))
                .count()
                .max(1),
            None => 1,
        })
    }

    /// Start and return once it logged `ready` for every listener.
    pub fn start(self) -> Midge {
        let mut m = self.spawn();
        m.wait_ready();
        m
    }

    /// Start without waiting (for startup failures: [`Midge::wait_exit`]).
    pub fn spawn(self) -> Midge {
        let (dir, tmp) = match &self.dir {
            Some(d) => {
                std::fs::create_dir_all(d).unwrap();
                (d.clone(), None)
            }
            None => {
                let t = tempfile::tempdir().unwrap();
                (t.path().to_owned(), Some(t))
            }
        };
        let mut m = Midge {
            child: None,
            port: 0,
            ports: Vec::new(),
            http: None,
            dir,
            _tmp: tmp,
            log: PathBuf::new(),
            launches: 0,
            spec: self,
        };
        m.launch();
        m
    }
}

impl Midge {
    fn launch(&mut self) {
        self.launches += 1;
        let spec = &self.spec;
        let mut cmd = Command::new(MIDGE);
        cmd.arg("serve");
        if let Some(text) = &spec.config {
            let mut text = text.replace("{dir}", &self.dir.display().to_string());
            for i in 0..8 {
                let port = match spec.mosquitto {
                    true => super::free_port(),
                    false => 0,
                };
                text = text.replace(&format!("{{port{i}}}"), &port.to_string());
            }
            let conf = self.dir.join("midge.toml");
            std::fs::write(&conf, text).unwrap();
            cmd.arg("-c").arg(conf);
        }
        // a restart keeps the ports it had
        let port = match (self.port, spec.port) {
            (0, p) => p,
            (p, _) => Some(p),
        };
        if let Some(p) = port {
            cmd.args(["--port", &p.to_string()]);
        }
        match spec.http_mode() {
            Http::On => {
                let p = self.http.unwrap_or(0);
                cmd.args(["--http-port", &p.to_string()]);
            }
            Http::Off => {
                cmd.arg("--no-http");
            }
            Http::AsConfigured => {}
        }
        cmd.args(&spec.args);
        cmd.env("NO_COLOR", "1").env_remove("RUST_LOG");
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        self.log = match self.launches {
            1 => self.dir.join("midge.log"),
            n => self.dir.join(format!("midge-{n}.log")),
        };
        let child = cmd
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Wait (bounded) until every listener logged `ready`, and take the ports it bound.
    fn wait_ready(&mut self) {
        let want = self.spec.expected_listeners() + usize::from(self.spec.http_mode() == Http::On);
        let deadline = Instant::now() + START;
        loop {
            let ready = ready_lines(&self.log());
            if ready.len() >= want {
                self.ports = ready.iter().map(|(p, _)| *p).collect();
                self.port = self.ports[0];
                self.http = ready
                    .iter()
                    .find(|(_, s)| s.starts_with("http"))
                    .map(|(p, _)| *p);
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "midge serve exited ({st}) before it was ready:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "midge serve not ready ({} of {want} ready lines) within {START:?}:\n{}",
                ready.len(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The HTTP listener's port (panics without one).
    pub fn http_port(&self) -> u16 {
        self.http.expect("midge serve has no HTTP listener")
    }

    /// `http://127.0.0.1:PORT` of the HTTP listener.
    pub fn http_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port())
    }

    /// The i-th port it logged ready on, as text (for command lines).
    pub fn port_str(&self, i: usize) -> String {
        self.ports[i].to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// This launch's log so far, colour codes removed.
    pub fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// The log file of this launch.
    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    /// A file in its folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Resident set size in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// Peak resident set size in KiB (from /proc).
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill {sig}");
    }

    /// Send SIGTERM and wait (bounded) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal("-TERM");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "midge did not exit within {timeout:?} of SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, wait up to 10 s for a clean exit (SIGKILL after that).
    pub fn stop(mut self) {
        self.sigterm();
    }

    /// SIGKILL now: no shutdown path runs.
    pub fn kill(mut self) {
        self.sigkill();
    }

    /// SIGTERM and wait for the exit (SIGKILL after 10 s); the handle stays usable.
    pub fn sigterm(&mut self) {
        if self.child.is_some() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .status();
        }
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if c.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL and reap; the handle stays usable (for [`Midge::restart`]).
    pub fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL (if still running) and start again in the same folder, on the same first
    /// listener and HTTP ports, with a fresh log.
    pub fn restart(&mut self) {
        self.sigkill();
        self.launch();
        self.wait_ready();
    }

    /// Send SIGHUP and wait until the log reports the reload's outcome.
    pub fn sighup(&self) {
        let before = self.log().matches("SIGHUP").count();
        self.signal("-HUP");
        let deadline = Instant::now() + START;
        loop {
            let log = self.log();
            if log.matches("SIGHUP").count() > before {
                let after = &log[log.rfind("SIGHUP").unwrap()..];
                if after.contains("reload done") || after.contains("previous version") {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "no reload in the log:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait (bounded) for the process to end by itself: its exit code and log.
    pub fn wait_exit(&mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + START;
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return (st.code(), self.log());
            }
            assert!(
                Instant::now() < deadline,
                "midge did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Midge {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// Whether a TOML text opens this table on a line of its own (not in a comment).
fn has_table(toml: &str, header: &str) -> bool {
    toml.lines().any(|l| l.trim_start().starts_with(header))
}

/// (port, scheme) of each `ready addr=HOST:PORT scheme=S` line, in order.
fn ready_lines(log: &str) -> Vec<(u16, String)> {
    log.lines()
        .filter_map(|l| {
            // not just "ready": "Address already in use" contains it too
            let rest = &l[l.find(" ready addr=")? + " ready addr=".len()..];
            let addr = rest.split_whitespace().next()?;
            let port = addr.rsplit(':').next()?.parse().ok()?;
            let scheme = rest
                .split_whitespace()
                .find_map(|f| f.strip_prefix("scheme="))
                .map(|s| s.trim_matches('"'))
                .unwrap_or("mqtt");
            Some((port, scheme.to_owned()))
        })
        .collect()
}
