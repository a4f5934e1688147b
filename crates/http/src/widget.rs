//! Dashboard widgets: what the configuration file declares and the web page edits.

use serde::{Deserialize, Serialize};

use crate::time::parse_duration_ms;

/// What a widget shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WidgetKind {
    /// A dial between `min` and `max` with the latest value of `field`.
    Gauge,
    /// A line chart of `field`: history from the series store over `window`, then live.
    Chart,
    /// Markers at `lat_field`/`lon_field`, one per topic.
    Map,
    /// An ON/OFF toggle: state from `topic`, commands published to `command_topic`.
    Switch,
    /// The latest value of `field` as a big number, with the time it arrived.
    Value,
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
    /// How far back a chart reaches (`15m`, `1h`, `7d`).
    #[serde(default = "default_window")]
    pub window: String,
    /// Bucket width of a chart's history (`0` for raw points; default: the window / 240).
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
        }
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

fn valid_table(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && name.len() <= 63
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
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
        WidgetKind::Gauge | WidgetKind::Value => {}
    }
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
}
