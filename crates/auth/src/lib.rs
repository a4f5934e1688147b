//! Authentication and authorisation for midge, compatible with mosquitto's files.
//!
//! - [`PasswordFile`]: a `password_file` as written by `mosquitto_passwd` (`$6$` and `$7$`
//!   hashes), with [`PasswordFile::verify`] for CONNECT and a small cache of recent
//!   successes so reconnect storms do not burn CPU on PBKDF2.
//! - [`Acl`]: an `acl_file` (`user`, `topic`, `pattern` with `%u`/`%c`) and
//!   [`Acl::check`] for publish, delivery and subscribe decisions.
//! - [`PasswdDocument`] and [`write_atomic`]: editing a password file in place while
//!   keeping its other lines, for `midge passwd`.
//!
//! - [`Registry`]: the device registry (devices, secrets, topic policies) in `devices.json`.
//!
//! No async, no network: the only I/O is reading and writing the files it is given.
//! Passwords and hashes are never logged and never shown by `Debug`.

mod acl;
mod edit;
mod fsio;
mod hash;
mod password_file;
mod registry;

pub use acl::{
    Access, Acl, AclFileError, AclLineError, AclLineErrorKind, ClientInfo, filter_covers,
};
pub use edit::{HashPlaintextReport, PasswdDocument, UsernameError, validate_username};
pub use fsio::{WriteOutcome, write_atomic};
pub use hash::{
    DEFAULT_ITERATIONS, HASH_LEN, HashAlgorithm, HashError, MAX_ITERATIONS, PasswordHash, SALT_LEN,
};
pub use password_file::{
    DEFAULT_CACHE_CAPACITY, PasswordFile, PasswordFileError, PasswordLineError,
    PasswordLineErrorKind,
};
pub use registry::{
    Change, DevicePatch, DeviceRecord, Group, Login, MAX_FILTERS, MAX_NAME_LEN, NewDevice, Policy,
    Registry, RegistryError, RegistrySettings,
};
