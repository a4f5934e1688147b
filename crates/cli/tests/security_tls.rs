//! TLS listeners with real certificates made by `openssl`: mosquitto_pub/sub, paho and
//! `midge pub` connect with the CA; a wrong CA, a missing, foreign or expired client
//! certificate is refused; the certificate's CN becomes the username for the ACL; bad key
//! or certificate files stop the start with the file named.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::time::Duration;

use common::security::*;
use common::{MIDGE, Midge};

fn tls_listener(pki: &Pki, extra: &str) -> String {
    format!(
        "[[listener]]\nport = {{port0}}\ncertfile = \"{}\"\nkeyfile = \"{}\"\n{extra}\n",
        pki.path("server.crt"),
        pki.path("server.key")
    )
}

#[test]
fn mosquitto_paho_and_midge_clients_exchange_messages_over_tls_with_the_ca() {
    let pki = Pki::new();
    let b = Midge::serve()
        .exact_config(&tls_listener(&pki, "allow_anonymous = true"))
        .start();
    let ca = pki.path("ca.crt");
    let p = b.port_str(0);
    let sub = Sub::start(&[
        "-h",
        "127.0.0.1",
        "-p",
        &p,
        "--cafile",
        &ca,
        "-t",
        "tls/#",
        "-v",
    ]);
    let out = mosquitto(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &p,
            "--cafile",
            &ca,
            "-t",
            "tls/mosq",
            "-m",
            "hello",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    sub.wait_for("tls/mosq hello");

    let code = format!(
        r#"
import paho.mqtt.client as mqtt, sys
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-tls")
c.tls_set(ca_certs={ca:?})
c.connect("127.0.0.1", {p}, 30)
c.loop_start()
info = c.publish("tls/paho", "from paho", qos=1)
info.wait_for_publish(10)
c.disconnect(); c.loop_stop()
print("ok" if info.is_published() else "not published")
"#
    );
    let out = python(&code);
    assert_eq!(text(&out.stdout).trim(), "ok", "{}", text(&out.stderr));
    sub.wait_for("tls/paho from paho");

    let out = run_with_timeout(
        std::process::Command::new(MIDGE).args([
            "pub",
            "-h",
            "localhost",
            "-p",
            &p,
            "--cafile",
            &ca,
            "-t",
            "tls/midge",
            "-m",
            "m",
        ]),
        T,
    );
    assert!(out.status.success(), "midge pub: {}", text(&out.stderr));
    sub.wait_for("tls/midge m");
}

#[test]
fn a_client_trusting_another_ca_refuses_the_server() {
    let pki = Pki::new();
    let b = Midge::serve()
        .exact_config(&tls_listener(&pki, "allow_anonymous = true"))
        .start();
    let out = mosquitto(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &b.port_str(0),
            "--cafile",
            &pki.path("other-ca.crt"),
            "-t",
            "x",
            "-m",
            "y",
        ],
    );
    assert!(!out.status.success());
    assert!(b.log().contains("TLS handshake failed"), "{}", b.log());
}

#[test]
fn tls_1_2_and_1_3_are_accepted_and_tls_1_1_is_refused() {
    let pki = Pki::new();
    let b = Midge::serve()
        .exact_config(&tls_listener(&pki, "allow_anonymous = true"))
        .start();
    let connect = format!("127.0.0.1:{}", b.port_str(0));
    let ca = pki.path("ca.crt");
    for (flag, ok) in [("-tls1_2", true), ("-tls1_3", true), ("-tls1_1", false)] {
        let mut cmd = std::process::Command::new("openssl");
        cmd.args(["s_client", "-connect", &connect, "-CAfile", &ca, flag]);
        if flag == "-tls1_1" {
            // let the client offer TLS 1.1 at all (OpenSSL 3 refuses it by default)
            cmd.args(["-cipher", "DEFAULT@SECLEVEL=0"]);
        }
        let out = run_with_timeout(&mut cmd, T);
        let all = text(&out.stdout) + &text(&out.stderr);
        let established = all.contains("New, TLSv1") && all.contains("Verify return code: 0 (ok)");
        assert_eq!(established, ok, "openssl s_client {flag}:\n{all}");
    }
}

fn mtls(pki: &Pki, extra: &str) -> Midge {
    Midge::serve()
        .exact_config(&tls_listener(
            pki,
            &format!(
                "cafile = \"{}\"\nrequire_certificate = true\nallow_anonymous = true\n{extra}",
                pki.path("ca.crt")
            ),
        ))
        .start()
}

fn pub_with_cert(pki: &Pki, port: &str, cert: Option<&str>, topic: &str) -> std::process::Output {
    let ca = pki.path("ca.crt");
    let mut args = vec![
        "-h",
        "127.0.0.1",
        "-p",
        port,
        "--cafile",
        &ca,
        "-t",
        topic,
        "-m",
        "m",
        "-q",
        "1",
    ];
    let (c, k);
    if let Some(name) = cert {
        c = pki.path(&format!("{name}.crt"));
        k = pki.path(&format!("{name}.key"));
        args.extend(["--cert", &c, "--key", &k]);
    }
    mosquitto("mosquitto_pub", &args)
}

#[test]
fn require_certificate_refuses_missing_foreign_and_expired_client_certificates() {
    let pki = Pki::new();
    let b = mtls(&pki, "");
    let p = b.port_str(0);
    assert!(pub_with_cert(&pki, &p, Some("alice"), "t").status.success());
    for cert in [None, Some("mallory"), Some("expired")] {
        let out = pub_with_cert(&pki, &p, cert, "t");
        assert!(!out.status.success(), "{cert:?} was accepted");
    }
    let log = b.log();
    assert!(log.matches("TLS handshake failed").count() >= 3, "{log}");
}

#[test]
fn certificate_identity_is_the_username_the_acl_sees() {
    let pki = Pki::new();
    let acl = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        acl.path(),
        "user alice\ntopic readwrite alice/#\nuser bob\ntopic read alice/#\n",
    )
    .unwrap();
    let b = mtls(
        &pki,
        &format!(
            "use_identity_as_username = true\nacl_file = \"{}\"",
            acl.path().display()
        ),
    );
    let p = b.port_str(0);
    let ca = pki.path("ca.crt");
    let (bc, bk) = (pki.path("bob.crt"), pki.path("bob.key"));
    let sub = Sub::start(&[
        "-h",
        "127.0.0.1",
        "-p",
        &p,
        "--cafile",
        &ca,
        "--cert",
        &bc,
        "--key",
        &bk,
        "-t",
        "alice/#",
        "-v",
        "-q",
        "1",
    ]);
    // alice may write alice/#; bob may only read it
    assert!(
        pub_with_cert(&pki, &p, Some("alice"), "alice/one")
            .status
            .success()
    );
    sub.wait_for("alice/one m");
    let _ = pub_with_cert(&pki, &p, Some("bob"), "alice/two");
    assert!(!sub.sees_within("alice/two", Duration::from_millis(700)));
}

#[test]
fn missing_unreadable_or_mismatched_key_and_certificate_files_stop_the_start() {
    let pki = Pki::new();
    let cases = [
        (pki.path("server.crt"), pki.path("nope.key"), "nope.key"),
        (pki.path("nope.crt"), pki.path("server.key"), "nope.crt"),
        (
            pki.path("server.crt"),
            pki.path("alice.key"),
            "does not hold the private key",
        ),
        (
            pki.path("server.key"),
            pki.path("server.key"),
            "no PEM certificate",
        ),
    ];
    for (cert, key, needle) in cases {
        let mut b = Midge::serve()
            .exact_config(&format!(
                "[[listener]]\nport = {{port0}}\ncertfile = \"{cert}\"\nkeyfile = \"{key}\"\n"
            ))
            .spawn();
        let (code, log) = b.wait_exit();
        assert_eq!(code, Some(1), "{log}");
        assert!(log.contains(needle), "missing {needle:?} in:\n{log}");
    }
}

/// Put `name`'s certificate and key at the paths a config names (as a renewal would).
fn install_cert(pki: &Pki, name: &str, crt: &std::path::Path, key: &std::path::Path) {
    std::fs::copy(pki.path(&format!("{name}.crt")), crt).unwrap();
    std::fs::copy(pki.path(&format!("{name}.key")), key).unwrap();
}

#[test]
fn sighup_reloads_certificates_for_new_handshakes_and_keeps_existing_connections() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = (dir.path().join("live.crt"), dir.path().join("live.key"));
    install_cert(&pki, "server", &crt, &key);
    let b = Midge::serve()
        .exact_config(&format!(
            "[security]\nallow_anonymous = true\n[[listener]]\nport = {{port0}}\n\
         [[listener]]\nport = {{port1}}\ncertfile = \"{}\"\nkeyfile = \"{}\"\n",
            crt.display(),
            key.display()
        ))
        .start();
    let (plain, tls) = (b.port_str(0), b.port_str(1));
    let (ca, other) = (pki.path("ca.crt"), pki.path("other-ca.crt"));
    let sub = Sub::start(&[
        "-h",
        "127.0.0.1",
        "-p",
        &tls,
        "--cafile",
        &ca,
        "-t",
        "r/#",
        "-v",
    ]);
    let tls_pub = |cafile: &str, msg: &str| {
        mosquitto(
            "mosquitto_pub",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &tls,
                "--cafile",
                cafile,
                "-t",
                "r/x",
                "-m",
                msg,
            ],
        )
        .status
        .success()
    };
    assert!(tls_pub(&ca, "before"));
    sub.wait_for("r/x before");

    // renewal: a certificate from another CA; new handshakes use it, the old one goes on
    install_cert(&pki, "server2", &crt, &key);
    b.sighup();
    assert!(!tls_pub(&ca, "old CA"));
    assert!(tls_pub(&other, "after"));
    sub.wait_for("r/x after");

    // a broken certificate is reported; the last good one stays in force
    std::fs::write(&crt, "not a certificate").unwrap();
    b.sighup();
    let log = b.log();
    assert!(
        log.contains("no PEM certificate") && log.contains("live.crt"),
        "{log}"
    );
    assert!(tls_pub(&other, "still"));
    sub.wait_for("r/x still");
    let out = mosquitto("mosquitto_pub", &["-p", &plain, "-t", "r/y", "-m", "plain"]);
    assert!(out.status.success());
    sub.wait_for("r/y plain");
}

#[test]
fn a_certificate_without_cn_gives_its_first_san_as_username() {
    let pki = Pki::new();
    std::fs::write(
        pki.dir.path().join("san.ext"),
        "subjectAltName=DNS:gateway-9.example,DNS:other.example\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    pki.sign("gateway", "/O=midge tests", "ca", "san.ext", None);
    let acl = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(acl.path(), "user gateway-9.example\ntopic readwrite gw/#\n").unwrap();
    let b = mtls(
        &pki,
        &format!(
            "use_identity_as_username = true\nacl_file = \"{}\"",
            acl.path().display()
        ),
    );
    let p = b.port_str(0);
    let ca = pki.path("ca.crt");
    let (gc, gk) = (pki.path("gateway.crt"), pki.path("gateway.key"));
    let sub = Sub::start(&[
        "-h",
        "127.0.0.1",
        "-p",
        &p,
        "--cafile",
        &ca,
        "--cert",
        &gc,
        "--key",
        &gk,
        "-t",
        "gw/#",
        "-v",
    ]);
    assert!(
        pub_with_cert(&pki, &p, Some("gateway"), "gw/up")
            .status
            .success()
    );
    sub.wait_for("gw/up m");
}

/// The dashboard and API over HTTPS with the broker's certificate files: curl trusting the
/// CA gets the page and the API, plain HTTP on that port gets no answer, one trusting
/// another CA refuses the server; with `cafile` + `require_certificate` a browser without a
/// client certificate is refused and one with a certificate from the CA is served.
#[test]
fn the_dashboard_and_api_are_served_over_https_with_optional_client_certificates() {
    let pki = Pki::new();
    let http_tls = |extra: &str| {
        format!(
            "[[listener]]\nport = {{port0}}\nallow_anonymous = true\n\n[http]\nport = {{port1}}\ncertfile = \"{}\"\nkeyfile = \"{}\"\n{extra}\n",
            pki.path("server.crt"),
            pki.path("server.key")
        )
    };
    let b = Midge::serve().exact_config(&http_tls("")).start();
    let ca = pki.path("ca.crt");
    let base = format!("https://127.0.0.1:{}", b.port_str(1));
    let (code, body) = curl(&["--cacert", &ca, &format!("{base}/api/v1/health")]);
    assert_eq!((code, body.trim()), (Some(0), r#"{"status":"ok"}"#));
    let (code, page) = curl(&["--cacert", &ca, &format!("{base}/")]);
    assert_eq!(code, Some(0));
    assert!(page.contains("<html") && page.contains("midge"), "{page}");
    assert!(b.log().contains("on https://127.0.0.1:"), "{}", b.log());
    // plain HTTP to the HTTPS port: no HTTP answer
    let (code, body) = curl(&[&format!("http://127.0.0.1:{}/api/v1/health", b.port_str(1))]);
    assert_ne!(code, Some(0), "plain HTTP answered: {body}");
    // a client trusting another CA refuses the server
    let (code, _) = curl(&[
        "--cacert",
        &pki.path("other-ca.crt"),
        &format!("{base}/api/v1/health"),
    ]);
    assert_ne!(code, Some(0));
    drop(b);

    let b = Midge::serve()
        .exact_config(&http_tls(&format!(
            "cafile = \"{ca}\"\nrequire_certificate = true"
        )))
        .start();
    let base = format!("https://127.0.0.1:{}", b.port_str(1));
    let health = format!("{base}/api/v1/health");
    let (code, _) = curl(&["--cacert", &ca, &health]);
    assert_ne!(code, Some(0), "served without a client certificate");
    let (cert, key) = (pki.path("alice.crt"), pki.path("alice.key"));
    let (code, body) = curl(&["--cacert", &ca, "--cert", &cert, "--key", &key, &health]);
    assert_eq!((code, body.trim()), (Some(0), r#"{"status":"ok"}"#));
    let (cert, key) = (pki.path("mallory.crt"), pki.path("mallory.key"));
    let (code, _) = curl(&["--cacert", &ca, "--cert", &cert, "--key", &key, &health]);
    assert_ne!(code, Some(0), "served with a certificate from another CA");
}

/// A bad HTTPS setup stops the start with the problem named, like a bad TLS listener.
#[test]
fn https_without_its_key_or_with_a_missing_certificate_stops_the_start() {
    let mut b = Midge::serve().exact_config(
        "[[listener]]\nport = {port0}\nallow_anonymous = true\n[http]\nport = {port1}\ncertfile = \"/nonexistent/server.crt\"\n",
    ).spawn();
    let (code, log) = b.wait_exit();
    assert_eq!(code, Some(2), "a configuration problem: {log}");
    assert!(
        log.contains("[http] keyfile: missing: certfile needs keyfile"),
        "{log}"
    );
    let mut b = Midge::serve().exact_config(
        "[[listener]]\nport = {port0}\nallow_anonymous = true\n[http]\nport = {port1}\ncertfile = \"/nonexistent/server.crt\"\nkeyfile = \"/nonexistent/server.key\"\n",
    ).spawn();
    let (code, log) = b.wait_exit();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("/nonexistent/server.crt"), "{log}");
}

/// SIGHUP re-reads the HTTPS certificate like the broker's: new handshakes use a renewed
/// certificate, and a broken file is reported while the last good one stays in force.
#[test]
fn sighup_reloads_the_https_certificate() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = (dir.path().join("web.crt"), dir.path().join("web.key"));
    install_cert(&pki, "server", &crt, &key);
    let b = Midge::serve()
        .exact_config(&format!(
            "[[listener]]\nport = {{port0}}\nallow_anonymous = true\n[http]\nport = {{port1}}\n\
         certfile = \"{}\"\nkeyfile = \"{}\"\n",
            crt.display(),
            key.display()
        ))
        .start();
    let health = format!("https://127.0.0.1:{}/api/v1/health", b.port_str(1));
    let (ca, other) = (pki.path("ca.crt"), pki.path("other-ca.crt"));
    assert_eq!(curl(&["--cacert", &ca, &health]).0, Some(0));

    install_cert(&pki, "server2", &crt, &key);
    b.sighup();
    assert_ne!(
        curl(&["--cacert", &ca, &health]).0,
        Some(0),
        "old certificate still served"
    );
    assert_eq!(curl(&["--cacert", &other, &health]).0, Some(0));

    std::fs::write(&crt, "not a certificate").unwrap();
    b.sighup();
    let log = b.log();
    assert!(log.contains("HTTP TLS") && log.contains("web.crt"), "{log}");
    assert_eq!(
        curl(&["--cacert", &other, &health]).0,
        Some(0),
        "last good one dropped"
    );
}
