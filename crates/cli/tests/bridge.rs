//! Bridges against real brokers: midge bridged to a real mosquitto (out, in, both, with
//! prefixes, QoS 0 and 1, the state topic), mosquitto bridged to midge with mosquitto's own
//! `connection` section, midge to midge both ways without a loop, the remote SIGKILLed during
//! QoS 1 load, the local midge SIGKILLed with messages queued, and a TLS bridge with a CA and
//! a client certificate. Every broker runs on a free 127.0.0.1 port and is killed by PID on
//! drop; every wait is bounded.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::security::Pki;
use common::{Midge, Mosquitto, free_port};
use midge_client::{Client, ClientOptions, Event, Protocol, QoS, Reconnect};

/// `midge serve` in `dir` (its data folder is `dir/data`, so a restart keeps the queues)
/// on a port from the OS, with this TOML.
fn midge(dir: &Path, toml: &str) -> Midge {
    Midge::serve()
        .config(toml)
        .dir(dir)
        .env("RUST_LOG", "info")
        .start()
}

/// Wait until something listens on `port` (a second mosquitto listener).
fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

type Got = Arc<Mutex<Vec<(String, String, bool)>>>;

/// A subscriber (MQTT 3.1.1, reconnecting) collecting (topic, payload, retain).
struct Sub {
    got: Got,
    task: tokio::task::JoinHandle<()>,
}

impl Sub {
    fn start(
        rt: &tokio::runtime::Runtime,
        port: u16,
        filters: &[&str],
        qos: QoS,
        id: &str,
        persistent: bool,
    ) -> Sub {
        let got: Got = Arc::default();
        let mut o = ClientOptions::new("127.0.0.1", port, id);
        o.connect.clean_start = !persistent;
        o.connect.keep_alive = 5;
        o.reconnect = Some(Reconnect {
            min: Duration::from_millis(100),
            max: Duration::from_millis(500),
        });
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let g = got.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let task = rt.spawn(async move {
            let (client, mut events) = Client::new(o);
            loop {
                match events.poll().await {
                    Ok(Event::Connected(_)) => {
                        for f in &filters {
                            let _ = client.subscribe(f, qos).await;
                        }
                    }
                    Ok(Event::SubAck(_)) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Message(p)) => g.lock().unwrap().push((
                        p.topic.as_str().to_string(),
                        String::from_utf8_lossy(&p.payload).into_owned(),
                        p.retain,
                    )),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("subscribed");
        Sub { got, task }
    }

    fn got(&self) -> Vec<(String, String, bool)> {
        self.got.lock().unwrap().clone()
    }

    fn count(&self, topic: &str) -> usize {
        self.got().iter().filter(|(t, _, _)| t == topic).count()
    }

    /// Wait until `f` holds for what arrived.
    fn wait(&self, what: &str, limit: Duration, f: impl Fn(&[(String, String, bool)]) -> bool) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if f(&self.got()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{what}: not within {limit:?}; got {:?}", self.got());
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publish `n` messages `topic` = "i" (0..n) at `qos`; returns how many were acknowledged
/// (all of them for QoS 0 once written).
fn publish(
    rt: &tokio::runtime::Runtime,
    port: u16,
    topic: &str,
    payloads: Vec<String>,
    qos: QoS,
) -> usize {
    let topic = topic.to_string();
    rt.block_on(async move {
        let mut o = ClientOptions::new("127.0.0.1", port, "");
        o.connect.protocol = Protocol::V311;
        let (client, mut events, _) = Client::connect(o).await.unwrap();
        let n = payloads.len();
        let sender = client.clone();
        let t = topic.clone();
        tokio::spawn(async move {
            for p in payloads {
                if sender.publish(&t, qos, false, p).await.is_err() {
                    return;
                }
            }
        });
        let mut acked = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while acked < n {
            match tokio::time::timeout_at(deadline, events.poll()).await {
                Ok(Ok(Event::Published { .. })) => acked += 1,
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while events.poll().await.is_ok() {}
        })
        .await;
        acked
    })
}

fn one(rt: &tokio::runtime::Runtime, port: u16, topic: &str, payload: &str, qos: QoS) {
    assert_eq!(publish(rt, port, topic, vec![payload.to_string()], qos), 1);
}

/// Wait until the retained state topic on the broker at `port` says `state`.
fn wait_state(rt: &tokio::runtime::Runtime, port: u16, topic: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let s = Sub::start(rt, port, &[topic], QoS::AtMostOnce, "", false);
        std::thread::sleep(Duration::from_millis(200));
        if s.got()
            .iter()
            .any(|(t, p, r)| t == topic && p == state && *r)
        {
            return;
        }
        drop(s);
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{topic} did not become {state:?} on port {port}");
}

fn bridge_toml(name: &str, remote: u16, extra: &str, topics: &[&str]) -> String {
    let topics: Vec<String> = topics.iter().map(|t| format!("{t:?}")).collect();
    format!(
        "[[bridge]]\nname = \"{name}\"\naddresses = [\"127.0.0.1:{remote}\"]\nclientid = \"bridge-{name}\"\nrestart_timeout = 1\nkeepalive = 5\ntopics = [{}]\n{extra}\n",
        topics.join(", ")
    )
}

#[test]
fn midge_bridged_to_mosquitto_out_in_both_with_prefixes() {
    let rt = runtime();
    let m = Mosquitto::start("");
    let rport = m.port;
    let ldir = tempfile::tempdir().unwrap();
    let local = midge(
        ldir.path(),
        &bridge_toml(
            "m",
            rport,
            "",
            &[
                "out/# out 1 local/ remote/",
                "in/# in 1 local/ remote/",
                "both/# both 0",
                "\"\" out 0 single/local single/remote",
            ],
        ),
    );
    let lport = local.port;
    let state = "$SYS/broker/connection/bridge-m/state";
    wait_state(&rt, lport, state, "1");
    // the state is retained on the remote too
    wait_state(&rt, rport, state, "1");

    let remote_sub = Sub::start(
        &rt,
        rport,
        &["remote/#", "both/#", "single/#"],
        QoS::AtLeastOnce,
        "rs",
        false,
    );
    let local_sub = Sub::start(
        &rt,
        lport,
        &["local/#", "both/#", "single/#"],
        QoS::AtLeastOnce,
        "ls",
        false,
    );
    // out, QoS 1, prefixes swapped
    one(&rt, lport, "local/out/a", "o1", QoS::AtLeastOnce);
    remote_sub.wait("out", Duration::from_secs(10), |g| {
        g.iter().any(|(t, p, _)| t == "remote/out/a" && p == "o1")
    });
    // in, QoS 1
    one(&rt, rport, "remote/in/b", "i1", QoS::AtLeastOnce);
    local_sub.wait("in", Duration::from_secs(10), |g| {
        g.iter().any(|(t, p, _)| t == "local/in/b" && p == "i1")
    });
    // an `in` topic does not go out, an `out` topic does not come in
    one(&rt, lport, "local/in/x", "no", QoS::AtLeastOnce);
    one(&rt, rport, "remote/out/x", "no", QoS::AtLeastOnce);
    // both, QoS 0, each way
    one(&rt, lport, "both/l", "b1", QoS::AtMostOnce);
    one(&rt, rport, "both/r", "b2", QoS::AtMostOnce);
    remote_sub.wait("both out", Duration::from_secs(10), |g| {
        g.iter().any(|(t, _, _)| t == "both/l")
    });
    local_sub.wait("both in", Duration::from_secs(10), |g| {
        g.iter().any(|(t, _, _)| t == "both/r")
    });
    // a single topic renamed ("" pattern)
    one(&rt, lport, "single/local", "s", QoS::AtMostOnce);
    remote_sub.wait("single", Duration::from_secs(10), |g| {
        g.iter().any(|(t, _, _)| t == "single/remote")
    });
    std::thread::sleep(Duration::from_secs(1));
    // every message crossed once: mosquitto knew the bridge flag and sent nothing back
    assert_eq!(local_sub.count("both/l"), 1, "{:?}", local_sub.got());
    assert_eq!(local_sub.count("both/r"), 1, "{:?}", local_sub.got());
    assert_eq!(remote_sub.count("both/l"), 1, "{:?}", remote_sub.got());
    assert_eq!(remote_sub.count("both/r"), 1, "{:?}", remote_sub.got());
    assert_eq!(remote_sub.count("remote/in/x"), 0);
    assert_eq!(local_sub.count("local/out/x"), 0);
    assert_eq!(remote_sub.count("remote/out/a"), 1);
    assert_eq!(local_sub.count("local/in/b"), 1);
    let log = local.log();
    assert!(log.contains("bridge connected"), "{log}");
    assert!(!log.contains("refused mosquitto's bridge flag"), "{log}");
}

#[test]
fn mosquitto_bridged_to_midge_with_its_own_connection_section() {
    let rt = runtime();
    let mdir = tempfile::tempdir().unwrap();
    let target = midge(mdir.path(), "");
    let mport = target.port;
    // mosquitto's defaults (try_private true): midge accepts the bridge flag (protocol level
    // 0x84) at once; restart_timeout 60 makes a refused first attempt fail wait_state (20 s)
    let q = Mosquitto::start(&format!(
        "log_type all\nconnection to-midge\naddress 127.0.0.1:{mport}\nremote_clientid from-mosquitto\nrestart_timeout 60\ncleansession false\ntopic up/# out 1 \"\" site/\ntopic down/# in 1\ntopic both/# both 1\n"
    ));
    let qport = q.port;
    wait_state(
        &rt,
        qport,
        "$SYS/broker/connection/from-mosquitto/state",
        "1",
    );
    let at_midge = Sub::start(
        &rt,
        mport,
        &["site/#", "both/#"],
        QoS::AtLeastOnce,
        "am",
        false,
    );
    let at_mosq = Sub::start(
        &rt,
        qport,
        &["down/#", "both/#"],
        QoS::AtLeastOnce,
        "aq",
        false,
    );
    // mosquitto subscribes on midge when it connects; give it a moment
    let deadline = Instant::now() + Duration::from_secs(10);
    while at_mosq.count("down/1") == 0 && Instant::now() < deadline {
        one(&rt, mport, "down/1", "d", QoS::AtLeastOnce);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(at_mosq.count("down/1") >= 1, "{:?}", at_mosq.got());
    one(&rt, qport, "up/1", "u", QoS::AtLeastOnce);
    at_midge.wait("up", Duration::from_secs(10), |g| {
        g.iter().any(|(t, p, _)| t == "site/up/1" && p == "u")
    });
    // `both` topics, one message from each side: each crosses once and is not echoed back
    one(&rt, qport, "both/q", "from-mosquitto", QoS::AtLeastOnce);
    one(&rt, mport, "both/m", "from-midge", QoS::AtLeastOnce);
    at_midge.wait("both from mosquitto", Duration::from_secs(10), |g| {
        g.iter().any(|(t, _, _)| t == "both/q")
    });
    at_mosq.wait("both from midge", Duration::from_secs(10), |g| {
        g.iter().any(|(t, _, _)| t == "both/m")
    });
    std::thread::sleep(Duration::from_secs(1));
    for (s, name) in [(&at_midge, "midge"), (&at_mosq, "mosquitto")] {
        assert_eq!(s.count("both/q"), 1, "{name}: {:?}", s.got());
        assert_eq!(s.count("both/m"), 1, "{name}: {:?}", s.got());
    }
    let log = q.log();
    assert!(!log.contains("unacceptable protocol version"), "{log}");
}

#[test]
fn midge_to_midge_both_ways_without_a_loop() {
    let rt = runtime();
    let bdir = tempfile::tempdir().unwrap();
    let b = midge(bdir.path(), "");
    let bport = b.port;
    let adir = tempfile::tempdir().unwrap();
    let a = midge(
        adir.path(),
        &bridge_toml("mm", bport, "protocol = \"5\"", &["t/# both 1"]),
    );
    let aport = a.port;
    wait_state(&rt, aport, "$SYS/broker/connection/bridge-mm/state", "1");
    let sa = Sub::start(&rt, aport, &["t/#"], QoS::AtLeastOnce, "sa", false);
    let sb = Sub::start(&rt, bport, &["t/#"], QoS::AtLeastOnce, "sb", false);
    one(&rt, aport, "t/from-a", "1", QoS::AtLeastOnce);
    one(&rt, bport, "t/from-b", "2", QoS::AtLeastOnce);
    sb.wait("a to b", Duration::from_secs(10), |g| {
        g.iter().any(|(t, _, _)| t == "t/from-a")
    });
    sa.wait("b to a", Duration::from_secs(10), |g| {
        g.iter().any(|(t, _, _)| t == "t/from-b")
    });
    std::thread::sleep(Duration::from_secs(2));
    for (s, name) in [(&sa, "a"), (&sb, "b")] {
        assert_eq!(s.count("t/from-a"), 1, "{name}: {:?}", s.got());
        assert_eq!(s.count("t/from-b"), 1, "{name}: {:?}", s.got());
    }
}

#[test]
fn the_remote_killed_during_qos1_load_loses_nothing_acknowledged() {
    let rt = runtime();
    // the remote: a midge (it acknowledges a QoS 1 message once it is on disk)
    let rdir = tempfile::tempdir().unwrap();
    let mut remote = midge(rdir.path(), "");
    let rport = remote.port;
    let ldir = tempfile::tempdir().unwrap();
    let local = midge(ldir.path(), &bridge_toml("k", rport, "", &["load/# out 1"]));
    let lport = local.port;
    wait_state(&rt, lport, "$SYS/broker/connection/bridge-k/state", "1");
    // a persistent subscriber on the remote
    let sub = Sub::start(&rt, rport, &["load/#"], QoS::AtLeastOnce, "rsub", true);
    let n = 3000;
    let payloads: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    let rt2 = Arc::new(rt);
    let publisher = {
        let rt = rt2.clone();
        std::thread::spawn(move || publish(&rt, lport, "load/x", payloads, QoS::AtLeastOnce))
    };
    // kill the remote in the middle of the load
    let deadline = Instant::now() + Duration::from_secs(20);
    while sub.got().len() < n / 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let before = sub.got().len();
    remote.sigkill();
    let acked = publisher.join().unwrap();
    assert_eq!(acked, n, "the local broker acknowledged every message");
    assert!(before < n, "the kill came after the load ({before} of {n})");
    std::thread::sleep(Duration::from_millis(500));
    // on the same port and data folder
    remote.restart();
    sub.wait("every message", Duration::from_secs(40), |g| {
        let mut seen = std::collections::BTreeSet::new();
        for (_, p, _) in g {
            seen.insert(p.clone());
        }
        seen.len() == n
    });
    println!(
        "killed after {before} of {n} arrived; {} deliveries in all (duplicates allowed: at least once)",
        sub.got().len()
    );
}

#[test]
fn the_local_midge_killed_with_messages_queued_delivers_them_after_restart() {
    let rt = runtime();
    let rport = free_port(); // nothing listens there yet
    let ldir = tempfile::tempdir().unwrap();
    let toml = bridge_toml("q", rport, "", &["queued/# out 1"]);
    let mut local = midge(ldir.path(), &toml);
    let lport = local.port;
    let n = 200;
    let payloads: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(
        publish(&rt, lport, "queued/x", payloads, QoS::AtLeastOnce),
        n
    );
    // give the bridge time to take them (and to try the remote)
    std::thread::sleep(Duration::from_millis(500));
    local.sigkill();
    let dir = tempfile::tempdir().unwrap();
    let _m = Mosquitto::on_port(dir.path(), rport, "");
    let sub = Sub::start(&rt, rport, &["queued/#"], QoS::AtLeastOnce, "qs", false);
    // on the same port and data folder
    local.restart();
    sub.wait("queued messages", Duration::from_secs(30), |g| {
        let seen: std::collections::BTreeSet<&str> = g.iter().map(|(_, p, _)| p.as_str()).collect();
        seen.len() == n
    });
}

#[test]
fn a_tls_bridge_with_a_ca_and_a_client_certificate() {
    let rt = runtime();
    let pki = Pki::new();
    let tls = free_port();
    let m = Mosquitto::start(&format!(
        "listener {tls} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true\n",
        pki.path("ca.crt"),
        pki.path("server.crt"),
        pki.path("server.key")
    ));
    let plain = m.port;
    wait_port(tls, "mosquitto TLS");
    let ldir = tempfile::tempdir().unwrap();
    let extra = format!(
        "cafile = {:?}\ncertfile = {:?}\nkeyfile = {:?}\n",
        pki.path("ca.crt"),
        pki.path("alice.crt"),
        pki.path("alice.key")
    );
    let local = midge(
        ldir.path(),
        &bridge_toml("tls", tls, &extra, &["secure/# both 1"]),
    );
    let lport = local.port;
    wait_state(&rt, lport, "$SYS/broker/connection/bridge-tls/state", "1");
    let sub = Sub::start(&rt, plain, &["secure/#"], QoS::AtLeastOnce, "ts", false);
    one(&rt, lport, "secure/a", "over tls", QoS::AtLeastOnce);
    sub.wait("over TLS", Duration::from_secs(10), |g| {
        g.iter().any(|(t, p, _)| t == "secure/a" && p == "over tls")
    });
    let lsub = Sub::start(&rt, lport, &["secure/#"], QoS::AtLeastOnce, "tl", false);
    one(&rt, plain, "secure/b", "back", QoS::AtLeastOnce);
    lsub.wait("back over TLS", Duration::from_secs(10), |g| {
        g.iter().any(|(t, _, _)| t == "secure/b")
    });
}

#[test]
fn a_bridge_to_a_ca_it_does_not_trust_stays_down() {
    let rt = runtime();
    let pki = Pki::new();
    let tls = free_port();
    let _m = Mosquitto::start(&format!(
        "listener {tls} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
        pki.path("server2.crt"),
        pki.path("server2.key")
    ));
    wait_port(tls, "mosquitto TLS");
    let ldir = tempfile::tempdir().unwrap();
    let local = midge(
        ldir.path(),
        &bridge_toml(
            "untrusted",
            tls,
            &format!("cafile = {:?}\n", pki.path("ca.crt")),
            &["x/# out 1"],
        ),
    );
    let lport = local.port;
    wait_state(
        &rt,
        lport,
        "$SYS/broker/connection/bridge-untrusted/state",
        "0",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !local.log().contains("link to the remote broker down") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = local.log();
    assert!(log.contains("link to the remote broker down"), "{log}");
    assert!(!log.contains("bridge connected"), "{log}");
}

#[test]
fn serve_reads_a_mosquitto_conf_with_a_bridge() {
    let rt = runtime();
    let m = Mosquitto::start("");
    let rport = m.port;
    let ldir = tempfile::tempdir().unwrap();
    // the listener's port is replaced by one from the OS (-p 0)
    let local = Midge::serve()
        .mosquitto_conf(&format!(
            "listener 1883 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\nconnection cloud\naddress 127.0.0.1:{rport}\nremote_clientid conf-bridge\nrestart_timeout 1\ntopic conf/# out 1\n",
            ldir.path().display()
        ))
        .dir(ldir.path())
        .start();
    let lport = local.port;
    wait_state(&rt, lport, "$SYS/broker/connection/conf-bridge/state", "1");
    let sub = Sub::start(&rt, rport, &["conf/#"], QoS::AtLeastOnce, "cs", false);
    one(&rt, lport, "conf/a", "from conf", QoS::AtLeastOnce);
    sub.wait(
        "via the mosquitto.conf bridge",
        Duration::from_secs(10),
        |g| g.iter().any(|(t, _, _)| t == "conf/a"),
    );
}

#[test]
fn the_next_address_is_tried_when_the_first_does_not_answer() {
    let rt = runtime();
    let m = Mosquitto::start("");
    let rport = m.port;
    let closed = free_port(); // nothing listens there
    let ldir = tempfile::tempdir().unwrap();
    let toml = bridge_toml("fo", rport, "", &["fo/# out 1"]).replace(
        &format!("addresses = [\"127.0.0.1:{rport}\"]"),
        &format!("addresses = [\"127.0.0.1:{closed}\", \"127.0.0.1:{rport}\"]"),
    );
    let local = midge(ldir.path(), &toml);
    let lport = local.port;
    wait_state(&rt, lport, "$SYS/broker/connection/bridge-fo/state", "1");
    let sub = Sub::start(&rt, rport, &["fo/#"], QoS::AtLeastOnce, "fs", false);
    one(&rt, lport, "fo/a", "x", QoS::AtLeastOnce);
    sub.wait("via the second address", Duration::from_secs(10), |g| {
        g.iter().any(|(t, _, _)| t == "fo/a")
    });
    let log = local.log();
    assert!(log.contains("failed over to another address"), "{log}");
}
