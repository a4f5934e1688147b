//! mosquitto_sub's output: the plain and verbose forms, `-F` format strings (`%t %p %j %J
//! %x %X %I %U`, widths and precisions, strftime conversions) and the JSON forms, byte for
//! byte as mosquitto_sub prints them. Pure: formatting only, no I/O.

use std::time::{SystemTime, UNIX_EPOCH};

use midge_client::codec::{Protocol, Publish, PublishProperties, QoS};

/// How to print one message.
#[derive(Debug, Clone)]
pub(crate) struct Output {
    pub(crate) verbose: bool,
    pub(crate) eol: bool,
    pub(crate) format: Option<String>,
    pub(crate) pretty: bool,
}

/// Wall-clock time of a message: seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp {
    pub(crate) secs: i64,
    pub(crate) nanos: u32,
}

pub(crate) fn now() -> Stamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Stamp {
        secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos(),
    }
}

/// Print one message as mosquitto_sub does, into `out`.
pub(crate) fn format_message(
    output: &Output,
    m: &Publish,
    protocol: Protocol,
    stamp: Stamp,
    out: &mut Vec<u8>,
) {
    if let Some(format) = &output.format {
        formatted(output, format, m, protocol, stamp, out);
        if output.eol {
            out.push(b'\n');
        }
    } else if output.verbose {
        if m.payload.is_empty() {
            if output.eol {
                out.extend_from_slice(m.topic.as_str().as_bytes());
                out.extend_from_slice(b" (null)\n");
            }
        } else {
            out.extend_from_slice(m.topic.as_str().as_bytes());
            out.push(b' ');
            out.extend_from_slice(&m.payload);
            if output.eol {
                out.push(b'\n');
            }
        }
    } else if !m.payload.is_empty() {
        out.extend_from_slice(&m.payload);
        if output.eol {
            out.push(b'\n');
        }
    }
}

/// Padding and width of one `%` conversion.
#[derive(Debug, Clone, Copy)]
struct Spec {
    left: bool,
    pad: u8,
    width: usize,
    precision: Option<usize>,
}

fn pad_to(out: &mut Vec<u8>, n: usize, pad: u8) {
    out.extend(std::iter::repeat_n(pad, n));
}

fn put_int(out: &mut Vec<u8>, value: i64, spec: Spec) {
    let s = value.to_string();
    if spec.width == 0 || s.len() >= spec.width {
        out.extend_from_slice(s.as_bytes());
    } else if spec.left {
        out.extend_from_slice(s.as_bytes());
        pad_to(out, spec.width - s.len(), b' ');
    } else if spec.pad == b'0' {
        let (sign, digits) = match s.strip_prefix('-') {
            Some(d) => ("-", d),
            None => ("", s.as_str()),
        };
        out.extend_from_slice(sign.as_bytes());
        pad_to(out, spec.width - s.len(), b'0');
        out.extend_from_slice(digits.as_bytes());
    } else {
        pad_to(out, spec.width - s.len(), b' ');
        out.extend_from_slice(s.as_bytes());
    }
}

fn put_str(out: &mut Vec<u8>, value: &[u8], spec: Spec) {
    let value = match spec.precision {
        Some(p) if p < value.len() => value.get(..p).unwrap_or(value),
        _ => value,
    };
    let padn = spec.width.saturating_sub(value.len());
    if !spec.left {
        pad_to(out, padn, b' ');
    }
    out.extend_from_slice(value);
    if spec.left {
        pad_to(out, padn, b' ');
    }
}

/// mosquitto's write_payload: raw (hex 0), lower hex (1) or upper hex (2), padded.
fn put_payload(out: &mut Vec<u8>, payload: &[u8], hex: u8, spec: Spec) {
    let mut len = payload.len();
    let padn: i64 = if spec.width > 0 {
        if len > spec.width {
            len = spec.width;
        }
        if hex > 0 {
            len /= 2;
            spec.width as i64 - (len as i64) * 2
        } else {
            spec.width as i64 - len as i64
        }
    } else {
        -(len as i64)
    };
    let data = payload.get(..len).unwrap_or(payload);
    if !spec.left && padn > 0 {
        pad_to(out, padn as usize, spec.pad);
    }
    match hex {
        0 => out.extend_from_slice(data),
        1 => {
            for b in data {
                out.extend_from_slice(format!("{b:02x}").as_bytes());
            }
        }
        _ => {
            for b in data {
                out.extend_from_slice(format!("{b:02X}").as_bytes());
            }
        }
    }
    if spec.left && padn > 0 {
        pad_to(out, padn as usize, b' ');
    }
}

fn formatted(
    output: &Output,
    format: &str,
    m: &Publish,
    protocol: Protocol,
    stamp: Stamp,
    out: &mut Vec<u8>,
) {
    let f = format.as_bytes();
    let len = f.len();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    let mut i = 0;
    while i < len {
        let c = at(i);
        if c == b'%' {
            let mut spec = Spec {
                left: false,
                pad: b' ',
                width: 0,
                precision: None,
            };
            if i < len - 1 {
                i += 1;
                if at(i) == b'-' {
                    spec.left = true;
                    if i < len - 1 {
                        i += 1;
                    }
                }
                if at(i) == b'0' {
                    spec.pad = b'0';
                    if i < len - 1 {
                        i += 1;
                    }
                }
                while i < len - 1 && at(i).is_ascii_digit() {
                    spec.width = spec.width * 10 + usize::from(at(i) - b'0');
                    i += 1;
                }
                if at(i) == b'.' && i < len - 1 {
                    i += 1;
                    let mut p = 0;
                    while i < len - 1 && at(i).is_ascii_digit() {
                        p = p * 10 + usize::from(at(i) - b'0');
                        i += 1;
                    }
                    spec.precision = Some(p);
                }
                if i < len {
                    percent(output, at(i), spec, m, protocol, stamp, out);
                }
            }
        } else if c == b'@' {
            if i < len - 1 {
                i += 1;
                if at(i) == b'@' {
                    out.push(b'@');
                } else if at(i) == b'N' {
                    out.extend_from_slice(format!("{:09}", stamp.nanos).as_bytes());
                } else {
                    strftime(out, at(i), stamp);
                }
            }
        } else if c == b'\\' {
            if i < len - 1 {
                i += 1;
                match at(i) {
                    b'\\' => out.push(b'\\'),
                    b'0' => out.push(0),
                    b'a' => out.push(0x07),
                    b'e' => out.push(0x1b),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'v' => out.push(0x0b),
                    _ => {}
                }
            }
        } else {
            out.push(c);
        }
        i += 1;
    }
}

fn percent(
    output: &Output,
    conv: u8,
    spec: Spec,
    m: &Publish,
    protocol: Protocol,
    stamp: Stamp,
    out: &mut Vec<u8>,
) {
    let props = &m.properties;
    match conv {
        b'%' => out.push(b'%'),
        b'A' => match props.topic_alias {
            Some(v) => put_int(out, i64::from(v), spec),
            None => pad_to(out, spec.width, spec.pad),
        },
        b'C' => match &props.content_type {
            Some(v) => put_str(out, v.as_bytes(), spec),
            None => pad_to(out, spec.width, b' '),
        },
        b'D' => {
            if let Some(v) = &props.correlation_data {
                out.extend_from_slice(v);
            }
        }
        b'E' => match props.message_expiry_interval {
            Some(v) => put_int(out, i64::from(v as i32), spec),
            None => pad_to(out, spec.width, spec.pad),
        },
        b'F' => match props.payload_format_indicator {
            Some(v) => put_int(out, i64::from(v), spec),
            None => pad_to(out, spec.width, spec.pad),
        },
        b'I' => {
            let mut s = Vec::new();
            strftime(&mut s, b'F', stamp);
            s.push(b'T');
            strftime(&mut s, b'T', stamp);
            strftime(&mut s, b'z', stamp);
            put_str(out, &s, spec);
        }
        b'j' => json(out, m, protocol, stamp, true, output.pretty),
        b'J' => json(out, m, protocol, stamp, false, output.pretty),
        b'l' => put_int(out, m.payload.len() as i64, spec),
        b'm' => put_int(out, i64::from(m.packet_id), spec),
        b'P' => {
            let parts: Vec<String> = props
                .user_properties
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect();
            out.extend_from_slice(parts.join(" ").as_bytes());
        }
        b'p' => put_payload(out, &m.payload, 0, spec),
        b'q' => out.push(b'0' + m.qos.as_u8()),
        b'R' => {
            if let Some(v) = &props.response_topic {
                put_str(out, v.as_bytes(), spec);
            }
        }
        b'r' => out.push(if m.retain { b'1' } else { b'0' }),
        b'S' => match props.subscription_identifiers.first() {
            Some(v) => put_int(out, i64::from(*v), spec),
            None => pad_to(out, spec.width, spec.pad),
        },
        b't' => put_str(out, m.topic.as_str().as_bytes(), spec),
        b'U' => out.extend_from_slice(format!("{}.{:09}", stamp.secs, stamp.nanos).as_bytes()),
        b'x' => put_payload(out, &m.payload, 1, spec),
        b'X' => put_payload(out, &m.payload, 2, spec),
        _ => {}
    }
}

/// Civil date (UTC) of a Unix time: (year, month, day, hour, minute, second, day of year).
fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    const CUM: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = CUM.get((m - 1) as usize).copied().unwrap_or(0) + d + u32::from(leap && m > 2);
    (
        y,
        m,
        d,
        (sod / 3600) as u32,
        ((sod % 3600) / 60) as u32,
        (sod % 60) as u32,
        yday,
    )
}

/// The strftime conversions midge supports after `@` (times are UTC).
fn strftime(out: &mut Vec<u8>, conv: u8, stamp: Stamp) {
    let (y, mo, d, h, mi, s, yday) = civil(stamp.secs);
    let text = match conv {
        b'Y' => y.to_string(),
        b'y' => format!("{:02}", y.rem_euclid(100)),
        b'm' => format!("{mo:02}"),
        b'd' => format!("{d:02}"),
        b'e' => format!("{d:2}"),
        b'H' => format!("{h:02}"),
        b'I' => format!("{:02}", if h % 12 == 0 { 12 } else { h % 12 }),
        b'p' => (if h < 12 { "AM" } else { "PM" }).to_string(),
        b'M' => format!("{mi:02}"),
        b'S' => format!("{s:02}"),
        b'j' => format!("{yday:03}"),
        b's' => stamp.secs.to_string(),
        b'z' => "+0000".to_string(),
        b'Z' => "UTC".to_string(),
        b'F' => format!("{y}-{mo:02}-{d:02}"),
        b'T' => format!("{h:02}:{mi:02}:{s:02}"),
        b'R' => format!("{h:02}:{mi:02}"),
        b'D' => format!("{mo:02}/{d:02}/{:02}", y.rem_euclid(100)),
        b'%' => "%".to_string(),
        _ => String::new(),
    };
    out.extend_from_slice(text.as_bytes());
}

/// A JSON string the way cJSON prints it (UTF-8 bytes pass through).
fn json_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

fn json_properties(out: &mut Vec<u8>, p: &PublishProperties) {
    let mut first = true;
    let mut key = |out: &mut Vec<u8>, k: &str| {
        if !first {
            out.push(b',');
        }
        first = false;
        json_string(out, k.as_bytes());
        out.push(b':');
    };
    out.push(b'{');
    if let Some(v) = p.payload_format_indicator {
        key(out, "payload-format-indicator");
        out.extend_from_slice(v.to_string().as_bytes());
    }
    if let Some(v) = p.message_expiry_interval {
        key(out, "message-expiry-interval");
        out.extend_from_slice(v.to_string().as_bytes());
    }
    if let Some(v) = &p.content_type {
        key(out, "content-type");
        json_string(out, v.as_bytes());
    }
    if let Some(v) = &p.response_topic {
        key(out, "response-topic");
        json_string(out, v.as_bytes());
    }
    if let Some(v) = &p.correlation_data {
        key(out, "correlation-data");
        json_string(out, v);
    }
    for v in &p.subscription_identifiers {
        key(out, "subscription-identifier");
        out.extend_from_slice(v.to_string().as_bytes());
    }
    if let Some(v) = p.topic_alias {
        key(out, "topic-alias");
        out.extend_from_slice(v.to_string().as_bytes());
    }
    if !p.user_properties.is_empty() {
        key(out, "user-properties");
        out.push(b'{');
        for (n, (k, v)) in p.user_properties.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            json_string(out, k.as_bytes());
            out.push(b':');
            json_string(out, v.as_bytes());
        }
        out.push(b'}');
    }
    out.push(b'}');
}

/// `%j` (payload as a string) and `%J` (payload as JSON), like mosquitto built with cJSON.
fn json(
    out: &mut Vec<u8>,
    m: &Publish,
    protocol: Protocol,
    stamp: Stamp,
    escaped: bool,
    pretty: bool,
) {
    let payload_json = if escaped || m.payload.is_empty() {
        None
    } else {
        match serde_json::from_slice::<serde_json::Value>(&m.payload) {
            Ok(v) => Some(v),
            Err(_) => {
                eprintln!(
                    "Error: Message payload is not valid JSON on topic {}.",
                    m.topic
                );
                return;
            }
        }
    };
    let mut o = Vec::new();
    let (y, mo, d, h, mi, s, _) = civil(stamp.secs);
    let tst = format!(
        "{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:06}Z+0000",
        stamp.nanos / 1000
    );
    o.extend_from_slice(b"{\"tst\":");
    json_string(&mut o, tst.as_bytes());
    o.extend_from_slice(b",\"topic\":");
    json_string(&mut o, m.topic.as_str().as_bytes());
    o.extend_from_slice(
        format!(
            ",\"qos\":{},\"retain\":{},\"payloadlen\":{}",
            m.qos.as_u8(),
            u8::from(m.retain),
            m.payload.len()
        )
        .as_bytes(),
    );
    if m.qos != QoS::AtMostOnce {
        o.extend_from_slice(format!(",\"mid\":{}", m.packet_id).as_bytes());
    }
    if protocol.is_v5() && !m.properties.is_empty() {
        o.extend_from_slice(b",\"properties\":");
        json_properties(&mut o, &m.properties);
    }
    o.extend_from_slice(b",\"payload\":");
    if m.payload.is_empty() {
        o.extend_from_slice(b"null");
    } else if let Some(v) = payload_json {
        o.extend_from_slice(v.to_string().as_bytes());
    } else {
        // mosquitto hands the payload to cJSON as a C string: it ends at the first NUL
        let end = m
            .payload
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(m.payload.len());
        json_string(&mut o, m.payload.get(..end).unwrap_or(&m.payload));
    }
    o.push(b'}');
    if pretty {
        match serde_json::from_slice::<serde_json::Value>(&o) {
            Ok(v) => cjson_pretty(out, &v, 0),
            Err(_) => out.extend_from_slice(&o),
        }
    } else {
        out.extend_from_slice(&o);
    }
}

/// cJSON_Print's layout: tab indents, `"key":<TAB>value`, arrays on one line.
fn cjson_pretty(out: &mut Vec<u8>, v: &serde_json::Value, depth: usize) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            out.extend_from_slice(b"{\n");
            let n = map.len();
            for (i, (k, v)) in map.iter().enumerate() {
                pad_to(out, depth + 1, b'\t');
                json_string(out, k.as_bytes());
                out.extend_from_slice(b":\t");
                cjson_pretty(out, v, depth + 1);
                if i + 1 < n {
                    out.push(b',');
                }
                out.push(b'\n');
            }
            pad_to(out, depth, b'\t');
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                cjson_pretty(out, v, depth + 1);
            }
            out.push(b']');
        }
        Value::String(s) => json_string(out, s.as_bytes()),
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use midge_client::codec::TopicName;

    fn msg(topic: &str, payload: &'static [u8], qos: QoS, retain: bool) -> Publish {
        let mut p = Publish::new(TopicName::new(topic).unwrap(), payload);
        p.qos = qos;
        p.retain = retain;
        if qos != QoS::AtMostOnce {
            p.packet_id = 3;
        }
        p
    }

    fn fmt(format: &str, m: &Publish) -> String {
        let output = Output {
            verbose: false,
            eol: true,
            format: Some(format.into()),
            pretty: false,
        };
        let mut out = Vec::new();
        let stamp = Stamp {
            secs: 1_764_102_000,
            nanos: 123_456_789,
        };
        format_message(&output, m, Protocol::V311, stamp, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn format_conversions() {
        let m = msg("a/b", b"hi", QoS::AtLeastOnce, true);
        assert_eq!(fmt("%t %p %q %r %m %l %%", &m), "a/b hi 1 1 3 2 %\n");
        assert_eq!(
            fmt("%x|%X", &msg("t", b"\x01\xab", QoS::AtMostOnce, false)),
            "01ab|01AB\n"
        );
        assert_eq!(fmt("[%5t][%-5t][%.1t]", &m), "[  a/b][a/b  ][a]\n");
        assert_eq!(fmt("[%05l][%-4l]", &m), "[00002][2   ]\n");
        assert_eq!(fmt("%t\\t%p\\n", &m), "a/b\thi\n\n");
        assert_eq!(fmt("%U", &m), "1764102000.123456789\n");
        assert_eq!(fmt("%I", &m), "2025-11-25T20:20:00+0000\n");
        assert_eq!(
            fmt("@Y-@m-@d @H:@M:@S.@N @@", &m),
            "2025-11-25 20:20:00.123456789 @\n"
        );
    }

    #[test]
    fn json_formats_like_cjson_mosquitto() {
        let m = msg("e/1", b"x\"y\x01", QoS::AtLeastOnce, false);
        assert_eq!(
            fmt("%j", &m),
            "{\"tst\":\"2025-11-25T20:20:00.123456Z+0000\",\"topic\":\"e/1\",\"qos\":1,\
             \"retain\":0,\"payloadlen\":4,\"mid\":3,\"payload\":\"x\\\"y\\u0001\"}\n"
        );
        let m = msg("e/2", b"{\"a\": [1, 2]}", QoS::AtMostOnce, true);
        assert!(fmt("%J", &m).ends_with("\"payload\":{\"a\":[1,2]}}\n"));
        let m = msg("e/3", b"", QoS::AtMostOnce, false);
        assert!(fmt("%j", &m).ends_with("\"payloadlen\":0,\"payload\":null}\n"));
    }

    #[test]
    fn plain_and_verbose_output() {
        let mut output = Output {
            verbose: true,
            eol: true,
            format: None,
            pretty: false,
        };
        let stamp = Stamp { secs: 0, nanos: 0 };
        let mut out = Vec::new();
        format_message(
            &output,
            &msg("t", b"", QoS::AtMostOnce, false),
            Protocol::V5,
            stamp,
            &mut out,
        );
        format_message(
            &output,
            &msg("t", b"p", QoS::AtMostOnce, false),
            Protocol::V5,
            stamp,
            &mut out,
        );
        output.verbose = false;
        format_message(
            &output,
            &msg("t", b"", QoS::AtMostOnce, false),
            Protocol::V5,
            stamp,
            &mut out,
        );
        output.eol = false;
        format_message(
            &output,
            &msg("t", b"q", QoS::AtMostOnce, false),
            Protocol::V5,
            stamp,
            &mut out,
        );
        assert_eq!(out, b"t (null)\nt p\nq");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0, 1));
        assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0, 60));
        assert_eq!(civil(1_735_689_599), (2024, 12, 31, 23, 59, 59, 366));
    }
}
