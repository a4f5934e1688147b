//! midge's rule language: `SELECT ... FROM 'topic/#' WHERE ...` over one MQTT message.
//!
//! A [`Rule`] is parsed once (with [sqlparser]) and then applied to each message that
//! arrives; it is immutable, `Send + Sync`, and does no I/O. Applying a rule to a message
//! gives `None` (topic not matched, or the WHERE condition not TRUE) or the selected
//! columns as a JSON object, in SELECT order.
//!
//! ```
//! use midge_rules::{Input, Rule};
//!
//! let rule = Rule::parse("SELECT *, topic(2) AS room FROM 'sensors/#' WHERE temp > 30")?;
//! let msg = Input {
//!     topic: "sensors/kitchen",
//!     payload: br#"{"temp": 31.5, "hum": 40}"#,
//!     client_id: "dev-7",
//!     ..Input::default()
//! };
//! let row = rule.apply(&msg).expect("31.5 > 30");
//! assert_eq!(serde_json::Value::Object(row), serde_json::json!({"temp": 31.5, "hum": 40, "room": "kitchen"}));
//!
//! let cold = Input { payload: br#"{"temp": 20}"#, ..msg };
//! assert_eq!(rule.apply(&cold), None);
//! # Ok::<(), midge_rules::RuleError>(())
//! ```
//!
//! # The language
//!
//! `SELECT <columns> FROM '<filter>'[, '<filter>' ...] [WHERE <condition>]`
//!
//! - **FROM** takes MQTT topic filters as single-quoted strings (AWS IoT style) or
//!   double-quoted ones (EMQX style), validated as the broker validates subscriptions:
//!   `+`/`#` wildcards, `$share/{group}/{filter}` (matched by its inner filter), and a
//!   leading wildcard does not match `$`-topics.
//! - **The payload** is parsed as JSON once per message. A JSON object's fields are the
//!   columns. A JSON scalar or array (`mosquitto_pub -m 15`) is one column, `value`. A
//!   payload that is not JSON is one column, `payload`: its text when it is UTF-8, else its
//!   bytes in standard base64.
//! - **Names**: `temp` is a payload column; `payload.temp` is the same; `a.b.c` and
//!   `payload.a.b` walk nested objects; `arr[0]` indexes arrays (0-based; `arr[-1]` is the
//!   last element); `a['k-1']` and `"k-1"` read keys that are no identifiers (in
//!   expressions double quotes name a field, as in standard SQL; strings take single
//!   quotes). A missing field is undefined: NULL in expressions, left out of the output.
//!   When the payload has no such column, the reserved names `topic`, `clientid`,
//!   `username`, `qos`, `retain`, `timestamp` (ms since the epoch) and `payload` (the raw
//!   payload as text, base64 when binary) give message metadata. The functions `topic()`,
//!   `topic(n)` (n-th level, 1-based), `clientid()`, `username()`, `qos()`, `retain()`,
//!   `timestamp()` always do.
//! - **Operators**: `= != <> < <= > >=`, `AND OR NOT`, `+ - * / %`, unary `-`, `||`
//!   (concatenation), `[NOT] LIKE` (`%`, `_`, optional `ESCAPE`), `[NOT] IN (...)`,
//!   `[NOT] BETWEEN`, `IS [NOT] NULL`, `IS [NOT] TRUE/FALSE`, `CASE [x] WHEN ... END`,
//!   literals (strings in single quotes, numbers, `TRUE`, `FALSE`, `NULL`).
//! - **Functions**: `abs`, `round(x[, digits])`, `floor`, `ceil`/`ceiling`, `sqrt`,
//!   `power`/`pow`, `lower`, `upper`, `length`, `concat` (skips NULLs), `substring(s, start[,
//!   len])` (1-based, as in SQL; also `SUBSTRING(s FROM a FOR b)`), `trim`/`ltrim`/`rtrim`,
//!   `coalesce`, `nullif`, `CAST(x AS int|integer|float|double|real|string|text|bool|boolean)`
//!   (also `x::int`), and the metadata functions. An unknown function is a parse error.
//! - **Types and NULL**: integers stay `i64` where JSON had integers (an overflow or an
//!   inexact division gives a float); floats are `f64`. A number compared with a string
//!   that parses as a number (`"31.5"`) compares numerically, and such strings count as
//!   numbers in arithmetic. Division by zero, a failed cast, or arithmetic on a
//!   non-number is NULL. NULL in a comparison is unknown (SQL three-valued logic), and
//!   WHERE passes only on TRUE (a boolean; `WHERE 1` does not pass).
//! - **Output**: `*` is every payload column; an expression's column is its alias, or for
//!   a field its last name (`payload.a.b` gives `b`), or for anything else its SQL text
//!   (`temp * 2`). `SELECT *, topic() AS topic` mixes both; a later column of the same
//!   name replaces an earlier one in place.
//!
//! Not supported (a [`RuleError`] names it): JOIN, GROUP BY, aggregates, ORDER BY, LIMIT,
//! DISTINCT, subqueries, several statements, table aliases, unquoted FROM names. A rule is
//! at most [`MAX_RULE_LEN`] bytes and 4096 tokens, with expressions nested at most 128 deep.
//! One quirk of sqlparser 0.64: inside a function's arguments, `CASE value WHEN ...` does
//! not parse (`VALUE` is a keyword there); write `CASE (value) WHEN ...`.

mod expr;
mod message;
mod parse;
mod value;

use std::fmt;
use std::str::FromStr;

use midge_codec::{TopicError, TopicFilter, matches_filter};
use serde_json::{Map, Value};

pub use message::Input;
pub use parse::MAX_RULE_LEN;

use parse::Column;

/// Why a rule's text is not a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// The text is longer than [`MAX_RULE_LEN`].
    #[error("rule is {len} bytes long; the limit is {max}")]
    TooLong {
        /// The text's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Too many tokens or too deep a nesting to evaluate safely.
    #[error("rule is too complex: {0}")]
    TooComplex(&'static str),
    /// sqlparser refused the text.
    #[error("SQL syntax error: {0}")]
    Syntax(String),
    /// No statement at all.
    #[error("empty rule: expected SELECT ... FROM '<topic filter>'")]
    Empty,
    /// More than one statement.
    #[error("a rule is one SELECT statement, found {0} statements")]
    MultipleStatements(usize),
    /// A statement other than SELECT (its first words given).
    #[error("a rule is a SELECT statement, not {0}")]
    NotSelect(String),
    /// SELECT without FROM.
    #[error("missing FROM '<topic filter>'")]
    MissingFrom,
    /// FROM names something other than a quoted topic filter.
    #[error("FROM takes quoted topic filters such as 'sensors/#', found {0}")]
    UnquotedFilter(String),
    /// A FROM filter that is not a valid MQTT topic filter.
    #[error("invalid topic filter '{filter}' in FROM: {source}")]
    InvalidFilter {
        /// The filter as written.
        filter: String,
        /// What is wrong with it.
        source: TopicError,
    },
    /// SQL the rule language does not have (JOIN, GROUP BY, subqueries, ...), named.
    #[error("{0} is not supported in rules")]
    Unsupported(String),
    /// A function the rule language does not know.
    #[error("unknown function {0}()")]
    UnknownFunction(String),
    /// An aggregate function: a rule sees one message at a time.
    #[error("aggregate function {0}() is not supported: a rule sees one message at a time")]
    Aggregate(String),
    /// A function called with the wrong number of arguments.
    #[error("{function}() takes {expected} argument(s), found {found}")]
    Arity {
        /// The function.
        function: String,
        /// How many it takes.
        expected: String,
        /// How many it was given.
        found: usize,
    },
    /// A CAST to a type the language does not have.
    #[error("cannot CAST to {0}: the types are int, float, string and bool")]
    UnsupportedType(String),
    /// A literal the language cannot represent (a number out of range).
    #[error("invalid literal {0}")]
    InvalidLiteral(String),
}

/// Why a message produced no row ([`Rule::test`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoMatch {
    /// The topic matches none of the FROM filters.
    Topic,
    /// WHERE is false for this message.
    ConditionFalse,
    /// WHERE is unknown (NULL) for this message: a field it reads is missing, NULL or of
    /// a type the comparison cannot use.
    ConditionUnknown,
}

impl fmt::Display for NoMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoMatch::Topic => "the topic matches none of the FROM filters",
            NoMatch::ConditionFalse => "WHERE is false for this message",
            NoMatch::ConditionUnknown => {
                "WHERE is unknown (NULL) for this message: a field it reads is missing, null or not comparable"
            }
        })
    }
}

/// A parsed rule: immutable, cheap to apply to many messages.
#[derive(Debug, Clone)]
pub struct Rule {
    sql: String,
    filters: Vec<TopicFilter>,
    columns: Vec<Column>,
    condition: Option<expr::Expr>,
    needs_body: bool,
}

impl Rule {
    /// Parse and check a rule; every problem the language can see before a message arrives
    /// (syntax, unsupported SQL, unknown functions, wrong argument counts, bad topic
    /// filters) is reported here.
    pub fn parse(sql: &str) -> Result<Rule, RuleError> {
        let p = parse::parse(sql)?;
        Ok(Rule {
            sql: sql.to_owned(),
            filters: p.filters,
            columns: p.columns,
            condition: p.condition,
            needs_body: p.needs_body,
        })
    }

    /// The rule's text as given.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The FROM topic filters (what to subscribe to), in order.
    pub fn filters(&self) -> &[TopicFilter] {
        &self.filters
    }

    /// The names of the columns the rule can produce, in order; `None` when it selects `*`
    /// (every payload field: the names are known only when a message comes). A column whose
    /// value is missing or NULL in a message is left out of that row.
    pub fn column_names(&self) -> Option<Vec<&str>> {
        self.columns
            .iter()
            .map(|c| match c {
                Column::All => None,
                Column::Expr { name, .. } => Some(name.as_str()),
            })
            .collect()
    }

    /// Whether a message on `topic` is one this rule looks at: MQTT matching against any
    /// FROM filter (shared-subscription filters by their inner filter; a leading wildcard
    /// does not match a `$`-topic).
    pub fn matches(&self, topic: &str) -> bool {
        self.filters
            .iter()
            .any(|f| matches_filter(f.filter(), topic))
    }

    /// [`Rule::apply`] for a dry run: the row, or why there is none.
    pub fn test(&self, msg: &Input<'_>) -> Result<Map<String, Value>, NoMatch> {
        if !self.matches(msg.topic) {
            return Err(NoMatch::Topic);
        }
        if let Some(c) = &self.condition {
            let m = message::Message::new(msg, self.needs_body);
            match c.eval(&m).truth() {
                Some(true) => {}
                Some(false) => return Err(NoMatch::ConditionFalse),
                None => return Err(NoMatch::ConditionUnknown),
            }
        }
        self.apply(msg).ok_or(NoMatch::ConditionFalse)
    }

    /// Apply the rule to one message: `None` when the topic does not match or WHERE is not
    /// TRUE, else the selected columns. The payload is parsed once, and only when the rule
    /// reads payload columns; only the selected values are copied (`SELECT *` moves the
    /// parsed object out instead of copying it). Evaluation cannot fail: anything without a
    /// value (a missing field, a division by zero) is NULL or left out.
    pub fn apply(&self, msg: &Input<'_>) -> Option<Map<String, Value>> {
        if !self.matches(msg.topic) {
            return None;
        }
        let mut m = message::Message::new(msg, self.needs_body);
        if let Some(c) = &self.condition {
            if c.eval(&m).truth() != Some(true) {
                return None;
            }
        }
        let values: Vec<Option<Value>> = self
            .columns
            .iter()
            .map(|c| match c {
                Column::All => None,
                Column::Expr { expr, .. } => expr.eval(&m).into_json(),
            })
            .collect();
        let mut out = Map::new();
        let mut all_taken = false;
        for (column, value) in self.columns.iter().zip(values) {
            match column {
                Column::All if !all_taken => {
                    all_taken = true;
                    let cols = m.take_columns();
                    if out.is_empty() {
                        out = cols;
                    } else {
                        out.extend(cols);
                    }
                }
                Column::All => {}
                Column::Expr { name, .. } => {
                    if let Some(v) = value {
                        out.insert(name.clone(), v);
                    }
                }
            }
        }
        Some(out)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sql)
    }
}

impl FromStr for Rule {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Rule, RuleError> {
        Rule::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_is_send_sync_and_debug() {
        fn check<T: Send + Sync + fmt::Debug + Clone>() {}
        check::<Rule>();
        check::<RuleError>();
    }

    #[test]
    fn shared_filters_match_by_their_inner_filter() {
        let r = Rule::parse("SELECT * FROM '$share/g/sensors/+'");
        assert!(
            matches!(&r, Ok(r) if r.matches("sensors/a") && !r.matches("$share/g/sensors/a")),
            "{r:?}"
        );
    }

    #[test]
    fn leading_wildcards_skip_dollar_topics() {
        let r = Rule::parse("SELECT * FROM '#', '$SYS/#'");
        assert!(
            matches!(&r, Ok(r) if r.matches("a/b") && r.matches("$SYS/x")),
            "{r:?}"
        );
        let r = Rule::parse("SELECT * FROM '+/x'");
        assert!(matches!(&r, Ok(r) if !r.matches("$SYS/x")), "{r:?}");
    }
}
