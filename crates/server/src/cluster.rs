//! The router's side of a cluster (`crates/cluster` is the other side, on NATS).
//!
//! The router hands the cluster what core forwards and the filters this node's clients
//! gained or lost ([`ClusterOut`]); QoS 1/2 forwards travel with the number of the gate
//! batch whose acknowledgements wait for them, and the cluster answers
//! [`ClusterIn::Held`] once JetStream holds them (or that they failed: the
//! acknowledgements become refusals, as for a failed disk write). The cluster feeds the
//! router the other nodes' filters and messages, and moves sessions ([`ClusterIn`]).
//! A CONNECT waits for [`Claim::claim`] before core sees it: another node that holds the
//! client's session hands it over first, so the client resumes it here.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytestring::ByteString;
use midge_core::{Forward, Message, SessionRecord, SessionState, Target};
use tokio::sync::{mpsc, oneshot};

use crate::router::RouterMsg;

/// What the router tells the cluster.
#[derive(Debug)]
pub enum ClusterOut {
    /// Messages for other nodes, in order. `batch` (non-zero) is the gate batch whose
    /// acknowledgements wait for the QoS 1/2 ones: answer [`ClusterIn::Held`].
    Forwards {
        /// Gate batch number, 0 when nothing waits.
        batch: u64,
        /// The messages.
        forwards: Vec<Forward>,
    },
    /// Filters that got their first local subscription (`true`) or lost their last.
    Interest(Vec<(ByteString, bool)>),
    /// A client's session changed (connected, subscribed, closed; `None`: it ended): what
    /// another node needs to resume it or publish its will if this node dies.
    Sessions(Vec<(String, Option<SessionRecord>)>),
}

/// What the cluster tells the router.
#[derive(Debug)]
pub enum ClusterIn {
    /// Node `node` has clients subscribed to `filter` (or no longer: `add` false).
    Interest {
        /// The node.
        node: Arc<str>,
        /// Raw filter, `$share/g/...` included.
        filter: ByteString,
        /// Gained or lost.
        add: bool,
    },
    /// Node `node` is gone (or restarted): forget its filters.
    Forget(Arc<str>),
    /// Node `node` is presumed dead: share groups no longer pick it (its plain filters stay
    /// a while, see [`midge_core::Broker::remote_leave_groups`]).
    LeaveGroups(Arc<str>),
    /// Answer [`midge_core::Broker::queue_mark`].
    Mark(oneshot::Sender<Option<u64>>),
    /// Messages from the cluster queue of a node that died, for `client_id`'s session
    /// resumed here; `done` says whether the session is still here.
    Replay {
        /// The client.
        client_id: String,
        /// Each message and where its node was to deliver it.
        msgs: Vec<(Message, Target)>,
        /// Answered when handled.
        done: oneshot::Sender<bool>,
    },
    /// Messages from other nodes; `done` is answered once they are delivered or queued
    /// (and durable, with persistence on).
    Remote {
        /// Each message, where it goes here, and its position in this node's cluster
        /// queue (0: not from the queue).
        msgs: Vec<(Message, Target, u64)>,
        /// Answered when handled.
        done: Option<oneshot::Sender<()>>,
    },
    /// The QoS 1/2 forwards of gate batches up to `upto` are held by the cluster (`ok`), or
    /// could not be (their acknowledgements become refusals).
    Held {
        /// Highest batch number covered.
        upto: u64,
        /// Whether they are held.
        ok: bool,
    },
    /// Another node takes over `client_id`: end its session here and answer its state.
    Export {
        /// The client.
        client_id: String,
        /// The node it moves to (what still comes here for it is sent there for a while).
        to: String,
        /// Its state, `None` if this node has no session for it.
        reply: oneshot::Sender<Option<SessionState>>,
    },
    /// Publish the will of a client whose node died (this node was picked to, once).
    Will {
        /// The client.
        client_id: String,
        /// Its will.
        will: midge_codec::LastWill,
    },
    /// A session that moved away no longer needs its forwarding stub here.
    ForgetMoved(String),
    /// A session that moved here no longer takes what its old node's stub sends on.
    ForgetImported(String),
    /// A message of the broker's own (`$SYS/broker/cluster/...`), for this node's clients.
    Sys(Message),
    /// A session arrives from another node.
    Import {
        /// Its state.
        state: SessionState,
        /// Answered once core has it.
        reply: oneshot::Sender<()>,
    },
}

/// Before a CONNECT reaches core: take the client's session from whichever node has it.
pub trait Claim: Send + Sync + 'static {
    /// Done when no other node holds `client_id`'s session (or none answered in time).
    fn claim<'a>(&'a self, client_id: &'a str) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// The claim as connection settings hold it.
#[derive(Clone)]
pub(crate) struct ClaimHandle(pub(crate) Arc<dyn Claim>);

impl std::fmt::Debug for ClaimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Claim")
    }
}

/// The cluster as the server sees it.
#[derive(Clone)]
pub struct ClusterLink {
    /// Where the router sends [`ClusterOut`].
    pub out: mpsc::UnboundedSender<ClusterOut>,
    /// What a CONNECT waits for.
    pub claim: Arc<dyn Claim>,
}

impl std::fmt::Debug for ClusterLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterLink")
    }
}

/// The cluster's way into the router.
#[derive(Clone, Debug)]
pub struct ClusterPort {
    pub(crate) router: mpsc::WeakSender<RouterMsg>,
}

impl ClusterPort {
    /// Hand the router a message; false once the server stopped.
    pub async fn send(&self, msg: ClusterIn) -> bool {
        match self.router.upgrade() {
            Some(tx) => tx.send(RouterMsg::Cluster(Box::new(msg))).await.is_ok(),
            None => false,
        }
    }
}

/// One node as the HTTP API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeInfo {
    /// Its name.
    pub name: String,
    /// Whether it is the node answering.
    #[serde(rename = "self")]
    pub this: bool,
    /// Whether it is up (this node: connected to NATS; others: heard from lately).
    pub up: bool,
    /// `"up"` or `"down"` (the same, for a reader of the JSON).
    pub state: &'static str,
    /// Distinct filters its clients hold.
    pub filters: usize,
    /// Since its last heartbeat (0 for this node).
    pub last_seen_ms: u64,
}

/// The cluster as the HTTP API sees it.
pub trait ClusterView: Send + Sync + 'static {
    /// This node's name.
    fn node(&self) -> String;
    /// Every node known, this one first.
    fn nodes(&self) -> Vec<NodeInfo>;
}
