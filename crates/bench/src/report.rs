//! Results as a table or one JSON line, and the midge-vs-mosquitto comparison (medians,
//! ratios, markdown table and an SVG chart) over the JSON lines of several runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::conn::ConnResult;
use crate::procstat::ProcReport;
use crate::scenario::RunResult;
use crate::sink::SinkResult;

/// Names that tag a run in the JSON (which broker, which case of a comparison).
#[derive(Debug, Clone, Default)]
pub struct Tags {
    /// Broker label, e.g. "midge" or "mosquitto".
    pub label: Option<String>,
    /// Case name within a comparison, e.g. "fanin-q0".
    pub case: Option<String>,
}

fn broker_json(b: &Option<ProcReport>) -> Value {
    match b {
        Some(b) => json!({
            "cpu_pct": round1(b.cpu_pct),
            "rss_start_kb": b.rss_start_kb,
            "rss_end_kb": b.rss_end_kb,
            "rss_max_kb": b.rss_max_kb,
        }),
        None => Value::Null,
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn version(p: midge_codec::Protocol) -> &'static str {
    match p {
        midge_codec::Protocol::V31 => "3.1",
        midge_codec::Protocol::V311 => "3.1.1",
        midge_codec::Protocol::V5 => "5",
    }
}

/// One JSON object for a publish/subscribe run.
pub fn run_json(r: &RunResult, tags: &Tags) -> Value {
    let t = &r.tracker;
    json!({
        "kind": "scenario",
        "scenario": r.scenario,
        "label": tags.label,
        "case": tags.case,
        "addr": r.common.addr.to_string(),
        "transport": r.common.transport.name(),
        "subscriptions": r.spec.spread.as_ref().map(|s| s.subscriptions()),
        "topics": r.spec.spread.as_ref().map(|s| s.topics.len()),
        "sub_addrs": r.common.sub_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "mqtt": version(r.common.protocol),
        "qos": r.common.qos.as_u8(),
        "payload": r.common.payload.max(crate::wire::HEADER_LEN),
        "publishers": r.spec.publishers,
        "subscribers": r.spec.subscribers,
        "rate": r.spec.rate,
        "sent": r.total_sent(),
        "acked": r.acked,
        "expected": r.expected,
        "received": t.received,
        "unique": t.unique,
        "lost": r.lost,
        "duplicates": t.duplicates,
        "out_of_order": t.out_of_order,
        "foreign": t.foreign,
        "pub_secs": r.pub_secs,
        "recv_secs": r.recv_secs,
        "pub_rate": r.pub_rate().round(),
        "recv_rate": r.recv_rate().round(),
        "latency_us": {
            "p50": t.latency_us(0.5),
            "p90": t.latency_us(0.9),
            "p99": t.latency_us(0.99),
            "p999": t.latency_us(0.999),
            "max": t.latency_max_us(),
            "mean": round1(t.latency_mean_us()),
        },
        "broker": broker_json(&r.broker),
        "connect_failures": r.connect_failures,
        "errors": r.errors,
    })
}

/// One JSON object for a connection run.
pub fn conn_json(r: &ConnResult, tags: &Tags) -> Value {
    json!({
        "kind": "conn",
        "scenario": "conn",
        "label": tags.label,
        "case": tags.case,
        "transport": r.common_transport,
        "short": r.config.short,
        "attempted": r.attempted,
        "connected": r.connected,
        "failures": r.failures,
        "connect_secs": r.connect_secs,
        "connects_per_s": r.connects_per_sec().round(),
        "alive_at_end": r.alive_at_end,
        "resumed": r.resumed,
        "rss_before_kb": r.rss_before_kb,
        "rss_after_kb": r.rss_after_kb,
        "rss_per_conn_bytes": r.rss_per_conn_bytes().map(|x| x.round()),
        "broker": broker_json(&r.broker),
        "errors": r.errors,
    })
}

/// One JSON object for the sink ceiling.
pub fn sink_json(r: &SinkResult, tags: &Tags) -> Value {
    json!({
        "kind": "sink",
        "scenario": "sink",
        "label": tags.label,
        "case": tags.case,
        "publishers": r.publish.spec.publishers,
        "qos": r.publish.common.qos.as_u8(),
        "payload": r.publish.common.payload.max(crate::wire::HEADER_LEN),
        "pub_sent": r.publish.total_sent(),
        "pub_rate": r.publish.pub_rate().round(),
        "sub_received": r.subscribe.tracker.unique,
        "sub_lost": r.subscribe.tracker.received.saturating_sub(r.subscribe.tracker.unique),
        "sub_rate": r.subscribe.recv_rate().round(),
        "connections": r.connect.connected,
        "connects_per_s": r.connect.connects_per_sec().round(),
    })
}

fn row(out: &mut String, k: &str, v: impl std::fmt::Display) {
    let _ = writeln!(out, "  {k:<22} {v}");
}

/// A human-readable table of a publish/subscribe run.
pub fn run_table(r: &RunResult) -> String {
    let mut o = String::new();
    let t = &r.tracker;
    let _ = writeln!(
        o,
        "{}: {} pub → {} sub, MQTT {}, QoS {}, {} B payload{}",
        r.scenario,
        r.spec.publishers,
        r.spec.subscribers,
        version(r.common.protocol),
        r.common.qos.as_u8(),
        r.common.payload.max(crate::wire::HEADER_LEN),
        r.spec
            .rate
            .map(|x| format!(", {x:.0} msg/s"))
            .unwrap_or_default()
    );
    if r.spec.publishers > 0 {
        row(&mut o, "sent", r.total_sent());
        row(&mut o, "publish rate", format!("{:.0} msg/s", r.pub_rate()));
        if r.common.qos.as_u8() > 0 {
            row(&mut o, "acknowledged", r.acked);
        }
    }
    if r.spec.subscribers > 0 {
        if let Some(e) = r.expected {
            row(&mut o, "expected", e);
        }
        row(&mut o, "received", t.received);
        row(&mut o, "lost", r.lost);
        row(&mut o, "duplicates", t.duplicates);
        row(&mut o, "out of order", t.out_of_order);
        if t.foreign > 0 {
            row(&mut o, "foreign payloads", t.foreign);
        }
        row(
            &mut o,
            "delivery rate",
            format!("{:.0} msg/s", r.recv_rate()),
        );
        row(
            &mut o,
            "latency µs",
            format!(
                "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                t.latency_us(0.5),
                t.latency_us(0.9),
                t.latency_us(0.99),
                t.latency_us(0.999),
                t.latency_max_us()
            ),
        );
    }
    if let Some(b) = &r.broker {
        broker_rows(&mut o, b);
    }
    if r.connect_failures > 0 {
        row(&mut o, "connect failures", r.connect_failures);
    }
    for e in &r.errors {
        row(&mut o, "error", e);
    }
    o
}

fn broker_rows(o: &mut String, b: &ProcReport) {
    row(o, "broker CPU", format!("{:.1} %", b.cpu_pct));
    row(
        o,
        "broker RSS",
        format!(
            "{} KiB start, {} KiB end, {} KiB max",
            b.rss_start_kb, b.rss_end_kb, b.rss_max_kb
        ),
    );
}

/// A human-readable table of a connection run.
pub fn conn_table(r: &ConnResult) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "conn: {} {} connections over {}",
        r.attempted,
        if r.config.short { "short" } else { "held" },
        r.common_transport
    );
    row(&mut o, "connected", r.connected);
    if r.common_transport.starts_with("tls") {
        row(&mut o, "TLS sessions resumed", r.resumed);
    }
    row(&mut o, "failures", r.failures);
    row(&mut o, "connects/s", format!("{:.0}", r.connects_per_sec()));
    if !r.config.short {
        row(&mut o, "alive after hold", r.alive_at_end);
    }
    if let (Some(b), Some(a)) = (r.rss_before_kb, r.rss_after_kb) {
        row(
            &mut o,
            "broker RSS",
            format!("{b} KiB before, {a} KiB after"),
        );
    }
    if let Some(x) = r.rss_per_conn_bytes() {
        row(&mut o, "RSS per connection", format!("{x:.0} B"));
    }
    if let Some(b) = &r.broker {
        row(&mut o, "broker CPU", format!("{:.1} %", b.cpu_pct));
    }
    for e in &r.errors {
        row(&mut o, "error", e);
    }
    o
}

/// A human-readable table of the sink ceiling.
pub fn sink_table(r: &SinkResult) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "sink: the load generator against a no-op peer in-process"
    );
    row(
        &mut o,
        "publish ceiling",
        format!(
            "{:.0} msg/s ({} publishers, QoS {}, {} msgs)",
            r.publish.pub_rate(),
            r.publish.spec.publishers,
            r.publish.common.qos.as_u8(),
            r.publish.total_sent()
        ),
    );
    row(
        &mut o,
        "subscribe ceiling",
        format!(
            "{:.0} msg/s ({} msgs parsed and checked)",
            r.subscribe.recv_rate(),
            r.subscribe.tracker.unique
        ),
    );
    row(
        &mut o,
        "connect ceiling",
        format!(
            "{:.0} conn/s ({} connections)",
            r.connect.connects_per_sec(),
            r.connect.connected
        ),
    );
    o
}

// ---------------------------------------------------------------------------------------
// Comparison

/// A metric of a comparison row.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
}

struct Metric {
    name: &'static str,
    unit: &'static str,
    path: &'static [&'static str],
    better: Better,
}

const THROUGHPUT: &[Metric] = &[
    Metric {
        name: "throughput",
        unit: "msg/s",
        path: &["recv_rate"],
        better: Better::Higher,
    },
    Metric {
        name: "per broker CPU-second",
        unit: "msg",
        path: &[PER_CPU],
        better: Better::Higher,
    },
    Metric {
        name: "lost",
        unit: "msgs",
        path: &["lost"],
        better: Better::Lower,
    },
    Metric {
        name: "broker CPU",
        unit: "%",
        path: &["broker", "cpu_pct"],
        better: Better::Lower,
    },
];

const LATENCY: &[Metric] = &[
    Metric {
        name: "p50",
        unit: "µs",
        path: &["latency_us", "p50"],
        better: Better::Lower,
    },
    Metric {
        name: "p90",
        unit: "µs",
        path: &["latency_us", "p90"],
        better: Better::Lower,
    },
    Metric {
        name: "p99",
        unit: "µs",
        path: &["latency_us", "p99"],
        better: Better::Lower,
    },
    Metric {
        name: "p99.9",
        unit: "µs",
        path: &["latency_us", "p999"],
        better: Better::Lower,
    },
    Metric {
        name: "max",
        unit: "µs",
        path: &["latency_us", "max"],
        better: Better::Lower,
    },
    Metric {
        name: "lost",
        unit: "msgs",
        path: &["lost"],
        better: Better::Lower,
    },
];

const CONN: &[Metric] = &[
    Metric {
        name: "connects/s",
        unit: "conn/s",
        path: &["connects_per_s"],
        better: Better::Higher,
    },
    Metric {
        name: "RSS per conn",
        unit: "B",
        path: &["rss_per_conn_bytes"],
        better: Better::Lower,
    },
    Metric {
        name: "failures",
        unit: "",
        path: &["failures"],
        better: Better::Lower,
    },
];

/// Short connections (the connect rate): CONNECT, CONNACK, DISCONNECT.
const CONN_RATE: &[Metric] = &[
    Metric {
        name: "connects/s",
        unit: "conn/s",
        path: &["connects_per_s"],
        better: Better::Higher,
    },
    Metric {
        name: "per broker CPU-second",
        unit: "conn",
        path: &[PER_CPU],
        better: Better::Higher,
    },
    Metric {
        name: "TLS resumed",
        unit: "",
        path: &["resumed"],
        better: Better::Higher,
    },
    Metric {
        name: "failures",
        unit: "",
        path: &["failures"],
        better: Better::Lower,
    },
];

/// The project's goals (issue 17), by case and metric: `≥ N×` / `≤ N×` on the ratio
/// midge/mosquitto, `≤ N B` on midge's own figure.
fn target(case: &str, metric: &str) -> Option<&'static str> {
    Some(match (case, metric) {
        ("fanin-q0" | "fanin-q1", "throughput") => "≥ 15×",
        ("fanin-q2", "throughput") => "≥ 8×",
        ("fanout-q0", "throughput") => "≥ 30×",
        ("ws-fanin-q0" | "ws-fanout-q0", "throughput") => "≥ 5×",
        ("latency-q0" | "latency-q1", "p99") => "≤ 0.5×",
        // connects/s is the issue's figure; per broker CPU-second is what a load generator
        // on one core can still tell apart when it, not the broker, is the limit
        ("connect-rate", "connects/s" | "per broker CPU-second") => "≥ 3×",
        (c, "connects/s" | "per broker CPU-second") if c.starts_with("connect-tls-") => "≥ 2×",
        (c, "RSS per conn") if c.starts_with("conn-idle") => "≤ 734 B",
        _ => return None,
    })
}

/// Computed metric: messages delivered (or connections made) per second of broker CPU
/// (fairer than msg/s on a shared machine, where a single-threaded broker gets a smaller
/// share of the cores).
const PER_CPU: &str = "(recv_rate / broker CPU)";

fn get(v: &Value, path: &[&str]) -> Option<f64> {
    if path == [PER_CPU] {
        let rate = get(v, &["recv_rate"]).or_else(|| get(v, &["connects_per_s"]))?;
        let cpu = get(v, &["broker", "cpu_pct"])?;
        return (cpu > 0.0).then(|| rate / (cpu / 100.0));
    }
    let mut cur = v;
    for k in path {
        cur = cur.get(*k)?;
    }
    cur.as_f64()
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    let mid = xs.get(n / 2).copied()?;
    if n % 2 == 1 {
        Some(mid)
    } else {
        Some((xs.get(n / 2 - 1).copied()? + mid) / 2.0)
    }
}

/// One line of the comparison.
#[derive(Debug, Clone)]
pub struct CompareRow {
    /// Case name.
    pub case: String,
    /// Metric name.
    pub metric: String,
    /// Unit.
    pub unit: String,
    /// Median for midge.
    pub midge: Option<f64>,
    /// Median for mosquitto.
    pub mosquitto: Option<f64>,
    /// Runs behind each median (midge, mosquitto).
    pub runs: (usize, usize),
    /// Target, if the project has one.
    pub target: Option<String>,
    /// Whether a higher figure is better.
    pub higher_is_better: bool,
}

impl CompareRow {
    /// midge / mosquitto.
    pub fn ratio(&self) -> Option<f64> {
        match (self.midge, self.mosquitto) {
            (Some(a), Some(b)) if b != 0.0 => Some(a / b),
            _ => None,
        }
    }

    /// Whether the goal is met: `≥ N×` / `≤ N×` compare the ratio, `≤ N <unit>` midge's
    /// own figure; `None` without a goal or without the figures.
    pub fn met(&self) -> Option<bool> {
        let t = self.target.as_deref()?;
        let (ge, rest) = if let Some(r) = t.strip_prefix('≥') {
            (true, r)
        } else {
            (false, t.strip_prefix('≤')?)
        };
        let rest = rest.trim();
        let (x, of_ratio) = match rest.strip_suffix('×') {
            Some(n) => (n.trim().parse::<f64>().ok()?, true),
            None => (rest.split_whitespace().next()?.parse::<f64>().ok()?, false),
        };
        let v = if of_ratio { self.ratio()? } else { self.midge? };
        Some(if ge { v >= x } else { v <= x })
    }
}

/// Medians per case, metric and broker from JSON lines tagged with `label` and `case`.
pub fn compare(lines: &[Value]) -> Vec<CompareRow> {
    let mut order: Vec<String> = Vec::new();
    let mut by_case: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for v in lines {
        let Some(case) = v.get("case").and_then(Value::as_str) else {
            continue;
        };
        if v.get("kind").and_then(Value::as_str) == Some("sink") {
            continue;
        }
        if !by_case.contains_key(case) {
            order.push(case.to_string());
        }
        by_case.entry(case.to_string()).or_default().push(v);
    }
    let mut rows = Vec::new();
    for case in order {
        let Some(runs) = by_case.get(&case) else {
            continue;
        };
        let first = runs.first().copied();
        let metrics = match first.and_then(|v| v.get("kind")).and_then(Value::as_str) {
            Some("conn") if first.and_then(|v| v.get("short")) == Some(&Value::Bool(true)) => {
                CONN_RATE
            }
            Some("conn") => CONN,
            _ if first
                .and_then(|v| v.get("rate"))
                .is_some_and(|r| !r.is_null()) =>
            {
                LATENCY
            }
            _ => THROUGHPUT,
        };
        for m in metrics {
            let pick = |label: &str| {
                runs.iter()
                    .filter(|v| v.get("label").and_then(Value::as_str) == Some(label))
                    .filter_map(|v| get(v, m.path))
                    .collect::<Vec<_>>()
            };
            let (a, b) = (pick("midge"), pick("mosquitto"));
            rows.push(CompareRow {
                case: case.clone(),
                metric: m.name.to_string(),
                unit: m.unit.to_string(),
                runs: (a.len(), b.len()),
                midge: median(a),
                mosquitto: median(b),
                target: target(&case, m.name).map(str::to_string),
                higher_is_better: m.better == Better::Higher,
            });
        }
    }
    rows
}

fn fmt_num(x: Option<f64>) -> String {
    match x {
        None => "–".into(),
        Some(x) if x.abs() >= 100.0 => {
            // Thousands separators for readability.
            let s = format!("{:.0}", x.abs());
            let mut out = String::new();
            for (i, ch) in s.chars().enumerate() {
                if i > 0 && (s.len() - i) % 3 == 0 {
                    out.push(',');
                }
                out.push(ch);
            }
            if x < 0.0 { format!("-{out}") } else { out }
        }
        Some(x) => format!("{x:.1}"),
    }
}

/// The comparison as a markdown table.
pub fn compare_markdown(rows: &[CompareRow]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "| case | metric | midge | mosquitto | midge/mosquitto | goal | met | runs |"
    );
    let _ = writeln!(o, "|---|---|---:|---:|---:|---|---|---|");
    for r in rows {
        let ratio = r.ratio().map_or("–".into(), |x| format!("{x:.2}×"));
        let unit = if r.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", r.unit)
        };
        let _ = writeln!(
            o,
            "| {} | {} | {}{unit} | {}{unit} | {} | {} | {} | {}+{} |",
            r.case,
            r.metric,
            fmt_num(r.midge),
            fmt_num(r.mosquitto),
            ratio,
            r.target.clone().unwrap_or_default(),
            match r.met() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            },
            r.runs.0,
            r.runs.1
        );
    }
    o
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG chart: one row per (case, metric) for throughput, connects/s, RSS per connection
/// and the latency percentiles, midge and mosquitto bars scaled to the larger of the two.
pub fn compare_svg(rows: &[CompareRow], title: &str) -> String {
    let keep = |r: &&CompareRow| {
        matches!(
            r.metric.as_str(),
            "throughput"
                | "per broker CPU-second"
                | "connects/s"
                | "RSS per conn"
                | "p50"
                | "p90"
                | "p99"
                | "p99.9"
        ) && (r.midge.is_some() || r.mosquitto.is_some())
    };
    let shown: Vec<&CompareRow> = rows.iter().filter(keep).collect();
    let (w, left, bar_w, row_h, top) = (900.0, 260.0, 480.0, 34.0, 60.0);
    let h = top + row_h * shown.len() as f64 + 40.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="16" font-weight="bold">{}</text>"#,
        esc(title)
    );
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="32" width="12" height="12" fill="#2a7ab8"/><text x="{}" y="43">midge</text><rect x="{}" y="32" width="12" height="12" fill="#e08a2c"/><text x="{}" y="43">mosquitto</text><text x="{}" y="43" fill="#555">bars scaled per row; ratio = midge/mosquitto</text>"##,
        left + 16.0,
        left + 80.0,
        left + 96.0,
        left + 180.0
    );
    for (i, r) in shown.iter().enumerate() {
        let y = top + row_h * i as f64;
        let max = r
            .midge
            .unwrap_or(0.0)
            .max(r.mosquitto.unwrap_or(0.0))
            .max(1e-9);
        let better = if r.higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        };
        let _ = writeln!(
            s,
            r##"<text x="10" y="{}">{} · {} ({})</text><text x="10" y="{}" fill="#777" font-size="10">{}</text>"##,
            y + 13.0,
            esc(&r.case),
            esc(&r.metric),
            esc(&r.unit),
            y + 26.0,
            better
        );
        for (j, (v, color)) in [(r.midge, "#2a7ab8"), (r.mosquitto, "#e08a2c")]
            .iter()
            .enumerate()
        {
            let by = y + 2.0 + 14.0 * j as f64;
            let bw = v.map_or(0.0, |v| v / max * bar_w);
            let _ = writeln!(
                s,
                r#"<rect x="{left}" y="{by}" width="{bw:.1}" height="12" fill="{color}"/><text x="{}" y="{}" font-size="10">{}</text>"#,
                left + bw + 4.0,
                by + 10.0,
                fmt_num(*v)
            );
        }
        if let Some(x) = r.ratio() {
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" font-weight="bold">{x:.2}×</text>"#,
                left + bar_w + 90.0,
                y + 17.0
            );
        }
    }
    let _ = writeln!(s, "</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios_per_case() {
        let lines: Vec<Value> = [
            json!({"kind":"scenario","case":"fanin-q0","label":"midge","rate":null,"recv_rate":300.0,"lost":0}),
            json!({"kind":"scenario","case":"fanin-q0","label":"midge","rate":null,"recv_rate":100.0,"lost":0}),
            json!({"kind":"scenario","case":"fanin-q0","label":"midge","rate":null,"recv_rate":200.0,"lost":0}),
            json!({"kind":"scenario","case":"fanin-q0","label":"mosquitto","rate":null,"recv_rate":50.0,"lost":2}),
            json!({"kind":"conn","case":"conn-idle","label":"midge","connects_per_s":10.0,"rss_per_conn_bytes":500.0,"failures":0}),
            json!({"kind":"conn","case":"conn-idle","label":"mosquitto","connects_per_s":5.0,"rss_per_conn_bytes":700.0,"failures":0}),
        ]
        .into();
        let rows = compare(&lines);
        let tp = rows.iter().find(|r| r.metric == "throughput").unwrap();
        assert_eq!(tp.midge, Some(200.0));
        assert_eq!(tp.ratio(), Some(4.0));
        assert_eq!(tp.runs, (3, 1));
        let c = rows.iter().find(|r| r.metric == "connects/s").unwrap();
        assert_eq!(c.ratio(), Some(2.0));
        let md = compare_markdown(&rows);
        assert!(
            md.contains(
                "| fanin-q0 | throughput | 200 msg/s | 50.0 msg/s | 4.00× | ≥ 15× | **no** | 3+1 |"
            ),
            "{md}"
        );
        let svg = compare_svg(&rows, "t");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn goals_are_met_or_not_by_ratio_or_by_midges_own_figure() {
        let lines: Vec<Value> = [
            json!({"kind":"conn","short":true,"case":"connect-rate","label":"midge","connects_per_s":3100.0,"failures":0,"resumed":0,"broker":{"cpu_pct":50.0}}),
            json!({"kind":"conn","short":true,"case":"connect-rate","label":"mosquitto","connects_per_s":1000.0,"failures":0,"resumed":0,"broker":{"cpu_pct":100.0}}),
            json!({"kind":"conn","short":true,"case":"connect-tls-rsa","label":"midge","connects_per_s":1500.0,"failures":0,"resumed":0}),
            json!({"kind":"conn","short":true,"case":"connect-tls-rsa","label":"mosquitto","connects_per_s":1000.0,"failures":0,"resumed":0}),
            json!({"kind":"conn","case":"conn-idle-v5","label":"midge","connects_per_s":10.0,"rss_per_conn_bytes":700.0,"failures":0}),
            json!({"kind":"conn","case":"conn-idle-v5","label":"mosquitto","connects_per_s":5.0,"rss_per_conn_bytes":736.0,"failures":0}),
            json!({"kind":"scenario","case":"latency-q1","label":"midge","rate":10000.0,"latency_us":{"p99":300},"lost":0}),
            json!({"kind":"scenario","case":"latency-q1","label":"mosquitto","rate":10000.0,"latency_us":{"p99":500},"lost":0}),
            json!({"kind":"scenario","case":"wildcard-100k","label":"midge","rate":null,"recv_rate":9.0,"lost":0}),
            json!({"kind":"scenario","case":"wildcard-100k","label":"mosquitto","rate":null,"recv_rate":1.0,"lost":0}),
        ]
        .into();
        let rows = compare(&lines);
        let find = |case: &str, metric: &str| {
            rows.iter()
                .find(|r| r.case == case && r.metric == metric)
                .unwrap_or_else(|| panic!("no row {case} {metric}"))
        };
        let c = find("connect-rate", "connects/s");
        assert_eq!((c.target.as_deref(), c.met()), (Some("≥ 3×"), Some(true)));
        // short connections have no memory per connection, but connects per CPU-second
        assert!(
            !rows
                .iter()
                .any(|r| r.case == "connect-rate" && r.metric == "RSS per conn")
        );
        assert_eq!(
            find("connect-rate", "per broker CPU-second").ratio(),
            Some(6.2)
        );
        assert_eq!(find("connect-tls-rsa", "connects/s").met(), Some(false));
        assert_eq!(find("conn-idle-v5", "RSS per conn").met(), Some(true));
        assert_eq!(find("latency-q1", "p99").met(), Some(false));
        let w = find("wildcard-100k", "throughput");
        assert_eq!((w.target.as_deref(), w.met()), (None, None));
        let md = compare_markdown(&rows);
        assert!(md.contains("| ≥ 3× | yes |"), "{md}");
    }
}
