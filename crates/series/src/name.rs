//! Validation of the two strings that end up in SQL text or in a JSON path: table names
//! and field paths. Neither is ever spliced into SQL unchecked: a table name is checked
//! against `[A-Za-z_][A-Za-z0-9_]{0,62}` and then quoted; a field path is turned into a
//! JSON path that is bound as a parameter.

use crate::SeriesError;

/// Prefix of the SQL table that holds the rows of a series table, so that user names can
/// never collide with SQLite's own (`sqlite_*`) or with midge's internal tables.
pub(crate) const SQL_PREFIX: &str = "series_";

/// Longest table name: 63 characters.
const MAX_TABLE_LEN: usize = 63;

/// A table name that does not match `[A-Za-z_][A-Za-z0-9_]{0,62}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid table name {name:?}: a table name is a letter or `_` followed by at most 62 \
     letters, digits or `_`"
)]
pub struct InvalidTableName {
    /// The name given.
    pub name: String,
}

impl From<InvalidTableName> for SeriesError {
    fn from(e: InvalidTableName) -> SeriesError {
        SeriesError::InvalidTable { name: e.name }
    }
}

/// A validated table name, in lower case: table names are case-insensitive (as SQL's are),
/// so `Telemetry` and `telemetry` are the same table. The one rule for table names, used by
/// the store, the hub's `store` action and the configuration file:
/// `"telemetry".parse::<TableName>()` or `TableName::try_from("telemetry")`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName(String);

impl TableName {
    /// Checks `name` against `[A-Za-z_][A-Za-z0-9_]{0,62}`.
    pub fn new(name: &str) -> Result<TableName, InvalidTableName> {
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !first_ok || !rest_ok || name.len() > MAX_TABLE_LEN {
            return Err(InvalidTableName {
                name: name.to_owned(),
            });
        }
        Ok(TableName(name.to_ascii_lowercase()))
    }

    /// The name (lower case).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SQL table's name, unquoted (as in `sqlite_schema.name`).
    pub(crate) fn sql_name(&self) -> String {
        format!("{SQL_PREFIX}{}", self.0)
    }

    /// The SQL table's name quoted for SQL text. Safe because the name holds only
    /// `[a-z0-9_]`.
    pub(crate) fn quoted(&self) -> String {
        format!("\"{SQL_PREFIX}{}\"", self.0)
    }
}

impl std::str::FromStr for TableName {
    type Err = InvalidTableName;

    fn from_str(s: &str) -> Result<TableName, InvalidTableName> {
        TableName::new(s)
    }
}

impl TryFrom<&str> for TableName {
    type Error = InvalidTableName;

    fn try_from(s: &str) -> Result<TableName, InvalidTableName> {
        TableName::new(s)
    }
}

impl AsRef<str> for TableName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<TableName> for String {
    fn from(t: TableName) -> String {
        t.0
    }
}

/// Longest field path accepted, in bytes.
const MAX_PATH_LEN: usize = 256;
/// Most parts (keys and indexes) in a field path.
const MAX_PATH_PARTS: usize = 16;
/// Longest key in a field path, in bytes.
const MAX_KEY_LEN: usize = 64;

/// Turns a field path (`temp`, `a.b`, `values[0]`, `a.b[2].c`) into a SQLite JSON path
/// (`$."temp"`, `$."a"."b"`, `$."values"[0]`, ...). Keys are `[A-Za-z0-9_-]{1,64}`; an
/// index is `[N]` with up to 9 digits. Every key is quoted in the result, so keys that
/// look like numbers stay keys.
pub(crate) fn json_path(field: &str) -> Result<String, SeriesError> {
    let invalid = |reason: &'static str| SeriesError::InvalidField {
        path: field.to_owned(),
        reason,
    };
    if field.is_empty() {
        return Err(invalid("empty"));
    }
    if field.len() > MAX_PATH_LEN {
        return Err(invalid("longer than 256 bytes"));
    }
    let mut out = String::with_capacity(field.len() + 8);
    out.push('$');
    let mut parts = 0usize;
    for segment in field.split('.') {
        let (key, mut rest) = match segment.find('[') {
            Some(i) => (
                segment.get(..i).unwrap_or(""),
                segment.get(i..).unwrap_or(""),
            ),
            None => (segment, ""),
        };
        if key.is_empty() {
            return Err(invalid(
                "every part between dots must start with a key of letters, digits, `_` or `-`",
            ));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(invalid("a key is longer than 64 bytes"));
        }
        if !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid("keys may hold only letters, digits, `_` and `-`"));
        }
        out.push_str(".\"");
        out.push_str(key);
        out.push('"');
        parts += 1;
        while !rest.is_empty() {
            let Some(inner) = rest.strip_prefix('[') else {
                return Err(invalid("expected `[` after a key or an index"));
            };
            let Some(close) = inner.find(']') else {
                return Err(invalid("an index `[` is not closed by `]`"));
            };
            let digits = inner.get(..close).unwrap_or("");
            if digits.is_empty() || digits.len() > 9 || !digits.chars().all(|c| c.is_ascii_digit())
            {
                return Err(invalid("an index is `[N]` with 1 to 9 digits"));
            }
            out.push('[');
            out.push_str(digits);
            out.push(']');
            parts += 1;
            rest = inner.get(close + 1..).unwrap_or("");
        }
        if parts > MAX_PATH_PARTS {
            return Err(invalid("more than 16 parts"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_follow_the_identifier_pattern() {
        for ok in ["telemetry", "_", "a", "T1", "_x_9", &"a".repeat(63)] {
            assert!(TableName::new(ok).is_ok(), "{ok:?} should be accepted");
        }
        for bad in [
            "",
            "1abc",
            "a-b",
            "a b",
            "a;drop table x",
            "t\"",
            "é",
            "a.b",
            &"a".repeat(64),
        ] {
            assert!(
                TableName::new(bad)
                    == Err(InvalidTableName {
                        name: bad.to_owned()
                    })
                    && bad.parse::<TableName>().is_err()
                    && TableName::try_from(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn table_names_are_case_insensitive() {
        let a = TableName::new("Telemetry").ok();
        let b = TableName::new("telemetry").ok();
        assert_eq!(a, b);
        assert_eq!(
            b.map(|t| t.quoted()).as_deref(),
            Some("\"series_telemetry\"")
        );
    }

    #[test]
    fn field_paths_become_quoted_json_paths() {
        let cases = [
            ("temp", "$.\"temp\""),
            ("a.b", "$.\"a\".\"b\""),
            ("values[0]", "$.\"values\"[0]"),
            ("a.b[2][3].c", "$.\"a\".\"b\"[2][3].\"c\""),
            ("0", "$.\"0\""),
            ("battery-level", "$.\"battery-level\""),
        ];
        for (field, path) in cases {
            assert_eq!(json_path(field).ok().as_deref(), Some(path), "{field}");
        }
    }

    #[test]
    fn field_paths_that_could_inject_are_refused() {
        for bad in [
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            "a\"",
            "a\" || 1 --",
            "$.a",
            "a[",
            "a[]",
            "a[x]",
            "a[1",
            "a[1]x",
            "[0]",
            "a b",
            "a'b",
            "a;b",
            "a[1234567890]",
            &"k".repeat(65),
            &["a"; 17].join("."),
            &"a.".repeat(200),
        ] {
            assert!(
                matches!(json_path(bad), Err(SeriesError::InvalidField { .. })),
                "{bad:?} should be refused"
            );
        }
    }
}
