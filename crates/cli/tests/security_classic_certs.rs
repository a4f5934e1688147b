//! Certificates made exactly by the classic single-CA openssl guide mosquitto users follow
//! (X.509 v1 server and client certificates, RSA keys, a passphrase on the CA key, CN = the
//! server's IP): the listener starts, mosquitto_pub/sub and paho connect with them (with
//! `--insecure` for the CN-only name, as the guide says), the client certificate's CN is the
//! username the ACL sees, and v1 client certificates from another CA, expired ones, or with
//! a forged signature are refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::Midge;
use common::security::*;

/// The guide's CA: `openssl req -new -x509 -days 36500 -extensions v3_ca -keyout ca.key
/// -out ca.crt` (a passphrase and the subject given on the command line instead of
/// prompts).
fn guide_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-x509",
            "-days",
            "36500",
            "-extensions",
            "v3_ca",
            "-passout",
            "pass:guide",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// The guide's server or client certificate: `openssl genrsa -out X.key 2048`, `openssl
/// req -out X.csr -key X.key -new`, `openssl x509 -req -in X.csr -CA ca.crt -CAkey ca.key
/// -CAcreateserial -out X.crt -days 36500` (with `faketime` for a certificate made in the
/// past, valid one day).
fn guide_cert(dir: &Path, name: &str, cn: &str, ca: &str, past: Option<&str>) {
    openssl(dir, &["genrsa", "-out", &format!("{name}.key"), "2048"]);
    openssl(
        dir,
        &[
            "req",
            "-out",
            &format!("{name}.csr"),
            "-key",
            &format!("{name}.key"),
            "-new",
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    let days = if past.is_some() { "1" } else { "36500" };
    let args = [
        "x509",
        "-req",
        "-in",
        &format!("{name}.csr"),
        "-CA",
        &format!("{ca}.crt"),
        "-CAkey",
        &format!("{ca}.key"),
        "-passin",
        "pass:guide",
        "-CAcreateserial",
        "-out",
        &format!("{name}.crt"),
        "-days",
        days,
    ]
    .map(str::to_owned);
    let mut cmd = match past {
        None => Command::new("openssl"),
        Some(when) => {
            let mut c = Command::new("faketime");
            c.arg(when).arg("openssl");
            c
        }
    };
    let out = run_with_timeout(cmd.args(&args).current_dir(dir), Duration::from_secs(15));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn version(dir: &Path, cert: &str) -> String {
    let out = run_with_timeout(
        Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in", cert])
            .current_dir(dir),
        Duration::from_secs(15),
    );
    let t = text(&out.stdout);
    t.lines()
        .find(|l| l.trim_start().starts_with("Version:"))
        .unwrap_or("")
        .trim()
        .to_owned()
}

struct GuidePki {
    dir: tempfile::TempDir,
}

impl GuidePki {
    fn new() -> GuidePki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        guide_ca(d, "ca");
        guide_ca(d, "other-ca");
        guide_cert(d, "server", "127.0.0.1", "ca", None);
        guide_cert(d, "alice", "alice", "ca", None);
        guide_cert(d, "bob", "bob", "ca", None);
        guide_cert(d, "mallory", "alice", "other-ca", None);
        guide_cert(d, "expired", "alice", "ca", Some("2020-01-01 00:00:00"));
        // alice's certificate with one byte of its signature changed
        let der = run_with_timeout(
            Command::new("openssl")
                .args(["x509", "-in", "alice.crt", "-outform", "DER"])
                .current_dir(d),
            Duration::from_secs(15),
        )
        .stdout;
        let mut forged = der.clone();
        let last = forged.len() - 1;
        forged[last] ^= 0x01;
        std::fs::write(d.join("forged.der"), forged).unwrap();
        openssl(
            d,
            &[
                "x509",
                "-inform",
                "DER",
                "-in",
                "forged.der",
                "-out",
                "forged.crt",
            ],
        );
        std::fs::copy(d.join("alice.key"), d.join("forged.key")).unwrap();
        GuidePki { dir }
    }

    fn path(&self, f: &str) -> String {
        self.dir.path().join(f).display().to_string()
    }
}

fn pub_as(pki: &GuidePki, port: &str, who: &str, topic: &str) -> std::process::Output {
    mosquitto(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "--cafile",
            &pki.path("ca.crt"),
            "--cert",
            &pki.path(&format!("{who}.crt")),
            "--key",
            &pki.path(&format!("{who}.key")),
            "--insecure",
            "-t",
            topic,
            "-m",
            "classic",
            "-q",
            "1",
        ],
    )
}

#[test]
fn the_classic_guides_v1_certificates_work_for_server_and_clients() {
    let pki = GuidePki::new();
    let d = pki.dir.path();
    // the premise: the guide's commands make version 1 server and client certificates
    assert_eq!(version(d, "server.crt"), "Version: 1 (0x0)");
    assert_eq!(version(d, "alice.crt"), "Version: 1 (0x0)");
    let acl = pki.dir.path().join("acl");
    std::fs::write(
        &acl,
        "user alice\ntopic readwrite alice/#\nuser bob\ntopic read alice/#\n",
    )
    .unwrap();
    let b = Midge::serve()
        .exact_config(&format!(
            "[[listener]]\nport = {{port0}}\ncertfile = \"{}\"\nkeyfile = \"{}\"\ncafile = \"{}\"\n\
         require_certificate = true\nuse_identity_as_username = true\nallow_anonymous = true\n\
         acl_file = \"{}\"\n",
            pki.path("server.crt"),
            pki.path("server.key"),
            pki.path("ca.crt"),
            acl.display()
        ))
        .start();
    let p = b.port_str(0);
    let sub = Sub::start(&[
        "-h",
        "127.0.0.1",
        "-p",
        &p,
        "--cafile",
        &pki.path("ca.crt"),
        "--cert",
        &pki.path("bob.crt"),
        "--key",
        &pki.path("bob.key"),
        "--insecure",
        "-t",
        "alice/#",
        "-v",
        "-q",
        "1",
    ]);
    let out = pub_as(&pki, &p, "alice", "alice/mosq");
    assert!(out.status.success(), "{}", text(&out.stderr));
    sub.wait_for("alice/mosq classic");
    // the CN is the username: bob may read alice/# but not write it
    let _ = pub_as(&pki, &p, "bob", "alice/from-bob");
    assert!(!sub.sees_within("alice/from-bob", Duration::from_millis(700)));

    // paho with the same files
    let code = format!(
        r#"
import ssl, sys, time, paho.mqtt.client as mqtt
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-classic")
c.tls_set(ca_certs="{ca}", certfile="{crt}", keyfile="{key}")
c.tls_insecure_set(True)
c.connect("127.0.0.1", {p})
c.loop_start()
info = c.publish("alice/paho", "classic", qos=1)
info.wait_for_publish(10)
print("published", info.is_published())
c.loop_stop()
c.disconnect()
"#,
        ca = pki.path("ca.crt"),
        crt = pki.path("alice.crt"),
        key = pki.path("alice.key"),
    );
    let out = python(&code);
    assert!(
        text(&out.stdout).contains("published True"),
        "{} {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    sub.wait_for("alice/paho classic");

    // refused: another CA's v1 certificate with the same CN, an expired one, a forged one
    for who in ["mallory", "expired", "forged"] {
        let out = pub_as(&pki, &p, who, "alice/refused");
        assert!(!out.status.success(), "{who} was accepted");
    }
    assert!(!sub.sees_within("alice/refused", Duration::from_millis(500)));
    let log = b.log();
    assert!(log.matches("TLS handshake failed").count() >= 3, "{log}");
}

#[test]
fn a_key_of_another_certificate_is_named_as_such() {
    let pki = GuidePki::new();
    let mut b = Midge::serve()
        .exact_config(&format!(
            "[[listener]]\nport = {{port0}}\ncertfile = \"{}\"\nkeyfile = \"{}\"\n",
            pki.path("server.crt"),
            pki.path("alice.key"),
        ))
        .spawn();
    let (code, log) = b.wait_exit();
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("does not hold the private key of the certificate"),
        "{log}"
    );
    assert!(!log.contains("UnsupportedCertVersion"), "{log}");
}
