//! The device registry: devices with generated secrets (stored hashed as `midge passwd`
//! stores passwords) or a client-certificate identity, and named topic policies attached to
//! devices and to groups of devices. Durable as one JSON file (`devices.json` in the data
//! folder, replaced atomically, mode 0600), held in memory behind a lock, and consulted on
//! CONNECT (by username) and on every PUBLISH, SUBSCRIBE and delivery of a device.
//!
//! # How a device is judged
//!
//! - CONNECT: a username the registry knows is judged by the registry only (the password
//!   files are not consulted for it): the device must be enabled and the password must be its
//!   secret. A client-certificate identity equal to a device's `cert_cn` logs in as that
//!   device.
//! - PUBLISH / SUBSCRIBE / delivery: a device may do what one of its policies (its own and
//!   its groups') grants, nothing else; ACL files are not consulted for devices. `publish`
//!   filters grant publishing (and the will); `subscribe` filters grant subscribing with a
//!   filter they cover and receiving messages on topics they match. `%u` (username), `%c`
//!   (client id) and `${device}` (device name) are substituted; an identity holding `+` or
//!   `#` gets nothing from a filter that substitutes it. Publishing to `$SYS` is refused, and
//!   `$` topics are matched only by filters that start with `$` (as in ACL files).
//!
//! Every change is visible to the next check at once; [`Change`] tells the caller which live
//! connections to cut (disabled, deleted or rotated devices) and whose subscriptions to check
//! again (narrowed policies).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use midge_codec::TopicFilter;
use serde::{Deserialize, Serialize};

use crate::acl::rule_matches;
use crate::{Access, DEFAULT_ITERATIONS, HashAlgorithm, PasswordHash};

/// Longest device, policy or group name.
pub const MAX_NAME_LEN: usize = 128;
/// Most filters in one policy.
pub const MAX_FILTERS: usize = 256;

/// Errors of registry operations.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No such device, policy or group.
    #[error("no {kind} named {name:?}")]
    NotFound {
        /// `device`, `policy` or `group`.
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
    /// A device, policy or group of that name (or a device with that username) exists.
    #[error("{0}")]
    Conflict(String),
    /// The request is invalid (bad name, filter, unknown policy...).
    #[error("{0}")]
    Invalid(String),
    /// The file could not be read, parsed or written.
    #[error("device registry {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// No random bytes or no hash for a secret.
    #[error("cannot make a secret: {0}")]
    Secret(String),
}

/// A topic policy as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Its name.
    pub name: String,
    /// Filters the holder may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Filters the holder may subscribe with (and receive on).
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// A group of devices: the policies its members get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Its name.
    pub name: String,
    /// Policies attached to every member.
    #[serde(default)]
    pub policies: Vec<String>,
}

/// A device as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Its name (unique).
    pub name: String,
    /// The MQTT username it logs in with (unique).
    pub username: String,
    /// Its secret's hash in mosquitto's `$7$` format (`None`: certificate only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
    /// A client-certificate identity (CN) that logs in as this device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_cn: Option<String>,
    /// Whether it may connect.
    pub enabled: bool,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Labels.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Policies attached to it.
    #[serde(default)]
    pub policies: Vec<String>,
    /// Groups it belongs to.
    #[serde(default)]
    pub groups: Vec<String>,
    /// When it was created (ms since the Unix epoch).
    pub created_ms: i64,
    /// When it last connected (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<i64>,
}

/// What the file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FileData {
    #[serde(default)]
    hub: Option<String>,
    #[serde(default)]
    username_template: Option<String>,
    #[serde(default)]
    policies: Vec<Policy>,
    #[serde(default)]
    groups: Vec<Group>,
    #[serde(default)]
    devices: Vec<DeviceRecord>,
}

/// Registry-wide settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrySettings {
    /// The hub's name, for `{hub}` in the username template.
    #[serde(default)]
    pub hub: Option<String>,
    /// How a new device's username is made when none is given: `{device}` and `{hub}` are
    /// substituted (default: the device name).
    #[serde(default)]
    pub username_template: Option<String>,
}

/// A new device.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    /// Its name.
    pub name: String,
    /// Its username (default: from the template, else the name).
    #[serde(default)]
    pub username: Option<String>,
    /// A certificate identity instead of a secret.
    #[serde(default)]
    pub cert_cn: Option<String>,
    /// Whether it may connect (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Labels.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Policies.
    #[serde(default)]
    pub policies: Vec<String>,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Changes to a device (absent fields stay).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    /// Enable or disable.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Labels (replaced).
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Policies (replaced).
    #[serde(default)]
    pub policies: Option<Vec<String>>,
    /// Groups (replaced).
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// Certificate identity (`""` removes it).
    #[serde(default)]
    pub cert_cn: Option<String>,
}

/// What a change means for live connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Usernames whose live connections must be cut (MQTT 5: DISCONNECT 0x98).
    pub disconnect: Vec<String>,
    /// Usernames whose subscriptions must be checked again.
    pub recheck: Vec<String>,
}

/// The answer to a CONNECT's username and password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// Not a device's username: judge it by the password file.
    Unknown,
    /// The device's secret.
    Accepted,
    /// Wrong secret (or a device without one).
    BadSecret,
    /// The device is disabled.
    Disabled,
}

/// One compiled rule: a filter with what it grants and which placeholders are left.
#[derive(Debug)]
struct Rule {
    filter: String,
    publish: bool,
    uses_client_id: bool,
}

/// What the authorizer needs of one device, rebuilt on every change.
#[derive(Debug)]
struct Compiled {
    name: String,
    enabled: bool,
    hash: Option<Arc<PasswordHash>>,
    rules: Vec<Rule>,
    last_seen: Arc<AtomicI64>,
    /// Changes with every rebuild: keys the success cache, so a secret cached before a
    /// rotation (or a delete and re-create) never matches after it.
    generation: u64,
}

static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

#[derive(Debug, Default)]
struct State {
    settings: RegistrySettings,
    policies: BTreeMap<String, Policy>,
    groups: BTreeMap<String, Group>,
    devices: BTreeMap<String, DeviceRecord>,
    /// username -> compiled device
    by_username: HashMap<String, Arc<Compiled>>,
    /// certificate CN -> username
    by_cn: HashMap<String, String>,
}

/// The registry (cheap to share behind an `Arc`).
#[derive(Debug)]
pub struct Registry {
    path: Option<PathBuf>,
    state: RwLock<State>,
    /// Devices registered (checked without the lock on every delivery).
    count: AtomicUsize,
    /// Serializes writers (file write order = change order).
    write: std::sync::Mutex<()>,
    /// Recent successful logins (as the password file's: an HMAC of the secret under a
    /// per-process key), so reconnecting devices do not each cost a PBKDF2.
    cache: crate::password_file::VerifyCache,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn check_name(kind: &str, name: &str) -> Result<(), RegistryError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(RegistryError::Invalid(format!(
            "{kind} name must be 1 to {MAX_NAME_LEN} bytes"
        )));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | '~'))
    {
        return Err(RegistryError::Invalid(format!(
            "{kind} name {name:?} may hold only letters, digits and _ - . @ ~"
        )));
    }
    Ok(())
}

fn check_username(username: &str) -> Result<(), RegistryError> {
    crate::validate_username(username)
        .map_err(|e| RegistryError::Invalid(format!("username {username:?}: {e}")))?;
    if username.contains(['+', '#']) {
        return Err(RegistryError::Invalid(format!(
            "username {username:?} must not hold + or #"
        )));
    }
    Ok(())
}

/// Check a policy filter: valid once `%u`, `%c` and `${device}` are substituted.
fn check_filter(filter: &str) -> Result<(), RegistryError> {
    let probe = filter
        .replace("%u", "u")
        .replace("%c", "c")
        .replace("${device}", "d");
    TopicFilter::new(probe.as_str())
        .map(|_| ())
        .map_err(|e| RegistryError::Invalid(format!("invalid topic filter {filter:?}: {e}")))
}

fn validate_policy(p: &Policy) -> Result<(), RegistryError> {
    check_name("policy", &p.name)?;
    if p.publish.len() + p.subscribe.len() > MAX_FILTERS {
        return Err(RegistryError::Invalid(format!(
            "a policy holds at most {MAX_FILTERS} filters"
        )));
    }
    for f in p.publish.iter().chain(&p.subscribe) {
        check_filter(f)?;
    }
    Ok(())
}

/// A new random secret: 24 random bytes, base64url (32 characters).
fn new_secret() -> Result<(String, String), RegistryError> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| RegistryError::Secret(e.to_string()))?;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = PasswordHash::create(
        secret.as_bytes(),
        HashAlgorithm::Sha512Pbkdf2,
        DEFAULT_ITERATIONS,
    )
    .map_err(|e| RegistryError::Secret(e.to_string()))?;
    Ok((secret, hash.encode()))
}

impl State {
    fn device_policies<'a>(&'a self, d: &'a DeviceRecord) -> BTreeSet<&'a str> {
        let mut names: BTreeSet<&str> = d.policies.iter().map(String::as_str).collect();
        for g in &d.groups {
            if let Some(group) = self.groups.get(g) {
                names.extend(group.policies.iter().map(String::as_str));
            }
        }
        names
    }

    fn compile(&self, d: &DeviceRecord, last_seen: Arc<AtomicI64>) -> Compiled {
        let mut rules = Vec::new();
        for name in self.device_policies(d) {
            let Some(p) = self.policies.get(name) else {
                continue;
            };
            for (filters, publish) in [(&p.publish, true), (&p.subscribe, false)] {
                for f in filters {
                    // `${device}` and `%u` are fixed for the device: substituted once here
                    let fixed = f.replace("${device}", &d.name);
                    let wild = d.name.contains(['+', '#']);
                    if wild && fixed != *f {
                        continue;
                    }
                    let fixed = if fixed.contains("%u") {
                        fixed.replace("%u", &d.username)
                    } else {
                        fixed
                    };
                    rules.push(Rule {
                        uses_client_id: fixed.contains("%c"),
                        filter: fixed,
                        publish,
                    });
                }
            }
        }
        Compiled {
            name: d.name.clone(),
            enabled: d.enabled,
            hash: d
                .secret_hash
                .as_deref()
                .and_then(|h| PasswordHash::parse(h).ok())
                .map(Arc::new),
            rules,
            last_seen,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Rebuild the lookup tables from the records.
    fn rebuild(&mut self) {
        let old = std::mem::take(&mut self.by_username);
        let mut by_username = HashMap::with_capacity(self.devices.len());
        let mut by_cn = HashMap::new();
        for d in self.devices.values() {
            let last_seen = old.get(&d.username).map_or_else(
                || Arc::new(AtomicI64::new(d.last_seen_ms.unwrap_or(0))),
                |c| c.last_seen.clone(),
            );
            by_username.insert(d.username.clone(), Arc::new(self.compile(d, last_seen)));
            if let Some(cn) = &d.cert_cn {
                by_cn.insert(cn.clone(), d.username.clone());
            }
        }
        self.by_username = by_username;
        self.by_cn = by_cn;
    }

    fn to_file(&self) -> FileData {
        FileData {
            hub: self.settings.hub.clone(),
            username_template: self.settings.username_template.clone(),
            policies: self.policies.values().cloned().collect(),
            groups: self.groups.values().cloned().collect(),
            devices: self
                .devices
                .values()
                .map(|d| self.with_last_seen(d))
                .collect(),
        }
    }

    fn with_last_seen(&self, d: &DeviceRecord) -> DeviceRecord {
        let mut d = d.clone();
        if let Some(c) = self.by_username.get(&d.username) {
            let seen = c.last_seen.load(Ordering::Relaxed);
            if seen > 0 {
                d.last_seen_ms = Some(seen);
            }
        }
        d
    }

    fn check_refs(&self, policies: &[String], groups: &[String]) -> Result<(), RegistryError> {
        for p in policies {
            if !self.policies.contains_key(p) {
                return Err(RegistryError::Invalid(format!("unknown policy {p:?}")));
            }
        }
        for g in groups {
            if !self.groups.contains_key(g) {
                return Err(RegistryError::Invalid(format!("unknown group {g:?}")));
            }
        }
        Ok(())
    }

    /// Usernames of devices holding `policy` directly or through a group.
    fn holders(&self, policy: &str) -> Vec<String> {
        self.devices
            .values()
            .filter(|d| self.device_policies(d).contains(policy))
            .map(|d| d.username.clone())
            .collect()
    }
}

impl Registry {
    /// An empty registry kept in memory only.
    pub fn in_memory() -> Registry {
        Registry {
            path: None,
            state: RwLock::new(State::default()),
            count: AtomicUsize::new(0),
            write: std::sync::Mutex::new(()),
            cache: crate::password_file::VerifyCache::new(crate::DEFAULT_CACHE_CAPACITY),
        }
    }

    /// Load the registry from `path` (a missing file is an empty registry); changes are
    /// written back to it.
    pub fn open(path: &Path) -> Result<Registry, RegistryError> {
        let file_err = |message: String| RegistryError::File {
            path: path.to_owned(),
            message,
        };
        let data = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<FileData>(&bytes)
                .map_err(|e| file_err(format!("not a device registry: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileData::default(),
            Err(e) => return Err(file_err(e.to_string())),
        };
        let mut state = State {
            settings: RegistrySettings {
                hub: data.hub,
                username_template: data.username_template,
            },
            ..State::default()
        };
        let mut problems = Vec::new();
        for p in data.policies {
            if let Err(e) = validate_policy(&p) {
                problems.push(e.to_string());
            }
            state.policies.insert(p.name.clone(), p);
        }
        for g in data.groups {
            state.groups.insert(g.name.clone(), g);
        }
        let mut usernames = BTreeSet::new();
        for d in data.devices {
            if !usernames.insert(d.username.clone()) {
                problems.push(format!("username {:?} used by two devices", d.username));
            }
            state.devices.insert(d.name.clone(), d);
        }
        if !problems.is_empty() {
            return Err(file_err(problems.join("; ")));
        }
        state.rebuild();
        let count = state.devices.len();
        Ok(Registry {
            path: Some(path.to_owned()),
            state: RwLock::new(state),
            count: AtomicUsize::new(count),
            write: std::sync::Mutex::new(()),
            cache: crate::password_file::VerifyCache::new(crate::DEFAULT_CACHE_CAPACITY),
        })
    }

    /// The file it is kept in (`None`: memory only).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether there is no device.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply `f` to a copy of the records, save them, then put them in force. The file is
    /// written before the change is visible, so an answered change survives a restart.
    fn update<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let _writer = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = {
            let s = self.read();
            State {
                settings: s.settings.clone(),
                policies: s.policies.clone(),
                groups: s.groups.clone(),
                devices: s
                    .devices
                    .values()
                    .map(|d| (d.name.clone(), s.with_last_seen(d)))
                    .collect(),
                by_username: s.by_username.clone(),
                by_cn: HashMap::new(),
            }
        };
        let out = f(&mut next)?;
        next.rebuild();
        self.save(&next)?;
        let count = next.devices.len();
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = next;
        self.count.store(count, Ordering::Relaxed);
        self.cache.clear();
        Ok(out)
    }

    fn save(&self, state: &State) -> Result<(), RegistryError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let text =
            serde_json::to_vec_pretty(&state.to_file()).map_err(|e| RegistryError::File {
                path: path.clone(),
                message: e.to_string(),
            })?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        crate::write_atomic(path, &text).map_err(|e| RegistryError::File {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(())
    }

    /// Write the registry now (keeps the last-seen times).
    pub fn flush(&self) -> Result<(), RegistryError> {
        let _writer = self.write.lock().unwrap_or_else(|p| p.into_inner());
        self.save(&self.read())
    }

    // ---- settings

    /// The registry-wide settings.
    pub fn settings(&self) -> RegistrySettings {
        self.read().settings.clone()
    }

    /// Replace the registry-wide settings.
    pub fn set_settings(&self, settings: RegistrySettings) -> Result<(), RegistryError> {
        if let Some(t) = &settings.username_template {
            if !t.contains("{device}") {
                return Err(RegistryError::Invalid(
                    "username_template must contain {device}".into(),
                ));
            }
        }
        self.update(|s| {
            s.settings = settings;
            Ok(())
        })
    }

    // ---- policies

    /// Every policy, by name.
    pub fn policies(&self) -> Vec<Policy> {
        self.read().policies.values().cloned().collect()
    }

    /// One policy.
    pub fn policy(&self, name: &str) -> Option<Policy> {
        self.read().policies.get(name).cloned()
    }

    /// Add a policy (409 if the name is taken).
    pub fn add_policy(&self, p: Policy) -> Result<(), RegistryError> {
        validate_policy(&p)?;
        self.update(|s| {
            if s.policies.contains_key(&p.name) {
                return Err(RegistryError::Conflict(format!(
                    "a policy named {:?} exists",
                    p.name
                )));
            }
            s.policies.insert(p.name.clone(), p);
            Ok(())
        })
    }

    /// Replace a policy's filters; its holders' subscriptions are to be checked again.
    pub fn replace_policy(&self, p: Policy) -> Result<Change, RegistryError> {
        validate_policy(&p)?;
        self.update(|s| {
            if !s.policies.contains_key(&p.name) {
                return Err(RegistryError::NotFound {
                    kind: "policy",
                    name: p.name.clone(),
                });
            }
            let name = p.name.clone();
            s.policies.insert(name.clone(), p);
            Ok(Change {
                disconnect: Vec::new(),
                recheck: s.holders(&name),
            })
        })
    }

    /// Remove a policy that no device or group uses (409 otherwise).
    pub fn remove_policy(&self, name: &str) -> Result<(), RegistryError> {
        self.update(|s| {
            if !s.policies.contains_key(name) {
                return Err(RegistryError::NotFound {
                    kind: "policy",
                    name: name.to_owned(),
                });
            }
            let users: Vec<&str> = s
                .devices
                .values()
                .filter(|d| d.policies.iter().any(|p| p == name))
                .map(|d| d.name.as_str())
                .chain(
                    s.groups
                        .values()
                        .filter(|g| g.policies.iter().any(|p| p == name))
                        .map(|g| g.name.as_str()),
                )
                .collect();
            if !users.is_empty() {
                return Err(RegistryError::Conflict(format!(
                    "policy {name:?} is attached to {}",
                    users.join(", ")
                )));
            }
            s.policies.remove(name);
            Ok(())
        })
    }

    // ---- groups

    /// Every group.
    pub fn groups(&self) -> Vec<Group> {
        self.read().groups.values().cloned().collect()
    }

    /// Add or replace a group; its members' subscriptions are to be checked again.
    pub fn put_group(&self, g: Group) -> Result<Change, RegistryError> {
        check_name("group", &g.name)?;
        self.update(|s| {
            s.check_refs(&g.policies, &[])?;
            let name = g.name.clone();
            s.groups.insert(name.clone(), g);
            let members = s
                .devices
                .values()
                .filter(|d| d.groups.contains(&name))
                .map(|d| d.username.clone())
                .collect();
            Ok(Change {
                disconnect: Vec::new(),
                recheck: members,
            })
        })
    }

    /// Remove a group no device belongs to (409 otherwise).
    pub fn remove_group(&self, name: &str) -> Result<(), RegistryError> {
        self.update(|s| {
            if s.groups.remove(name).is_none() {
                return Err(RegistryError::NotFound {
                    kind: "group",
                    name: name.to_owned(),
                });
            }
            let members: Vec<&str> = s
                .devices
                .values()
                .filter(|d| d.groups.iter().any(|g| g == name))
                .map(|d| d.name.as_str())
                .collect();
            if !members.is_empty() {
                return Err(RegistryError::Conflict(format!(
                    "group {name:?} has members: {}",
                    members.join(", ")
                )));
            }
            Ok(())
        })
    }

    // ---- devices

    /// Every device (with its last-seen time).
    pub fn devices(&self) -> Vec<DeviceRecord> {
        let s = self.read();
        s.devices.values().map(|d| s.with_last_seen(d)).collect()
    }

    /// One device.
    pub fn device(&self, name: &str) -> Option<DeviceRecord> {
        let s = self.read();
        s.devices.get(name).map(|d| s.with_last_seen(d))
    }

    /// The username a new device named `name` gets without one given.
    pub fn default_username(&self, name: &str) -> String {
        let s = self.read();
        match &s.settings.username_template {
            Some(t) => t
                .replace("{device}", name)
                .replace("{hub}", s.settings.hub.as_deref().unwrap_or("")),
            None => name.to_owned(),
        }
    }

    /// Create a device. Returns it and its secret (shown once; `None` with a `cert_cn`).
    /// The secret is hashed here (PBKDF2, slow: call from a blocking thread).
    pub fn add_device(
        &self,
        new: NewDevice,
    ) -> Result<(DeviceRecord, Option<String>), RegistryError> {
        check_name("device", &new.name)?;
        let username = match new.username.clone() {
            Some(u) => u,
            None => self.default_username(&new.name),
        };
        check_username(&username)?;
        let cert_cn = new.cert_cn.clone().filter(|c| !c.is_empty());
        let (secret, hash) = match cert_cn {
            Some(_) => (None, None),
            None => {
                let (s, h) = new_secret()?;
                (Some(s), Some(h))
            }
        };
        let record = DeviceRecord {
            name: new.name.clone(),
            username: username.clone(),
            secret_hash: hash,
            cert_cn: cert_cn.clone(),
            enabled: new.enabled.unwrap_or(true),
            description: new.description.unwrap_or_default(),
            tags: new.tags,
            policies: new.policies,
            groups: new.groups,
            created_ms: now_ms(),
            last_seen_ms: None,
        };
        let out = record.clone();
        self.update(move |s| {
            if s.devices.contains_key(&record.name) {
                return Err(RegistryError::Conflict(format!(
                    "a device named {:?} exists",
                    record.name
                )));
            }
            if s.by_username.contains_key(&record.username) {
                return Err(RegistryError::Conflict(format!(
                    "username {:?} belongs to another device",
                    record.username
                )));
            }
            if let Some(cn) = &record.cert_cn {
                if s.by_cn.contains_key(cn)
                    || s.devices.values().any(|d| d.cert_cn.as_ref() == Some(cn))
                {
                    return Err(RegistryError::Conflict(format!(
                        "certificate identity {cn:?} belongs to another device"
                    )));
                }
            }
            s.check_refs(&record.policies, &record.groups)?;
            s.devices.insert(record.name.clone(), record);
            Ok(())
        })?;
        Ok((out, secret))
    }

    /// Change a device. Disabling it (or changing its certificate identity) cuts its live
    /// connections; changing its policies or groups re-checks its subscriptions.
    pub fn patch_device(
        &self,
        name: &str,
        patch: DevicePatch,
    ) -> Result<(DeviceRecord, Change), RegistryError> {
        self.update(|s| {
            let (policies, groups) = {
                let d = s.devices.get(name).ok_or_else(|| RegistryError::NotFound {
                    kind: "device",
                    name: name.to_owned(),
                })?;
                (
                    patch.policies.clone().unwrap_or_else(|| d.policies.clone()),
                    patch.groups.clone().unwrap_or_else(|| d.groups.clone()),
                )
            };
            s.check_refs(&policies, &groups)?;
            let Some(d) = s.devices.get_mut(name) else {
                return Err(RegistryError::NotFound {
                    kind: "device",
                    name: name.to_owned(),
                });
            };
            let mut change = Change::default();
            if let Some(e) = patch.enabled {
                if d.enabled && !e {
                    change.disconnect.push(d.username.clone());
                }
                d.enabled = e;
            }
            if let Some(t) = patch.description {
                d.description = t;
            }
            if let Some(t) = patch.tags {
                d.tags = t;
            }
            if patch.policies.is_some() || patch.groups.is_some() {
                change.recheck.push(d.username.clone());
            }
            d.policies = policies;
            d.groups = groups;
            if let Some(cn) = patch.cert_cn {
                let cn = Some(cn).filter(|c| !c.is_empty());
                if cn != d.cert_cn {
                    change.disconnect.push(d.username.clone());
                    d.cert_cn = cn;
                }
            }
            let out = d.clone();
            if let Some(cn) = &out.cert_cn {
                if s.devices
                    .values()
                    .filter(|o| o.cert_cn.as_ref() == Some(cn))
                    .count()
                    > 1
                {
                    return Err(RegistryError::Conflict(format!(
                        "certificate identity {cn:?} belongs to another device"
                    )));
                }
            }
            Ok((out, change))
        })
    }

    /// Delete a device; its live connections are to be cut.
    pub fn remove_device(&self, name: &str) -> Result<Change, RegistryError> {
        self.update(|s| match s.devices.remove(name) {
            Some(d) => Ok(Change {
                disconnect: vec![d.username],
                recheck: Vec::new(),
            }),
            None => Err(RegistryError::NotFound {
                kind: "device",
                name: name.to_owned(),
            }),
        })
    }

    /// Give a device a new secret (returned, shown once); the old one stops working and its
    /// live connections are to be cut. Slow (PBKDF2): call from a blocking thread.
    pub fn rotate_secret(&self, name: &str) -> Result<(String, Change), RegistryError> {
        if !self.read().devices.contains_key(name) {
            return Err(RegistryError::NotFound {
                kind: "device",
                name: name.to_owned(),
            });
        }
        let (secret, hash) = new_secret()?;
        let change = self.update(|s| {
            let Some(d) = s.devices.get_mut(name) else {
                return Err(RegistryError::NotFound {
                    kind: "device",
                    name: name.to_owned(),
                });
            };
            d.secret_hash = Some(hash);
            Ok(Change {
                disconnect: vec![d.username.clone()],
                recheck: Vec::new(),
            })
        })?;
        Ok((secret, change))
    }

    // ---- the broker's questions

    /// Whether `username` is a device's.
    pub fn knows(&self, username: &str) -> bool {
        !self.is_empty() && self.read().by_username.contains_key(username)
    }

    /// Usernames of devices.
    pub fn usernames(&self) -> Vec<String> {
        self.read().by_username.keys().cloned().collect()
    }

    /// Judge a CONNECT's username and password. Slow (PBKDF2) for a device: call from a
    /// blocking thread. A success stamps the device's last-seen time.
    pub fn login(&self, username: &str, password: &[u8]) -> Login {
        if self.is_empty() {
            return Login::Unknown;
        }
        let Some(c) = self.read().by_username.get(username).cloned() else {
            return Login::Unknown;
        };
        if !c.enabled {
            return Login::Disabled;
        }
        let Some(hash) = &c.hash else {
            return Login::BadSecret;
        };
        let key = format!("{}\0{username}", c.generation);
        let tag = self.cache.tag(&key, password);
        let ok = match &tag {
            Some(t) if self.cache.hit(&key, t) => true,
            _ => hash.verify(password),
        };
        if !ok {
            return Login::BadSecret;
        }
        if let Some(t) = tag {
            self.cache.insert(&key, t);
        }
        c.last_seen.store(now_ms(), Ordering::Relaxed);
        Login::Accepted
    }

    /// The device a client-certificate identity logs in as: `Some((username, enabled))` for
    /// a device with that `cert_cn` or that username (stamping its last-seen time).
    pub fn certificate_login(&self, identity: &str) -> Option<(String, bool)> {
        if self.is_empty() {
            return None;
        }
        let s = self.read();
        let username = s
            .by_cn
            .get(identity)
            .cloned()
            .unwrap_or_else(|| identity.to_owned());
        let c = s.by_username.get(&username)?;
        if c.enabled {
            c.last_seen.store(now_ms(), Ordering::Relaxed);
        }
        Some((username, c.enabled))
    }

    /// The device name of a username.
    pub fn device_of(&self, username: &str) -> Option<String> {
        self.read()
            .by_username
            .get(username)
            .map(|c| c.name.clone())
    }

    /// Whether the device logged in as `username` with `client_id` may perform `access` on
    /// `topic` (a topic name, or a filter for [`Access::Subscribe`]). `None`: not a device.
    pub fn check(
        &self,
        username: Option<&str>,
        client_id: &str,
        topic: &str,
        access: Access,
    ) -> Option<bool> {
        let username = username?;
        if self.is_empty() {
            return None;
        }
        let s = self.read();
        let c = s.by_username.get(username)?;
        if !c.enabled {
            return Some(false);
        }
        let topic = match access {
            Access::Read | Access::Write => {
                if topic.is_empty() || topic.contains(['+', '#', '\0']) {
                    return Some(false);
                }
                topic
            }
            Access::Subscribe => match TopicFilter::new(topic) {
                Ok(f) => {
                    let offset = topic.len() - f.filter().len();
                    topic.get(offset..).unwrap_or_default()
                }
                Err(_) => return Some(false),
            },
        };
        if access == Access::Write && (topic == "$SYS" || topic.starts_with("$SYS/")) {
            return Some(false);
        }
        let publish = access == Access::Write;
        let wild_id = client_id.contains(['+', '#']);
        let ok = c.rules.iter().filter(|r| r.publish == publish).any(|r| {
            if r.uses_client_id {
                // only rules naming %c pay for a string, and only once each
                !wild_id && rule_matches(&r.filter.replace("%c", client_id), topic, access)
            } else {
                rule_matches(&r.filter, topic, access)
            }
        });
        Some(ok)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn own() -> Policy {
        Policy {
            name: "own".into(),
            publish: vec!["devices/%u/#".into()],
            subscribe: vec!["devices/%u/#".into(), "cmd/${device}/%c".into()],
            description: String::new(),
        }
    }

    #[test]
    fn a_device_gets_what_its_policy_grants_and_nothing_else() {
        let r = Registry::in_memory();
        r.add_policy(own()).unwrap();
        let (d, secret) = r
            .add_device(NewDevice {
                name: "dev1".into(),
                policies: vec!["own".into()],
                ..NewDevice::default()
            })
            .unwrap();
        assert_eq!(d.username, "dev1");
        let secret = secret.unwrap();
        assert_eq!(r.login("dev1", secret.as_bytes()), Login::Accepted);
        assert_eq!(r.login("dev1", b"wrong"), Login::BadSecret);
        assert_eq!(r.login("other", b"x"), Login::Unknown);
        let u = Some("dev1");
        assert_eq!(
            r.check(u, "c1", "devices/dev1/t", Access::Write),
            Some(true)
        );
        assert_eq!(
            r.check(u, "c1", "devices/dev2/t", Access::Write),
            Some(false)
        );
        assert_eq!(
            r.check(u, "c1", "devices/dev1/#", Access::Subscribe),
            Some(true)
        );
        assert_eq!(
            r.check(u, "c1", "devices/#", Access::Subscribe),
            Some(false)
        );
        assert_eq!(r.check(u, "c1", "cmd/dev1/c1", Access::Read), Some(true));
        assert_eq!(r.check(u, "c2", "cmd/dev1/c1", Access::Read), Some(false));
        assert_eq!(r.check(u, "c1", "cmd/dev1/c1", Access::Write), Some(false));
        assert_eq!(r.check(Some("x"), "c1", "devices/x/t", Access::Write), None);
        assert_eq!(r.check(None, "c1", "devices/x/t", Access::Write), None);
    }

    #[test]
    fn disabling_cuts_and_narrowing_rechecks() {
        let r = Registry::in_memory();
        r.add_policy(own()).unwrap();
        let (_, secret) = r
            .add_device(NewDevice {
                name: "dev1".into(),
                policies: vec!["own".into()],
                ..NewDevice::default()
            })
            .unwrap();
        let (_, change) = r
            .patch_device(
                "dev1",
                DevicePatch {
                    enabled: Some(false),
                    ..DevicePatch::default()
                },
            )
            .unwrap();
        assert_eq!(change.disconnect, vec!["dev1".to_string()]);
        assert_eq!(r.login("dev1", secret.unwrap().as_bytes()), Login::Disabled);
        let mut narrow = own();
        narrow.subscribe.clear();
        let change = r.replace_policy(narrow).unwrap();
        assert_eq!(change.recheck, vec!["dev1".to_string()]);
    }

    #[test]
    fn a_group_gives_its_members_its_policies() {
        let r = Registry::in_memory();
        r.add_policy(own()).unwrap();
        r.put_group(Group {
            name: "floor".into(),
            policies: vec!["own".into()],
        })
        .unwrap();
        r.add_device(NewDevice {
            name: "g1".into(),
            cert_cn: Some("cn-g1".into()),
            groups: vec!["floor".into()],
            ..NewDevice::default()
        })
        .unwrap();
        let u = Some("g1");
        assert_eq!(r.check(u, "c", "devices/g1/t", Access::Write), Some(true));
        // the group loses the policy: its members are to be checked again, and lose it
        let change = r
            .put_group(Group {
                name: "floor".into(),
                policies: Vec::new(),
            })
            .unwrap();
        assert_eq!(change.recheck, vec!["g1".to_string()]);
        assert_eq!(r.check(u, "c", "devices/g1/t", Access::Write), Some(false));
        assert!(matches!(
            r.remove_group("floor"),
            Err(RegistryError::Conflict(_))
        ));
        assert!(matches!(
            r.put_group(Group {
                name: "x".into(),
                policies: vec!["missing".into()],
            }),
            Err(RegistryError::Invalid(_))
        ));
    }

    #[test]
    fn a_cached_secret_stops_working_after_rotation() {
        let r = Registry::in_memory();
        let (_, old) = r
            .add_device(NewDevice {
                name: "rot".into(),
                ..NewDevice::default()
            })
            .unwrap();
        let old = old.unwrap();
        assert_eq!(r.login("rot", old.as_bytes()), Login::Accepted);
        // the second login is a cache hit
        assert_eq!(r.login("rot", old.as_bytes()), Login::Accepted);
        let (new, change) = r.rotate_secret("rot").unwrap();
        assert_eq!(change.disconnect, vec!["rot".to_string()]);
        assert_eq!(r.login("rot", old.as_bytes()), Login::BadSecret);
        assert_eq!(r.login("rot", new.as_bytes()), Login::Accepted);
    }

    #[test]
    fn bad_input_is_refused_with_its_kind() {
        let r = Registry::in_memory();
        let mut bad = own();
        bad.publish = vec!["a/#/b".into()];
        assert!(matches!(r.add_policy(bad), Err(RegistryError::Invalid(_))));
        r.add_policy(own()).unwrap();
        assert!(matches!(
            r.add_policy(own()),
            Err(RegistryError::Conflict(_))
        ));
        let dev = || NewDevice {
            name: "d".into(),
            cert_cn: Some("cn-d".into()),
            ..NewDevice::default()
        };
        r.add_device(dev()).unwrap();
        assert!(matches!(
            r.add_device(dev()),
            Err(RegistryError::Conflict(_))
        ));
        assert!(matches!(
            r.remove_device("nope"),
            Err(RegistryError::NotFound { .. })
        ));
        assert!(matches!(
            r.add_device(NewDevice {
                name: "e".into(),
                policies: vec!["missing".into()],
                cert_cn: Some("cn-e".into()),
                ..NewDevice::default()
            }),
            Err(RegistryError::Invalid(_))
        ));
        assert_eq!(r.certificate_login("cn-d"), Some(("d".into(), true)));
    }

    #[test]
    fn the_file_keeps_everything_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.json");
        let r = Registry::open(&path).unwrap();
        r.set_settings(RegistrySettings {
            hub: Some("zengjf".into()),
            username_template: Some("{hub}/{device}".into()),
        })
        .unwrap();
        r.add_policy(own()).unwrap();
        let (d, secret) = r
            .add_device(NewDevice {
                name: "sz_monitor_room".into(),
                policies: vec!["own".into()],
                ..NewDevice::default()
            })
            .unwrap();
        assert_eq!(d.username, "zengjf/sz_monitor_room");
        drop(r);
        let r = Registry::open(&path).unwrap();
        assert_eq!(
            r.login("zengjf/sz_monitor_room", secret.unwrap().as_bytes()),
            Login::Accepted
        );
        assert_eq!(r.policies(), vec![own()]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("$7$"), "the secret is stored hashed");
    }
}
