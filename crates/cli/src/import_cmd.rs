//! `midge import mosquitto.db`: carry mosquitto 2.0's persistence file (format versions 5
//! and 6) over into midge's store: retained messages, persistent sessions with their
//! subscriptions and queued messages. What cannot be carried over is listed.
//!
//! The file: a 15-byte magic, a u32 CRC (unused, 0), a u32 format version, then chunks of
//! `u32 type, u32 length, body` (network order). Fixed-size fields of the bodies are in
//! network order except the 64-bit store ids, `last_db_id` and expiry times, which
//! mosquitto writes in the host's order (little-endian on the machines it runs on).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use midge_codec::bytestring::ByteString;
use midge_codec::{
    Protocol, PublishProperties, QoS, RetainHandling, SubscriptionOptions, TopicName,
};
use midge_core::{DeliveryState, Message, SessionHeader, StoreOp};

/// Arguments of `midge import`.
#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// mosquitto's persistence file (mosquitto.db, from mosquitto 2.0).
    file: PathBuf,
    /// midge's data folder to write the store into.
    #[arg(long = "data-dir", default_value = "./data")]
    data_dir: PathBuf,
    /// Import even if the data folder already holds a store (its content is kept; what is
    /// imported is added to it, replacing sessions and retained topics of the same name).
    #[arg(long)]
    force: bool,
}

const MAGIC: [u8; 15] = *b"\x00\xB5\x00mosquitto db";
const CHUNK_CFG: u32 = 1;
const CHUNK_MSG_STORE: u32 = 2;
const CHUNK_CLIENT_MSG: u32 = 3;
const CHUNK_RETAIN: u32 = 4;
const CHUNK_SUB: u32 = 5;
const CHUNK_CLIENT: u32 = 6;

/// A stored message body (`DB_CHUNK_MSG_STORE`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MsgStore {
    pub(crate) store_id: u64,
    /// Unix seconds, 0 = never.
    pub(crate) expiry_time: i64,
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) qos: u8,
    pub(crate) retain: bool,
    /// Bytes of MQTT 5 properties (not carried over).
    pub(crate) properties_len: usize,
}

/// A persistent client (`DB_CHUNK_CLIENT`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Client {
    pub(crate) id: String,
    pub(crate) username: Option<String>,
    pub(crate) expiry_interval: u32,
}

/// A message of a client's queue or in-flight window (`DB_CHUNK_CLIENT_MSG`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClientMsg {
    pub(crate) client_id: String,
    pub(crate) store_id: u64,
    pub(crate) qos: u8,
    pub(crate) state: u8,
    pub(crate) retain: bool,
    /// 0 = inbound, 1 = outbound.
    pub(crate) direction: u8,
}

/// A subscription (`DB_CHUNK_SUB`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sub {
    pub(crate) client_id: String,
    pub(crate) filter: String,
    pub(crate) qos: u8,
    pub(crate) options: u8,
    pub(crate) identifier: u32,
}

/// Everything read from a mosquitto.db.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct MosquittoDb {
    pub(crate) version: u32,
    pub(crate) messages: Vec<MsgStore>,
    pub(crate) clients: Vec<Client>,
    pub(crate) client_msgs: Vec<ClientMsg>,
    pub(crate) subs: Vec<Sub>,
    pub(crate) retained: Vec<u64>,
    pub(crate) unknown_chunks: usize,
}

/// A bounds-checked reader over a byte slice.
struct Cursor<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> anyhow::Result<&'a [u8]> {
        if n > self.b.len() {
            bail!(
                "{}: {} bytes needed, {} left (file truncated or damaged)",
                self.what,
                n,
                self.b.len()
            );
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn arr<const N: usize>(&mut self) -> anyhow::Result<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self) -> anyhow::Result<u8> {
        Ok(u8::from_be_bytes(self.arr()?))
    }
    fn u16(&mut self) -> anyhow::Result<u16> {
        Ok(u16::from_be_bytes(self.arr()?))
    }
    fn u32(&mut self) -> anyhow::Result<u32> {
        Ok(u32::from_be_bytes(self.arr()?))
    }
    /// A 64-bit field in host (little-endian) order.
    fn u64_host(&mut self) -> anyhow::Result<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn string(&mut self, n: usize) -> anyhow::Result<String> {
        let what = self.what;
        String::from_utf8(self.take(n)?.to_vec()).with_context(|| format!("{what}: not UTF-8"))
    }
}

/// Parse a mosquitto persistence file (format 5 or 6). A damaged file is an error.
pub(crate) fn parse(bytes: &[u8]) -> anyhow::Result<MosquittoDb> {
    let mut c = Cursor {
        b: bytes,
        what: "header",
    };
    if c.take(MAGIC.len()).ok() != Some(&MAGIC[..]) {
        bail!("not a mosquitto persistence file (wrong magic)");
    }
    let _crc = c.u32()?;
    let version = c.u32()?;
    if version != 5 && version != 6 {
        bail!(
            "mosquitto.db format version {version}: midge imports versions 5 and 6 (mosquitto 1.6 and 2.0)"
        );
    }
    let mut db = MosquittoDb {
        version,
        ..MosquittoDb::default()
    };
    while !c.b.is_empty() {
        c.what = "chunk header";
        let ty = c.u32()?;
        let len = c.u32()? as usize;
        c.what = "chunk";
        let body = c.take(len)?;
        match ty {
            CHUNK_CFG => {}
            CHUNK_MSG_STORE => db.messages.push(msg_store(body)?),
            CHUNK_CLIENT_MSG => db.client_msgs.push(client_msg(body)?),
            CHUNK_RETAIN => db.retained.push(
                Cursor {
                    b: body,
                    what: "retain chunk",
                }
                .u64_host()?,
            ),
            CHUNK_SUB => db.subs.push(sub(body)?),
            CHUNK_CLIENT => db.clients.push(client(body, version)?),
            _ => db.unknown_chunks += 1,
        }
    }
    Ok(db)
}

fn msg_store(body: &[u8]) -> anyhow::Result<MsgStore> {
    let mut c = Cursor {
        b: body,
        what: "message chunk",
    };
    let store_id = c.u64_host()?;
    let expiry_time = c.u64_host()? as i64;
    let payload_len = c.u32()? as usize;
    let _source_mid = c.u16()?;
    let source_id_len = c.u16()? as usize;
    let source_username_len = c.u16()? as usize;
    let topic_len = c.u16()? as usize;
    let _source_port = c.u16()?;
    let qos = c.u8()?;
    let retain = c.u8()? != 0;
    c.take(source_id_len)?;
    c.take(source_username_len)?;
    let topic = c.string(topic_len)?;
    let payload = c.take(payload_len)?.to_vec();
    Ok(MsgStore {
        store_id,
        expiry_time,
        topic,
        payload,
        qos,
        retain,
        properties_len: c.b.len(),
    })
}

fn client_msg(body: &[u8]) -> anyhow::Result<ClientMsg> {
    let mut c = Cursor {
        b: body,
        what: "client message chunk",
    };
    let store_id = c.u64_host()?;
    let _mid = c.u16()?;
    let id_len = c.u16()? as usize;
    let qos = c.u8()?;
    let state = c.u8()?;
    let retain_dup = c.u8()?;
    let direction = c.u8()?;
    let client_id = c.string(id_len)?;
    Ok(ClientMsg {
        client_id,
        store_id,
        qos,
        state,
        retain: retain_dup & 0xf0 != 0,
        direction,
    })
}

fn sub(body: &[u8]) -> anyhow::Result<Sub> {
    let mut c = Cursor {
        b: body,
        what: "subscription chunk",
    };
    let identifier = c.u32()?;
    let id_len = c.u16()? as usize;
    let topic_len = c.u16()? as usize;
    let qos = c.u8()?;
    let options = c.u8()?;
    c.take(2)?;
    let client_id = c.string(id_len)?;
    let filter = c.string(topic_len)?;
    Ok(Sub {
        client_id,
        filter,
        qos,
        options,
        identifier,
    })
}

fn client(body: &[u8], version: u32) -> anyhow::Result<Client> {
    let mut c = Cursor {
        b: body,
        what: "client chunk",
    };
    let _session_expiry_time = c.u64_host()?;
    let expiry_interval = c.u32()?;
    let _last_mid = c.u16()?;
    let id_len = c.u16()? as usize;
    let mut username_len = 0;
    if version >= 6 {
        let _listener_port = c.u16()?;
        username_len = c.u16()? as usize;
        c.take(4)?;
    }
    let id = c.string(id_len)?;
    let username = if username_len > 0 {
        Some(c.string(username_len)?)
    } else {
        None
    };
    Ok(Client {
        id,
        username,
        expiry_interval,
    })
}

// mosquitto's `enum mosquitto_msg_state`
const MS_PUBLISH_QOS0: u8 = 1;
const MS_PUBLISH_QOS1: u8 = 2;
const MS_WAIT_FOR_PUBACK: u8 = 3;
const MS_PUBLISH_QOS2: u8 = 4;
const MS_WAIT_FOR_PUBREC: u8 = 5;
const MS_QUEUED: u8 = 11;

/// The result of converting: the ops to write and what was carried over or not.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) ops: Vec<StoreOp>,
    pub(crate) sessions: usize,
    pub(crate) subscriptions: usize,
    pub(crate) queued: usize,
    pub(crate) retained: usize,
    pub(crate) skipped: Vec<String>,
}

fn qos_of(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Turn what was read into midge store operations. Deliveries get sequence numbers from
/// `first_seq` and message bodies ids from `first_msg_id` on (past what a store holds
/// already).
pub(crate) fn plan(
    db: &MosquittoDb,
    now: Instant,
    wall: SystemTime,
    first_seq: u64,
    first_msg_id: u64,
) -> Plan {
    let mut p = Plan::default();
    let now_s = wall
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut bodies: BTreeMap<u64, (&MsgStore, Option<Arc<Message>>)> = BTreeMap::new();
    let mut props_dropped = 0usize;
    let mut expired = 0usize;
    for m in &db.messages {
        let msg = match TopicName::new(m.topic.as_str()) {
            Ok(topic) => {
                let expires_at = if m.expiry_time == 0 {
                    Some(None)
                } else if m.expiry_time <= now_s {
                    None
                } else {
                    // a time too far away to represent: never
                    Some(now.checked_add(Duration::from_secs(
                        m.expiry_time.saturating_sub(now_s).unsigned_abs(),
                    )))
                };
                match expires_at {
                    None => {
                        expired += 1;
                        None
                    }
                    Some(expires_at) => {
                        if m.properties_len > 0 {
                            props_dropped += 1;
                        }
                        Some(Arc::new(Message {
                            topic,
                            payload: Bytes::from(m.payload.clone()),
                            qos: qos_of(m.qos),
                            retain: m.retain,
                            properties: PublishProperties::default(),
                            expires_at,
                            origin: None,
                        }))
                    }
                }
            }
            Err(e) => {
                p.skipped.push(format!(
                    "message {} on topic {:?}: invalid topic ({e})",
                    m.store_id, m.topic
                ));
                None
            }
        };
        bodies.insert(m.store_id, (m, msg));
    }
    if expired > 0 {
        p.skipped
            .push(format!("{expired} message(s) that had already expired"));
    }
    if props_dropped > 0 {
        p.skipped.push(format!(
            "the MQTT 5 properties (user properties, content type, ...) of {props_dropped} message(s); the messages themselves are imported"
        ));
    }

    for id in &db.retained {
        match bodies.get(id) {
            Some((m, Some(msg))) => {
                p.ops.push(StoreOp::Retain {
                    topic: ByteString::from(m.topic.as_str()),
                    msg: Some(msg.clone()),
                });
                p.retained += 1;
            }
            Some((_, None)) => {}
            None => p
                .skipped
                .push(format!("retained message {id}: its body is missing")),
        }
    }

    let mut sessions: HashSet<&str> = HashSet::new();
    for c in &db.clients {
        if c.expiry_interval == 0 {
            p.skipped.push(format!(
                "session {:?}: session expiry interval 0 (ends at disconnect)",
                c.id
            ));
            continue;
        }
        sessions.insert(c.id.as_str());
        p.ops.push(StoreOp::Session(Box::new(SessionHeader {
            client_id: ByteString::from(c.id.as_str()),
            username: c.username.as_deref().map(ByteString::from),
            // mosquitto does not store the protocol; the client's next CONNECT sets it
            protocol: Protocol::V311,
            expiry_interval: c.expiry_interval,
            will: None,
            will_at: None,
            disconnected_at: Some(now),
        })));
        p.sessions += 1;
    }
    for s in &db.subs {
        if !sessions.contains(s.client_id.as_str()) {
            p.skipped.push(format!(
                "subscription {:?} of {:?}: no persistent session",
                s.filter, s.client_id
            ));
            continue;
        }
        if midge_codec::TopicFilter::new(s.filter.as_str()).is_err() {
            p.skipped.push(format!(
                "subscription {:?} of {:?}: invalid filter",
                s.filter, s.client_id
            ));
            continue;
        }
        let retain_handling = match (s.options >> 4) & 3 {
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => RetainHandling::SendAtSubscribe,
        };
        p.ops.push(StoreOp::Subscribe {
            client_id: ByteString::from(s.client_id.as_str()),
            filter: ByteString::from(s.filter.as_str()),
            options: SubscriptionOptions {
                qos: qos_of(s.qos & 3),
                no_local: s.options & 0x04 != 0,
                retain_as_published: s.options & 0x08 != 0,
                retain_handling,
            },
            identifier: (s.identifier != 0).then_some(s.identifier),
        });
        p.subscriptions += 1;
    }

    // mosquitto store id -> midge message id
    let mut written: BTreeMap<u64, u64> = BTreeMap::new();
    let mut next_msg_id = first_msg_id;
    let mut seq = first_seq;
    let mut no_session = 0usize;
    let mut inbound = 0usize;
    let mut past_pubrec = 0usize;
    for cm in &db.client_msgs {
        if !sessions.contains(cm.client_id.as_str()) {
            no_session += 1;
            continue;
        }
        if cm.direction == 0 {
            inbound += 1;
            continue;
        }
        if !matches!(
            cm.state,
            MS_PUBLISH_QOS0
                | MS_PUBLISH_QOS1
                | MS_WAIT_FOR_PUBACK
                | MS_PUBLISH_QOS2
                | MS_WAIT_FOR_PUBREC
                | MS_QUEUED
        ) {
            past_pubrec += 1;
            continue;
        }
        let msg = match bodies.get(&cm.store_id) {
            Some((_, Some(msg))) => msg.clone(),
            Some((_, None)) => continue,
            None => {
                p.skipped.push(format!(
                    "message {} for {:?}: its body is missing",
                    cm.store_id, cm.client_id
                ));
                continue;
            }
        };
        let id = match written.get(&cm.store_id) {
            Some(&id) => id,
            None => {
                let id = next_msg_id;
                next_msg_id += 1;
                written.insert(cm.store_id, id);
                p.ops.push(StoreOp::Message { id, msg });
                id
            }
        };
        p.ops.push(StoreOp::Delivery {
            client_id: ByteString::from(cm.client_id.as_str()),
            seq,
            msg: id,
            qos: qos_of(cm.qos),
            retain: cm.retain,
            sub_ids: Vec::new(),
            state: DeliveryState::Queued,
        });
        seq += 1;
        p.queued += 1;
    }
    if no_session > 0 {
        p.skipped.push(format!(
            "{no_session} queued message(s) for sessions that are not persistent or do not exist"
        ));
    }
    if inbound > 0 {
        p.skipped.push(format!(
            "{inbound} inbound QoS 2 message(s) awaiting PUBREL (the publisher resends them)"
        ));
    }
    if past_pubrec > 0 {
        p.skipped.push(format!(
            "{past_pubrec} outbound QoS 2 flow(s) past PUBREC (already received by the client; PUBCOMP not awaited)"
        ));
    }
    if db.unknown_chunks > 0 {
        p.skipped
            .push(format!("{} chunk(s) of unknown type", db.unknown_chunks));
    }
    p
}

/// Run `midge import`.
pub(crate) fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let (version, p) = import(&args.file, &args.data_dir, args.force)?;
    println!(
        "imported from {} (mosquitto.db format {version}) into {}:",
        args.file.display(),
        args.data_dir.display()
    );
    println!("  {} retained message(s)", p.retained);
    println!(
        "  {} persistent session(s) with {} subscription(s)",
        p.sessions, p.subscriptions
    );
    println!("  {} queued message(s)", p.queued);
    if p.skipped.is_empty() {
        println!("nothing was left behind");
    } else {
        println!("not carried over:");
        for s in &p.skipped {
            println!("  - {s}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// At start: a data folder without a midge store but with mosquitto's `mosquitto.db` (a
/// mosquitto.conf's `persistence_location`) is imported once, before the store opens.
pub(crate) fn import_at_first_start(dir: &Path) -> anyhow::Result<()> {
    let file = dir.join("mosquitto.db");
    if dir.join(midge_store::FILE_NAME).exists() || !file.is_file() {
        return Ok(());
    }
    let (version, p) = import(&file, dir, false).with_context(|| {
        format!(
            "importing mosquitto's {} on first start (move it away to start empty)",
            file.display()
        )
    })?;
    tracing::info!(
        "first start on a mosquitto persistence folder: imported {} (format {version}): {} retained message(s), {} persistent session(s) with {} subscription(s), {} queued message(s)",
        file.display(),
        p.retained,
        p.sessions,
        p.subscriptions,
        p.queued
    );
    for s in &p.skipped {
        tracing::warn!("mosquitto.db import: not carried over: {s}");
    }
    Ok(())
}

/// Read `file` and write what it holds into the store in `dir`.
fn import(file: &Path, dir: &Path, force: bool) -> anyhow::Result<(u32, Plan)> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let db = parse(&bytes).with_context(|| format!("{}", file.display()))?;
    let store_file = dir.join(midge_store::FILE_NAME);
    if store_file.exists() && !force {
        bail!(
            "{} already holds a midge store ({}): importing would mix two brokers' state; \
             use another --data-dir, or --force to add the import to it",
            dir.display(),
            store_file.display()
        );
    }
    let opened = midge_store::LogStore::open(midge_store::StoreOptions {
        dir: dir.to_path_buf(),
        ..midge_store::StoreOptions::default()
    })
    .with_context(|| format!("opening the store in {}", dir.display()))?;
    // with --force the store may hold deliveries already: number ours after them
    let (mut first_seq, mut first_msg_id) = (1, 1);
    for d in opened
        .restored
        .sessions
        .iter()
        .flat_map(|s| s.deliveries.iter())
    {
        first_seq = first_seq.max(d.seq.saturating_add(1));
        first_msg_id = first_msg_id.max(d.msg_id.saturating_add(1));
    }
    let p = plan(
        &db,
        Instant::now(),
        SystemTime::now(),
        first_seq,
        first_msg_id,
    );
    let mut store = opened.store;
    store.append(&p.ops).context("writing the store")?;
    store.sync().context("syncing the store")?;
    Ok((db.version, p))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn sample() -> Vec<u8> {
        let mut f = MAGIC.to_vec();
        f.extend(0u32.to_be_bytes());
        f.extend(6u32.to_be_bytes());
        let chunk = |f: &mut Vec<u8>, ty: u32, body: &[u8]| {
            f.extend(ty.to_be_bytes());
            f.extend((body.len() as u32).to_be_bytes());
            f.extend(body);
        };
        // message 7 "a/x" = "hi", QoS 1, retained
        let mut m = Vec::new();
        m.extend(7u64.to_le_bytes());
        m.extend(0u64.to_le_bytes());
        m.extend(2u32.to_be_bytes());
        m.extend(1u16.to_be_bytes());
        m.extend(1u16.to_be_bytes());
        m.extend(0u16.to_be_bytes());
        m.extend(3u16.to_be_bytes());
        m.extend(1883u16.to_be_bytes());
        m.extend([1, 1]);
        m.extend(b"pa/xhi");
        chunk(&mut f, CHUNK_MSG_STORE, &m);
        chunk(&mut f, CHUNK_RETAIN, &7u64.to_le_bytes());
        let mut c = Vec::new();
        c.extend(0u64.to_le_bytes());
        c.extend(u32::MAX.to_be_bytes());
        c.extend(1u16.to_be_bytes());
        c.extend(4u16.to_be_bytes());
        c.extend(1883u16.to_be_bytes());
        c.extend(0u16.to_be_bytes());
        c.extend(0u32.to_be_bytes());
        c.extend(b"keep");
        chunk(&mut f, CHUNK_CLIENT, &c);
        let mut cm = Vec::new();
        cm.extend(7u64.to_le_bytes());
        cm.extend(1u16.to_be_bytes());
        cm.extend(4u16.to_be_bytes());
        cm.extend([1, MS_QUEUED, 0, 1]);
        cm.extend(b"keep");
        chunk(&mut f, CHUNK_CLIENT_MSG, &cm);
        let mut s = Vec::new();
        s.extend(0u32.to_be_bytes());
        s.extend(4u16.to_be_bytes());
        s.extend(3u16.to_be_bytes());
        s.extend([1, 0, 0, 0]);
        s.extend(b"keepa/#");
        chunk(&mut f, CHUNK_SUB, &s);
        f
    }

    #[test]
    fn parses_and_plans_a_file() {
        let db = parse(&sample()).unwrap();
        assert_eq!(db.messages.len(), 1);
        assert_eq!(db.messages[0].topic, "a/x");
        assert_eq!(db.messages[0].payload, b"hi");
        assert_eq!(db.clients[0].id, "keep");
        assert_eq!(db.subs[0].filter, "a/#");
        let p = plan(&db, Instant::now(), SystemTime::now(), 1, 1);
        assert_eq!(
            (p.sessions, p.subscriptions, p.queued, p.retained),
            (1, 1, 1, 1)
        );
        assert!(p.skipped.is_empty(), "{:?}", p.skipped);
    }

    #[test]
    fn truncated_or_garbage_file_is_an_error() {
        let full = sample();
        // no cut of the file panics; every cut inside the header or a chunk is refused
        for n in 0..full.len() {
            let _ = parse(&full[..n]);
        }
        assert!(parse(&full[..full.len() - 1]).is_err());
        assert!(parse(&full[..20]).is_err());
        assert!(parse(b"garbage garbage garbage garbage").is_err());
        assert!(parse(&[]).is_err());
        let mut bad_len = full.clone();
        // first chunk's length announces far more than the file holds
        bad_len[27..31].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse(&bad_len).is_err());
        let mut bad_version = full;
        bad_version[22] = 9;
        assert!(parse(&bad_version).is_err());
    }
}
