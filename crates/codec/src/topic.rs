//! Validated topic names and topic filters (MQTT 5 §4.7, shared subscriptions §4.8.2).

use bytestring::ByteString;

/// Why a string is not a valid topic name or filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Topic names and filters must be at least one character long.
    #[error("empty topic [MQTT-4.7.3-1]")]
    Empty,
    /// Longer than a UTF-8 string field can carry.
    #[error("topic longer than 65535 bytes")]
    TooLong,
    /// U+0000 inside the topic.
    #[error("topic contains U+0000 [MQTT-4.7.3-2]")]
    NullCharacter,
    /// `+` or `#` in a topic name.
    #[error("wildcard character in a topic name [MQTT-3.3.2-2]")]
    WildcardInName,
    /// `#` that is not the last character or not alone in its level.
    #[error("'#' must be the last character, alone in its level [MQTT-4.7.1-1]")]
    HashNotLast,
    /// `+` sharing its level with other characters.
    #[error("'+' must occupy an entire level [MQTT-4.7.1-2]")]
    PlusNotAlone,
    /// `$share/` with an empty share name or one holding `+`, `#` or `/`.
    #[error("invalid share name in $share/{{ShareName}}/{{filter}} [MQTT-4.8.2-1]")]
    InvalidShareName,
    /// `$share/{group}` without a filter after it.
    #[error("shared subscription without a topic filter [MQTT-4.8.2-2]")]
    SharedWithoutFilter,
}

/// A topic name: the topic of a PUBLISH. No wildcards, no U+0000, not empty (MQTT 5 allows
/// an empty topic only together with a topic alias; [`TopicName::empty`] exists for that).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(ByteString);

impl TopicName {
    /// Validate a topic name.
    pub fn new(s: impl Into<ByteString>) -> Result<TopicName, TopicError> {
        let s = s.into();
        validate_name(&s)?;
        Ok(TopicName(s))
    }

    /// Validate a topic name from an already UTF-8 checked string, allowing empty (alias).
    pub(crate) fn from_wire(s: ByteString) -> Result<TopicName, TopicError> {
        if !s.is_empty() {
            validate_name(&s)?;
        }
        Ok(TopicName(s))
    }

    /// The empty topic name, legal only in an MQTT 5 PUBLISH that carries a topic alias.
    pub fn empty() -> TopicName {
        TopicName(ByteString::new())
    }

    /// A copy that owns its bytes instead of sharing the buffer it was decoded from. Use it
    /// for long-lived state (retained messages, alias maps, wills): a decoded topic is a
    /// slice of the read buffer and would otherwise keep that whole buffer alive.
    pub fn detached(&self) -> TopicName {
        TopicName(ByteString::from(self.as_str()))
    }

    /// The topic as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The underlying shared string (cheap to clone).
    pub fn as_byte_string(&self) -> &ByteString {
        &self.0
    }

    /// Whether the topic is empty (alias-only PUBLISH).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the topic starts with `$` (not matched by leading wildcards, [MQTT-4.7.2-1]).
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }

    /// The topic's levels.
    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.0.split('/')
    }
}

fn validate_name(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > u16::MAX as usize {
        return Err(TopicError::TooLong);
    }
    // one pass without an early exit, which the compiler vectorises: this runs for every
    // PUBLISH a broker receives
    let (mut wildcard, mut nul) = (false, false);
    for b in s.bytes() {
        wildcard |= (b == b'+') | (b == b'#');
        nul |= b == 0;
    }
    if nul {
        Err(TopicError::NullCharacter)
    } else if wildcard {
        Err(TopicError::WildcardInName)
    } else {
        Ok(())
    }
}

impl std::fmt::Debug for TopicName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl std::fmt::Display for TopicName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for TopicName {
    type Error = TopicError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        TopicName::new(s)
    }
}

/// A topic filter as sent in SUBSCRIBE/UNSUBSCRIBE, possibly a shared subscription
/// `$share/{group}/{filter}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter {
    raw: ByteString,
    /// For `$share/group/filter`: byte offset where the filter starts (after the group's `/`).
    filter_start: u16,
    has_wildcards: bool,
}

const SHARE_PREFIX: &str = "$share/";

impl TopicFilter {
    /// Validate a topic filter; `$share/{group}/{filter}` is parsed as a shared subscription.
    pub fn new(s: impl Into<ByteString>) -> Result<TopicFilter, TopicError> {
        let raw = s.into();
        if raw.is_empty() {
            return Err(TopicError::Empty);
        }
        if raw.len() > u16::MAX as usize {
            return Err(TopicError::TooLong);
        }
        let mut filter_start = 0usize;
        if let Some(rest) = raw.strip_prefix(SHARE_PREFIX) {
            let Some(slash) = rest.find('/') else {
                return Err(if rest.is_empty() {
                    TopicError::InvalidShareName
                } else {
                    TopicError::SharedWithoutFilter
                });
            };
            let group = rest.get(..slash).unwrap_or_default();
            if group.is_empty() || group.contains(['+', '#']) {
                return Err(TopicError::InvalidShareName);
            }
            filter_start = SHARE_PREFIX.len() + slash + 1;
            if filter_start >= raw.len() {
                return Err(TopicError::SharedWithoutFilter);
            }
        }
        let filter = raw.get(filter_start..).unwrap_or_default();
        let has_wildcards = validate_filter(filter)?;
        Ok(TopicFilter {
            filter_start: filter_start as u16,
            has_wildcards,
            raw,
        })
    }

    /// The filter exactly as received (including any `$share/group/` prefix).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The underlying shared string.
    pub fn as_byte_string(&self) -> &ByteString {
        &self.raw
    }

    /// The filter to match topics against (without any `$share/group/` prefix).
    pub fn filter(&self) -> &str {
        self.raw
            .get(self.filter_start as usize..)
            .unwrap_or_default()
    }

    /// The share group name of a shared subscription.
    pub fn share_group(&self) -> Option<&str> {
        if self.filter_start == 0 {
            None
        } else {
            self.raw
                .get(SHARE_PREFIX.len()..self.filter_start as usize - 1)
        }
    }

    /// Whether this is a shared subscription.
    pub fn is_shared(&self) -> bool {
        self.filter_start != 0
    }

    /// Whether the filter holds `+` or `#`.
    pub fn has_wildcards(&self) -> bool {
        self.has_wildcards
    }

    /// The filter's levels (without any share prefix).
    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.filter().split('/')
    }

    /// Whether `topic` matches this filter, following §4.7 (including the rule that a
    /// leading wildcard does not match a topic starting with `$`).
    pub fn matches(&self, topic: &TopicName) -> bool {
        matches_filter(self.filter(), topic.as_str())
    }
}

/// Whether a topic name matches a (validated, non-shared) filter string.
pub fn matches_filter(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Returns whether the filter contains wildcards.
fn validate_filter(f: &str) -> Result<bool, TopicError> {
    if f.is_empty() {
        return Err(TopicError::Empty);
    }
    if f.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    let mut wild = false;
    let mut levels = f.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') {
            if level != "#" || levels.peek().is_some() {
                return Err(TopicError::HashNotLast);
            }
            wild = true;
        } else if level.contains('+') {
            if level != "+" {
                return Err(TopicError::PlusNotAlone);
            }
            wild = true;
        }
    }
    Ok(wild)
}

impl std::fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", &*self.raw)
    }
}

impl std::fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}

impl TryFrom<&str> for TopicFilter {
    type Error = TopicError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        TopicFilter::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tf(s: &str) -> Result<TopicFilter, TopicError> {
        TopicFilter::new(s)
    }

    #[test]
    fn filter_validation_table() {
        let ok = [
            "#",
            "+",
            "a/+/c",
            "a/#",
            "/",
            "+/+",
            "sport/tennis/#",
            "$SYS/#",
            "a//b",
        ];
        for f in ok {
            assert!(tf(f).is_ok(), "{f} should be valid");
        }
        let bad = [
            ("", TopicError::Empty),
            ("a/#/b", TopicError::HashNotLast),
            ("a#", TopicError::HashNotLast),
            ("a/b#", TopicError::HashNotLast),
            ("a+", TopicError::PlusNotAlone),
            ("a/+b/c", TopicError::PlusNotAlone),
            ("$share/", TopicError::InvalidShareName),
            ("$share//a", TopicError::InvalidShareName),
            ("$share/g+/a", TopicError::InvalidShareName),
            ("$share/g#/a", TopicError::InvalidShareName),
            ("$share/g", TopicError::SharedWithoutFilter),
            ("$share/g/", TopicError::SharedWithoutFilter),
            ("$share/g/a/#/b", TopicError::HashNotLast),
            ("a\0b", TopicError::NullCharacter),
        ];
        for (f, e) in bad {
            assert_eq!(tf(f), Err(e), "{f:?}");
        }
    }

    #[test]
    fn shared_subscription_parts() {
        let f = tf("$share/grp/sensors/+/temp").unwrap();
        assert!(f.is_shared());
        assert_eq!(f.share_group(), Some("grp"));
        assert_eq!(f.filter(), "sensors/+/temp");
        assert!(f.has_wildcards());
        let plain = tf("sensors/1").unwrap();
        assert_eq!(plain.share_group(), None);
        assert!(!plain.has_wildcards());
    }

    #[test]
    fn detached_topic_is_equal_but_owns_its_bytes() {
        let buf = bytestring::ByteString::from("a/b/c and more bytes of a read buffer");
        let sliced = TopicName::new(buf.slice_ref(&buf[..5])).unwrap();
        let copy = sliced.detached();
        assert_eq!(copy, sliced);
        assert_ne!(copy.as_str().as_ptr(), sliced.as_str().as_ptr());
    }

    #[test]
    fn topic_name_rules() {
        assert_eq!(TopicName::new(""), Err(TopicError::Empty));
        assert_eq!(TopicName::new("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(TopicName::new("a/#"), Err(TopicError::WildcardInName));
        assert!(TopicName::new("/").is_ok());
    }

    #[test]
    fn matching_follows_section_4_7() {
        let cases = [
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            ("sport/#", "sport", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("#", "$SYS/uptime", false),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/#", "$SYS/monitor/Clients", true),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("#", "a/b/c", true),
        ];
        for (f, t, want) in cases {
            let filter = tf(f).unwrap();
            let topic = TopicName::new(t).unwrap();
            assert_eq!(filter.matches(&topic), want, "{f} vs {t}");
        }
    }
}
