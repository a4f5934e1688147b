//! MQTT topic filters turned into SQL conditions.
//!
//! A filter without wildcards is an equality (`topic = ?`). A filter with `+` or `#` becomes
//! a superset of itself in SQL: a range on its literal prefix (`topic >= ? AND topic < ?`,
//! which the `(topic, ts)` index can serve) and a `LIKE` pattern in which `+` and `#` are
//! `%` and the literal parts are escaped (`%`, `_` and the escape character `\` itself),
//! so a `%` or `_` in a topic name is never a SQL wildcard. Every row SQL lets through is
//! then checked exactly with MQTT's own matching ([`midge_codec::matches_filter`]),
//! which also applies the rule that a leading wildcard does not match `$` topics.

use midge_codec::{TopicFilter, matches_filter};

use crate::SeriesError;

/// The escape character of the `LIKE` patterns built here.
pub(crate) const LIKE_ESCAPE: char = '\\';

/// A validated topic filter and its SQL translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TopicMatch {
    /// No wildcards: the topic equals this string.
    Exact(String),
    /// Wildcards: SQL narrows with `lower <= topic < upper` and `topic LIKE like`, Rust
    /// decides with `filter`.
    Wild {
        /// The filter itself.
        filter: String,
        /// Literal prefix before the first wildcard (without the `/` of a trailing `/#`).
        lower: String,
        /// Smallest string greater than every string starting with `lower`; `None` when
        /// `lower` is empty (no upper bound).
        upper: Option<String>,
        /// The `LIKE` pattern, escaped with [`LIKE_ESCAPE`].
        like: String,
    },
}

impl TopicMatch {
    /// Validates `filter` as an MQTT topic filter (shared subscriptions refused).
    pub(crate) fn new(filter: &str) -> Result<TopicMatch, SeriesError> {
        let invalid = |reason: String| SeriesError::InvalidFilter {
            filter: filter.to_owned(),
            reason,
        };
        let parsed = TopicFilter::new(filter).map_err(|e| invalid(e.to_string()))?;
        if parsed.is_shared() {
            return Err(invalid(
                "a shared subscription ($share/...) is not a filter over stored topics".into(),
            ));
        }
        if !parsed.has_wildcards() {
            return Ok(TopicMatch::Exact(filter.to_owned()));
        }
        let mut like = String::with_capacity(filter.len() + 4);
        let mut lower = String::new();
        let mut literal = true;
        let mut levels = filter.split('/').peekable();
        let mut first = true;
        while let Some(level) = levels.next() {
            match level {
                "#" => {
                    // `a/#` also matches `a` itself: drop the separator written after `a`.
                    if !first {
                        like.pop();
                        if literal {
                            lower.pop();
                        }
                    }
                    like.push('%');
                    literal = false;
                }
                "+" => {
                    like.push('%');
                    literal = false;
                }
                text => {
                    escape_like(text, &mut like);
                    if literal {
                        lower.push_str(text);
                    }
                }
            }
            if levels.peek().is_some() {
                like.push('/');
                if literal {
                    lower.push('/');
                }
            }
            first = false;
        }
        let upper = upper_bound(&lower);
        Ok(TopicMatch::Wild {
            filter: filter.to_owned(),
            lower,
            upper,
            like,
        })
    }

    /// Whether `topic` matches, exactly as MQTT defines it.
    pub(crate) fn matches(&self, topic: &str) -> bool {
        match self {
            TopicMatch::Exact(t) => t == topic,
            TopicMatch::Wild { filter, .. } => matches_filter(filter, topic),
        }
    }

    /// Whether rows SQL lets through still need [`TopicMatch::matches`].
    pub(crate) fn needs_check(&self) -> bool {
        matches!(self, TopicMatch::Wild { .. })
    }
}

/// Appends `text` to a `LIKE` pattern with `%`, `_` and the escape character escaped.
fn escape_like(text: &str, out: &mut String) {
    for c in text.chars() {
        if c == '%' || c == '_' || c == LIKE_ESCAPE {
            out.push(LIKE_ESCAPE);
        }
        out.push(c);
    }
}

/// The smallest string greater than every string that starts with `prefix`, in SQLite's
/// BINARY collation (byte order of UTF-8, which is code point order): the prefix with its
/// last character replaced by the next one. `None` when there is no such string.
fn upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(c) = chars.pop() {
        let next = match c {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(n) = next {
            chars.push(n);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wild(filter: &str) -> (String, Option<String>, String) {
        match TopicMatch::new(filter) {
            Ok(TopicMatch::Wild {
                lower, upper, like, ..
            }) => (lower, upper, like),
            other => panic!("{filter}: {other:?}"),
        }
    }

    #[test]
    fn filters_without_wildcards_are_exact() {
        assert_eq!(
            TopicMatch::new("a/b%_c").ok(),
            Some(TopicMatch::Exact("a/b%_c".into()))
        );
    }

    #[test]
    fn wildcards_become_like_patterns_and_prefix_ranges() {
        assert_eq!(
            wild("sensors/#"),
            ("sensors".into(), Some("sensort".into()), "sensors%".into())
        );
        assert_eq!(
            wild("sensors/+/temp"),
            (
                "sensors/".into(),
                Some("sensors0".into()),
                "sensors/%/temp".into()
            )
        );
        assert_eq!(wild("#"), (String::new(), None, "%".into()));
        assert_eq!(wild("+/x/#"), (String::new(), None, "%/x%".into()));
        assert_eq!(wild("+"), (String::new(), None, "%".into()));
    }

    #[test]
    fn like_metacharacters_in_literal_levels_are_escaped() {
        assert_eq!(
            wild("a%b/c_d/e\\f/+"),
            (
                "a%b/c_d/e\\f/".into(),
                Some("a%b/c_d/e\\f0".into()),
                "a\\%b/c\\_d/e\\\\f/%".into()
            )
        );
    }

    #[test]
    fn upper_bound_carries_over_the_largest_character() {
        assert_eq!(upper_bound("ab"), Some("ac".into()));
        assert_eq!(upper_bound("a\u{10FFFF}"), Some("b".into()));
        assert_eq!(upper_bound("\u{10FFFF}"), None);
        assert_eq!(upper_bound("a\u{D7FF}"), Some("a\u{E000}".into()));
        assert_eq!(upper_bound(""), None);
    }

    #[test]
    fn invalid_and_shared_filters_are_refused() {
        for bad in ["", "a/#/b", "a+/b", "$share/g/a/#", "a\0b"] {
            assert!(
                matches!(TopicMatch::new(bad), Err(SeriesError::InvalidFilter { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn matching_follows_mqtt() {
        let m = TopicMatch::new("sensors/#").ok();
        let m = m.as_ref();
        assert!(m.is_some_and(|m| m.matches("sensors")));
        assert!(m.is_some_and(|m| m.matches("sensors/a/b")));
        assert!(!m.is_some_and(|m| m.matches("sensorsX")));
        let all = TopicMatch::new("#").ok();
        assert!(!all.is_some_and(|m| m.matches("$SYS/x")));
    }
}
