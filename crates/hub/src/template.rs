//! `${name}` templates for republish topics and payloads.

use serde_json::{Map, Value};

/// Why a template (a republish topic or payload, an alarm's topic) is refused, or a topic
/// cannot be made from one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `${` without its `}`.
    #[error("unclosed ${{ in {0:?}")]
    Unclosed(String),
    /// `${}`.
    #[error("empty ${{}} in {0:?}")]
    Empty(String),
    /// A wildcard or NUL in the text of a topic template.
    #[error("{0:?} cannot be in a topic name (wildcards are for subscriptions)")]
    Wildcard(char),
    /// A placeholder naming no column of the rule's SELECT list.
    #[error(
        "${{{name}}} is not a column of the SELECT list ({columns}) nor topic, clientid or timestamp"
    )]
    NotAColumn {
        /// The placeholder.
        name: String,
        /// The SELECT list's columns, comma-separated.
        columns: String,
    },
    /// A placeholder of an alarm's topic that is not one of the alarm's names.
    #[error("${{{0}}} is not one of ${{name}}, ${{source}}, ${{severity}}, ${{status}}")]
    NotAnAlarmName(String),
    /// The topic the template makes is not a valid topic name.
    #[error(transparent)]
    Topic(#[from] midge_codec::TopicError),
    /// A placeholder of a topic with no value in this message.
    #[error("${{{0}}} has no value in this message")]
    NoValue(String),
}

/// A parsed template: literal text and `${name}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(String),
}

/// What a placeholder may name besides the row's columns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta<'a> {
    pub(crate) topic: &'a str,
    pub(crate) client_id: &'a str,
    pub(crate) timestamp_ms: i64,
}

impl Template {
    /// Parse `text`; `$` not followed by `{` is literal, `$$` is one `$`.
    pub(crate) fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some((before, after)) = rest.split_once('$') {
            lit.push_str(before);
            if let Some(a) = after.strip_prefix('$') {
                lit.push('$');
                rest = a;
            } else if let Some(a) = after.strip_prefix('{') {
                let Some((name, tail)) = a.split_once('}') else {
                    return Err(TemplateError::Unclosed(text.to_owned()));
                };
                let name = name.trim();
                if name.is_empty() {
                    return Err(TemplateError::Empty(text.to_owned()));
                }
                if !lit.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut lit)));
                }
                parts.push(Part::Var(name.to_string()));
                rest = tail;
            } else {
                lit.push('$');
                rest = after;
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Template { parts })
    }

    /// Fill in the placeholders: a column of the row (a dotted path walks objects), else
    /// `topic`, `clientid`, `timestamp`; anything else (or NULL) renders as nothing.
    pub(crate) fn render(&self, row: &Map<String, Value>, meta: &Meta<'_>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(name) => match lookup(row, name) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(Value::Null) | None => match name.as_str() {
                        "topic" => out.push_str(meta.topic),
                        "clientid" => out.push_str(meta.client_id),
                        "timestamp" => out.push_str(&meta.timestamp_ms.to_string()),
                        _ => {}
                    },
                    Some(v) => out.push_str(&v.to_string()),
                },
            }
        }
        out
    }
}

/// The names a placeholder may take besides the row's columns.
const META_NAMES: [&str; 3] = ["topic", "clientid", "timestamp"];

impl Template {
    /// Check a republish topic template when the rule is saved: its text must not hold
    /// wildcards (`a/#/b`) or NUL, and with `columns` known (a SELECT list without `*`)
    /// every placeholder must name one of them or `topic`, `clientid`, `timestamp`.
    pub(crate) fn check_topic(&self, columns: Option<&[&str]>) -> Result<(), TemplateError> {
        let mut sample = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => {
                    if let Some(c) = t.chars().find(|c| matches!(c, '#' | '+' | '\0')) {
                        return Err(TemplateError::Wildcard(c));
                    }
                    sample.push_str(t);
                }
                Part::Var(name) => {
                    if let Some(cols) = columns {
                        let first = name.split('.').next().unwrap_or(name);
                        let known = cols.iter().any(|c| *c == name || *c == first)
                            || META_NAMES.contains(&name.as_str());
                        if !known {
                            return Err(TemplateError::NotAColumn {
                                name: name.clone(),
                                columns: cols.join(", "),
                            });
                        }
                    }
                    sample.push('x');
                }
            }
        }
        midge_client::codec::TopicName::new(sample)?;
        Ok(())
    }

    /// [`Template::render`] for a topic: a placeholder with no value in this row (missing
    /// or NULL) is an error naming it, not an empty level (`out//x`).
    pub(crate) fn render_topic(
        &self,
        row: &Map<String, Value>,
        meta: &Meta<'_>,
    ) -> Result<String, TemplateError> {
        for p in &self.parts {
            if let Part::Var(name) = p
                && matches!(lookup(row, name), None | Some(Value::Null))
                && !META_NAMES.contains(&name.as_str())
            {
                return Err(TemplateError::NoValue(name.clone()));
            }
        }
        Ok(self.render(row, meta))
    }
}

fn lookup<'v>(row: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    if let Some(v) = row.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut v = row.get(parts.next()?)?;
    for p in parts {
        v = v.as_object()?.get(p)?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Map<String, Value> {
        serde_json::json!({"temp": 31.5, "id": "dev-1", "loc": {"room": "5a"}, "n": null})
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    const META: Meta<'static> = Meta {
        topic: "sensors/dev-1/temp",
        client_id: "c1",
        timestamp_ms: 1234,
    };

    #[test]
    fn placeholders_take_columns_then_metadata() {
        let t = Template::parse("alerts/${id}/${loc.room}/${topic}:${temp}@${timestamp}")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            t.render(&row(), &META),
            "alerts/dev-1/5a/sensors/dev-1/temp:31.5@1234"
        );
    }

    #[test]
    fn missing_and_null_render_empty_and_dollars_are_literal() {
        let t =
            Template::parse("a${nope}b${n}c $x $$ ${clientid}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.render(&row(), &META), "abc $x $ c1");
    }

    #[test]
    fn topic_templates_are_checked_on_save() {
        let t = |s: &str| Template::parse(s).unwrap_or_else(|e| panic!("{e}"));
        assert!(t("a/#/b").check_topic(None).is_err());
        assert!(t("a/+/${id}").check_topic(None).is_err());
        assert!(t("").check_topic(None).is_err());
        assert!(t("out/${id}/x").check_topic(None).is_ok());
        let cols = ["id", "loc"];
        assert!(
            t("out/${id}/${loc.room}/${topic}")
                .check_topic(Some(&cols))
                .is_ok()
        );
        let e = t("out/${nosuch}/x").check_topic(Some(&cols));
        assert!(e.is_err_and(|e| e.to_string().contains("nosuch")));
    }

    #[test]
    fn a_topic_placeholder_without_a_value_is_an_error() {
        let t = Template::parse("out/${nosuch}/x").unwrap_or_else(|e| panic!("{e}"));
        assert!(t.render_topic(&row(), &META).is_err());
        let t = Template::parse("out/${n}/x").unwrap_or_else(|e| panic!("{e}"));
        assert!(t.render_topic(&row(), &META).is_err());
        let t = Template::parse("out/${id}/${topic}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            t.render_topic(&row(), &META).as_deref(),
            Ok("out/dev-1/sensors/dev-1/temp")
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(Template::parse("a/${b").is_err());
        assert!(Template::parse("a/${ }").is_err());
    }
}
