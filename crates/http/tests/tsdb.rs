//! The Baidu TSDB-compatible API (`/v1/...`), signed requests (bce-auth-v1) and access
//! keys, over real HTTP against a real series store. The signatures here are made by a
//! signer written in this file from Baidu's rules, not by midge's own code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::Write as _;
use std::net::SocketAddr;

use common::*;
use hmac::{Hmac, Mac};
use midge_http::AccessKey;
use serde_json::{Value, json};
use sha2::Sha256;

const AK: &str = "test-ak";
const SK: &str = "test-secret-0123456789";

fn with_key(c: &mut midge_http::HttpConfig) {
    c.access_keys = vec![AccessKey {
        id: AK.into(),
        secret: SK.into(),
    }];
}

// ---------------------------------------------------------------- a signer, from the docs

fn hmac_hex(key: &[u8], data: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn uri_encode(s: &str, keep_slash: bool) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// UTC `YYYY-MM-DDTHH:MM:SSZ` of `secs` since the epoch.
fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A signature request description.
struct Sig<'a> {
    ak: &'a str,
    sk: &'a str,
    timestamp: i64,
    expiration: i64,
    /// Names of the signed headers (empty: the default set).
    signed: &'a [&'a str],
}

impl Default for Sig<'_> {
    fn default() -> Self {
        Sig {
            ak: AK,
            sk: SK,
            timestamp: now_secs(),
            expiration: 1800,
            signed: &["host", "x-bce-date"],
        }
    }
}

/// The `bce-auth-v1` string for a request (`path` may hold a query; `headers` are every
/// header the request will carry).
fn sign(sig: &Sig<'_>, method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let (p, q) = path.split_once('?').unwrap_or((path, ""));
    let dec = |s: &str| percent_decode(s);
    let mut query: Vec<String> = q
        .split('&')
        .filter(|x| !x.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (dec(k), dec(v))
        })
        .filter(|(k, _)| !k.eq_ignore_ascii_case("authorization"))
        .map(|(k, v)| format!("{}={}", uri_encode(&k, false), uri_encode(&v, false)))
        .collect();
    query.sort();
    let default = ["host", "content-md5", "content-length", "content-type"];
    let names: Vec<String> = if sig.signed.is_empty() {
        default.iter().map(|s| s.to_string()).collect()
    } else {
        sig.signed.iter().map(|s| s.to_string()).collect()
    };
    let mut canon: Vec<String> = headers
        .iter()
        .filter(|(k, v)| {
            let k = k.to_ascii_lowercase();
            !v.trim().is_empty() && (k.starts_with("x-bce-") || names.contains(&k))
        })
        .map(|(k, v)| {
            format!(
                "{}:{}",
                uri_encode(&k.to_ascii_lowercase(), false),
                uri_encode(v.trim(), false)
            )
        })
        .collect();
    canon.sort();
    let canonical = format!(
        "{method}\n{}\n{}\n{}",
        uri_encode(&dec(p), true),
        query.join("&"),
        canon.join("\n")
    );
    let info = format!(
        "bce-auth-v1/{}/{}/{}",
        sig.ak,
        utc(sig.timestamp),
        sig.expiration
    );
    let key = hmac_hex(sig.sk.as_bytes(), info.as_bytes());
    let signature = hmac_hex(key.as_bytes(), canonical.as_bytes());
    format!("{info}/{}/{signature}", sig.signed.join(";"))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// A signed request (Authorization header), Host = the listener's address.
async fn signed(
    addr: SocketAddr,
    sig: &Sig<'_>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Reply {
    let host = addr.to_string();
    let date = utc(sig.timestamp);
    let body = body.map(|b| b.to_string().into_bytes());
    let len = body.as_ref().map(|b| b.len().to_string());
    let mut headers: Vec<(&str, &str)> = vec![("host", &host), ("x-bce-date", &date)];
    if let Some(len) = &len {
        headers.push(("content-type", "application/json"));
        headers.push(("content-length", len));
    }
    let auth = sign(sig, method, path, &headers);
    let mut all: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(k, _)| *k != "host")
        .copied()
        .collect();
    all.push(("authorization", &auth));
    request_host(addr, &host, method, path, &all, body).await
}

/// A request with a chosen Host header.
async fn request_host(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Reply {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(bytes::Bytes::from(body.unwrap_or_default())))
        .unwrap();
    let resp = tokio::time::timeout(T, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

// ---------------------------------------------------------------- helpers

async fn write(hub: &Hub, datapoints: Value) -> Reply {
    hub.send_json(
        "POST",
        "/v1/datapoint",
        &json!({ "datapoints": datapoints }),
    )
    .await
}

async fn query(hub: &Hub, queries: Value) -> Reply {
    hub.send_json("PUT", "/v1/datapoint?query", &json!({ "queries": queries }))
        .await
}

/// A `/v1` error answer: its status and code (and it has a request id, also in the header).
fn bce_error(r: &Reply) -> (u16, String, String) {
    let j = r.json();
    let id = j["requestId"]
        .as_str()
        .unwrap_or_else(|| panic!("no requestId: {j}"));
    assert_eq!(id.len(), 36, "{j}");
    assert_eq!(r.header("x-bce-request-id"), id, "{j}");
    (
        r.status,
        j["code"].as_str().unwrap().to_owned(),
        j["message"].as_str().unwrap().to_owned(),
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn metrics(hub: &Hub) -> Value {
    let r = hub.get("/v1/metric").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["metrics"].clone()
}

// ---------------------------------------------------------------- routes

#[tokio::test]
async fn metrics_fields_and_tags_list_what_was_written() {
    let hub = Hub::start(|_, _| {}).await;
    assert_eq!(metrics(&hub).await, json!([]));
    let r = write(
        &hub,
        json!([
            {"metric": "cpu", "tags": {"host": "a", "dc": "x"}, "timestamp": 1_700_000_000, "value": 1},
            {"metric": "cpu", "tags": {"host": "b", "dc": "x"}, "timestamp": 1_700_000_000_500i64, "value": 2.5},
            {"metric": "cpu", "field": "state", "tags": {"host": "a"}, "timestamp": 1_700_000_001, "value": "ok", "type": "String"},
            {"metric": "wind", "tags": {"site": "s1"}, "timestamp": 1_700_000_000, "fields": {"speed": 3, "direction": 270}},
            {"metric": "wind", "tags": {"site": "s2"}, "values": [[1_700_000_000, 4], [1_700_000_060, 5]], "field": "speed"},
        ]),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(!r.header("x-bce-request-id").is_empty());
    assert_eq!(metrics(&hub).await, json!(["cpu", "wind"]));
    let f = hub.get("/v1/metric/cpu/field").await;
    assert_eq!(f.status, 200, "{}", f.text());
    assert_eq!(
        f.json(),
        json!({"fields": {"state": {"type": "String"}, "value": {"type": "Number"}}})
    );
    let t = hub.get("/v1/metric/cpu/tag").await;
    assert_eq!(t.json(), json!({"tags": {"dc": ["x"], "host": ["a", "b"]}}));
    let w = hub.get("/v1/metric/wind/field?database=anything").await;
    assert_eq!(
        w.json(),
        json!({"fields": {"direction": {"type": "Number"}, "speed": {"type": "Number"}}}),
        "the database parameter is accepted and ignored"
    );
}

#[tokio::test]
async fn unknown_metric_and_route_are_404_resource_not_found() {
    let hub = Hub::start(|_, _| {}).await;
    for path in [
        "/v1/metric/nope/field",
        "/v1/metric/nope/tag",
        "/v1/nothing",
    ] {
        let r = hub.get(path).await;
        let (status, code, _) = bce_error(&r);
        assert_eq!((status, code.as_str()), (404, "ResourceNotFound"), "{path}");
    }
    let r = request(hub.addr, "DELETE", "/v1/metric", &[], None).await;
    let (status, code, _) = bce_error(&r);
    assert_eq!((status, code.as_str()), (405, "MethodNotAllowed"));
    // the /api/v1 routes keep their own error shape
    let r = hub.get("/api/v1/nothing").await;
    assert_eq!(r.status, 404);
    assert!(r.error().contains("no such route"));
}

#[tokio::test]
async fn a_bad_point_is_refused_with_its_index_and_nothing_is_stored() {
    let hub = Hub::start(|_, _| {}).await;
    let r = write(
        &hub,
        json!([
            {"metric": "m", "tags": {"h": "a"}, "timestamp": 1_700_000_000, "value": 1},
            {"metric": "m", "tags": {"h": "a"}, "timestamp": 1_700_000_001, "value": 2},
            {"metric": "m", "tags": {"h": "a"}, "timestamp": 1_700_000_002, "value": 1.5, "type": "Long"},
        ]),
    )
    .await;
    let (status, code, message) = bce_error(&r);
    assert_eq!(
        (status, code.as_str()),
        (400, "InappropriateJSON"),
        "{message}"
    );
    assert!(message.contains("datapoint 2"), "{message}");
    assert!(message.contains("Long"), "{message}");
    assert_eq!(
        metrics(&hub).await,
        json!([]),
        "nothing of the batch was stored"
    );

    // a type clash the store finds (a String written into a Number field) is refused too,
    // naming the request's index, and nothing of that batch is stored
    let ok = write(
        &hub,
        json!([{"metric": "n", "timestamp": 1_700_000_000, "value": 1}]),
    )
    .await;
    assert_eq!(ok.status, 204, "{}", ok.text());
    let r = write(
        &hub,
        json!([
            {"metric": "n", "timestamp": 1_700_000_001, "value": 2},
            {"metric": "n", "values": [[1_700_000_002, 3], [1_700_000_003, "text"]]},
        ]),
    )
    .await;
    let (status, _, message) = bce_error(&r);
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("datapoint 1"), "{message}");
    let q = query(&hub, json!([{"metric": "n", "filters": {"start": 0}}])).await;
    assert_eq!(q.status, 200, "{}", q.text());
    assert_eq!(
        q.json()["results"][0]["groups"][0]["values"],
        json!([[1_700_000_000_000i64, 1]]),
        "only the first batch's point"
    );
}

#[tokio::test]
async fn bad_json_times_and_aggregators_are_400_with_the_bce_error_body() {
    let hub = Hub::start(|_, _| {}).await;
    let raw = |body: &'static str, path: &'static str, method: &'static str| {
        let addr = hub.addr;
        async move {
            request(
                addr,
                method,
                path,
                &[("content-type", "application/json")],
                Some(body.as_bytes().to_vec()),
            )
            .await
        }
    };
    let r = raw("{\"datapoints\": [", "/v1/datapoint", "POST").await;
    assert_eq!(
        (bce_error(&r).0, bce_error(&r).1.as_str()),
        (400, "MalformedJSON")
    );
    let r = raw("{\"queries\": 5}", "/v1/datapoint?query", "PUT").await;
    assert_eq!(bce_error(&r).1, "MalformedJSON");
    let r = raw("{}", "/v1/datapoint", "PUT").await;
    assert_eq!(
        (bce_error(&r).0, bce_error(&r).1.as_str()),
        (400, "InvalidHTTPRequest"),
        "PUT without ?query or ?export"
    );
    let r = request(hub.addr, "POST", "/v1/datapoint", &[], Some(b"{}".to_vec())).await;
    assert_eq!(
        bce_error(&r).0,
        415,
        "a body needs Content-Type: application/json"
    );
    for (q, needle) in [
        (
            json!({"metric": "m", "filters": {"start": "yesterday"}}),
            "filters.start",
        ),
        (
            json!({"metric": "m", "filters": {"start": "1 fortnight ago"}}),
            "bad time",
        ),
        (
            json!({"metric": "m", "filters": {"start": 0, "end": "soon"}}),
            "filters.end",
        ),
        (
            json!({"metric": "m", "filters": {"start": 0}, "aggregators": [{"name": "Median"}]}),
            "unknown aggregator",
        ),
        (
            json!({"metric": "m", "filters": {"start": 0}, "aggregators": [{"name": "Avg", "sampling": "ten minutes"}]}),
            "sampling",
        ),
        (
            json!({"metric": "m", "filters": {"start": 0, "value": "~ 3"}}),
            "value filter",
        ),
        (
            json!({"metric": "m", "filters": {"start": 0}, "groupBy": [{"name": "Time"}]}),
            "groupBy",
        ),
    ] {
        let r = query(&hub, json!([q])).await;
        let (status, code, message) = bce_error(&r);
        assert_eq!(
            (status, code.as_str()),
            (400, "InappropriateJSON"),
            "{message}"
        );
        assert!(message.contains(needle), "{needle}: {message}");
    }
}

#[tokio::test]
async fn oversized_bodies_and_gzip_bombs_are_refused_with_413() {
    let hub = Hub::start(|_, _| {}).await;
    // a gzipped write is inflated
    let body = json!({"datapoints": [{"metric": "g", "timestamp": 1_700_000_000, "value": 7}]});
    let r = request(
        hub.addr,
        "POST",
        "/v1/datapoint",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        Some(gzip(body.to_string().as_bytes())),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(metrics(&hub).await, json!(["g"]));
    // 64 MiB of spaces inflate past the 16 MiB limit: refused, never held whole
    let mut bomb = b"{\"datapoints\":[".to_vec();
    bomb.extend(std::iter::repeat_n(b' ', 64 * 1024 * 1024));
    let compressed = gzip(&bomb);
    assert!(compressed.len() < 1024 * 1024, "{}", compressed.len());
    let r = request(
        hub.addr,
        "POST",
        "/v1/datapoint",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        Some(compressed),
    )
    .await;
    assert_eq!(bce_error(&r).0, 413, "{}", r.text());
    // a query body above 1 MiB
    let big = format!(
        "{{\"queries\":[],\"x\":\"{}\"}}",
        "a".repeat(1024 * 1024 + 10)
    );
    let r = request(
        hub.addr,
        "PUT",
        "/v1/datapoint?query",
        &[("content-type", "application/json")],
        Some(big.into_bytes()),
    )
    .await;
    assert_eq!(bce_error(&r).0, 413, "{}", r.text());
    // not gzip at all
    let r = request(
        hub.addr,
        "POST",
        "/v1/datapoint",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        Some(b"not gzip".to_vec()),
    )
    .await;
    assert_eq!(bce_error(&r).0, 400);
}

#[tokio::test]
async fn queries_filter_group_aggregate_and_take_relative_times() {
    let hub = Hub::start(|_, _| {}).await;
    let now = now_secs() * 1000;
    // an hour ago, on a 10-minute boundary (sampling windows start on the query's start
    // and on the epoch's multiples alike)
    let base = (now - 3_600_000) / 600_000 * 600_000;
    let mut pts = Vec::new();
    for i in 0..60i64 {
        for (host, add) in [("a", 0), ("b", 100)] {
            pts.push(json!({"metric": "t", "tags": {"host": host}, "timestamp": base + i * 60_000, "value": i + add}));
        }
    }
    let r = write(&hub, Value::Array(pts)).await;
    assert_eq!(r.status, 204, "{}", r.text());

    // raw values of one series, relative start, tag filter, tags appended to each row
    let r = query(
        &hub,
        json!([{"metric": "t", "tags": ["host"],
                "filters": {"start": "2 hours ago", "end": "now", "tags": {"host": ["a"]}, "value": ">= 58"}}]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let res = &r.json()["results"][0];
    assert_eq!(res["metric"], "t");
    assert_eq!(res["field"], "value");
    assert_eq!(res["tags"], json!(["host"]), "the keys ending each row");
    assert_eq!(res["truncated"], false);
    assert_eq!(res["groups"][0]["groupInfos"], json!([]));
    assert_eq!(
        res["groups"][0]["values"],
        json!([[base + 58 * 60_000, 58, "a"], [base + 59 * 60_000, 59, "a"]])
    );

    // grouped by host, averaged over the whole range
    let r = query(
        &hub,
        json!([{"metric": "t", "filters": {"start": base, "end": base + 59 * 60_000},
                "groupBy": [{"name": "Tag", "tags": ["host"]}],
                "aggregators": [{"name": "Avg"}]}]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let groups = r.json()["results"][0]["groups"].clone();
    assert_eq!(groups.as_array().unwrap().len(), 2, "{groups}");
    assert_eq!(
        groups[0]["groupInfos"],
        json!([{"name": "Tag", "tags": {"host": "a"}}])
    );
    assert_eq!(groups[0]["values"][0][1].as_f64().unwrap(), 29.5);
    assert_eq!(groups[1]["values"][0][1].as_f64().unwrap(), 129.5);

    // sampled sums: 10-minute windows of series a
    let r = query(
        &hub,
        json!([{"metric": "t", "filters": {"start": base, "end": base + 59 * 60_000, "tags": {"host": ["a"]}},
                "aggregators": [{"name": "Sum", "sampling": "10 minutes"}]}]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let values = r.json()["results"][0]["groups"][0]["values"].clone();
    assert_eq!(values.as_array().unwrap().len(), 6, "{values}");
    assert_eq!(values[0][0].as_i64().unwrap(), base);
    assert_eq!(values[0][1].as_f64().unwrap(), 45.0, "0+1+...+9");

    // several queries answer in order; the GET form (pre-signed URLs) answers the same
    let two = json!([
        {"metric": "t", "filters": {"start": base, "tags": {"host": ["b"]}}, "limit": 1},
        {"metric": "t", "filters": {"start": base, "tags": {"host": ["a"]}}, "limit": 1, "order": "Desc"},
    ]);
    let put = query(&hub, two.clone()).await;
    assert_eq!(put.status, 200, "{}", put.text());
    let results = put.json()["results"].clone();
    assert_eq!(results[0]["groups"][0]["values"], json!([[base, 100]]));
    assert_eq!(
        results[1]["groups"][0]["values"],
        json!([[base + 59 * 60_000, 59]])
    );
    let q: String =
        form_urlencoded::byte_serialize(json!({"queries": two}).to_string().as_bytes()).collect();
    let get = hub
        .get(&format!(
            "/v1/datapoint?query={q}&disablePresampling=false&database=x"
        ))
        .await;
    assert_eq!(get.status, 200, "{}", get.text());
    assert_eq!(get.json()["results"], results);
}

#[tokio::test]
async fn paging_with_markers_returns_every_row_exactly_once() {
    let hub = Hub::start(|_, _| {}).await;
    let values: Vec<Value> = (0..250i64)
        .map(|i| json!([1_700_000_000_000i64 + i, i]))
        .collect();
    let r = write(
        &hub,
        json!([
            {"metric": "p", "tags": {"s": "1"}, "values": values},
            {"metric": "p", "tags": {"s": "2"}, "values": values},
        ]),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let mut marker: Option<String> = None;
    let mut seen = std::collections::BTreeSet::new();
    let mut pages = 0;
    loop {
        let mut q = json!({"metric": "p", "tags": ["s"], "filters": {"start": 0}, "limit": 64});
        if let Some(m) = &marker {
            q["marker"] = json!(m);
        }
        let r = query(&hub, json!([q])).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let res = r.json()["results"][0].clone();
        pages += 1;
        let mut rows = 0;
        for g in res["groups"].as_array().unwrap() {
            for row in g["values"].as_array().unwrap() {
                rows += 1;
                let key = (
                    row[0].as_i64().unwrap(),
                    row[2].as_str().unwrap().to_owned(),
                );
                assert!(seen.insert(key.clone()), "row {key:?} twice");
            }
        }
        assert!(rows <= 64, "{rows} rows in a page of 64");
        if res["truncated"] == true {
            marker = Some(res["nextMarker"].as_str().expect("nextMarker").to_owned());
        } else {
            assert!(res.get("nextMarker").is_none() || res["nextMarker"].is_null());
            break;
        }
        assert!(pages < 100, "paging does not end");
    }
    assert_eq!(seen.len(), 500, "every row once");
    assert!(pages >= 8, "{pages} pages");
}

#[tokio::test]
async fn export_streams_every_point_and_the_export_writes_back() {
    let hub = Hub::start(|_, _| {}).await;
    let n = 20_000i64;
    let values: Vec<Value> = (0..n / 2)
        .map(|i| json!([1_700_000_000_000i64 + i, i]))
        .collect();
    let r = write(
        &hub,
        json!([
            {"metric": "e", "tags": {"s": "1"}, "values": values},
            {"metric": "e", "tags": {"s": "2"}, "field": "f", "values": values},
            {"metric": "other", "timestamp": 1_700_000_000, "value": "x"},
        ]),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = hub
        .send_json(
            "PUT",
            "/v1/datapoint?export",
            &json!({"metrics": ["e"], "filters": {"start": 0}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-length").is_empty(),
        "streamed, not sized up front"
    );
    let body = r.json();
    let points = body["datapoints"].as_array().unwrap();
    assert_eq!(points.len() as i64, n);
    assert_eq!(
        points[0],
        json!({"metric": "e", "field": "value", "tags": {"s": "1"}, "timestamp": 1_700_000_000_000i64, "value": 0, "type": "Long"})
    );
    // everything, all time
    let all = hub
        .send_json("PUT", "/v1/datapoint?export", &json!({}))
        .await;
    assert_eq!(
        all.json()["datapoints"].as_array().unwrap().len() as i64,
        n + 1
    );

    // written back into another midge, the export gives the same points
    let other = Hub::start(|_, _| {}).await;
    let r = other.send_json("POST", "/v1/datapoint", &body).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let again = other
        .send_json("PUT", "/v1/datapoint?export", &json!({"metrics": ["e"]}))
        .await;
    assert_eq!(again.json(), body);
}

// ---------------------------------------------------------------- signatures

#[tokio::test]
async fn signed_requests_in_header_and_query_form_are_accepted() {
    let hub = Hub::start(|c, _| with_key(c)).await;
    let sig = Sig::default();
    let w = signed(
        hub.addr,
        &sig,
        "POST",
        "/v1/datapoint?database=db1",
        Some(&json!({"datapoints": [{"metric": "s", "timestamp": 1_700_000_000, "value": 1}]})),
    )
    .await;
    assert_eq!(w.status, 204, "{}", w.text());
    let r = signed(hub.addr, &sig, "GET", "/v1/metric", None).await;
    assert_eq!((r.status, r.json()), (200, json!({"metrics": ["s"]})));

    // the default signed headers (host, content-type, content-length, content-md5)
    let sig_default = Sig {
        signed: &[],
        ..Sig::default()
    };
    let body = json!({"queries": [{"metric": "s", "filters": {"start": 0}}]}).to_string();
    let host = hub.addr.to_string();
    let len = body.len().to_string();
    let headers = [
        ("host", host.as_str()),
        ("content-type", "application/json"),
        ("content-length", len.as_str()),
    ];
    let auth = sign(&sig_default, "PUT", "/v1/datapoint?query", &headers);
    let r = request_host(
        hub.addr,
        &host,
        "PUT",
        "/v1/datapoint?query",
        &[
            ("content-type", "application/json"),
            ("content-length", &len),
            ("authorization", &auth),
        ],
        Some(body.into_bytes()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // pre-signed: the signature as the authorization query parameter
    let q: String = form_urlencoded::byte_serialize(
        json!({"queries": [{"metric": "s", "filters": {"start": 0}}]})
            .to_string()
            .as_bytes(),
    )
    .collect();
    let path = format!("/v1/datapoint?query={q}&disablePresampling=False");
    let only_host = Sig {
        signed: &["host"],
        ..Sig::default()
    };
    let auth = sign(&only_host, "GET", &path, &[("host", &host)]);
    let a: String = form_urlencoded::byte_serialize(auth.as_bytes()).collect();
    let r = request_host(
        hub.addr,
        &host,
        "GET",
        &format!("{path}&authorization={a}"),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["results"][0]["groups"][0]["values"],
        json!([[1_700_000_000_000i64, 1]])
    );
}

#[tokio::test]
async fn bad_signatures_are_refused_403_access_denied_even_where_anonymous_is_allowed() {
    let hub = Hub::start(|c, _| with_key(c)).await;
    assert!(hub.config.allow_anonymous);
    let host = hub.addr.to_string();
    let denied = |r: &Reply, what: &str| {
        let (status, code, message) = bce_error(r);
        assert_eq!(
            (status, code.as_str()),
            (403, "AccessDenied"),
            "{what}: {message}"
        );
        message
    };
    let wrong_secret = Sig {
        sk: "not-the-secret-at-all",
        ..Sig::default()
    };
    denied(
        &signed(hub.addr, &wrong_secret, "GET", "/v1/metric", None).await,
        "wrong",
    );
    let unknown = Sig {
        ak: "nobody",
        ..Sig::default()
    };
    let m = denied(
        &signed(hub.addr, &unknown, "GET", "/v1/metric", None).await,
        "unknown",
    );
    assert!(m.contains("unknown access key"), "{m}");
    let expired = Sig {
        timestamp: now_secs() - 3600,
        expiration: 1800,
        ..Sig::default()
    };
    let m = denied(
        &signed(hub.addr, &expired, "GET", "/v1/metric", None).await,
        "expired",
    );
    assert!(m.contains("expired"), "{m}");
    let future = Sig {
        timestamp: now_secs() + 3600,
        ..Sig::default()
    };
    let m = denied(
        &signed(hub.addr, &future, "GET", "/v1/metric", None).await,
        "future",
    );
    assert!(m.contains("ahead"), "{m}");

    // signed for one path, sent to another
    let sig = Sig::default();
    let date = utc(sig.timestamp);
    let auth = sign(
        &sig,
        "GET",
        "/v1/metric",
        &[("host", &host), ("x-bce-date", &date)],
    );
    let r = request_host(
        hub.addr,
        &host,
        "GET",
        "/v1/metric/x/tag",
        &[("x-bce-date", &date), ("authorization", &auth)],
        None,
    )
    .await;
    denied(&r, "other path");
    // a signed header missing from the request
    let r = request_host(
        hub.addr,
        &host,
        "GET",
        "/v1/metric",
        &[("authorization", &auth)],
        None,
    )
    .await;
    let m = denied(&r, "missing header");
    assert!(m.contains("x-bce-date"), "{m}");
    // an x-bce- header added after signing is signed all the same
    let r = request_host(
        hub.addr,
        &host,
        "GET",
        "/v1/metric",
        &[
            ("x-bce-date", &date),
            ("x-bce-extra", "1"),
            ("authorization", &auth),
        ],
        None,
    )
    .await;
    denied(&r, "unsigned x-bce header");
    // malformed
    for bad in [
        "bce-auth-v1/x",
        "bce-auth-v1/ak/2017-11-29 22:45:54/1800//abc",
    ] {
        let r = request_host(
            hub.addr,
            &host,
            "GET",
            "/v1/metric",
            &[("authorization", bad)],
            None,
        )
        .await;
        denied(&r, bad);
    }
    // the API's own routes judge a signature the same way
    let r = signed(hub.addr, &wrong_secret, "GET", "/api/v1/stats", None).await;
    denied(&r, "api route");
    // while the right signature passes
    let r = signed(hub.addr, &Sig::default(), "GET", "/api/v1/stats", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn a_signed_request_passes_the_host_check_of_an_anonymous_listener() {
    let hub = Hub::start(|c, _| with_key(c)).await;
    let name = "tsdb.example.com";
    // anonymous, under a name: refused (DNS rebinding defence)
    let r = request_host(hub.addr, name, "GET", "/v1/metric", &[], None).await;
    assert_eq!(r.status, 421);
    // signed for that Host: served
    let sig = Sig::default();
    let date = utc(sig.timestamp);
    let auth = sign(
        &sig,
        "GET",
        "/v1/metric",
        &[("host", name), ("x-bce-date", &date)],
    );
    let r = request_host(
        hub.addr,
        name,
        "GET",
        "/v1/metric",
        &[("x-bce-date", &date), ("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // a wrong signature under that name is still refused (403, not served)
    let bad = auth.replace(&auth[auth.len() - 4..], "0000");
    let r = request_host(
        hub.addr,
        name,
        "GET",
        "/v1/metric",
        &[("x-bce-date", &date), ("authorization", &bad)],
        None,
    )
    .await;
    assert_eq!(r.status, 403);
}

fn password_file(dir: &std::path::Path) -> std::path::PathBuf {
    let hash =
        midge_auth::PasswordHash::create(b"s3cret", midge_auth::HashAlgorithm::Sha512Pbkdf2, 1_000)
            .unwrap();
    let path = dir.join("passwd");
    std::fs::write(
        &path,
        format!("alice:{}\nbob:{}\n", hash.encode(), hash.encode()),
    )
    .unwrap();
    path
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn a_signed_request_needs_no_password_on_a_protected_api_and_passes_users() {
    let hub = Hub::start(|c, dir| {
        with_key(c);
        c.allow_anonymous = false;
        c.password_file = Some(password_file(dir));
        c.users = Some(vec!["alice".into()]);
    })
    .await;
    let r = hub.get("/v1/metric").await;
    let (status, code, _) = bce_error(&r);
    assert_eq!((status, code.as_str()), (401, "AccessDenied"));
    let r = request(
        hub.addr,
        "GET",
        "/v1/metric",
        &[("authorization", &basic("bob", "s3cret"))],
        None,
    )
    .await;
    assert_eq!(r.status, 403, "bob is not one of [http] users");
    let r = signed(hub.addr, &Sig::default(), "GET", "/v1/metric", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = signed(hub.addr, &Sig::default(), "GET", "/api/v1/rules", None).await;
    assert_eq!(r.status, 200, "a key is an operator: {}", r.text());
    let r = request(
        hub.addr,
        "GET",
        "/v1/metric",
        &[("authorization", &basic("alice", "s3cret"))],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

// ---------------------------------------------------------------- access keys

#[tokio::test]
async fn access_keys_are_made_listed_used_and_revoked_and_kept_in_a_0600_file() {
    let mut hub = Hub::start(|c, dir| {
        with_key(c);
        c.allow_anonymous = true;
        c.password_file = Some(password_file(dir));
        c.dashboard_file = Some(dir.join("data").join("dashboard.json"));
    })
    .await;
    // anonymous callers are not operators once a password file is set
    let r = hub
        .send_json("POST", "/api/v1/access-keys", &json!({}))
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let alice = basic("alice", "s3cret");
    let r = request(
        hub.addr,
        "POST",
        "/api/v1/access-keys",
        &[
            ("authorization", &alice),
            ("content-type", "application/json"),
        ],
        Some(br#"{"description": "the ingest job"}"#.to_vec()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let made = r.json();
    let id = made["id"].as_str().unwrap().to_owned();
    let secret = made["secret"].as_str().unwrap().to_owned();
    assert_eq!(made["description"], "the ingest job");
    assert!(secret.len() >= 32);

    let file = hub.dir.path().join("data").join("access_keys.json");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // the new key signs requests, and manages keys itself (no body needed)
    let sig = Sig {
        ak: &id,
        sk: &secret,
        ..Sig::default()
    };
    let r = signed(hub.addr, &sig, "GET", "/v1/metric", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = signed(hub.addr, &sig, "GET", "/api/v1/access-keys", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json();
    assert!(
        !list.to_string().contains(&secret),
        "never a secret: {list}"
    );
    assert!(!list.to_string().contains(SK), "never a secret: {list}");
    let sources: Vec<(String, String)> = list["access_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["id"].as_str().unwrap().into(),
                k["source"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        vec![(AK.into(), "config".into()), (id.clone(), "api".into())]
    );

    // kept across a restart
    hub.restart_http().await;
    let r = signed(hub.addr, &sig, "GET", "/v1/metric", None).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // a configuration key cannot be revoked here; an unknown one is 404
    let config_key = Sig::default();
    let r = signed(
        hub.addr,
        &config_key,
        "DELETE",
        &format!("/api/v1/access-keys/{AK}"),
        None,
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text());
    let r = signed(
        hub.addr,
        &config_key,
        "DELETE",
        "/api/v1/access-keys/nope",
        None,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = signed(
        hub.addr,
        &config_key,
        "DELETE",
        &format!("/api/v1/access-keys/{id}"),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = signed(hub.addr, &sig, "GET", "/v1/metric", None).await;
    assert_eq!(r.status, 403, "revoked: {}", r.text());
    hub.restart_http().await;
    let r = signed(hub.addr, &sig, "GET", "/v1/metric", None).await;
    assert_eq!(r.status, 403, "still revoked after a restart");
}

#[tokio::test]
async fn an_anonymous_listener_without_passwords_lets_anonymous_manage_keys() {
    let hub = Hub::start(|_, _| {}).await;
    let r = request(hub.addr, "POST", "/api/v1/access-keys", &[], None).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let r = hub.get("/api/v1/access-keys").await;
    assert_eq!(r.json()["access_keys"][0]["id"], id.as_str());
    let r = request(
        hub.addr,
        "DELETE",
        &format!("/api/v1/access-keys/{id}"),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 204);
}
