//! The server's own view of authentication: failed logins are counted, and a listener's
//! ACL applies only to clients that came through that listener.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use midge_server::{ListenerConfig, Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `mosquitto_passwd -b -c f alice s3cret`
const PASSWD: &str = "alice:$7$101$58x6XwkzzM9euG4E$2qy2ITgVoSgNqkP8SBMDNQgEkQbE+BzQzN+ozlexcli1P/dIaFS0U0xyQ4Yff/9NletFQuDKsFEA2+PtdZzOUw==\n";

fn file(name: &str, text: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("midge-server-{}-{name}", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

fn connect(user: &str, pass: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 30, 0, 1, b'c'];
    for s in [user, pass] {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s.as_bytes());
    }
    let mut p = vec![0x10, body.len() as u8];
    p.extend(body);
    p
}

async fn exchange(addr: SocketAddr, packets: &[u8], want: usize) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(packets).await.unwrap();
    let mut got = vec![0u8; want];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    got
}

#[tokio::test]
async fn failed_logins_are_counted_and_acls_are_per_listener() {
    let pw = file("passwd", PASSWD);
    let acl = file("acl", "user alice\ntopic read allowed/#\n");
    let mut strict = ListenerConfig::mqtt(SocketAddr::from(([127, 0, 0, 1], 0)));
    strict.auth.allow_anonymous = false;
    strict.auth.password_file = Some(pw.clone());
    strict.auth.acl_file = Some(acl.clone());
    let mut open = strict.clone();
    open.auth.acl_file = None;
    let config = ServerConfig {
        listeners: vec![strict, open],
        sys_interval: Duration::ZERO,
        ..ServerConfig::default()
    };
    let server = Server::start(config).await.unwrap();
    let (a, b) = (server.local_addrs()[0], server.local_addrs()[1]);

    assert_eq!(
        exchange(a, &connect("alice", "wrong"), 4).await,
        [0x20, 2, 0, 4]
    );
    assert_eq!(
        exchange(b, &connect("mallory", "x"), 4).await,
        [0x20, 2, 0, 4]
    );
    assert_eq!(server.failed_logins(), 2);

    // SUBSCRIBE to secret/# : refused (0x80) through the listener with the ACL, granted
    // through the other one
    // remaining length: 2 (packet id) + 2 + 8 (filter) + 1 (options) = 13
    let sub = [
        0x82, 13, 0, 1, 0, 8, b's', b'e', b'c', b'r', b'e', b't', b'/', b'#', 0,
    ];
    let mut fixed = connect("alice", "s3cret");
    fixed.extend_from_slice(&sub);
    assert_eq!(
        exchange(a, &fixed, 9).await,
        [0x20, 2, 0, 0, 0x90, 3, 0, 1, 0x80]
    );
    assert_eq!(
        exchange(b, &fixed, 9).await,
        [0x20, 2, 0, 0, 0x90, 3, 0, 1, 0]
    );
    assert_eq!(server.failed_logins(), 2);
    server.shutdown().await;
    let _ = std::fs::remove_file(pw);
    let _ = std::fs::remove_file(acl);
}
