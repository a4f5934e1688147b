//! Editing a password file as text, keeping every line it does not change (`midge passwd`).

use std::fmt;

use crate::hash::{HashAlgorithm, HashError, PasswordHash};
use crate::password_file::split_line;

/// Why a username cannot be stored in a password file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// Empty username.
    #[error("username must not be empty")]
    Empty,
    /// Contains `:`, which separates username and hash.
    #[error("username must not contain the ':' character")]
    Colon,
    /// Contains a line break or NUL.
    #[error("username must not contain line breaks or NUL")]
    ControlCharacter,
    /// Starts with `#` (the line would be a comment).
    #[error("username must not start with '#'")]
    Hash,
    /// Leading or trailing whitespace (mosquitto trims it when reading).
    #[error("username must not start or end with whitespace")]
    Whitespace,
    /// Longer than an MQTT string.
    #[error("username must be at most 65535 bytes")]
    TooLong,
}

/// Check that `username` can be written to and read back from a password file.
pub fn validate_username(username: &str) -> Result<(), UsernameError> {
    if username.is_empty() {
        return Err(UsernameError::Empty);
    }
    if username.len() > 65_535 {
        return Err(UsernameError::TooLong);
    }
    if username.contains(':') {
        return Err(UsernameError::Colon);
    }
    if username.contains(['\n', '\r', '\0']) {
        return Err(UsernameError::ControlCharacter);
    }
    if username.starts_with('#') {
        return Err(UsernameError::Hash);
    }
    if username.trim() != username {
        return Err(UsernameError::Whitespace);
    }
    Ok(())
}

#[derive(Clone, PartialEq, Eq)]
enum DocLine {
    /// A `user:...` line (the raw text is kept until it is replaced).
    Entry { username: String, raw: String },
    /// Comments, blank lines, and lines midge does not understand: kept verbatim.
    Other(String),
}

/// Counts from [`PasswdDocument::hash_plaintext`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashPlaintextReport {
    /// Lines whose plain-text password was replaced by a hash.
    pub hashed: usize,
    /// Lines left alone because they already hold a valid `$6$`/`$7$` hash.
    pub already_hashed: usize,
}

/// A password file as editable lines. Lines that are not touched are written back
/// byte-for-byte (apart from the final newline, which is always present).
///
/// `Debug` shows only the number of lines and users.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PasswdDocument {
    lines: Vec<DocLine>,
}

impl PasswdDocument {
    /// An empty document.
    pub fn new() -> PasswdDocument {
        PasswdDocument::default()
    }

    /// Split text into lines. Never fails: lines that are not `user:...` are kept as-is.
    pub fn parse(text: &str) -> PasswdDocument {
        let body = text.strip_suffix('\n').unwrap_or(text);
        if body.is_empty() && text.len() <= 1 {
            return PasswdDocument::new();
        }
        let lines = body
            .split('\n')
            .map(|raw| match split_line(raw) {
                Some(Ok((user, _))) => DocLine::Entry {
                    username: user.to_owned(),
                    raw: raw.to_owned(),
                },
                _ => DocLine::Other(raw.to_owned()),
            })
            .collect();
        PasswdDocument { lines }
    }

    /// Whether a line defines `username`.
    pub fn contains(&self, username: &str) -> bool {
        self.lines
            .iter()
            .any(|l| matches!(l, DocLine::Entry { username: u, .. } if u == username))
    }

    /// The usernames, in file order.
    pub fn usernames(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().filter_map(|l| match l {
            DocLine::Entry { username, .. } => Some(username.as_str()),
            DocLine::Other(_) => None,
        })
    }

    /// Set `username`'s hash: replaces its line in place (dropping any duplicate lines for
    /// the same user) or appends a new line. Returns whether the user existed.
    pub fn set(&mut self, username: &str, hash: &PasswordHash) -> bool {
        let new_raw = format!("{username}:{}", hash.encode());
        let mut found = false;
        self.lines.retain_mut(|l| match l {
            DocLine::Entry { username: u, raw } if u == username => {
                if found {
                    false
                } else {
                    found = true;
                    raw.clone_from(&new_raw);
                    true
                }
            }
            _ => true,
        });
        if !found {
            self.lines.push(DocLine::Entry {
                username: username.to_owned(),
                raw: new_raw,
            });
        }
        found
    }

    /// Remove every line for `username`. Returns whether there was one.
    pub fn remove(&mut self, username: &str) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|l| !matches!(l, DocLine::Entry { username: u, .. } if u == username));
        self.lines.len() != before
    }

    /// `mosquitto_passwd -U`: treat each `user:password` line as a plain-text password and
    /// replace it with a hash. Lines that already hold a valid hash are left alone (so
    /// running it twice does not hash a hash, which mosquitto_passwd would do).
    /// The password is everything after the first `:` (up to the line end, `\r` removed).
    pub fn hash_plaintext(
        &mut self,
        algorithm: HashAlgorithm,
        iterations: u32,
    ) -> Result<HashPlaintextReport, HashError> {
        let mut report = HashPlaintextReport::default();
        for line in &mut self.lines {
            let DocLine::Entry { username, raw } = line else {
                continue;
            };
            let Some((_, value)) = raw.split_once(':') else {
                continue;
            };
            let value = value.strip_suffix('\r').unwrap_or(value);
            if PasswordHash::parse(value.trim()).is_ok() {
                report.already_hashed += 1;
                continue;
            }
            let hash = PasswordHash::create(value.as_bytes(), algorithm, iterations)?;
            *raw = format!("{username}:{}", hash.encode());
            report.hashed += 1;
        }
        Ok(report)
    }

    /// The file text, one line per entry, ending with a newline (empty if no lines).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            match l {
                DocLine::Entry { raw, .. } | DocLine::Other(raw) => out.push_str(raw),
            }
            out.push('\n');
        }
        out
    }
}

impl fmt::Debug for PasswdDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswdDocument")
            .field("lines", &self.lines.len())
            .field("users", &self.usernames().count())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PasswordFile;

    fn hash(pw: &str) -> PasswordHash {
        PasswordHash::create(pw.as_bytes(), HashAlgorithm::Sha512Pbkdf2, 100).unwrap()
    }

    #[test]
    fn set_appends_then_replaces_in_place_keeping_other_lines() {
        let mut doc = PasswdDocument::parse("# header\n\n");
        assert!(!doc.set("alice", &hash("a1")));
        assert!(!doc.set("bob", &hash("b1")));
        assert!(doc.set("alice", &hash("a2")));
        let text = doc.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "# header");
        assert_eq!(lines[1], "");
        assert!(lines[2].starts_with("alice:$7$100$"));
        assert!(lines[3].starts_with("bob:$7$100$"));
        let f = PasswordFile::parse(&text).unwrap();
        assert!(f.verify("alice", b"a2"));
        assert!(!f.verify("alice", b"a1"));
        assert!(f.verify("bob", b"b1"));
    }

    #[test]
    fn untouched_lines_survive_byte_for_byte() {
        let text = "# c\r\nweird line without colon\nbob:$6$x$y\n";
        let mut doc = PasswdDocument::parse(text);
        doc.set("alice", &hash("a"));
        let out = doc.render();
        assert!(out.starts_with(text), "{out}");
    }

    #[test]
    fn remove_drops_all_lines_of_the_user() {
        let mut doc = PasswdDocument::parse("a:x\nb:y\na:z\n");
        assert!(doc.remove("a"));
        assert!(!doc.remove("a"));
        assert_eq!(doc.render(), "b:y\n");
        assert!(!doc.contains("a"));
        assert!(doc.contains("b"));
    }

    #[test]
    fn set_collapses_duplicates() {
        let mut doc = PasswdDocument::parse("a:x\nb:y\na:z\n");
        assert!(doc.set("a", &hash("p")));
        assert_eq!(doc.usernames().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn hash_plaintext_hashes_once() {
        let mut doc = PasswdDocument::parse("# users\nalice:wonder:land\nbob:builder\r\n");
        let r = doc
            .hash_plaintext(HashAlgorithm::Sha512Pbkdf2, 100)
            .unwrap();
        assert_eq!(
            r,
            HashPlaintextReport {
                hashed: 2,
                already_hashed: 0
            }
        );
        let text = doc.render();
        let f = PasswordFile::parse(&text).unwrap();
        assert!(f.verify("alice", b"wonder:land"));
        assert!(f.verify("bob", b"builder"));
        let r2 = doc
            .hash_plaintext(HashAlgorithm::Sha512Pbkdf2, 100)
            .unwrap();
        assert_eq!(r2.hashed, 0);
        assert_eq!(r2.already_hashed, 2);
        assert_eq!(doc.render(), text);
    }

    #[test]
    fn empty_input_renders_empty() {
        assert_eq!(PasswdDocument::parse("").render(), "");
        assert_eq!(PasswdDocument::parse("\n").render(), "");
        assert_eq!(PasswdDocument::parse("a:b").render(), "a:b\n");
    }

    #[test]
    fn username_rules() {
        assert_eq!(validate_username("alice"), Ok(()));
        assert_eq!(validate_username("John Smith"), Ok(()));
        assert_eq!(validate_username(""), Err(UsernameError::Empty));
        assert_eq!(validate_username("a:b"), Err(UsernameError::Colon));
        assert_eq!(
            validate_username("a\nb"),
            Err(UsernameError::ControlCharacter)
        );
        assert_eq!(validate_username("#root"), Err(UsernameError::Hash));
        assert_eq!(validate_username(" a"), Err(UsernameError::Whitespace));
        assert_eq!(
            validate_username(&"x".repeat(65_536)),
            Err(UsernameError::TooLong)
        );
    }

    #[test]
    fn debug_shows_no_content() {
        let mut doc = PasswdDocument::new();
        doc.set("alice", &hash("a"));
        let dbg = format!("{doc:?}");
        assert!(!dbg.contains("alice") && !dbg.contains('$'), "{dbg}");
    }
}
