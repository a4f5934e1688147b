//! mosquitto-compatible password hashes: `$6$` (salted SHA-512) and `$7$` (PBKDF2-HMAC-SHA512).
//!
//! Formats, as written by mosquitto_passwd 2.0 and read by the mosquitto 2.0 broker:
//!
//! - `$6$<base64 salt>$<base64 hash>`: `hash = SHA-512(password || salt)` (password first,
//!   then the salt bytes), mosquitto 1.x's default.
//! - `$7$<iterations>$<base64 salt>$<base64 hash>`: `hash = PBKDF2-HMAC-SHA512(password, salt,
//!   iterations, 64 bytes)`, mosquitto 2.x's default.
//!
//! The hash is always 64 bytes. mosquitto 2.0 writes (and its broker only accepts) 12-byte
//! salts; later versions also accept 64-byte salts. midge reads any salt of 1..=64 bytes and
//! writes 12-byte salts so that every mosquitto 2.x broker can read midge's files.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// Default PBKDF2 iteration count for new hashes.
///
/// 210,000 is OWASP's Password Storage Cheat Sheet (2023) recommendation for
/// PBKDF2-HMAC-SHA512. mosquitto_passwd 2.0 defaults to 101, which is far too low for
/// an offline attack on a stolen file. The cost at CONNECT time is bounded by the
/// verification cache in [`crate::PasswordFile`].
pub const DEFAULT_ITERATIONS: u32 = 210_000;

/// Salt length midge writes: what mosquitto 2.0 writes and the only length its broker reads.
pub const SALT_LEN: usize = 12;

/// Length of the stored digest (SHA-512 output) in both formats.
pub const HASH_LEN: usize = 64;

/// Largest salt accepted when reading (mosquitto 2.1+ writes 64-byte salts).
const MAX_SALT_LEN: usize = 64;

/// Largest iteration count accepted: mosquitto stores the count in a C `int`.
pub const MAX_ITERATIONS: u32 = i32::MAX as u32;

/// Base64 as OpenSSL writes it (standard alphabet, padded), but tolerant of missing padding.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The hashing scheme of a stored password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    /// `$6$`: one round of SHA-512 over password then salt (mosquitto 1.x, weak).
    Sha512,
    /// `$7$`: PBKDF2-HMAC-SHA512 with the iteration count stored in the line.
    Sha512Pbkdf2,
}

impl HashAlgorithm {
    /// The name mosquitto_passwd's `-H` option uses (`sha512`, `sha512-pbkdf2`).
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha512 => "sha512",
            HashAlgorithm::Sha512Pbkdf2 => "sha512-pbkdf2",
        }
    }
}

impl FromStr for HashAlgorithm {
    type Err = HashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha512" => Ok(HashAlgorithm::Sha512),
            "sha512-pbkdf2" => Ok(HashAlgorithm::Sha512Pbkdf2),
            _ => Err(HashError::UnknownAlgorithm),
        }
    }
}

impl fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a stored hash could not be read or a new one created. Never carries hash material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// The hash does not start with `$6$` or `$7$`.
    #[error("unsupported hash type (expected $6$ or $7$)")]
    UnknownScheme,
    /// A `-H` algorithm name other than `sha512` or `sha512-pbkdf2`.
    #[error("unknown hash algorithm (expected sha512 or sha512-pbkdf2)")]
    UnknownAlgorithm,
    /// A `$`-separated field is missing.
    #[error("missing {0} field")]
    MissingField(&'static str),
    /// More `$`-separated fields than the scheme has.
    #[error("unexpected extra field after the hash")]
    ExtraField,
    /// The iteration count is not a number in 1..=2147483647.
    #[error("iteration count must be a number from 1 to 2147483647")]
    BadIterations,
    /// A field is not valid base64.
    #[error("{0} is not valid base64")]
    BadBase64(&'static str),
    /// The salt decodes to an unsupported length.
    #[error("salt is {0} bytes (expected 1 to 64)")]
    BadSaltLength(usize),
    /// The hash does not decode to 64 bytes.
    #[error("hash is {0} bytes (expected 64)")]
    BadHashLength(usize),
    /// The operating system's random number generator failed.
    #[error("could not get random bytes for a salt")]
    Random,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Sha512,
    Pbkdf2 { iterations: u32 },
}

/// A stored password hash in mosquitto's format.
///
/// `Debug` shows only the scheme and iteration count, never the salt or the digest.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    scheme: Scheme,
    salt: Vec<u8>,
    hash: [u8; HASH_LEN],
}

impl PasswordHash {
    /// Hash `password` with a fresh random 12-byte salt.
    ///
    /// `iterations` is used only for [`HashAlgorithm::Sha512Pbkdf2`] and must be in
    /// `1..=MAX_ITERATIONS`.
    pub fn create(
        password: &[u8],
        algorithm: HashAlgorithm,
        iterations: u32,
    ) -> Result<PasswordHash, HashError> {
        let mut salt = vec![0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|_| HashError::Random)?;
        PasswordHash::with_salt(password, algorithm, iterations, salt)
    }

    /// Hash `password` with the given salt (for tests and known-answer checks).
    pub fn with_salt(
        password: &[u8],
        algorithm: HashAlgorithm,
        iterations: u32,
        salt: Vec<u8>,
    ) -> Result<PasswordHash, HashError> {
        if salt.is_empty() || salt.len() > MAX_SALT_LEN {
            return Err(HashError::BadSaltLength(salt.len()));
        }
        let scheme = match algorithm {
            HashAlgorithm::Sha512 => Scheme::Sha512,
            HashAlgorithm::Sha512Pbkdf2 => {
                if iterations == 0 || iterations > MAX_ITERATIONS {
                    return Err(HashError::BadIterations);
                }
                Scheme::Pbkdf2 { iterations }
            }
        };
        let hash = digest(scheme, password, &salt);
        Ok(PasswordHash { scheme, salt, hash })
    }

    /// Parse a stored hash (the part after `user:`).
    pub fn parse(s: &str) -> Result<PasswordHash, HashError> {
        let (scheme, rest) = if let Some(rest) = s.strip_prefix("$6$") {
            (None, rest)
        } else if let Some(rest) = s.strip_prefix("$7$") {
            (Some(()), rest)
        } else {
            return Err(HashError::UnknownScheme);
        };
        let mut fields = rest.split('$');
        let scheme = match scheme {
            None => Scheme::Sha512,
            Some(()) => {
                let it = fields
                    .next()
                    .filter(|f| !f.is_empty())
                    .ok_or(HashError::MissingField("iterations"))?;
                let iterations: u32 = it.parse().map_err(|_| HashError::BadIterations)?;
                if iterations == 0 || iterations > MAX_ITERATIONS {
                    return Err(HashError::BadIterations);
                }
                Scheme::Pbkdf2 { iterations }
            }
        };
        let salt_b64 = fields
            .next()
            .filter(|f| !f.is_empty())
            .ok_or(HashError::MissingField("salt"))?;
        let hash_b64 = fields
            .next()
            .filter(|f| !f.is_empty())
            .ok_or(HashError::MissingField("hash"))?;
        if fields.next().is_some() {
            return Err(HashError::ExtraField);
        }
        let salt = B64
            .decode(salt_b64)
            .map_err(|_| HashError::BadBase64("salt"))?;
        if salt.is_empty() || salt.len() > MAX_SALT_LEN {
            return Err(HashError::BadSaltLength(salt.len()));
        }
        let hash_vec = B64
            .decode(hash_b64)
            .map_err(|_| HashError::BadBase64("hash"))?;
        let hash: [u8; HASH_LEN] = hash_vec
            .as_slice()
            .try_into()
            .map_err(|_| HashError::BadHashLength(hash_vec.len()))?;
        Ok(PasswordHash { scheme, salt, hash })
    }

    /// The stored form, e.g. `$7$210000$<salt>$<hash>`, as written after `user:`.
    pub fn encode(&self) -> String {
        let salt = B64.encode(&self.salt);
        let hash = B64.encode(self.hash);
        match self.scheme {
            Scheme::Sha512 => format!("$6${salt}${hash}"),
            Scheme::Pbkdf2 { iterations } => format!("$7${iterations}${salt}${hash}"),
        }
    }

    /// Whether `password` matches. The digest comparison is constant-time.
    pub fn verify(&self, password: &[u8]) -> bool {
        let candidate = digest(self.scheme, password, &self.salt);
        ct_eq(&candidate, &self.hash)
    }

    /// The scheme of this hash.
    pub fn algorithm(&self) -> HashAlgorithm {
        match self.scheme {
            Scheme::Sha512 => HashAlgorithm::Sha512,
            Scheme::Pbkdf2 { .. } => HashAlgorithm::Sha512Pbkdf2,
        }
    }

    /// The PBKDF2 iteration count (`None` for `$6$`).
    pub fn iterations(&self) -> Option<u32> {
        match self.scheme {
            Scheme::Sha512 => None,
            Scheme::Pbkdf2 { iterations } => Some(iterations),
        }
    }

    /// Salt length in bytes.
    pub fn salt_len(&self) -> usize {
        self.salt.len()
    }
}

impl FromStr for PasswordHash {
    type Err = HashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PasswordHash::parse(s)
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHash")
            .field("algorithm", &self.algorithm())
            .field("iterations", &self.iterations())
            .finish_non_exhaustive()
    }
}

/// Constant-time equality of two equal-length byte strings (length is not secret).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

fn digest(scheme: Scheme, password: &[u8], salt: &[u8]) -> [u8; HASH_LEN] {
    let mut out = [0u8; HASH_LEN];
    match scheme {
        Scheme::Sha512 => {
            let mut h = Sha512::new();
            h.update(password);
            h.update(salt);
            out.copy_from_slice(&h.finalize());
        }
        Scheme::Pbkdf2 { iterations } => {
            pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
        }
    }
    out
}

/// Run one PBKDF2 computation with `iterations` and discard it: used for unknown users so
/// that "no such user" costs as much time as "wrong password".
pub(crate) fn burn(iterations: u32) {
    let mut out = [0u8; HASH_LEN];
    pbkdf2::pbkdf2_hmac::<Sha512>(b"midge-dummy", b"midge-dummy-salt", iterations, &mut out);
    std::hint::black_box(&out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha512_is_password_then_salt() {
        // Known answer computed independently: SHA-512("secret" || "saltsaltsalt").
        let salt = b"saltsaltsalt".to_vec();
        let h = PasswordHash::with_salt(b"secret", HashAlgorithm::Sha512, 0, salt).unwrap();
        let mut expect = Sha512::new();
        expect.update(b"secretsaltsaltsalt");
        assert_eq!(h.hash.as_slice(), expect.finalize().as_slice());
        assert!(h.encode().starts_with("$6$c2FsdHNhbHRzYWx0$"));
    }

    #[test]
    fn pbkdf2_known_answer_rfc_style() {
        // PBKDF2-HMAC-SHA512("password", "salt", 1) first bytes (well-known test vector).
        let h = PasswordHash::with_salt(
            b"password",
            HashAlgorithm::Sha512Pbkdf2,
            1,
            b"salt".to_vec(),
        )
        .unwrap();
        assert_eq!(
            h.hash.get(..8).unwrap(),
            [0x86, 0x7f, 0x70, 0xcf, 0x1a, 0xde, 0x02, 0xcf]
        );
    }

    #[test]
    fn create_encode_parse_verify_round_trip() {
        for alg in [HashAlgorithm::Sha512, HashAlgorithm::Sha512Pbkdf2] {
            let h = PasswordHash::create(b"hunter2", alg, 1000).unwrap();
            assert_eq!(h.salt_len(), SALT_LEN);
            let text = h.encode();
            let back = PasswordHash::parse(&text).unwrap();
            assert_eq!(back, h);
            assert!(back.verify(b"hunter2"));
            assert!(!back.verify(b"hunter3"));
            assert!(!back.verify(b""));
        }
    }

    #[test]
    fn encoded_pbkdf2_carries_iterations() {
        let h = PasswordHash::create(b"x", HashAlgorithm::Sha512Pbkdf2, 4321).unwrap();
        assert!(h.encode().starts_with("$7$4321$"));
        assert_eq!(h.iterations(), Some(4321));
    }

    #[test]
    fn salts_are_random() {
        let a = PasswordHash::create(b"x", HashAlgorithm::Sha512Pbkdf2, 10).unwrap();
        let b = PasswordHash::create(b"x", HashAlgorithm::Sha512Pbkdf2, 10).unwrap();
        assert_ne!(a.encode(), b.encode());
    }

    #[test]
    fn parse_rejects_malformed() {
        let good = PasswordHash::create(b"x", HashAlgorithm::Sha512Pbkdf2, 10)
            .unwrap()
            .encode();
        let fields: Vec<&str> = good.split('$').collect();
        let (salt, hash) = (fields[3], fields[4]);
        let cases = [
            ("plain".to_string(), HashError::UnknownScheme),
            ("$5$abc$def".to_string(), HashError::UnknownScheme),
            ("$7$".to_string(), HashError::MissingField("iterations")),
            (format!("$7$0${salt}${hash}"), HashError::BadIterations),
            (format!("$7$-1${salt}${hash}"), HashError::BadIterations),
            (format!("$7$abc${salt}${hash}"), HashError::BadIterations),
            (
                format!("$7$3000000000${salt}${hash}"),
                HashError::BadIterations,
            ),
            ("$7$10$".to_string(), HashError::MissingField("salt")),
            (format!("$7$10${salt}"), HashError::MissingField("hash")),
            (format!("$7$10${salt}${hash}$x"), HashError::ExtraField),
            (format!("$7$10$!!!${hash}"), HashError::BadBase64("salt")),
            (format!("$7$10${salt}$***"), HashError::BadBase64("hash")),
            (format!("$7$10${salt}${salt}"), HashError::BadHashLength(12)),
            (format!("$6$***${hash}"), HashError::BadBase64("salt")),
            (format!("$6${salt}${salt}"), HashError::BadHashLength(12)),
        ];
        for (text, want) in cases {
            assert_eq!(PasswordHash::parse(&text), Err(want), "{text}");
        }
    }

    #[test]
    fn debug_never_shows_salt_or_digest() {
        let h = PasswordHash::create(b"x", HashAlgorithm::Sha512Pbkdf2, 10).unwrap();
        let enc = h.encode();
        let dbg = format!("{h:?}");
        let fields: Vec<&str> = enc.split('$').collect();
        assert!(!dbg.contains(fields[3]), "{dbg}");
        assert!(!dbg.contains(fields[4]), "{dbg}");
        assert!(dbg.contains("Sha512Pbkdf2"));
    }

    #[test]
    fn constant_time_compare_distinguishes_every_byte() {
        let a = [7u8; HASH_LEN];
        assert!(ct_eq(&a, &a));
        for i in 0..HASH_LEN {
            let mut b = a;
            b[i] ^= 1;
            assert!(!ct_eq(&a, &b), "difference at byte {i} missed");
        }
        assert!(!ct_eq(&a, &a[..HASH_LEN - 1]));
    }

    #[test]
    fn algorithm_names_match_mosquitto_passwd() {
        assert_eq!("sha512".parse(), Ok(HashAlgorithm::Sha512));
        assert_eq!("sha512-pbkdf2".parse(), Ok(HashAlgorithm::Sha512Pbkdf2));
        assert_eq!(
            "argon2id".parse::<HashAlgorithm>(),
            Err(HashError::UnknownAlgorithm)
        );
    }
}
