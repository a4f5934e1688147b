//! `[cluster]`: this node's place in a midge cluster over NATS (`docs/cluster.md`). Read
//! through one serde type: its fields are the keys, so an unknown key is found from the
//! schema, with a hint for a near miss.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Checker, MidgeConfig};

/// The keys of `[cluster]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSection {
    node: Option<String>,
    name: Option<String>,
    nats: Option<Vec<String>>,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    creds: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    replicas: Option<usize>,
}

/// Read `[cluster]` into `cfg.cluster`.
pub(super) fn cluster(c: &mut Checker<'_>, root: &toml::Table, cfg: &mut MidgeConfig) {
    let Some(t) = c.table(root, "cluster") else {
        return;
    };
    let Some(section) = c.typed::<ClusterSection>(t, "cluster") else {
        return;
    };
    let node = section.node.unwrap_or_else(default_node);
    let mut cluster = midge_cluster::ClusterConfig::new(&node, section.nats.unwrap_or_default());
    if let Some(n) = section.name {
        cluster.name = n;
    }
    cluster.user = section.user;
    cluster.password = section.password;
    cluster.token = section.token;
    cluster.creds = section.creds;
    cluster.tls_ca = section.tls_ca;
    cluster.tls_cert = section.tls_cert;
    cluster.tls_key = section.tls_key;
    cluster.replicas = section.replicas.unwrap_or(0);
    if cluster.user.is_some() != cluster.password.is_some() {
        c.err("cluster", "password", "user and password go together");
    }
    if cluster.tls_cert.is_some() != cluster.tls_key.is_some() {
        c.err("cluster", "tls_key", "tls_cert and tls_key go together");
    }
    if let Err(e) = cluster.validate() {
        c.err(
            "cluster",
            "",
            e.to_string().trim_start_matches("[cluster]: "),
        );
    }
    cfg.cluster = Some(cluster);
}

/// A node without a name is called after its host.
pub(crate) fn default_node() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let name: String = host
        .trim()
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ch == '-' {
                ch
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() { "node".into() } else { name }
}
