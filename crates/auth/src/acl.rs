//! mosquitto's `acl_file`: per-user topic rules and `%u`/`%c` patterns.
//!
//! File format (man mosquitto.conf, "acl_file"):
//!
//! ```text
//! # rules before the first `user` line apply to anonymous clients
//! topic read public/#
//! user alice
//! topic readwrite alice/#
//! topic deny alice/secret
//! pattern write devices/%c/telemetry     # patterns apply to every client
//! ```
//!
//! `topic [read|write|readwrite|deny] FILTER` (no access word = readwrite), `user NAME`,
//! `pattern [read|write|readwrite|deny] FILTER` with `%u` (username) and `%c` (client id).
//!
//! # How a check is decided
//!
//! 1. Publishing to a `$SYS` topic is always refused (as mosquitto's `acl__check_dollar`).
//! 2. No ACL file ([`Acl::empty_allows_all`]): everything else is allowed.
//! 3. With an ACL file the default is deny. Rules that apply to the client are its own
//!    `user` section (or the anonymous section when it has no username) and all patterns.
//! 4. `deny` wins: if any applicable `deny` rule matches, access is refused, whatever grants
//!    exist. (mosquitto checks the user section, deny first, before the patterns, so there a
//!    matching user grant beats a pattern deny; midge makes every deny win, which can only
//!    refuse more, never allow more.)
//! 5. Otherwise the first grant whose filter matches and whose access includes the request
//!    allows it: `read` for [`Access::Read`] and [`Access::Subscribe`], `write` for
//!    [`Access::Write`].
//! 6. Topics starting with `$` are matched only by rule filters that start with `$`, so
//!    `topic read #` does not expose `$SYS`; `$SYS/#` must be granted explicitly.
//! 7. Patterns: a client whose username or client id contains `+` or `#` gets no access
//!    through patterns (they would widen the filter); patterns using `%u` do not apply to
//!    clients without a username.
//!
//! # Subscribe
//!
//! [`Access::Subscribe`] takes a topic *filter*. It is allowed when a `read`/`readwrite`
//! rule's filter covers it (every topic the subscription can match is matched by the rule:
//! `a/#` covers `a/+/b`, `+/x` does not cover `#`) and no `deny` rule covers it. A deny
//! rule that only overlaps the subscription (e.g. `deny a/secret` under a subscription to
//! `a/#`) does not refuse the SUBSCRIBE: the broker must still check [`Access::Read`] on
//! each delivered message, which is where mosquitto enforces `read` too. mosquitto 2.0's
//! own acl_file accepts every SUBSCRIBE and filters only at delivery; refusing a
//! subscription no rule could ever deliver on gives the client an honest SUBACK instead.
//! `$share/group/filter` is checked as `filter`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use midge_codec::{TopicFilter, matches_filter};

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Receive a message published on this topic name (checked at delivery).
    Read,
    /// Publish to this topic name (also used for a will message).
    Write,
    /// Subscribe with this topic filter (may hold wildcards or a `$share/` prefix).
    Subscribe,
}

/// The client being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo<'a> {
    /// Username from CONNECT, `None` for anonymous clients.
    pub username: Option<&'a str>,
    /// Client identifier (as assigned by the broker if the client sent an empty one).
    pub client_id: &'a str,
}

/// Why one ACL line was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclLineErrorKind {
    /// The first word is not `topic`, `pattern` or `user`.
    #[error("unknown keyword (expected topic, pattern or user)")]
    UnknownKeyword,
    /// `topic`/`pattern` without a filter.
    #[error("missing topic filter")]
    MissingTopic,
    /// `user` without a name.
    #[error("missing username")]
    MissingUsername,
    /// An access word other than read, write, readwrite or deny.
    #[error("invalid access type (expected read, write, readwrite or deny)")]
    BadAccess,
    /// The filter is not a valid MQTT topic filter.
    #[error("invalid topic filter: {0}")]
    BadFilter(#[from] midge_codec::TopicError),
    /// The line is not valid UTF-8.
    #[error("line is not valid UTF-8")]
    NotUtf8,
}

/// One rejected line of an ACL file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct AclLineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub kind: AclLineErrorKind,
}

/// Why an ACL file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AclFileError {
    /// The file could not be read.
    #[error("cannot read ACL file {path}: {source}")]
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
        errors: Vec<AclLineError>,
    },
}

fn format_line_errors(errors: &[AclLineError]) -> String {
    let mut s = format!(
        "invalid ACL file ({} bad line{})",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
    for e in errors {
        s.push_str("; ");
        s.push_str(&e.to_string());
    }
    s
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleAccess {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl RuleAccess {
    fn grants(self, access: Access) -> bool {
        matches!(
            (self, access),
            (RuleAccess::Read | RuleAccess::ReadWrite, Access::Read)
                | (RuleAccess::Read | RuleAccess::ReadWrite, Access::Subscribe)
                | (RuleAccess::Write | RuleAccess::ReadWrite, Access::Write)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: RuleAccess,
    filter: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    access: RuleAccess,
    filter: String,
    uses_username: bool,
    uses_client_id: bool,
}

/// Parsed ACL rules, or "no ACL file" ([`Acl::empty_allows_all`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Acl {
    allow_all: bool,
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Pattern>,
}

impl fmt::Debug for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acl")
            .field("allow_all", &self.allow_all)
            .field("anonymous_rules", &self.anonymous.len())
            .field("users", &self.users.len())
            .field("patterns", &self.patterns.len())
            .finish()
    }
}

fn parse_access(word: &str) -> Option<RuleAccess> {
    match word {
        "read" => Some(RuleAccess::Read),
        "write" => Some(RuleAccess::Write),
        "readwrite" => Some(RuleAccess::ReadWrite),
        "deny" => Some(RuleAccess::Deny),
        _ => None,
    }
}

/// Split `topic [access] FILTER`'s remainder into (access, filter) as mosquitto does: if
/// there is only one word it is the filter (access readwrite).
fn access_and_filter(rest: &str) -> Result<(RuleAccess, &str), AclLineErrorKind> {
    let rest = rest.trim();
    if rest.is_empty() {
        return Err(AclLineErrorKind::MissingTopic);
    }
    match rest.split_once(char::is_whitespace) {
        None => Ok((RuleAccess::ReadWrite, rest)),
        Some((word, filter)) => {
            let access = parse_access(word).ok_or(AclLineErrorKind::BadAccess)?;
            let filter = filter.trim();
            if filter.is_empty() {
                return Err(AclLineErrorKind::MissingTopic);
            }
            Ok((access, filter))
        }
    }
}

impl Acl {
    /// The ACL used when no `acl_file` is configured: every operation is allowed (except
    /// publishing to `$SYS`, which no client may do).
    pub fn empty_allows_all() -> Acl {
        Acl {
            allow_all: true,
            anonymous: Vec::new(),
            users: HashMap::new(),
            patterns: Vec::new(),
        }
    }

    /// Whether this is the allow-everything ACL of a broker without an ACL file.
    pub fn allows_all(&self) -> bool {
        self.allow_all
    }

    /// Parse ACL file text. An empty file parses to an ACL that denies everything.
    pub fn parse(text: &str) -> Result<Acl, AclFileError> {
        Acl::parse_bytes(text.as_bytes())
    }

    /// Parse ACL file bytes; every bad line is reported.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Acl, AclFileError> {
        let mut acl = Acl {
            allow_all: false,
            anonymous: Vec::new(),
            users: HashMap::new(),
            patterns: Vec::new(),
        };
        let mut errors = Vec::new();
        let mut current_user: Option<String> = None;
        for (idx, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line_no = idx + 1;
            let Ok(line) = std::str::from_utf8(raw) else {
                errors.push(AclLineError {
                    line: line_no,
                    kind: AclLineErrorKind::NotUtf8,
                });
                continue;
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let result = match keyword {
                "user" => {
                    let name = rest.trim();
                    if name.is_empty() {
                        Err(AclLineErrorKind::MissingUsername)
                    } else {
                        current_user = Some(name.to_owned());
                        Ok(())
                    }
                }
                "topic" => access_and_filter(rest).and_then(|(access, filter)| {
                    TopicFilter::new(filter)?;
                    let rule = Rule {
                        access,
                        filter: filter.to_owned(),
                    };
                    match &current_user {
                        None => acl.anonymous.push(rule),
                        Some(u) => acl.users.entry(u.clone()).or_default().push(rule),
                    }
                    Ok(())
                }),
                "pattern" => access_and_filter(rest).and_then(|(access, filter)| {
                    TopicFilter::new(filter)?;
                    let uses_username = filter.contains("%u");
                    let uses_client_id = filter.contains("%c");
                    if !uses_username && !uses_client_id {
                        tracing::warn!(line = line_no, "ACL pattern contains neither %u nor %c");
                    }
                    acl.patterns.push(Pattern {
                        access,
                        filter: filter.to_owned(),
                        uses_username,
                        uses_client_id,
                    });
                    Ok(())
                }),
                _ => Err(AclLineErrorKind::UnknownKeyword),
            };
            if let Err(kind) = result {
                errors.push(AclLineError {
                    line: line_no,
                    kind,
                });
            }
        }
        if !errors.is_empty() {
            return Err(AclFileError::Invalid { errors });
        }
        tracing::debug!(
            users = acl.users.len(),
            patterns = acl.patterns.len(),
            "ACL file parsed"
        );
        Ok(acl)
    }

    /// Read and parse an ACL file.
    pub fn load(path: &Path) -> Result<Acl, AclFileError> {
        let bytes = std::fs::read(path).map_err(|source| AclFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        Acl::parse_bytes(&bytes)
    }

    /// Load the ACL for an optional `acl_file` setting: `None` means allow everything.
    pub fn load_optional(path: Option<&Path>) -> Result<Acl, AclFileError> {
        match path {
            None => Ok(Acl::empty_allows_all()),
            Some(p) => Acl::load(p),
        }
    }

    /// Whether `client` may perform `access` on `topic` (a topic name for
    /// [`Access::Read`]/[`Access::Write`], a filter for [`Access::Subscribe`]).
    /// Malformed topics are refused.
    pub fn check(&self, client: &ClientInfo<'_>, topic: &str, access: Access) -> bool {
        let topic = match access {
            Access::Read | Access::Write => {
                if topic.is_empty() || topic.contains(['+', '#', '\0']) {
                    return false;
                }
                topic
            }
            Access::Subscribe => match TopicFilter::new(topic) {
                Ok(f) => {
                    // Borrow the filter part of the caller's string (after any $share/g/).
                    let offset = topic.len() - f.filter().len();
                    topic.get(offset..).unwrap_or_default()
                }
                Err(_) => return false,
            },
        };
        if access == Access::Write && (topic == "$SYS" || topic.starts_with("$SYS/")) {
            return false;
        }
        if self.allow_all {
            return true;
        }
        let user_rules: &[Rule] = match client.username {
            Some(u) => self.users.get(u).map(Vec::as_slice).unwrap_or_default(),
            None => &self.anonymous,
        };
        // Patterns are only safe to expand for identities without wildcard characters.
        let patterns_usable = !client.client_id.contains(['+', '#'])
            && !client.username.is_some_and(|u| u.contains(['+', '#']));
        let patterns = self
            .patterns
            .iter()
            .filter(|p| patterns_usable && (!p.uses_username || client.username.is_some()));
        // One reusable buffer for pattern expansion: no allocation when there are no
        // patterns, at most one growth otherwise.
        let mut buf = String::new();
        let mut pattern_matches = |p: &Pattern| {
            expand_into(&mut buf, p, client);
            rule_matches(&buf, topic, access)
        };
        let denied = user_rules
            .iter()
            .any(|r| r.access == RuleAccess::Deny && rule_matches(&r.filter, topic, access))
            || patterns
                .clone()
                .any(|p| p.access == RuleAccess::Deny && pattern_matches(p));
        if denied {
            return false;
        }
        user_rules
            .iter()
            .any(|r| r.access.grants(access) && rule_matches(&r.filter, topic, access))
            || patterns
                .clone()
                .any(|p| p.access.grants(access) && pattern_matches(p))
    }
}

/// Substitute `%u` and `%c` in a pattern (left to right, like mosquitto) into `out`.
fn expand_into(out: &mut String, p: &Pattern, client: &ClientInfo<'_>) {
    out.clear();
    if !p.uses_username && !p.uses_client_id {
        out.push_str(&p.filter);
        return;
    }
    let mut chars = p.filter.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '%' {
            match (chars.peek(), client.username) {
                (Some('c'), _) => {
                    chars.next();
                    out.push_str(client.client_id);
                    continue;
                }
                (Some('u'), Some(u)) => {
                    chars.next();
                    out.push_str(u);
                    continue;
                }
                _ => {}
            }
        }
        out.push(c);
    }
}

/// Whether an ACL rule filter applies to a topic (Read/Write) or covers a filter (Subscribe).
pub(crate) fn rule_matches(rule_filter: &str, topic: &str, access: Access) -> bool {
    // A topic starting with '$' is only matched by rules that start with '$' (mosquitto).
    if topic.starts_with('$') && !rule_filter.starts_with('$') {
        return false;
    }
    match access {
        Access::Read | Access::Write => matches_filter(rule_filter, topic),
        Access::Subscribe => filter_covers(rule_filter, topic),
    }
}

/// Whether every topic matched by `sub` is also matched by `rule` (both valid filters).
pub fn filter_covers(rule: &str, sub: &str) -> bool {
    if sub.starts_with('$') && (rule.starts_with('+') || rule.starts_with('#')) {
        return false;
    }
    let mut r = rule.split('/');
    let mut s = sub.split('/');
    loop {
        match (r.next(), s.next()) {
            // `#` covers whatever remains, including nothing ("a/#" matches "a").
            (Some("#"), _) => return true,
            // A `#` in the subscription can only be covered by a `#` in the rule.
            (_, Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            // A `+` in the subscription matches any level: only `+`/`#` in the rule cover it.
            (Some(_), Some("+")) => return false,
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client<'a>(username: Option<&'a str>, client_id: &'a str) -> ClientInfo<'a> {
        ClientInfo {
            username,
            client_id,
        }
    }

    const FILE: &str = "\
# anonymous clients
topic read public/#
topic write public/anon-inbox

user alice
topic readwrite alice/#
topic deny alice/secret
topic read shared/+/status
topic $SYS/broker/uptime

user bob
topic write bob/out
topic read $SYS/#

user carol
topic deny #

pattern readwrite devices/%c/#
pattern read users/%u/inbox
pattern deny devices/%c/locked
";

    fn acl() -> Acl {
        Acl::parse(FILE).unwrap()
    }

    #[test]
    fn user_rules_table() {
        let acl = acl();
        let alice = client(Some("alice"), "a1");
        let bob = client(Some("bob"), "b1");
        let cases: &[(&ClientInfo<'_>, &str, Access, bool)] = &[
            (&alice, "alice/x", Access::Write, true),
            (&alice, "alice/x/y", Access::Read, true),
            (&alice, "alice", Access::Read, true),
            (&alice, "bob/out", Access::Write, false),
            (&alice, "shared/1/status", Access::Read, true),
            (&alice, "shared/1/status", Access::Write, false),
            (&alice, "shared/1/2/status", Access::Read, false),
            (&alice, "public/news", Access::Read, false), // anonymous rules are not hers
            (&bob, "bob/out", Access::Write, true),
            (&bob, "bob/out", Access::Read, false),
            (&bob, "alice/x", Access::Read, false),
        ];
        for (c, topic, access, want) in cases {
            assert_eq!(
                acl.check(c, topic, *access),
                *want,
                "{c:?} {topic} {access:?}"
            );
        }
    }

    #[test]
    fn no_access_word_means_readwrite() {
        let acl = acl();
        let alice = client(Some("alice"), "a1");
        assert!(acl.check(&alice, "$SYS/broker/uptime", Access::Read));
        // ... but nobody writes to $SYS.
        assert!(!acl.check(&alice, "$SYS/broker/uptime", Access::Write));
        let acl = Acl::parse("topic a/b\n").unwrap();
        let anon = client(None, "x");
        assert!(acl.check(&anon, "a/b", Access::Read));
        assert!(acl.check(&anon, "a/b", Access::Write));
    }

    #[test]
    fn anonymous_section_applies_only_without_username() {
        let acl = acl();
        let anon = client(None, "anon-1");
        assert!(acl.check(&anon, "public/news", Access::Read));
        assert!(!acl.check(&anon, "public/news", Access::Write));
        assert!(acl.check(&anon, "public/anon-inbox", Access::Write));
        assert!(!acl.check(&anon, "alice/x", Access::Read));
        let stranger = client(Some("zed"), "z1");
        assert!(!acl.check(&stranger, "public/news", Access::Read));
    }

    #[test]
    fn deny_wins_over_grants() {
        let acl = acl();
        let alice = client(Some("alice"), "a1");
        assert!(!acl.check(&alice, "alice/secret", Access::Read));
        assert!(!acl.check(&alice, "alice/secret", Access::Write));
        assert!(acl.check(&alice, "alice/secret/not", Access::Read));
        // Order in the file does not matter: deny after the grant still wins.
        let acl2 = Acl::parse("user u\ntopic readwrite #\ntopic deny x\n").unwrap();
        let u = client(Some("u"), "c");
        assert!(!acl2.check(&u, "x", Access::Write));
        assert!(acl2.check(&u, "y", Access::Write));
        // A pattern deny beats a user grant.
        let acl3 = Acl::parse("user u\ntopic readwrite #\npattern deny %u/private\n").unwrap();
        assert!(!acl3.check(&u, "u/private", Access::Read));
        assert!(acl3.check(&u, "u/public", Access::Read));
    }

    #[test]
    fn deny_all_user_gets_nothing_even_from_patterns() {
        let acl = acl();
        let carol = client(Some("carol"), "c1");
        assert!(!acl.check(&carol, "devices/c1/temp", Access::Write));
        assert!(!acl.check(&carol, "users/carol/inbox", Access::Read));
    }

    #[test]
    fn patterns_substitute_username_and_client_id() {
        let acl = acl();
        let bob = client(Some("bob"), "sensor-7");
        assert!(acl.check(&bob, "devices/sensor-7/temp", Access::Write));
        assert!(acl.check(&bob, "devices/sensor-7/temp", Access::Read));
        assert!(!acl.check(&bob, "devices/sensor-8/temp", Access::Write));
        assert!(!acl.check(&bob, "devices/sensor-7/locked", Access::Write));
        assert!(acl.check(&bob, "users/bob/inbox", Access::Read));
        assert!(!acl.check(&bob, "users/bob/inbox", Access::Write));
        assert!(!acl.check(&bob, "users/alice/inbox", Access::Read));
        // Patterns apply to anonymous clients too, except those using %u.
        let anon = client(None, "anon-9");
        assert!(acl.check(&anon, "devices/anon-9/x", Access::Write));
        assert!(!acl.check(&anon, "users/%u/inbox", Access::Read));
    }

    #[test]
    fn wildcard_characters_in_identity_disable_patterns() {
        let acl = acl();
        let sneaky = client(Some("bob"), "#");
        assert!(!acl.check(&sneaky, "devices/anything/x", Access::Write));
        // ...but the user's own rules still work (as in mosquitto).
        assert!(acl.check(&sneaky, "bob/out", Access::Write));
        let sneaky_user = client(Some("+"), "c");
        assert!(!acl.check(&sneaky_user, "users/x/inbox", Access::Read));
        assert!(!acl.check(&sneaky_user, "devices/c/x", Access::Read));
    }

    #[test]
    fn percent_sequences_expand_left_to_right() {
        let p = Pattern {
            access: RuleAccess::Read,
            filter: "a/%u%c/%%u/%x/%".into(),
            uses_username: true,
            uses_client_id: true,
        };
        let mut out = String::from("stale");
        expand_into(&mut out, &p, &client(Some("U"), "C"));
        assert_eq!(out, "a/UC/%U/%x/%");
    }

    #[test]
    fn sys_topics_need_an_explicit_dollar_rule() {
        let wide = Acl::parse("user u\ntopic readwrite #\ntopic read +/broker/#\n").unwrap();
        let u = client(Some("u"), "c");
        assert!(!wide.check(&u, "$SYS/broker/uptime", Access::Read));
        assert!(!wide.check(&u, "$SYS/#", Access::Subscribe));
        assert!(!wide.check(&u, "$SYS/broker/uptime", Access::Write));
        let acl = acl();
        let bob = client(Some("bob"), "b");
        assert!(acl.check(&bob, "$SYS/broker/uptime", Access::Read));
        assert!(acl.check(&bob, "$SYS/#", Access::Subscribe));
        assert!(!acl.check(&bob, "$SYS/broker/uptime", Access::Write));
        let alice = client(Some("alice"), "a");
        assert!(!acl.check(&alice, "$SYS/broker/load", Access::Read));
        assert!(!acl.check(&alice, "$SYS/#", Access::Subscribe));
        assert!(acl.check(&alice, "$SYS/broker/uptime", Access::Subscribe));
    }

    #[test]
    fn subscribe_requires_a_covering_read_rule() {
        let acl = acl();
        let alice = client(Some("alice"), "a1");
        let cases = [
            ("alice/#", true),
            ("alice/+/x", true),
            ("alice", true),
            ("alice/x", true),
            ("#", false),
            ("+/x", false),
            ("shared/+/status", true),
            ("shared/7/status", true),
            ("shared/#", false),
            ("shared/+/+", false),
            ("alice/secret", false),    // covered by a deny rule
            ("alice/+", true),          // overlaps the deny: Read filters at delivery
            ("$share/g/alice/#", true), // shared subscriptions check their filter
            ("$share/g/#", false),
            ("alice/#/x", false), // invalid filter
            ("", false),
        ];
        for (filter, want) in cases {
            assert_eq!(
                acl.check(&alice, filter, Access::Subscribe),
                want,
                "{filter}"
            );
        }
        // Write-only rules do not allow subscribing.
        let bob = client(Some("bob"), "b1");
        assert!(!acl.check(&bob, "bob/out", Access::Subscribe));
        // Patterns cover subscriptions after substitution.
        assert!(acl.check(&bob, "devices/b1/#", Access::Subscribe));
        assert!(!acl.check(&bob, "devices/+/#", Access::Subscribe));
        assert!(!acl.check(&bob, "devices/b1/locked", Access::Subscribe));
    }

    #[test]
    fn filter_cover_table() {
        let cases = [
            ("#", "#", true),
            ("#", "a/b", true),
            ("#", "+/+", true),
            ("a/#", "a", true),
            ("a/#", "a/#", true),
            ("a/#", "a/+/c", true),
            ("a/#", "#", false),
            ("a/+", "a/b", true),
            ("a/+", "a/+", true),
            ("a/+", "a/#", false),
            ("a/+", "a/b/c", false),
            ("a/b", "a/+", false),
            ("a/b", "a/b", true),
            ("+/b", "a/b", true),
            ("+/b", "+/b", true),
            ("+", "$SYS", false),
            ("#", "$SYS/#", false),
            ("$SYS/#", "$SYS/broker/+", true),
            ("a/b/c", "a/b", false),
            ("a/+/#", "a", false),
        ];
        for (rule, sub, want) in cases {
            assert_eq!(filter_covers(rule, sub), want, "{rule} covers {sub}");
        }
    }

    #[test]
    fn wildcards_in_topic_names_are_refused() {
        let acl = Acl::empty_allows_all();
        let c = client(None, "c");
        assert!(!acl.check(&c, "a/#", Access::Read));
        assert!(!acl.check(&c, "a/+", Access::Write));
        assert!(!acl.check(&c, "", Access::Write));
    }

    #[test]
    fn no_acl_file_allows_everything_but_sys_writes() {
        let acl = Acl::empty_allows_all();
        assert!(acl.allows_all());
        let c = client(None, "c");
        assert!(acl.check(&c, "any/thing", Access::Write));
        assert!(acl.check(&c, "#", Access::Subscribe));
        assert!(acl.check(&c, "$SYS/broker/uptime", Access::Read));
        assert!(!acl.check(&c, "$SYS/broker/uptime", Access::Write));
        assert!(acl.check(&c, "$SYSTEM/x", Access::Write));
        assert!(Acl::load_optional(None).unwrap().allows_all());
    }

    #[test]
    fn present_but_empty_acl_file_denies_everything() {
        let acl = Acl::parse("# nothing here\n\n").unwrap();
        assert!(!acl.allows_all());
        let c = client(Some("u"), "c");
        assert!(!acl.check(&c, "a", Access::Read));
        assert!(!acl.check(&c, "a", Access::Write));
        assert!(!acl.check(&c, "#", Access::Subscribe));
    }

    #[test]
    fn user_sections_can_repeat_and_merge() {
        let acl = Acl::parse("user u\ntopic read a\nuser v\ntopic read b\nuser u\ntopic read c\n")
            .unwrap();
        let u = client(Some("u"), "x");
        assert!(acl.check(&u, "a", Access::Read));
        assert!(acl.check(&u, "c", Access::Read));
        assert!(!acl.check(&u, "b", Access::Read));
    }

    #[test]
    fn usernames_and_filters_may_contain_spaces() {
        let acl = Acl::parse("user John Smith\ntopic read rooms/living room/temp\n").unwrap();
        let j = client(Some("John Smith"), "x");
        assert!(acl.check(&j, "rooms/living room/temp", Access::Read));
    }

    #[test]
    fn every_bad_line_is_reported() {
        let text = "topic read a/#\nbogus line\ntopic\nuser\ntopic sometimes a/b\n\
                    topic read a/#/b\npattern write x+/%c\n  # fine comment\ntopic read ok\n";
        let Err(AclFileError::Invalid { errors }) = Acl::parse(text) else {
            panic!("expected errors");
        };
        let got: Vec<(usize, AclLineErrorKind)> =
            errors.iter().map(|e| (e.line, e.kind.clone())).collect();
        use midge_codec::TopicError;
        assert_eq!(
            got,
            vec![
                (2, AclLineErrorKind::UnknownKeyword),
                (3, AclLineErrorKind::MissingTopic),
                (4, AclLineErrorKind::MissingUsername),
                (5, AclLineErrorKind::BadAccess),
                (6, AclLineErrorKind::BadFilter(TopicError::HashNotLast)),
                (7, AclLineErrorKind::BadFilter(TopicError::PlusNotAlone)),
            ]
        );
        let msg = Acl::parse(text).unwrap_err().to_string();
        assert!(
            msg.contains("6 bad lines") && msg.contains("line 7"),
            "{msg}"
        );
    }

    #[test]
    fn non_utf8_acl_line_is_reported() {
        let Err(AclFileError::Invalid { errors }) = Acl::parse_bytes(b"topic read a\nuser \xff\n")
        else {
            panic!("expected errors");
        };
        assert_eq!(errors[0].line, 2);
        assert_eq!(errors[0].kind, AclLineErrorKind::NotUtf8);
    }
}
