//! The broker's view of a mosquitto password file: `user:$7$...` lines, verified on CONNECT.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::hash::{HashError, PasswordHash, burn, ct_eq};

/// Default number of (user, password) pairs remembered by the verification cache.
pub const DEFAULT_CACHE_CAPACITY: usize = 1024;

/// Longest username or stored hash accepted on a line (MQTT strings are at most 65535 bytes).
const MAX_FIELD_LEN: usize = 65_535;

/// Why one line of a password file was rejected. Never holds the line's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordLineErrorKind {
    /// The line has no `:` between username and hash.
    #[error("expected 'username:hash', found no ':'")]
    MissingColon,
    /// Nothing before the `:`.
    #[error("empty username")]
    EmptyUsername,
    /// Nothing after the `:`.
    #[error("missing password hash")]
    MissingHash,
    /// Username or hash longer than 65535 bytes.
    #[error("field longer than 65535 bytes")]
    TooLong,
    /// The line is not valid UTF-8.
    #[error("line is not valid UTF-8")]
    NotUtf8,
    /// The same username appears twice.
    #[error("duplicate user (first defined on line {first_line})")]
    DuplicateUser {
        /// Line of the first definition.
        first_line: usize,
    },
    /// The hash part could not be read.
    #[error("invalid password hash: {0}")]
    BadHash(#[from] HashError),
}

/// One rejected line of a password file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct PasswordLineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub kind: PasswordLineErrorKind,
}

/// Why a password file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
    /// The file could not be read.
    #[error("cannot read password file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// One or more lines are invalid; every bad line is listed.
    #[error("{}", format_line_errors(.errors))]
    Invalid {
        /// Every bad line, in file order.
        errors: Vec<PasswordLineError>,
    },
}

fn format_line_errors(errors: &[PasswordLineError]) -> String {
    let mut s = format!(
        "invalid password file ({} bad line{})",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
    for e in errors {
        s.push_str("; ");
        s.push_str(&e.to_string());
    }
    s
}

/// Split a password-file line into (username, rest) the way mosquitto does: at the first
/// `:`, both sides trimmed. Returns `None` for blank lines and `#` comments.
pub(crate) fn split_line(line: &str) -> Option<Result<(&str, &str), PasswordLineErrorKind>> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    let Some((user, rest)) = trimmed.split_once(':') else {
        return Some(Err(PasswordLineErrorKind::MissingColon));
    };
    let (user, rest) = (user.trim(), rest.trim());
    if user.is_empty() {
        return Some(Err(PasswordLineErrorKind::EmptyUsername));
    }
    if rest.is_empty() {
        return Some(Err(PasswordLineErrorKind::MissingHash));
    }
    if user.len() > MAX_FIELD_LEN || rest.len() > MAX_FIELD_LEN {
        return Some(Err(PasswordLineErrorKind::TooLong));
    }
    Some(Ok((user, rest)))
}

/// A loaded password file: usernames with their hashes, plus a small cache of recent
/// successful verifications.
///
/// # Verification cost and the cache
///
/// A `$7$` hash with 210,000 iterations costs tens to hundreds of milliseconds of CPU, and
/// the broker checks one on every CONNECT that carries a password. When many devices
/// reconnect at once (a broker restart, a network blip), that would pin every core. So
/// after a password verifies, the file remembers `HMAC-SHA256(k, username || password)`
/// for that user, where `k` is 32 random bytes drawn when the file is loaded and never
/// leaves the process. The next CONNECT with the same username and password is answered
/// by one HMAC and a constant-time compare instead of PBKDF2.
///
/// - Only successes are cached; a wrong password always pays the full hash cost.
/// - One entry per user (the last password that worked); at most `capacity` users,
///   least recently used evicted first. Capacity 0 turns the cache off.
/// - The cache lives and dies with this value: reloading the file (a new `PasswordFile`)
///   forgets everything, so a changed or deleted user takes effect immediately.
/// - Trade-off: someone who can read the broker's memory gets HMAC tags that are cheap to
///   brute-force compared to the PBKDF2 hashes, but such an attacker can also read the
///   plaintext passwords arriving in CONNECT packets.
///
/// An unknown username costs one PBKDF2 run too (with the largest iteration count in the
/// file), so response time does not reveal which usernames exist.
///
/// `Debug` shows only counts: never usernames' hashes or cached tags.
pub struct PasswordFile {
    users: HashMap<String, PasswordHash>,
    /// Iteration count to burn for unknown users (0 when no PBKDF2 users exist).
    dummy_iterations: u32,
    cache: VerifyCache,
}

impl PasswordFile {
    /// Parse password-file text. Every invalid line is reported.
    pub fn parse(text: &str) -> Result<PasswordFile, PasswordFileError> {
        PasswordFile::parse_bytes(text.as_bytes())
    }

    /// Parse password-file bytes (lines that are not UTF-8 are reported as errors).
    pub fn parse_bytes(bytes: &[u8]) -> Result<PasswordFile, PasswordFileError> {
        let mut users: HashMap<String, PasswordHash> = HashMap::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        let mut errors = Vec::new();
        for (idx, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line_no = idx + 1;
            let mut err = |kind| {
                errors.push(PasswordLineError {
                    line: line_no,
                    kind,
                })
            };
            let Ok(line) = std::str::from_utf8(raw) else {
                err(PasswordLineErrorKind::NotUtf8);
                continue;
            };
            let (user, stored) = match split_line(line) {
                None => continue,
                Some(Err(kind)) => {
                    err(kind);
                    continue;
                }
                Some(Ok(parts)) => parts,
            };
            if let Some(&first) = first_line.get(user) {
                err(PasswordLineErrorKind::DuplicateUser { first_line: first });
                continue;
            }
            match PasswordHash::parse(stored) {
                Ok(hash) => {
                    first_line.insert(user.to_owned(), line_no);
                    users.insert(user.to_owned(), hash);
                }
                Err(e) => err(PasswordLineErrorKind::BadHash(e)),
            }
        }
        if !errors.is_empty() {
            return Err(PasswordFileError::Invalid { errors });
        }
        let dummy_iterations = users
            .values()
            .filter_map(PasswordHash::iterations)
            .max()
            .unwrap_or(0);
        tracing::debug!(users = users.len(), "password file parsed");
        Ok(PasswordFile {
            users,
            dummy_iterations,
            cache: VerifyCache::new(DEFAULT_CACHE_CAPACITY),
        })
    }

    /// Read and parse a password file.
    pub fn load(path: &Path) -> Result<PasswordFile, PasswordFileError> {
        let bytes = std::fs::read(path).map_err(|source| PasswordFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        PasswordFile::parse_bytes(&bytes)
    }

    /// Set how many users the verification cache remembers (0 disables it). Clears it.
    pub fn with_cache_capacity(mut self, capacity: usize) -> PasswordFile {
        self.cache = VerifyCache::new(capacity);
        self
    }

    /// Whether `password` is the password of `username`.
    ///
    /// Unknown users and wrong passwords both return `false` after a full hash computation.
    /// See the type's documentation for the cache of recent successes.
    pub fn verify(&self, username: &str, password: &[u8]) -> bool {
        let Some(hash) = self.users.get(username) else {
            if self.dummy_iterations > 0 {
                burn(self.dummy_iterations);
            }
            return false;
        };
        let tag = self.cache.tag(username, password);
        if let Some(tag) = &tag {
            if self.cache.hit(username, tag) {
                return true;
            }
        }
        let ok = hash.verify(password);
        if let (true, Some(tag)) = (ok, tag) {
            self.cache.insert(username, tag);
        }
        ok
    }

    /// Whether the file defines `username`.
    pub fn contains_user(&self, username: &str) -> bool {
        self.users.contains_key(username)
    }

    /// The hash stored for `username`.
    pub fn hash_of(&self, username: &str) -> Option<&PasswordHash> {
        self.users.get(username)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file defines no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The usernames, in no particular order.
    pub fn usernames(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// Number of users currently in the verification cache.
    pub fn cached_len(&self) -> usize {
        self.cache.len()
    }
}

impl fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordFile")
            .field("users", &self.users.len())
            .field("cache_capacity", &self.cache.capacity)
            .finish_non_exhaustive()
    }
}

type Tag = [u8; 32];

pub(crate) struct VerifyCache {
    capacity: usize,
    /// Per-process (per-load) random HMAC key; `None` if the OS RNG failed (cache off).
    key: Option<[u8; 32]>,
    inner: Mutex<CacheInner>,
}

impl fmt::Debug for VerifyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // never the key or the tags
        f.debug_struct("VerifyCache")
            .field("capacity", &self.capacity)
            .field("entries", &self.len())
            .finish()
    }
}

#[derive(Default)]
struct CacheInner {
    clock: u64,
    entries: HashMap<String, (Tag, u64)>,
}

impl VerifyCache {
    pub(crate) fn new(capacity: usize) -> VerifyCache {
        let mut key = [0u8; 32];
        let key = if capacity > 0 && getrandom::fill(&mut key).is_ok() {
            Some(key)
        } else {
            if capacity > 0 {
                tracing::warn!("no randomness for the password cache key; cache disabled");
            }
            None
        };
        VerifyCache {
            capacity,
            key,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    pub(crate) fn tag(&self, username: &str, password: &[u8]) -> Option<Tag> {
        let key = self.key.as_ref()?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
        // Length-prefix the username so (user, password) pairs cannot collide.
        mac.update(&(username.len() as u64).to_be_bytes());
        mac.update(username.as_bytes());
        mac.update(password);
        Some(mac.finalize().into_bytes().into())
    }

    pub(crate) fn hit(&self, username: &str, tag: &Tag) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.clock += 1;
        let now = inner.clock;
        match inner.entries.get_mut(username) {
            Some((stored, used)) if ct_eq(stored, tag) => {
                *used = now;
                true
            }
            _ => false,
        }
    }

    /// Forget every entry.
    pub(crate) fn clear(&self) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .clear();
    }

    pub(crate) fn insert(&self, username: &str, tag: Tag) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.clock += 1;
        let now = inner.clock;
        if !inner.entries.contains_key(username) && inner.entries.len() >= self.capacity {
            let oldest = inner
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                inner.entries.remove(&oldest);
            }
        }
        inner.entries.insert(username.to_owned(), (tag, now));
    }

    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::HashAlgorithm;

    fn line(user: &str, pw: &str, alg: HashAlgorithm) -> String {
        format!(
            "{user}:{}\n",
            PasswordHash::create(pw.as_bytes(), alg, 1000)
                .unwrap()
                .encode()
        )
    }

    fn sample() -> String {
        format!(
            "# a comment\n\n{}{}   \n  # indented comment\n",
            line("alice", "wonderland", HashAlgorithm::Sha512Pbkdf2),
            line("bob", "builder", HashAlgorithm::Sha512),
        )
    }

    #[test]
    fn parses_users_comments_and_blank_lines() {
        let f = PasswordFile::parse(&sample()).unwrap();
        assert_eq!(f.len(), 2);
        assert!(f.contains_user("alice"));
        assert!(f.contains_user("bob"));
        assert!(!f.contains_user("# a comment"));
    }

    #[test]
    fn verifies_right_and_rejects_wrong_passwords() {
        let f = PasswordFile::parse(&sample()).unwrap();
        assert!(f.verify("alice", b"wonderland"));
        assert!(f.verify("bob", b"builder"));
        assert!(!f.verify("alice", b"builder"));
        assert!(!f.verify("bob", b"wonderland"));
        assert!(!f.verify("carol", b"wonderland"));
        assert!(!f.verify("alice", b""));
    }

    #[test]
    fn crlf_line_endings_and_spaces_around_fields_are_accepted() {
        let text = sample().replace('\n', "\r\n").replace("bob:", " bob : ");
        let f = PasswordFile::parse(&text).unwrap();
        assert!(f.verify("bob", b"builder"));
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let good = line("alice", "x", HashAlgorithm::Sha512Pbkdf2);
        let text = format!(
            "{good}no colon here\n:$6$abc$def\ncarol:\ndave:$9$x$y\n{good}eve:$7$0$AAAA$AAAA\n"
        );
        let Err(PasswordFileError::Invalid { errors }) = PasswordFile::parse(&text) else {
            panic!("expected errors");
        };
        let got: Vec<(usize, PasswordLineErrorKind)> =
            errors.iter().map(|e| (e.line, e.kind.clone())).collect();
        assert_eq!(
            got,
            vec![
                (2, PasswordLineErrorKind::MissingColon),
                (3, PasswordLineErrorKind::EmptyUsername),
                (4, PasswordLineErrorKind::MissingHash),
                (5, PasswordLineErrorKind::BadHash(HashError::UnknownScheme)),
                (6, PasswordLineErrorKind::DuplicateUser { first_line: 1 }),
                (7, PasswordLineErrorKind::BadHash(HashError::BadIterations)),
            ]
        );
    }

    #[test]
    fn non_utf8_line_is_an_error_not_a_panic() {
        let mut bytes = line("alice", "x", HashAlgorithm::Sha512).into_bytes();
        bytes.extend_from_slice(b"b\xffb:$6$x$y\n");
        let Err(PasswordFileError::Invalid { errors }) = PasswordFile::parse_bytes(&bytes) else {
            panic!("expected errors");
        };
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 2);
        assert_eq!(errors[0].kind, PasswordLineErrorKind::NotUtf8);
    }

    #[test]
    fn error_messages_do_not_contain_the_hash() {
        let h = PasswordHash::create(b"x", HashAlgorithm::Sha512Pbkdf2, 10)
            .unwrap()
            .encode();
        let text = format!("alice:{h}\nalice:{h}\n");
        let err = PasswordFile::parse(&text).unwrap_err();
        let msg = format!("{err} {err:?}");
        let salt = h.split('$').nth(3).unwrap();
        assert!(!msg.contains(salt), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn debug_shows_no_hashes_or_names() {
        let f = PasswordFile::parse(&sample()).unwrap();
        let dbg = format!("{f:?}");
        assert!(!dbg.contains('$'), "{dbg}");
        assert!(!dbg.contains("alice"), "{dbg}");
    }

    #[test]
    fn cache_remembers_successes_only() {
        let f = PasswordFile::parse(&sample()).unwrap();
        assert!(!f.verify("alice", b"nope"));
        assert_eq!(f.cached_len(), 0);
        assert!(f.verify("alice", b"wonderland"));
        assert_eq!(f.cached_len(), 1);
        // A cached success does not let a different password through.
        assert!(!f.verify("alice", b"wonderlanD"));
        assert!(f.verify("alice", b"wonderland"));
        // Another user's password does not hit alice's entry.
        assert!(!f.verify("bob", b"wonderland"));
        assert_eq!(f.cached_len(), 1);
    }

    #[test]
    fn cache_hit_is_much_cheaper_than_hashing() {
        let text = format!(
            "alice:{}\n",
            PasswordHash::create(b"pw", HashAlgorithm::Sha512Pbkdf2, 20_000)
                .unwrap()
                .encode()
        );
        let f = PasswordFile::parse(&text).unwrap();
        let t0 = std::time::Instant::now();
        assert!(f.verify("alice", b"pw"));
        let miss = t0.elapsed();
        let t1 = std::time::Instant::now();
        for _ in 0..10 {
            assert!(f.verify("alice", b"pw"));
        }
        let hits = t1.elapsed();
        assert!(hits < miss, "10 hits {hits:?} vs one miss {miss:?}");
    }

    #[test]
    fn cache_is_bounded_and_evicts_least_recently_used() {
        let mut text = String::new();
        for i in 0..4 {
            text.push_str(&line(&format!("u{i}"), "pw", HashAlgorithm::Sha512));
        }
        let f = PasswordFile::parse(&text).unwrap().with_cache_capacity(2);
        assert!(f.verify("u0", b"pw"));
        assert!(f.verify("u1", b"pw"));
        assert!(f.verify("u0", b"pw")); // u0 now most recent
        assert!(f.verify("u2", b"pw")); // evicts u1
        assert_eq!(f.cached_len(), 2);
        let inner = f.cache.inner.lock().unwrap();
        assert!(inner.entries.contains_key("u0"));
        assert!(inner.entries.contains_key("u2"));
        assert!(!inner.entries.contains_key("u1"));
    }

    #[test]
    fn cache_capacity_zero_disables_it() {
        let f = PasswordFile::parse(&sample())
            .unwrap()
            .with_cache_capacity(0);
        assert!(f.verify("alice", b"wonderland"));
        assert_eq!(f.cached_len(), 0);
        assert!(f.verify("alice", b"wonderland"));
    }

    #[test]
    fn unknown_user_takes_as_long_as_a_wrong_password() {
        let text = format!(
            "alice:{}\n",
            PasswordHash::create(b"pw", HashAlgorithm::Sha512Pbkdf2, 20_000)
                .unwrap()
                .encode()
        );
        let f = PasswordFile::parse(&text).unwrap();
        let t0 = std::time::Instant::now();
        assert!(!f.verify("alice", b"wrong"));
        let wrong = t0.elapsed();
        let t1 = std::time::Instant::now();
        assert!(!f.verify("mallory", b"wrong"));
        let unknown = t1.elapsed();
        assert!(
            unknown * 3 > wrong,
            "unknown {unknown:?} vs wrong {wrong:?}"
        );
    }
}
