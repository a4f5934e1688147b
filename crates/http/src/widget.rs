//! Dashboard widgets: what the configuration file declares and the web page edits.

use serde::{Deserialize, Serialize};

use crate::time::parse_duration_ms;

/// What a widget shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WidgetKind {
    /// A dial between `min` and `max` with the latest value of `field`.
    Gauge,
    /// A line chart of `field` (or of several `series`): history from the series store,
    /// downsampled by the server to about one point per pixel with each bucket's min/max
    /// drawn as a band, then live; a range picker (1 h, 6 h, 24 h, 7 days, custom) and
    /// drag-to-zoom; its number is the last reading.
    Chart,
    /// Markers at `lat_field`/`lon_field`, one per topic.
    Map,
    /// An ON/OFF toggle: state from `field` of `topic` (shown by name: `on_label`,
    /// `off_label`; "unknown" until known), commands published to `command_topic` and
    /// shown as pending until the device confirms (or at once when `optimistic`).
    Switch,
    /// The latest value of `field` as a big number, with the time it arrived.
    Value,
    /// A lamp: on or off (open or closed) from `field`, compared with `on_values`; the
    /// classic door contact or alarm input.
    Led,
    /// The last `rows` messages of `topic`, one row each, with the chosen `columns`.
    Table,
}

/// One widget of the dashboard. Fields that do not apply to its kind are ignored.
///
/// In TOML (the binary's configuration):
///
/// ```toml
/// [[dashboard.widget]]
/// kind = "gauge"
/// title = "Boiler"
/// topic = "sensors/boiler"
/// field = "temp"
/// unit = "°C"
/// min = 0
/// max = 100
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Widget {
    /// Stable identifier (`[A-Za-z0-9_-]`, at most 64); given one (`w1`, `w2`, ...) when
    /// empty.
    #[serde(default)]
    pub id: String,
    /// What it shows.
    pub kind: WidgetKind,
    /// Heading (the topic when empty).
    #[serde(default)]
    pub title: String,
    /// MQTT topic filter the widget's live values come from (`sensors/boiler`,
    /// `trucks/+/position`).
    pub topic: String,
    /// Where the value is in a JSON payload: `temp`, `env.temp`, `values[0]`. A payload that
    /// is a plain number or string (`15`, `ON`) is the value itself whatever the field;
    /// `value` is the usual name for that case.
    #[serde(default = "default_field")]
    pub field: String,
    /// Unit shown after the value (`°C`, `%`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Lower end of a gauge (default 0) or of a chart's y axis (default: fitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Upper end of a gauge (default 100) or of a chart's y axis (default: fitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Digits after the decimal point (default: as many as needed, at most 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decimals: Option<u8>,
    /// Series table a chart's history comes from.
    #[serde(default = "default_table")]
    pub table: String,
    /// The range a chart shows first (`15m`, `1h`, `7d`); its picker changes it.
    #[serde(default = "default_window")]
    pub window: String,
    /// Kept for older dashboards and ignored: the chart asks the server for about one
    /// bucket per pixel of its width (`points=N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Map: the latitude field of the payload.
    #[serde(default = "default_lat")]
    pub lat_field: String,
    /// Map: the longitude field of the payload.
    #[serde(default = "default_lon")]
    pub lon_field: String,
    /// Map: the field naming a marker (default: its topic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_field: Option<String>,
    /// Map: a tile URL template (`https://tile.openstreetmap.org/{z}/{x}/{y}.png`) drawn
    /// under the markers when reachable; without it the map is a longitude/latitude grid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiles: Option<String>,
    /// Switch: the topic commands are published to (a topic name: no wildcards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_topic: Option<String>,
    /// Switch: the payload meaning on (default `ON`).
    #[serde(default = "default_on")]
    pub on: String,
    /// Switch: the payload meaning off (default `OFF`).
    #[serde(default = "default_off")]
    pub off: String,
    /// Switch: publish commands retained.
    #[serde(default)]
    pub retain: bool,
    /// Switch: QoS of commands (0, 1 or 2).
    #[serde(default)]
    pub qos: u8,
    /// Columns of the grid the widget spans (1 to 4).
    #[serde(default = "default_width")]
    pub width: u8,
    /// Payload filter in the rules' expression language (what follows `WHERE`):
    /// `type = 'door'`, `temp > 30 AND room = "k"`. A message for which it is not TRUE is
    /// ignored by this widget (live, last values and history alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// LED: the values of `field` meaning on (compared as text, case-insensitive; default
    /// `true`, `1`, `on`, `open`). Anything else is off.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_values: Vec<String>,
    /// LED and switch: the name shown for on (`Open`; default `ON`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_label: Option<String>,
    /// LED and switch: the name shown for off (`Closed`; default `OFF`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub off_label: Option<String>,
    /// LED: the lamp's colour when on (`#22c55e`, `red`; default green).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_color: Option<String>,
    /// LED: the lamp's colour when off (default grey).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub off_color: Option<String>,
    /// Switch: show the commanded state as soon as the command is accepted (for a device
    /// that never reports its state); otherwise the switch is pending until the device
    /// confirms on `topic`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub optimistic: bool,
    /// Table: the payload fields shown as columns (default: the fields of the messages).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// Table: how many messages it keeps (default 10, at most 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u32>,
    /// Chart: several lines in one chart, each a field of `topic` or of its own topic; empty
    /// for the one line of `field`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<Series>,
}

/// One line of a multi-series chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Series {
    /// Topic filter of this line (default: the widget's `topic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The field charted (default `value`).
    #[serde(default = "default_field")]
    pub field: String,
    /// Its name in the legend (default: the field, with the topic when it has its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Its colour (default: the next of the palette).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_field() -> String {
    "value".into()
}
fn default_table() -> String {
    midge_series::DEFAULT_TABLE.into()
}
fn default_window() -> String {
    "1h".into()
}
fn default_lat() -> String {
    "lat".into()
}
fn default_lon() -> String {
    "lon".into()
}
fn default_on() -> String {
    "ON".into()
}
fn default_off() -> String {
    "OFF".into()
}
fn default_width() -> u8 {
    1
}

impl Widget {
    /// A widget of `kind` on `topic` with every other field at its default.
    pub fn new(kind: WidgetKind, topic: impl Into<String>) -> Widget {
        Widget {
            id: String::new(),
            kind,
            title: String::new(),
            topic: topic.into(),
            field: default_field(),
            unit: None,
            min: None,
            max: None,
            decimals: None,
            table: default_table(),
            window: default_window(),
            bucket: None,
            lat_field: default_lat(),
            lon_field: default_lon(),
            label_field: None,
            tiles: None,
            command_topic: None,
            on: default_on(),
            off: default_off(),
            retain: false,
            qos: 0,
            width: default_width(),
            filter: None,
            on_values: Vec::new(),
            on_label: None,
            off_label: None,
            on_color: None,
            off_color: None,
            optimistic: false,
            columns: Vec::new(),
            rows: None,
            series: Vec::new(),
        }
    }

    /// Every topic filter the widget reads: its `topic` and its series' own topics.
    pub fn topics(&self) -> Vec<&str> {
        let mut out = vec![self.topic.as_str()];
        for s in &self.series {
            if let Some(t) = s.topic.as_deref()
                && !out.contains(&t)
            {
                out.push(t);
            }
        }
        out
    }
}

/// Most widgets on one dashboard.
pub(crate) const MAX_WIDGETS: usize = 100;
/// Longest string field.
const MAX_TEXT: usize = 1024;

/// Check every widget and give ids to those without one. Every problem is returned, each
/// naming its widget.
pub fn validate(mut widgets: Vec<Widget>) -> Result<Vec<Widget>, Vec<String>> {
    let mut problems = Vec::new();
    if widgets.len() > MAX_WIDGETS {
        problems.push(format!(
            "{} widgets: at most {MAX_WIDGETS} are allowed",
            widgets.len()
        ));
        return Err(problems);
    }
    let mut ids = std::collections::HashSet::new();
    for (i, w) in widgets.iter().enumerate() {
        let name = describe(i, w);
        if !w.id.is_empty() {
            if !valid_id(&w.id) {
                problems.push(format!(
                    "{name}: id {:?}: use at most 64 letters, digits, `_` or `-`",
                    w.id
                ));
            } else if !ids.insert(w.id.clone()) {
                problems.push(format!("{name}: id {:?} is used by another widget", w.id));
            }
        }
        check(w, &name, &mut problems);
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut next = 1usize;
    for w in &mut widgets {
        if w.id.is_empty() {
            while ids.contains(&format!("w{next}")) {
                next += 1;
            }
            w.id = format!("w{next}");
            ids.insert(w.id.clone());
        }
    }
    Ok(widgets)
}

fn describe(i: usize, w: &Widget) -> String {
    if w.title.is_empty() {
        format!("widget {} ({:?})", i + 1, w.kind)
    } else {
        format!("widget {} ({:?})", i + 1, w.title)
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `key(.key)*` where each key may be followed by `[index]`s; keys `[A-Za-z0-9_-]{1,64}`.
fn valid_field(path: &str) -> bool {
    if path.is_empty() || path.len() > 256 {
        return false;
    }
    path.split('.').all(|part| {
        let (key, mut rest) = match part.find('[') {
            Some(i) => part.split_at(i),
            None => (part, ""),
        };
        if key.is_empty()
            || key.len() > 64
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return false;
        }
        while !rest.is_empty() {
            let Some(inner) = rest.strip_prefix('[') else {
                return false;
            };
            let Some(end) = inner.find(']') else {
                return false;
            };
            let (digits, after) = inner.split_at(end);
            if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return false;
            }
            rest = after.get(1..).unwrap_or("");
        }
        true
    })
}

/// The series store's rule for table names ([`midge_series::TableName`]).
fn valid_table(name: &str) -> bool {
    midge_series::TableName::new(name).is_ok()
}

fn check(w: &Widget, name: &str, problems: &mut Vec<String>) {
    let mut bad = |what: String| problems.push(format!("{name}: {what}"));
    for (key, text) in [
        ("title", Some(&w.title)),
        ("unit", w.unit.as_ref()),
        ("label_field", w.label_field.as_ref()),
        ("tiles", w.tiles.as_ref()),
        ("on", Some(&w.on)),
        ("off", Some(&w.off)),
        ("on_label", w.on_label.as_ref()),
        ("off_label", w.off_label.as_ref()),
    ] {
        if text.is_some_and(|t| t.len() > MAX_TEXT) {
            bad(format!("{key}: longer than {MAX_TEXT} bytes"));
        }
    }
    if w.topic.is_empty() {
        bad("topic: missing (the MQTT topic filter its values come from)".into());
    } else if w.topic.starts_with("$share/") {
        bad(format!(
            "topic {:?}: a shared subscription would take messages from other subscribers",
            w.topic
        ));
    } else if let Err(e) = midge_codec::TopicFilter::new(w.topic.as_str()) {
        bad(format!("topic {:?}: {e}", w.topic));
    }
    if !valid_field(&w.field) {
        bad(format!(
            "field {:?}: expected a JSON path such as temp, env.temp or values[0]",
            w.field
        ));
    }
    if let (Some(min), Some(max)) = (w.min, w.max)
        && min >= max
    {
        bad(format!("min ({min}) must be below max ({max})"));
    }
    for (key, v) in [("min", w.min), ("max", w.max)] {
        if v.is_some_and(|v| !v.is_finite()) {
            bad(format!("{key}: must be a finite number"));
        }
    }
    if w.decimals.is_some_and(|d| d > 10) {
        bad("decimals: at most 10".into());
    }
    if !(1..=4).contains(&w.width) {
        bad(format!("width {}: must be between 1 and 4", w.width));
    }
    if let Some(f) = &w.filter
        && let Err(e) = check_filter(f)
    {
        bad(format!("filter {f:?}: {e}"));
    }
    for (key, c) in [("on_color", &w.on_color), ("off_color", &w.off_color)] {
        if let Some(c) = c
            && !valid_color(c)
        {
            bad(format!(
                "{key} {c:?}: expected a colour such as #22c55e, #f00 or red"
            ));
        }
    }
    match w.kind {
        WidgetKind::Chart => {
            if !valid_table(&w.table) {
                bad(format!(
                    "table {:?}: a table name is a letter or `_` followed by letters, digits or `_`",
                    w.table
                ));
            }
            match parse_duration_ms(&w.window) {
                Ok(0) => bad("window: must be longer than 0".into()),
                Ok(_) => {}
                Err(e) => bad(format!("window: {e}")),
            }
            if let Some(b) = &w.bucket
                && let Err(e) = parse_duration_ms(b)
            {
                bad(format!("bucket: {e}"));
            }
            if w.series.len() > MAX_SERIES {
                bad(format!(
                    "series: {} lines, at most {MAX_SERIES} in one chart",
                    w.series.len()
                ));
            }
            for (i, s) in w.series.iter().enumerate() {
                let n = i + 1;
                if let Some(t) = &s.topic {
                    if t.starts_with("$share/") {
                        bad(format!(
                            "series {n}: topic {t:?}: a shared subscription would take messages from other subscribers"
                        ));
                    } else if let Err(e) = midge_codec::TopicFilter::new(t.as_str()) {
                        bad(format!("series {n}: topic {t:?}: {e}"));
                    }
                }
                if !valid_field(&s.field) {
                    bad(format!(
                        "series {n}: field {:?}: expected a JSON path such as temp or env.temp",
                        s.field
                    ));
                }
                if s.label.as_ref().is_some_and(|l| l.len() > MAX_TEXT) {
                    bad(format!("series {n}: label: longer than {MAX_TEXT} bytes"));
                }
                if let Some(c) = &s.color
                    && !valid_color(c)
                {
                    bad(format!(
                        "series {n}: color {c:?}: expected a colour such as #22c55e, #f00 or red"
                    ));
                }
            }
        }
        WidgetKind::Map => {
            for (key, f) in [("lat_field", &w.lat_field), ("lon_field", &w.lon_field)] {
                if !valid_field(f) {
                    bad(format!(
                        "{key} {f:?}: expected a JSON path such as lat or gps.lat"
                    ));
                }
            }
            if let Some(l) = &w.label_field
                && !valid_field(l)
            {
                bad(format!(
                    "label_field {l:?}: expected a JSON path such as name"
                ));
            }
            if let Some(t) = &w.tiles {
                let scheme = t.starts_with("https://") || t.starts_with("http://");
                if !(scheme && t.contains("{z}") && t.contains("{x}") && t.contains("{y}")) {
                    bad(format!(
                        "tiles {t:?}: expected an http(s) URL template with {{z}}, {{x}} and {{y}}"
                    ));
                }
            }
        }
        WidgetKind::Switch => {
            match &w.command_topic {
                None => bad("command_topic: missing (the topic ON/OFF commands go to)".into()),
                Some(t) => {
                    if let Err(e) = midge_codec::TopicName::new(t.as_str()) {
                        bad(format!("command_topic {t:?}: {e}"));
                    } else if t.starts_with('$') {
                        bad(format!(
                            "command_topic {t:?}: topics starting with $ are the broker's"
                        ));
                    }
                }
            }
            if w.on == w.off {
                bad(format!("on and off are both {:?}", w.on));
            }
            if w.qos > 2 {
                bad(format!("qos {}: must be 0, 1 or 2", w.qos));
            }
        }
        WidgetKind::Led => {
            if w.on_values.len() > MAX_LIST {
                bad(format!("on_values: at most {MAX_LIST} values"));
            }
            if w.on_values
                .iter()
                .any(|v| v.is_empty() || v.len() > MAX_TEXT)
            {
                bad("on_values: each value is 1 to 1024 bytes of text".into());
            }
        }
        WidgetKind::Table => {
            if w.columns.len() > MAX_LIST {
                bad(format!("columns: at most {MAX_LIST}"));
            }
            for c in &w.columns {
                if !valid_field(c) {
                    bad(format!(
                        "column {c:?}: expected a JSON path such as temp or env.temp"
                    ));
                }
            }
            if let Some(r) = w.rows
                && !(1..=MAX_TABLE_ROWS).contains(&r)
            {
                bad(format!("rows {r}: must be between 1 and {MAX_TABLE_ROWS}"));
            }
        }
        WidgetKind::Gauge | WidgetKind::Value => {}
    }
}

/// Most lines in one chart.
const MAX_SERIES: usize = 8;
/// Most on values of a LED, columns of a table.
const MAX_LIST: usize = 20;
/// Most messages a table keeps.
const MAX_TABLE_ROWS: u32 = 200;

/// `#rgb`, `#rrggbb`, `#rrggbbaa` or a CSS colour name (letters only).
fn valid_color(c: &str) -> bool {
    match c.strip_prefix('#') {
        Some(hex) => {
            matches!(hex.len(), 3 | 4 | 6 | 8) && hex.bytes().all(|b| b.is_ascii_hexdigit())
        }
        None => !c.is_empty() && c.len() <= 30 && c.bytes().all(|b| b.is_ascii_alphabetic()),
    }
}

/// Check a payload filter: the rules crate parses it as the WHERE clause of a rule (and its
/// message says what is wrong), and it may use only what the page's evaluator
/// (widgets.js) evaluates: fields, literals, comparisons, AND/OR/NOT, IN, BETWEEN, LIKE,
/// IS [NOT] NULL/TRUE/FALSE and arithmetic; no functions, CASE or CAST.
pub(crate) fn check_filter(expr: &str) -> Result<(), FilterError> {
    let e = expr.trim();
    if e.is_empty() {
        return Err(FilterError::Empty);
    }
    if e.len() > MAX_TEXT {
        return Err(FilterError::TooLong);
    }
    let words = filter_words(e)?;
    midge_hub::midge_rules::Rule::parse(&format!("SELECT * FROM 'widget' WHERE {e}"))?;
    for (word, before_paren) in words {
        let upper = word.to_ascii_uppercase();
        if matches!(upper.as_str(), "CASE" | "CAST" | "ESCAPE" | "ILIKE") {
            return Err(FilterError::NotEvaluated(upper));
        }
        if before_paren && !matches!(upper.as_str(), "AND" | "OR" | "NOT" | "IN") {
            return Err(FilterError::Function(word.to_owned()));
        }
    }
    Ok(())
}

/// Why a widget's payload filter is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FilterError {
    #[error("empty (leave the filter out to take every message)")]
    Empty,
    #[error("longer than {MAX_TEXT} bytes")]
    TooLong,
    /// Not a rule's WHERE clause (the rules crate says why).
    #[error(transparent)]
    Rule(#[from] midge_hub::midge_rules::RuleError),
    /// A keyword the page does not evaluate (upper case).
    #[error("{0} is not evaluated by the dashboard; {SUBSET}")]
    NotEvaluated(String),
    /// A function call (its name).
    #[error("functions ({0}(...)) are not evaluated by the dashboard; {SUBSET}")]
    Function(String),
    #[error("casts (::) are not evaluated by the dashboard; {SUBSET}")]
    Cast,
    /// A quote (`'` or `"`) without its end.
    #[error("unclosed {0} quote")]
    Unclosed(char),
    #[error("a filter is one condition: no `;`")]
    Semicolon,
    #[error("comments (--) are not allowed in a filter")]
    LineComment,
    #[error("comments (/* */) are not allowed in a filter")]
    BlockComment,
}

/// What a widget's filter may use.
const SUBSET: &str = "a filter compares payload fields with values: = != <> < <= > >=, AND, OR, \
     NOT, IN (...), BETWEEN, LIKE, IS [NOT] NULL, + - * / %, parentheses";

/// The bare words of a filter (outside quotes), each with whether `(` follows it; refuses
/// what would end the condition early (`;`, comments) and `::` casts.
fn filter_words(e: &str) -> Result<Vec<(&str, bool)>, FilterError> {
    let b = e.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    let mut last_word: Option<usize> = None;
    while let Some(&c) = b.get(i) {
        match c {
            b'\'' | b'"' => {
                // a quoted string or name; a doubled quote is the quote itself
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err(FilterError::Unclosed(c as char)),
                        Some(&q) if q == c => {
                            if b.get(i + 1) == Some(&c) {
                                i += 2;
                            } else {
                                i += 1;
                                break;
                            }
                        }
                        Some(_) => i += 1,
                    }
                }
                last_word = None;
                continue;
            }
            b';' => return Err(FilterError::Semicolon),
            b'-' if b.get(i + 1) == Some(&b'-') => {
                return Err(FilterError::LineComment);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                return Err(FilterError::BlockComment);
            }
            b':' if b.get(i + 1) == Some(&b':') => {
                return Err(FilterError::Cast);
            }
            b'(' => {
                if let Some(w) = last_word.take()
                    && let Some((_, f)) = words.get_mut(w)
                {
                    *f = true;
                }
                i += 1;
                continue;
            }
            c if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while b
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'$')
                {
                    i += 1;
                }
                // a word right after a digit (1e5) is part of a number
                words.push((e.get(start..i).unwrap_or_default(), false));
                last_word = Some(words.len() - 1);
                continue;
            }
            c if c.is_ascii_digit() => {
                while b
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'.')
                {
                    i += 1;
                }
                last_word = None;
                continue;
            }
            _ => {}
        }
        last_word = None;
        i += 1;
    }
    Ok(words)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_and_ids_are_given() {
        let w: Widget = serde_json::from_str(r#"{"kind":"gauge","topic":"a/b"}"#).unwrap();
        assert_eq!(w.field, "value");
        assert_eq!(w.table, "telemetry");
        let mut taken = Widget::new(WidgetKind::Value, "c");
        taken.id = "w1".into();
        let v = validate(vec![w, taken]).unwrap();
        assert_eq!(v[0].id, "w2");
        assert_eq!(v[1].id, "w1");
    }

    #[test]
    fn every_problem_is_reported_with_its_widget() {
        let mut sw = Widget::new(WidgetKind::Switch, "lamp/#");
        sw.title = "Lamp".into();
        sw.on = "X".into();
        sw.off = "X".into();
        let mut ch = Widget::new(WidgetKind::Chart, "a/+/b");
        ch.window = "soon".into();
        ch.field = "a..b".into();
        let mut g = Widget::new(WidgetKind::Gauge, "");
        g.min = Some(5.0);
        g.max = Some(1.0);
        let p = validate(vec![sw, ch, g]).unwrap_err();
        let all = p.join("\n");
        assert!(
            all.contains("widget 1 (\"Lamp\"): command_topic: missing"),
            "{all}"
        );
        assert!(all.contains("on and off are both"), "{all}");
        assert!(all.contains("widget 2 (Chart): window"), "{all}");
        assert!(all.contains("field \"a..b\""), "{all}");
        assert!(all.contains("widget 3 (Gauge): topic: missing"), "{all}");
        assert!(all.contains("min (5) must be below max (1)"), "{all}");
        assert_eq!(p.len(), 6, "{all}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = serde_json::from_str::<Widget>(r#"{"kind":"gauge","topic":"a","maxx":3}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("maxx"), "{e}");
    }

    #[test]
    fn field_paths() {
        for ok in ["temp", "env.temp", "values[0]", "a.b[1][2].c", "x-y_z"] {
            assert!(valid_field(ok), "{ok}");
        }
        for bad in ["", ".a", "a.", "a[", "a[]", "a[x]", "[0]", "a b", "a]"] {
            assert!(!valid_field(bad), "{bad}");
        }
    }

    #[test]
    fn a_bad_filter_is_refused_with_the_parsers_message() {
        let mut w = Widget::new(WidgetKind::Led, "home/door");
        w.title = "Door".into();
        w.filter = Some("type = ".into());
        let p = validate(vec![w.clone()]).unwrap_err().join("\n");
        assert!(
            p.starts_with("widget 1 (\"Door\"): filter \"type = \": SQL syntax error:"),
            "{p}"
        );
        for (filter, says) in [
            ("temp >> 3", "the operator >> is not supported"),
            ("temp > ", "SQL syntax error"),
            ("lower(type) = 'door'", "functions (lower(...))"),
            ("CASE WHEN a THEN TRUE END", "CASE is not evaluated"),
            ("a::int = 1", "casts (::)"),
            ("a = 1; DROP", "no `;`"),
            ("a = 1 -- b", "comments"),
            ("type = 'door", "unclosed ' quote"),
            ("", "empty"),
            ("nosuch(1) = 2", "unknown function nosuch()"),
        ] {
            w.filter = Some(filter.into());
            let p = validate(vec![w.clone()]).unwrap_err().join("\n");
            assert!(p.contains(says), "{filter}: {p}");
        }
    }

    #[test]
    fn good_filters_pass() {
        for filter in [
            "type = 'door'",
            "type = \"door\"",
            "temp > 30 AND room = \"k\"",
            "NOT (a.b <= 2.5 OR c <> 'x') AND d != TRUE",
            "state IN ('open', 'closed') AND n BETWEEN 1 AND 3",
            "name LIKE 'door%' AND x IS NOT NULL",
            "(temp - 32) * 5 / 9 > 20",
            "vals[0] = 1 AND a['k-1'] = 'x'",
        ] {
            let mut w = Widget::new(WidgetKind::Value, "a");
            w.filter = Some(filter.into());
            assert!(validate(vec![w]).is_ok(), "{filter}");
        }
    }

    #[test]
    fn led_table_and_series_are_checked() {
        let mut led = Widget::new(WidgetKind::Led, "d");
        led.on_color = Some("url(x)".into());
        led.on_values = vec![String::new()];
        let mut table = Widget::new(WidgetKind::Table, "t/#");
        table.rows = Some(0);
        table.columns = vec!["ok".into(), "a..b".into()];
        let mut chart = Widget::new(WidgetKind::Chart, "c");
        chart.series = vec![
            Series {
                topic: Some("x/#/y".into()),
                field: "t".into(),
                label: None,
                color: Some("#12345".into()),
            },
            Series {
                topic: Some("other".into()),
                field: "h".into(),
                label: Some("Humidity".into()),
                color: None,
            },
        ];
        let p = validate(vec![led, table, chart.clone()])
            .unwrap_err()
            .join("\n");
        for says in [
            "widget 1 (Led): on_color \"url(x)\"",
            "on_values: each value",
            "widget 2 (Table): rows 0",
            "column \"a..b\"",
            "widget 3 (Chart): series 1: topic \"x/#/y\"",
            "series 1: color \"#12345\"",
        ] {
            assert!(p.contains(says), "{says}: {p}");
        }
        assert_eq!(p.lines().count(), 6, "{p}");
        chart.series.remove(0);
        assert_eq!(chart.topics(), ["c", "other"]);
    }
}
