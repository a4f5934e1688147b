//! `midge serve` with `[[http.access_key]]`, driven by real clients of the Baidu TSDB API:
//! Python signing requests by the bce-auth-v1 rules written out in the script
//! (`py/tsdb_signed.py`), Baidu's own Python SDK (`py/tsdb_sdk.py`, bce-python-sdk's
//! `TsdbClient`), and curl. The scripts print what they observed; the assertions are here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{Midge, py_dir, run};
use serde_json::{Value, json};

const AK: &str = "py-ak";
const SK: &str = "py-secret-0123456789";

/// midge with its HTTP listener on a free port and one access key; the port.
fn start() -> (Midge, u16) {
    let b = Midge::with_config(&format!(
        r#"
[http]

[[http.access_key]]
id = "{AK}"
secret = "{SK}"
"#
    ));
    let web = b.http_port();
    (b, web)
}

fn script(name: &str, web: u16) -> Value {
    script_as(name, web, AK, SK)
}

fn script_as(name: &str, web: u16, ak: &str, sk: &str) -> Value {
    let path = py_dir().join(name);
    let port = web.to_string();
    let d = run(
        "python3",
        &[path.to_str().unwrap(), &port, ak, sk],
        Duration::from_secs(60),
    );
    assert_eq!(d.code, Some(0), "{name} failed: {d:#?}");
    let last = d.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{name}: {e}: {d:#?}"))
}

#[test]
fn requests_signed_by_the_documented_rules_are_served_and_bad_ones_refused() {
    let (_b, web) = start();
    let r = script("tsdb_signed.py", web);
    assert_eq!(r["write"][0], 204, "gzipped signed write: {r}");
    assert_eq!(r["metrics"], json!([200, {"metrics": ["py_temp"]}]));
    let q = &r["query"];
    assert_eq!(q[0], 200, "{q}");
    let res = &q[1]["results"][0];
    assert_eq!(res["metric"], "py_temp");
    assert_eq!(res["groups"][0]["values"][0][1], 20.5, "Max of room b: {q}");
    assert_eq!(
        r["presigned"], r["query"],
        "pre-signed GET answers as the PUT"
    );
    for case in ["wrong_secret", "expired", "unknown_key"] {
        assert_eq!(r[case][0], 403, "{case}: {r}");
        assert_eq!(r[case][1]["code"], "AccessDenied", "{case}: {r}");
        assert_eq!(r[case][1]["requestId"].as_str().unwrap().len(), 36);
    }
    assert_eq!(r["named_host_signed"][0], 200, "{r}");
    assert_eq!(r["named_host_unsigned"][0], 421, "{r}");
}

#[test]
fn baidus_python_sdk_writes_lists_queries_and_presigns_against_midge() {
    let (_b, web) = start();
    let r = script("tsdb_sdk.py", web);
    assert_eq!(r["write_status"], true);
    assert_eq!(r["metrics"], json!(["sdk_cpu", "sdk_mem"]));
    assert_eq!(
        r["fields"],
        json!({"idle": {"type": "Number"}, "state": {"type": "String"}})
    );
    assert_eq!(r["tags"], json!({"host": ["h1", "h2"]}));
    let grouped = &r["query"][0];
    assert_eq!(grouped["field"], "idle");
    let groups = grouped["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{grouped}");
    assert_eq!(
        groups[0]["groupInfos"],
        json!([{"name": "Tag", "tags": {"host": "h1"}}])
    );
    assert_eq!(groups[0]["values"][0][1].as_f64().unwrap(), 85.0);
    assert_eq!(groups[1]["values"][0][1].as_f64().unwrap(), 70.5);
    let limited = &r["query"][1];
    assert_eq!(limited["truncated"], true, "{limited}");
    assert!(limited["nextMarker"].is_string(), "{limited}");
    assert_eq!(r["presigned_url_has_authorization"], true);
    assert_eq!(r["presigned"]["status"], 200);
    assert_eq!(r["presigned"]["body"]["results"][0], r["query"][0]);
    assert_eq!(
        r["wrong_secret"],
        json!({"status": 403, "code": "AccessDenied", "request_id": true})
    );
    assert_eq!(
        r["unknown_metric"],
        json!({"status": 404, "code": "ResourceNotFound"})
    );
    assert_eq!(r["bad_point"]["status"], 400);
    assert_eq!(r["bad_point"]["code"], "InappropriateJSON");
    assert!(
        r["bad_point"]["message"]
            .as_str()
            .unwrap()
            .contains("datapoint 0"),
        "{r}"
    );
}

/// curl with `args`; (status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse::<u16>().unwrap(), body.to_owned())
}

#[test]
fn a_key_made_through_the_api_signs_until_it_is_revoked() {
    let (b, web) = start();
    let base = format!("http://127.0.0.1:{web}");
    let (code, body) = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"description":"python"}"#,
        &format!("{base}/api/v1/access-keys"),
    ]);
    assert_eq!(code, 201, "{body}");
    let key: Value = serde_json::from_str(&body).unwrap();
    let (id, secret) = (key["id"].as_str().unwrap(), key["secret"].as_str().unwrap());
    let saved = b.path("data/access_keys.json");
    assert!(saved.exists(), "kept in the data folder");
    let r = script_as("tsdb_signed.py", web, id, secret);
    assert_eq!(r["write"][0], 204, "{r}");
    assert_eq!(r["metrics"][0], 200, "{r}");
    let (code, body) = curl(&["-X", "DELETE", &format!("{base}/api/v1/access-keys/{id}")]);
    assert_eq!(code, 204, "{body}");
    let r = script_as("tsdb_signed.py", web, id, secret);
    assert_eq!(r["write"][0], 403, "revoked: {r}");
    assert_eq!(r["write"][1]["code"], "AccessDenied", "{r}");
}

#[test]
fn curl_writes_and_queries_anonymously_on_loopback() {
    let (_b, web) = start();
    let base = format!("http://127.0.0.1:{web}");
    let (code, body) = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"datapoints":[{"metric":"curl_m","tags":{"k":"v"},"timestamp":1700000000,"value":42}]}"#,
        &format!("{base}/v1/datapoint"),
    ]);
    assert_eq!(code, 204, "{body}");
    let (code, body) = curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"queries":[{"metric":"curl_m","filters":{"start":1700000000}}]}"#,
        &format!("{base}/v1/datapoint?query"),
    ]);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["results"][0]["groups"][0]["values"],
        json!([[1_700_000_000_000i64, 42]])
    );
}
