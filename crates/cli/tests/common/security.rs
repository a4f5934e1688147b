//! Helpers of the `security_*` tests: a PKI made with the `openssl` command, raw
//! CONNECT/CONNACK bytes with credentials, and third-party clients with bounded waits.
// (lints as allowed in `common`)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const T: Duration = Duration::from_secs(15);

/// Run a command with a time limit (killed when it runs over).
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn openssl(dir: &Path, args: &[&str]) {
    let out = run_with_timeout(Command::new("openssl").args(args).current_dir(dir), T);
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// CA, server certificate (SAN 127.0.0.1 and localhost), client certificates (alice and
/// bob by the CA, mallory by another CA, an expired one), all PEM files in `dir`.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for ca in ["ca", "other-ca"] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "30",
                    "-subj",
                    &format!("/CN=midge test {ca}"),
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.crt"),
                ],
            );
        }
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        let pki = Pki { dir };
        pki.sign("server", "/CN=localhost", "ca", "server.ext", None);
        pki.sign("server2", "/CN=localhost", "other-ca", "server.ext", None);
        pki.sign("alice", "/CN=alice", "ca", "client.ext", None);
        pki.sign("bob", "/CN=bob", "ca", "client.ext", None);
        pki.sign("mallory", "/CN=mallory", "other-ca", "client.ext", None);
        pki.sign(
            "expired",
            "/CN=alice",
            "ca",
            "client.ext",
            Some("2020-01-01 00:00:00"),
        );
        pki
    }

    /// Key and certificate `name`, signed by `ca`; `past` signs it at that date (faketime)
    /// with one day of validity, so it is long expired.
    pub fn sign(&self, name: &str, subj: &str, ca: &str, ext: &str, past: Option<&str>) {
        let d = self.dir.path();
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                subj,
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        let days = if past.is_some() { "1" } else { "30" };
        let args = [
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            days,
            "-extfile",
            ext,
            "-out",
            &format!("{name}.crt"),
        ]
        .map(str::to_owned);
        match past {
            None => openssl(d, &args.each_ref().map(String::as_str)),
            Some(when) => {
                let out = run_with_timeout(
                    Command::new("faketime")
                        .arg(when)
                        .arg("openssl")
                        .args(&args)
                        .current_dir(d),
                    T,
                );
                assert!(
                    out.status.success(),
                    "faketime openssl (install faketime: scripts/test-deps.sh): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }
}

/// Raw CONNECT for MQTT 3.1.1 (`v5 = false`) or 5.0.
pub fn connect_packet(
    v5: bool,
    client_id: &str,
    user: Option<&str>,
    pass: Option<&str>,
) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', if v5 { 5 } else { 4 }];
    let mut flags = 0x02;
    if user.is_some() {
        flags |= 0x80;
    }
    if pass.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&[0, 30]);
    if v5 {
        body.push(0);
    }
    for s in [Some(client_id), user, pass].into_iter().flatten() {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s.as_bytes());
    }
    let mut p = vec![0x10, body.len() as u8];
    p.extend(body);
    p
}

/// Connect over plain TCP and return the CONNACK's reason/return code.
pub fn connack_code(port: u16, v5: bool, user: Option<&str>, pass: Option<&str>) -> u8 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(&connect_packet(v5, "raw-client", user, pass))
        .unwrap();
    let mut head = [0u8; 2];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x20, "not a CONNACK");
    let mut rest = vec![0u8; head[1] as usize];
    s.read_exact(&mut rest).unwrap();
    rest[1]
}

pub fn mosquitto(bin: &str, args: &[&str]) -> Output {
    run_with_timeout(Command::new(bin).args(args), T)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A background `mosquitto_sub` (line-buffered); `wait_ready` waits until it subscribed.
pub struct Sub {
    child: Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sub {
    /// `mosquitto_sub -d ...` whose output goes to a file; returns once SUBACK is seen.
    pub fn start(args: &[&str]) -> Sub {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let child = Command::new("stdbuf")
            .arg("-oL")
            .arg("mosquitto_sub")
            .arg("-d")
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = Sub {
            child,
            out,
            _dir: dir,
        };
        s.wait_for("received SUBACK");
        s
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn wait_for(&self, needle: &str) {
        let start = Instant::now();
        while !self.output().contains(needle) {
            assert!(start.elapsed() < T, "no {needle:?} in:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether `needle` shows up within `d` (for "is NOT delivered" checks).
    pub fn sees_within(&self, needle: &str, d: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < d {
            if self.output().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a Python snippet (paho-mqtt); its stdout.
pub fn python(code: &str) -> Output {
    run_with_timeout(Command::new("python3").arg("-c").arg(code), T)
}

/// `curl` against the HTTP listener: (exit code, body).
pub fn curl(args: &[&str]) -> (Option<i32>, String) {
    let out = run_with_timeout(
        Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .args(args),
        Duration::from_secs(10),
    );
    (out.status.code(), text(&out.stdout))
}

/// `dir/passwd` written by mosquitto_passwd with these users; its path.
pub fn mosquitto_passwd(dir: &Path, users: &[(&str, &str)]) -> String {
    let file = dir.join("passwd");
    for (i, (u, p)) in users.iter().enumerate() {
        let mut args = vec!["-b"];
        if i == 0 {
            args.push("-c");
        }
        let f = file.display().to_string();
        args.extend([f.as_str(), u, p]);
        let out = mosquitto("mosquitto_passwd", &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    file.display().to_string()
}
