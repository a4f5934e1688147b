//! The rule language end to end: parse a rule, apply it to messages.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use midge_codec::TopicError;
use midge_rules::{Input, MAX_RULE_LEN, Rule, RuleError};
use proptest::prelude::*;
use serde_json::{Value, json};

const DEVICE: &str = r#"{
    "t": 31.5, "n": 10, "neg": -3, "s": "31.5", "w": "abc", "b": true, "f": false,
    "z": null, "arr": [1, 2, 3], "o": {"a": {"b": 7}, "k-1": "dash"}, "big": 9223372036854775807
}"#;

fn msg<'a>(topic: &'a str, payload: &'a [u8]) -> Input<'a> {
    Input {
        topic,
        payload,
        client_id: "dev-7",
        username: Some("alice"),
        qos: 1,
        retain: true,
        timestamp_ms: 1_700_000_000_123,
    }
}

fn rule(sql: &str) -> Rule {
    Rule::parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The output of `sql` applied to `payload` on topic `sensors/kitchen/temp`.
fn run(sql: &str, payload: &str) -> Option<Value> {
    rule(sql)
        .apply(&msg("sensors/kitchen/temp", payload.as_bytes()))
        .map(Value::Object)
}

/// The value of one expression over `payload` (`None` when it is undefined and so left out).
fn eval_on(expr: &str, payload: &str) -> Option<Value> {
    let out = run(&format!("SELECT {expr} AS v FROM '#'"), payload).expect("no WHERE");
    assert!(out.as_object().unwrap().len() <= 1, "{out}");
    out.get("v").cloned()
}

fn eval(expr: &str) -> Option<Value> {
    eval_on(expr, DEVICE)
}

fn check(cases: &[(&str, Value)]) {
    for (expr, want) in cases {
        assert_eq!(eval(expr), Some(want.clone()), "{expr}");
    }
}

// --- the mission's example ---------------------------------------------------------------

#[test]
fn hot_sensor_reading_passes_whole() {
    let r = rule("SELECT * FROM 'sensors/#' WHERE temp > 30");
    let out = r.apply(&msg("sensors/kitchen", br#"{"temp": 31.5, "hum": 40}"#));
    assert_eq!(
        out.map(Value::Object),
        Some(json!({"temp": 31.5, "hum": 40}))
    );
}

#[test]
fn cold_sensor_reading_is_filtered() {
    let r = rule("SELECT * FROM 'sensors/#' WHERE temp > 30");
    assert_eq!(r.apply(&msg("sensors/kitchen", br#"{"temp": 20}"#)), None);
}

#[test]
fn other_topics_are_not_matched() {
    let r = rule("SELECT * FROM 'sensors/#' WHERE temp > 30");
    assert!(!r.matches("other/x"));
    assert_eq!(r.apply(&msg("other/x", br#"{"temp": 31.5}"#)), None);
}

#[test]
fn column_order_is_kept() {
    let out = run("SELECT * FROM '#'", r#"{"z": 1, "a": 2, "m": 3}"#).unwrap();
    let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["z", "a", "m"]);
}

/// The hosted rule engines' TSDB example: columns named `_value`/`_timestamp`, a column
/// named after a keyword (`type`), and `timestamp`/`value` as output aliases.
#[test]
fn tsdb_style_rule_with_underscore_and_keyword_columns() {
    let r = rule(
        "SELECT metric, _value AS value, _timestamp AS timestamp, id, machine, os, categories, \
         type FROM 'test-iot-service'",
    );
    let payload = br#"{"metric":"report","_timestamp":1511995554,"_value":32,"id":"70:00:83:24:38:85","machine":"arm","os":"linux","categories":"data","type":"temperature"}"#;
    let out = r
        .apply(&msg("test-iot-service", payload))
        .map(Value::Object);
    assert_eq!(
        out,
        Some(json!({
            "metric": "report", "value": 32, "timestamp": 1511995554,
            "id": "70:00:83:24:38:85", "machine": "arm", "os": "linux",
            "categories": "data", "type": "temperature"
        }))
    );
    let keys: Vec<String> = r
        .apply(&msg("test-iot-service", payload))
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        keys,
        [
            "metric",
            "value",
            "timestamp",
            "id",
            "machine",
            "os",
            "categories",
            "type"
        ]
    );
}

// --- FROM ----------------------------------------------------------------------------

#[test]
fn emqx_style_double_quoted_filters() {
    let r = rule(r#"SELECT * FROM "sensors/+/temp" WHERE value > 1"#);
    assert_eq!(r.filters()[0].as_str(), "sensors/+/temp");
    assert!(r.apply(&msg("sensors/a/temp", b"2")).is_some());
    assert!(r.apply(&msg("sensors/a/hum", b"2")).is_none());
}

/// Issue 13: `WHERE type = "door"` was accepted, read `"door"` as a payload field and never
/// matched. A double-quoted name where a value goes is text, as EMQX's docs write it.
#[test]
fn emqx_style_double_quoted_strings_in_where() {
    let door = br#"{"type": "door", "value": 1}"#;
    let temp = br#"{"type": "temp", "value": 21}"#;
    for sql in [
        r#"SELECT * FROM 'd/#' WHERE type = "door""#,
        r#"SELECT * FROM "d/#" WHERE payload.type = "door" AND value > 0"#,
        r#"SELECT * FROM 'd/#' WHERE type IN ("door", "window")"#,
        r#"SELECT * FROM 'd/#' WHERE type LIKE "do%""#,
        r#"SELECT * FROM 'd/#' WHERE type <> "temp""#,
    ] {
        let r = rule(sql);
        assert!(r.apply(&msg("d/1", door)).is_some(), "{sql}");
        assert!(r.apply(&msg("d/1", temp)).is_none(), "{sql}");
    }
    // a double-quoted name elsewhere is still a field (a key that needs quoting)
    let out = run(
        r#"SELECT "k-1" AS v FROM '#' WHERE "k-1" = 'x'"#,
        r#"{"k-1": "x"}"#,
    );
    assert_eq!(out, Some(json!({"v": "x"})));
}

#[test]
fn a_dry_run_says_why_there_is_no_row() {
    use midge_rules::NoMatch;
    let r = rule("SELECT temp FROM 'sensors/#' WHERE temp > 30");
    assert_eq!(
        r.test(&msg("sensors/a", br#"{"temp": 31}"#)),
        Ok(json!({"temp": 31}).as_object().unwrap().clone())
    );
    assert_eq!(
        r.test(&msg("other/a", br#"{"temp": 31}"#)),
        Err(NoMatch::Topic)
    );
    assert_eq!(
        r.test(&msg("sensors/a", br#"{"temp": 3}"#)),
        Err(NoMatch::ConditionFalse)
    );
    assert_eq!(
        r.test(&msg("sensors/a", br#"{"hum": 3}"#)),
        Err(NoMatch::ConditionUnknown)
    );
}

#[test]
fn several_filters_match_any() {
    let r = rule("SELECT * FROM 'a/+', 'b/#'");
    assert_eq!(r.filters().len(), 2);
    assert!(r.matches("a/x") && r.matches("b") && r.matches("b/c/d"));
    assert!(!r.matches("a/x/y") && !r.matches("c"));
}

#[test]
fn shared_subscription_filters_match_their_inner_filter() {
    let r = rule("SELECT * FROM '$share/workers/sensors/#'");
    assert_eq!(r.filters()[0].share_group(), Some("workers"));
    assert!(r.matches("sensors/a"));
    assert!(!r.matches("workers/sensors/a"));
}

#[test]
fn dollar_topics_need_an_explicit_filter() {
    assert!(!rule("SELECT * FROM '#'").matches("$SYS/broker/uptime"));
    assert!(!rule("SELECT * FROM '+/broker/#'").matches("$SYS/broker/uptime"));
    assert!(rule("SELECT * FROM '$SYS/#'").matches("$SYS/broker/uptime"));
}

#[test]
fn keywords_are_case_insensitive_and_a_trailing_semicolon_is_fine() {
    let out = run("select * from 'sensors/#' where t > 30;", DEVICE);
    assert!(out.is_some());
}

#[test]
fn rule_keeps_its_text() {
    let sql = "SELECT * FROM 'a'";
    let r: Rule = sql.parse().unwrap();
    assert_eq!(r.sql(), sql);
    assert_eq!(r.to_string(), sql);
}

// --- operators -----------------------------------------------------------------------

#[test]
fn comparisons() {
    check(&[
        ("t > 30", json!(true)),
        ("t >= 31.5", json!(true)),
        ("t < 31.5", json!(false)),
        ("t <= 31.5", json!(true)),
        ("n = 10", json!(true)),
        ("n != 10", json!(false)),
        ("n <> 11", json!(true)),
        ("n = 10.0", json!(true)),
        ("w = 'abc'", json!(true)),
        ("w < 'abd'", json!(true)),
        ("b = TRUE", json!(true)),
        ("f < b", json!(true)),
        ("arr = arr", json!(true)),
        ("o = arr", json!(false)),
        ("big > 9223372036854775806", json!(true)),
    ]);
}

#[test]
fn numeric_strings_compare_and_compute_as_numbers() {
    check(&[
        ("s > 30", json!(true)),
        ("s = 31.5", json!(true)),
        ("30 < s", json!(true)),
        ("s + 1", json!(32.5)),
        ("s * 2", json!(63.0)),
        ("'10' > 9", json!(true)),
        // two strings compare as text
        ("'10' > '9'", json!(false)),
        // a string that is no number is not equal to a number, and does not order
        ("w = 1", json!(false)),
        ("w != 1", json!(true)),
        ("w > 1", json!(null)),
        ("w + 1", json!(null)),
    ]);
}

#[test]
fn arithmetic() {
    check(&[
        ("n + 5", json!(15)),
        ("n - 15", json!(-5)),
        ("n * 3", json!(30)),
        ("n / 2", json!(5)),
        ("7 / 2", json!(3.5)),
        ("n % 3", json!(1)),
        ("-7 % 3", json!(-1)),
        ("7.5 % 2", json!(1.5)),
        ("n * 1.5", json!(15.0)),
        ("-n", json!(-10)),
        ("-neg", json!(3)),
        ("-(t)", json!(-31.5)),
        ("2 + 3 * 4", json!(14)),
        ("(2 + 3) * 4", json!(20)),
        ("big + 1", json!(9_223_372_036_854_775_808.0)),
        ("b + 1", json!(null)),
        ("'a' || 'b' || n", json!("ab10")),
    ]);
}

#[test]
fn division_by_zero_is_null_not_a_panic() {
    check(&[
        ("n / 0", json!(null)),
        ("n % 0", json!(null)),
        ("t / 0.0", json!(null)),
        ("n / (n - 10)", json!(null)),
    ]);
}

#[test]
fn logic() {
    check(&[
        ("b AND NOT f", json!(true)),
        ("b AND f", json!(false)),
        ("f OR b", json!(true)),
        ("f OR f", json!(false)),
        ("NOT b", json!(false)),
        ("t > 30 AND n = 10 OR w = 'x'", json!(true)),
        ("t > 30 AND (n = 11 OR w = 'x')", json!(false)),
    ]);
}

#[test]
fn three_valued_null_logic() {
    check(&[
        ("NULL = NULL", json!(null)),
        ("z = 1", json!(null)),
        ("z != 1", json!(null)),
        ("z AND f", json!(false)),
        ("f AND z", json!(false)),
        ("z AND b", json!(null)),
        ("z OR b", json!(true)),
        ("z OR f", json!(null)),
        ("NOT z", json!(null)),
        ("z + 1", json!(null)),
        ("z IS NULL", json!(true)),
        ("z IS NOT NULL", json!(false)),
        ("missing IS NULL", json!(true)),
        ("n IS NOT NULL", json!(true)),
        ("1 IN (2, NULL)", json!(null)),
        ("1 IN (1, NULL)", json!(true)),
        ("1 NOT IN (2, NULL)", json!(null)),
        ("z IS TRUE", json!(false)),
        ("z IS NOT FALSE", json!(true)),
        ("b IS TRUE", json!(true)),
    ]);
    // anything over a missing field stays missing (left out of the output) ...
    for expr in [
        "missing",
        "missing + 1",
        "missing > 1",
        "-missing",
        "abs(missing)",
    ] {
        assert_eq!(eval(expr), None, "{expr}");
    }
    // ... except what looks past it
    assert_eq!(eval("missing AND f"), Some(json!(false)));
    assert_eq!(eval("coalesce(missing, z, 5)"), Some(json!(5)));
}

#[test]
fn where_passes_only_on_true() {
    for cond in [
        "z = 1",
        "missing > 1",
        "NOT (missing > 1)",
        "NULL",
        "1",
        "'true'",
        "f",
        "w > 1",
    ] {
        let sql = format!("SELECT * FROM '#' WHERE {cond}");
        assert_eq!(run(&sql, DEVICE), None, "{cond}");
    }
    for cond in ["b", "TRUE", "z IS NULL", "NOT f", "s > 31"] {
        let sql = format!("SELECT * FROM '#' WHERE {cond}");
        assert!(run(&sql, DEVICE).is_some(), "{cond}");
    }
}

#[test]
fn like() {
    check(&[
        ("w LIKE 'a%'", json!(true)),
        ("w LIKE '_b_'", json!(true)),
        ("w LIKE 'b%'", json!(false)),
        ("w NOT LIKE 'b%'", json!(true)),
        ("w LIKE '%'", json!(true)),
        ("'50%' LIKE '50!%' ESCAPE '!'", json!(true)),
        ("'500' LIKE '50!%' ESCAPE '!'", json!(false)),
        ("n LIKE '1_'", json!(true)),
        ("w LIKE concat('a', '%')", json!(true)),
        ("z LIKE 'a'", json!(null)),
        ("w LIKE z", json!(null)),
    ]);
    assert_eq!(
        run("SELECT * FROM '#' WHERE topic LIKE 'sensors/%/temp'", "{}"),
        Some(json!({}))
    );
}

#[test]
fn in_and_between() {
    check(&[
        ("n IN (1, 10, 100)", json!(true)),
        ("n IN (1, 2)", json!(false)),
        ("n NOT IN (1, 2)", json!(true)),
        ("w IN ('abc', 'x')", json!(true)),
        ("s IN (31.5)", json!(true)),
        ("n BETWEEN 5 AND 10", json!(true)),
        ("n BETWEEN 11 AND 20", json!(false)),
        ("n NOT BETWEEN 11 AND 20", json!(true)),
        ("t BETWEEN 30 AND n", json!(false)),
        ("z BETWEEN 1 AND 2", json!(null)),
        ("n BETWEEN 1 AND z", json!(null)),
        ("n BETWEEN 11 AND z", json!(false)),
    ]);
}

#[test]
fn case_expressions() {
    check(&[
        ("CASE WHEN t > 30 THEN 'hot' ELSE 'ok' END", json!("hot")),
        (
            "CASE WHEN t > 40 THEN 'hot' WHEN t > 30 THEN 'warm' END",
            json!("warm"),
        ),
        ("CASE WHEN t > 40 THEN 'hot' END", json!(null)),
        ("CASE WHEN z THEN 1 ELSE 2 END", json!(2)),
        (
            "CASE n WHEN 1 THEN 'one' WHEN 10 THEN 'ten' ELSE 'many' END",
            json!("ten"),
        ),
        (
            "CASE z WHEN NULL THEN 'null' ELSE 'other' END",
            json!("other"),
        ),
    ]);
}

#[test]
fn literals() {
    check(&[
        ("'it''s'", json!("it's")),
        ("42", json!(42)),
        ("-1.25", json!(-1.25)),
        ("1e3", json!(1000.0)),
        ("TRUE", json!(true)),
        ("false", json!(false)),
        ("NULL", json!(null)),
        ("99999999999999999999", json!(1e20)),
    ]);
}

// --- functions -----------------------------------------------------------------------

#[test]
fn numeric_functions() {
    check(&[
        ("abs(neg)", json!(3)),
        ("abs(-2.5)", json!(2.5)),
        ("abs('-4')", json!(4)),
        ("round(t)", json!(32)),
        ("round(2.4)", json!(2)),
        ("round(-2.5)", json!(-3)),
        ("round(n)", json!(10)),
        ("round(1.23456, 2)", json!(1.23)),
        ("round(1234, -2)", json!(1200)),
        ("floor(t)", json!(31)),
        ("floor(-1.5)", json!(-2)),
        ("ceil(t)", json!(32)),
        ("ceiling(1.1)", json!(2)),
        ("ceil(n)", json!(10)),
        ("sqrt(16)", json!(4.0)),
        ("sqrt(-1)", json!(null)),
        ("power(2, 10)", json!(1024)),
        ("pow(2, 0.5)", json!(2f64.sqrt())),
        ("power(2, -1)", json!(0.5)),
        ("power(10, 400)", json!(null)),
        ("power(2, 64)", json!(18_446_744_073_709_551_616.0)),
        ("abs(w)", json!(null)),
    ]);
}

#[test]
fn string_functions() {
    check(&[
        ("lower('AbC')", json!("abc")),
        ("upper(w)", json!("ABC")),
        ("length(w)", json!(3)),
        ("length('héllo')", json!(5)),
        ("length(arr)", json!(3)),
        ("length(n)", json!(2)),
        ("concat(w, '-', n, '-', t)", json!("abc-10-31.5")),
        ("concat(w, z, missing)", json!("abc")),
        ("substring(w, 2)", json!("bc")),
        ("substring(w, 1, 2)", json!("ab")),
        ("substring(w FROM 2 FOR 1)", json!("b")),
        ("substring('héllo', 2, 3)", json!("éll")),
        ("substr(w, 3)", json!("c")),
        ("trim('  x  ')", json!("x")),
        ("ltrim('  x  ')", json!("x  ")),
        ("rtrim('  x  ')", json!("  x")),
        ("trim(BOTH 'x' FROM 'xxaxx')", json!("a")),
        ("trim(LEADING 'x' FROM 'xxaxx')", json!("axx")),
        ("coalesce(z, missing, w)", json!("abc")),
        ("coalesce(z, missing)", json!(null)),
        ("nullif(n, 10)", json!(null)),
        ("nullif(n, 11)", json!(10)),
    ]);
    assert_eq!(eval("coalesce(missing)"), None);
}

#[test]
fn casts() {
    check(&[
        ("CAST(s AS int)", json!(31)),
        ("CAST(s AS integer)", json!(31)),
        ("CAST(t AS int)", json!(31)),
        ("CAST(n AS float)", json!(10.0)),
        ("CAST('2.5' AS double)", json!(2.5)),
        ("CAST(n AS real)", json!(10.0)),
        ("CAST(n AS string)", json!("10")),
        ("CAST(t AS text)", json!("31.5")),
        ("CAST(arr AS string)", json!("[1,2,3]")),
        ("CAST('true' AS bool)", json!(true)),
        ("CAST(0 AS boolean)", json!(false)),
        ("CAST(w AS int)", json!(null)),
        ("CAST(b AS int)", json!(1)),
        ("s::float", json!(31.5)),
    ]);
}

#[test]
fn metadata_functions() {
    check(&[
        ("topic()", json!("sensors/kitchen/temp")),
        ("topic(1)", json!("sensors")),
        ("topic(2)", json!("kitchen")),
        ("topic(n - 7)", json!("temp")),
        ("topic(2.0)", json!("kitchen")),
        ("topic('2')", json!("kitchen")),
        ("clientid()", json!("dev-7")),
        ("username()", json!("alice")),
        ("qos()", json!(1)),
        ("retain()", json!(true)),
        ("timestamp()", json!(1_700_000_000_123_i64)),
        ("TOPIC(2)", json!("kitchen")),
    ]);
    assert_eq!(eval("topic(4)"), None);
    assert_eq!(eval("topic(0)"), None);
    assert_eq!(eval("topic('x')"), Some(json!(null)));
    assert_eq!(eval("topic(1.5)"), Some(json!(null)));
}

#[test]
fn anonymous_publisher_has_a_null_username() {
    let r = rule("SELECT username() AS u, username FROM '#'");
    let input = Input {
        username: None,
        ..msg("a", b"{}")
    };
    assert_eq!(
        r.apply(&input).map(Value::Object),
        Some(json!({"u": null, "username": null}))
    );
}

// --- fields --------------------------------------------------------------------------

#[test]
fn nested_fields_and_array_indexes() {
    check(&[
        ("o.a.b", json!(7)),
        ("payload.o.a.b", json!(7)),
        ("payload.n", json!(10)),
        ("o.a", json!({"b": 7})),
        ("arr[0]", json!(1)),
        ("arr[2]", json!(3)),
        ("arr[-1]", json!(3)),
        ("arr[-3]", json!(1)),
        ("payload.arr[1]", json!(2)),
        ("o['k-1']", json!("dash")),
        ("o.\"k-1\"", json!("dash")),
        ("o.a.b * 2", json!(14)),
    ]);
    for expr in [
        "arr[3]",
        "arr[-4]",
        "o.a.c",
        "o.a.b.c",
        "n.x",
        "arr.x",
        "payload.nope",
    ] {
        assert_eq!(eval(expr), None, "{expr}");
    }
}

#[test]
fn quoted_identifiers_name_fields_with_odd_characters() {
    let out = run(
        r#"SELECT "temp-c", "a b" FROM '#'"#,
        r#"{"temp-c": 1, "a b": 2}"#,
    );
    assert_eq!(out, Some(json!({"temp-c": 1, "a b": 2})));
}

#[test]
fn reserved_names_fall_back_to_metadata() {
    let out = run(
        "SELECT topic, clientid, username, qos, retain, timestamp FROM '#'",
        r#"{"x": 1}"#,
    );
    assert_eq!(
        out,
        Some(json!({
            "topic": "sensors/kitchen/temp", "clientid": "dev-7", "username": "alice",
            "qos": 1, "retain": true, "timestamp": 1_700_000_000_123_i64
        }))
    );
    assert_eq!(eval_on("payload", r#"{"x":1}"#), Some(json!(r#"{"x":1}"#)));
}

#[test]
fn payload_fields_shadow_metadata_names_but_functions_do_not() {
    let p = r#"{"topic": "mine", "qos": 2}"#;
    assert_eq!(eval_on("topic", p), Some(json!("mine")));
    assert_eq!(eval_on("topic()", p), Some(json!("sensors/kitchen/temp")));
    assert_eq!(eval_on("qos", p), Some(json!(2)));
    assert_eq!(eval_on("qos()", p), Some(json!(1)));
}

#[test]
fn fields_are_case_sensitive_reserved_names_are_not() {
    assert_eq!(eval_on("Temp", r#"{"temp": 1}"#), None);
    assert_eq!(eval_on("TOPIC", "{}"), Some(json!("sensors/kitchen/temp")));
}

// --- payload shapes ------------------------------------------------------------------

#[test]
fn scalar_payload_is_the_value_column() {
    let r = rule("SELECT * FROM 'floor-5/temperature' WHERE value > 10");
    let out = r.apply(&msg("floor-5/temperature", b"15"));
    assert_eq!(out.map(Value::Object), Some(json!({"value": 15})));
    assert_eq!(r.apply(&msg("floor-5/temperature", b"5")), None);
    assert_eq!(eval_on("value * 2", "2.5"), Some(json!(5.0)));
    assert_eq!(eval_on("payload", "15"), Some(json!("15")));
    assert_eq!(eval_on("value", r#""quoted""#), Some(json!("quoted")));
    assert_eq!(eval_on("value", "true"), Some(json!(true)));
    assert_eq!(eval_on("value", "null"), Some(json!(null)));
}

#[test]
fn array_payload_is_the_value_column() {
    assert_eq!(
        run("SELECT * FROM '#'", "[1, 2]"),
        Some(json!({"value": [1, 2]}))
    );
    assert_eq!(eval_on("value[1]", "[1, 2]"), Some(json!(2)));
    assert_eq!(eval_on("payload[0]", "[1, 2]"), Some(json!(1)));
    assert_eq!(eval_on("length(value)", "[1, 2]"), Some(json!(2)));
}

#[test]
fn text_payload_is_the_payload_column() {
    assert_eq!(
        run("SELECT * FROM '#'", "on"),
        Some(json!({"payload": "on"}))
    );
    assert_eq!(
        run("SELECT * FROM '#' WHERE payload = 'on'", "on"),
        Some(json!({"payload": "on"}))
    );
    assert_eq!(run("SELECT * FROM '#'", ""), Some(json!({"payload": ""})));
    // broken JSON is text too, losslessly
    assert_eq!(
        run("SELECT * FROM '#'", r#"{"a": "#),
        Some(json!({"payload": r#"{"a": "#}))
    );
    assert_eq!(eval_on("payload.a", "on"), None);
    assert_eq!(eval_on("upper(payload)", "on"), Some(json!("ON")));
}

#[test]
fn binary_payload_is_base64() {
    let r = rule("SELECT *, payload AS raw, length(payload) AS n FROM '#'");
    let out = r
        .apply(&msg("bin", &[0xde, 0xad, 0xbe, 0xef]))
        .map(Value::Object);
    assert_eq!(
        out,
        Some(json!({
            "payload": "3q2+7w==",
            "payload_encoding": "base64",
            "raw": "3q2+7w==",
            "n": 8
        }))
    );
    // text that is not JSON has no marker
    let out = r.apply(&msg("txt", b"on")).map(Value::Object);
    assert_eq!(out, Some(json!({"payload": "on", "raw": "on", "n": 2})));
}

#[test]
fn metadata_only_rules_do_not_need_a_json_payload() {
    let r = rule("SELECT topic(2) AS room, payload AS raw FROM 'sensors/#'");
    let out = r
        .apply(&msg("sensors/hall", br#"{"temp": 1}"#))
        .map(Value::Object);
    assert_eq!(out, Some(json!({"room": "hall", "raw": r#"{"temp": 1}"#})));
}

// --- the SELECT list -----------------------------------------------------------------

#[test]
fn aliases_and_column_names() {
    let out = run(
        "SELECT t AS temperature, payload.o.a.b, o.a, n * 2, topic(), arr[0], abs(neg) FROM '#'",
        DEVICE,
    );
    assert_eq!(
        out,
        Some(json!({
            "temperature": 31.5, "b": 7, "a": {"b": 7}, "n * 2": 20,
            "topic()": "sensors/kitchen/temp", "arr[0]": 1, "abs(neg)": 3
        }))
    );
}

#[test]
fn star_mixes_with_expressions() {
    let p = r#"{"temp": 31.5, "hum": 40}"#;
    assert_eq!(
        run("SELECT *, topic() AS topic FROM '#'", p),
        Some(json!({"temp": 31.5, "hum": 40, "topic": "sensors/kitchen/temp"}))
    );
    assert_eq!(
        run("SELECT clientid() AS id, * FROM '#'", p),
        Some(json!({"id": "dev-7", "temp": 31.5, "hum": 40}))
    );
    // a later column of the same name replaces the earlier one where it stands
    let out = run("SELECT *, temp * 2 AS temp FROM '#'", p).unwrap();
    assert_eq!(out, json!({"temp": 63.0, "hum": 40}));
    assert_eq!(
        out.as_object().unwrap().keys().next().map(String::as_str),
        Some("temp")
    );
    assert_eq!(
        run("SELECT payload.* FROM '#'", p),
        Some(json!({"temp": 31.5, "hum": 40}))
    );
    assert_eq!(
        run("SELECT *, * FROM '#'", p),
        Some(json!({"temp": 31.5, "hum": 40}))
    );
}

#[test]
fn missing_fields_are_left_out_and_nulls_kept() {
    assert_eq!(
        run("SELECT temp, hum, z FROM '#'", r#"{"temp": 1, "z": null}"#),
        Some(json!({"temp": 1, "z": null}))
    );
}

#[test]
fn one_rule_many_messages() {
    let r = rule("SELECT temp, topic(2) AS room FROM 'sensors/+' WHERE temp > 30");
    let rows: Vec<Value> = [
        ("sensors/a", r#"{"temp": 31}"#),
        ("sensors/b", r#"{"temp": 29}"#),
        ("sensors/c", r#"{"temp": "35"}"#),
        ("sensors/d", "not json"),
        ("other/e", r#"{"temp": 99}"#),
    ]
    .iter()
    .filter_map(|(t, p)| r.apply(&msg(t, p.as_bytes())).map(Value::Object))
    .collect();
    assert_eq!(
        rows,
        [
            json!({"temp": 31, "room": "a"}),
            json!({"temp": "35", "room": "c"})
        ]
    );
}

// --- bad rules -----------------------------------------------------------------------

#[test]
fn bad_rules_are_refused_with_a_specific_error() {
    type Want = fn(&RuleError) -> bool;
    let deep = format!(
        "SELECT * FROM 'a' WHERE {}1{}",
        "(".repeat(60),
        ")".repeat(60)
    );
    let long_chain = format!("SELECT {}1 AS x FROM 'a'", "1 + ".repeat(200));
    let many_tokens = format!("SELECT {} FROM 'a'", vec!["x"; 3000].join(", "));
    let too_long = format!("SELECT * FROM 'a' WHERE x = '{}'", "y".repeat(MAX_RULE_LEN));
    // 2,000 levels deep, within the token limit: refused without running out of stack
    let chain = vec!["1"; 2000].join(" + ");
    let deep_unsupported = format!("SELECT [{chain}] FROM 'a'");
    let deep_under_unsupported = format!("SELECT x & {chain} FROM 'a'");
    let deep_and = format!("SELECT * FROM 'a' WHERE {}", vec!["x"; 2000].join(" AND "));
    let cases: Vec<(&str, Want)> = vec![
        ("", |e| matches!(e, RuleError::Empty)),
        (" ; ", |e| matches!(e, RuleError::Empty)),
        ("SELECT *", |e| matches!(e, RuleError::MissingFrom)),
        ("SELECT 1 + 1", |e| matches!(e, RuleError::MissingFrom)),
        (
            "SELECT * FROM sensors",
            |e| matches!(e, RuleError::UnquotedFilter(s) if s == "sensors"),
        ),
        (r#"SELECT * FROM "a"."b""#, |e| {
            matches!(e, RuleError::UnquotedFilter(_))
        }),
        (
            "SELECT * FROM 'a/#' JOIN 'b' ON 1 = 1",
            |e| matches!(e, RuleError::Unsupported(s) if s == "JOIN"),
        ),
        (
            "SELECT * FROM 'a' GROUP BY x",
            |e| matches!(e, RuleError::Unsupported(s) if s == "GROUP BY"),
        ),
        (
            "SELECT * FROM 'a' ORDER BY x",
            |e| matches!(e, RuleError::Unsupported(s) if s == "ORDER BY"),
        ),
        (
            "SELECT * FROM 'a' LIMIT 1",
            |e| matches!(e, RuleError::Unsupported(s) if s == "LIMIT/OFFSET"),
        ),
        (
            "SELECT DISTINCT x FROM 'a'",
            |e| matches!(e, RuleError::Unsupported(s) if s == "DISTINCT"),
        ),
        (
            "SELECT x FROM 'a' GROUP BY x HAVING x > 1",
            |e| matches!(e, RuleError::Unsupported(s) if s == "GROUP BY"),
        ),
        (
            "WITH c AS (SELECT 1) SELECT * FROM 'a'",
            |e| matches!(e, RuleError::Unsupported(s) if s == "WITH"),
        ),
        (
            "SELECT * FROM 'a' UNION SELECT * FROM 'b'",
            |e| matches!(e, RuleError::Unsupported(s) if s == "UNION"),
        ),
        (
            "SELECT * FROM (SELECT * FROM 'a')",
            |e| matches!(e, RuleError::Unsupported(s) if s == "a subquery in FROM"),
        ),
        (
            "SELECT * FROM 'a' WHERE x IN (SELECT y FROM 'b')",
            |e| matches!(e, RuleError::Unsupported(s) if s == "a subquery"),
        ),
        (
            "SELECT * FROM 'a' WHERE EXISTS (SELECT 1 FROM 'b')",
            |e| matches!(e, RuleError::Unsupported(s) if s == "a subquery"),
        ),
        (
            "SELECT (SELECT 1) AS x FROM 'a'",
            |e| matches!(e, RuleError::Unsupported(s) if s == "a subquery"),
        ),
        (
            "SELECT * FROM 'a' AS t",
            |e| matches!(e, RuleError::Unsupported(s) if s.contains("alias")),
        ),
        ("SELECT * FROM 'a'; SELECT * FROM 'b'", |e| {
            matches!(e, RuleError::MultipleStatements(2))
        }),
        (
            "DELETE FROM 'a'",
            |e| matches!(e, RuleError::NotSelect(s) if s == "DELETE FROM"),
        ),
        (
            "INSERT INTO t VALUES (1)",
            |e| matches!(e, RuleError::NotSelect(s) if s.starts_with("INSERT")),
        ),
        (
            "SELECT nosuch(x) FROM 'a'",
            |e| matches!(e, RuleError::UnknownFunction(s) if s == "nosuch"),
        ),
        (
            "SELECT now() FROM 'a'",
            |e| matches!(e, RuleError::UnknownFunction(s) if s == "now"),
        ),
        (
            "SELECT count(*) FROM 'a'",
            |e| matches!(e, RuleError::Aggregate(s) if s == "count"),
        ),
        (
            "SELECT avg(t) FROM 'a'",
            |e| matches!(e, RuleError::Aggregate(s) if s == "avg"),
        ),
        (
            "SELECT abs(1, 2) FROM 'a'",
            |e| matches!(e, RuleError::Arity { function, expected, found: 2 } if function == "abs" && expected == "1"),
        ),
        (
            "SELECT topic(1, 2) FROM 'a'",
            |e| matches!(e, RuleError::Arity { expected, .. } if expected == "0 to 1"),
        ),
        (
            "SELECT concat() FROM 'a'",
            |e| matches!(e, RuleError::Arity { expected, found: 0, .. } if expected == "at least 1"),
        ),
        ("SELECT clientid(1) FROM 'a'", |e| {
            matches!(e, RuleError::Arity { .. })
        }),
        (
            "SELECT CAST(x AS date) FROM 'a'",
            |e| matches!(e, RuleError::UnsupportedType(s) if s == "DATE"),
        ),
        ("SELECT CAST(x AS json) FROM 'a'", |e| {
            matches!(e, RuleError::UnsupportedType(_))
        }),
        ("SELECT * FROM 'a/#/b'", |e| {
            matches!(
                e,
                RuleError::InvalidFilter {
                    source: TopicError::HashNotLast,
                    ..
                }
            )
        }),
        ("SELECT * FROM 'a+'", |e| {
            matches!(
                e,
                RuleError::InvalidFilter {
                    source: TopicError::PlusNotAlone,
                    ..
                }
            )
        }),
        ("SELECT * FROM ''", |e| {
            matches!(
                e,
                RuleError::InvalidFilter {
                    source: TopicError::Empty,
                    ..
                }
            )
        }),
        (
            "SELECT * FROM 'ok', '$share/g'",
            |e| matches!(e, RuleError::InvalidFilter { filter, source: TopicError::InvalidShareName | TopicError::SharedWithoutFilter } if filter == "$share/g"),
        ),
        ("SELECT * FROM '$share/+/x'", |e| {
            matches!(
                e,
                RuleError::InvalidFilter {
                    source: TopicError::InvalidShareName,
                    ..
                }
            )
        }),
        ("SELECT * FROM 'a' WHERE", |e| {
            matches!(e, RuleError::Syntax(_))
        }),
        ("SELECT * FROM 'a' WHERE x = 'unterminated", |e| {
            matches!(e, RuleError::Syntax(_))
        }),
        ("SELEKT * FROM 'a'", |e| matches!(e, RuleError::Syntax(_))),
        (
            "SELECT * FROM 'a' WHERE x ILIKE 'a'",
            |e| matches!(e, RuleError::Unsupported(s) if s.starts_with("ILIKE")),
        ),
        (
            "SELECT * FROM 'a' WHERE x LIKE 'a' ESCAPE 'ab'",
            |e| matches!(e, RuleError::Unsupported(s) if s.contains("ESCAPE")),
        ),
        (
            "SELECT arr[n] FROM 'a'",
            |e| matches!(e, RuleError::Unsupported(s) if s.contains("array index")),
        ),
        (
            "SELECT * FROM 'a' WHERE x = ?",
            |e| matches!(e, RuleError::Unsupported(s) if s.contains("placeholder")),
        ),
        (
            "SELECT x & 1 FROM 'a'",
            |e| matches!(e, RuleError::Unsupported(s) if s.contains("operator")),
        ),
        ("SELECT 1e999 FROM 'a'", |e| {
            matches!(e, RuleError::InvalidLiteral(_))
        }),
        (
            "SELECT ceil(x, 2) FROM 'a'",
            |e| matches!(e, RuleError::Unsupported(s) if s.starts_with("CEIL")),
        ),
        (&deep, |e| matches!(e, RuleError::TooComplex(_))),
        (&long_chain, |e| matches!(e, RuleError::TooComplex(_))),
        (&many_tokens, |e| matches!(e, RuleError::TooComplex(_))),
        (&too_long, |e| matches!(e, RuleError::TooLong { .. })),
        (
            &deep_unsupported,
            |e| matches!(e, RuleError::Unsupported(s) if s.starts_with("the expression [1 + 1") && s.len() < 100),
        ),
        (&deep_under_unsupported, |e| {
            matches!(e, RuleError::TooComplex(_))
        }),
        (&deep_and, |e| matches!(e, RuleError::TooComplex(_))),
    ];
    for (sql, want) in cases {
        match Rule::parse(sql) {
            Ok(r) => panic!("accepted {sql:?}: {r:?}"),
            Err(e) => {
                assert!(want(&e), "{sql:?}: unexpected error {e:?}");
                assert!(!e.to_string().is_empty());
            }
        }
    }
}

#[test]
fn error_messages_name_the_problem() {
    let msg = |sql: &str| Rule::parse(sql).unwrap_err().to_string();
    assert_eq!(
        msg("SELECT * FROM 'a' GROUP BY x"),
        "GROUP BY is not supported in rules"
    );
    assert_eq!(msg("SELECT *"), "missing FROM '<topic filter>'");
    assert_eq!(
        msg("SELECT nosuch(1) FROM 'a'"),
        "unknown function nosuch()"
    );
    assert_eq!(
        msg("SELECT abs() FROM 'a'"),
        "abs() takes 1 argument(s), found 0"
    );
    assert_eq!(
        msg("SELECT * FROM 'a/#/b'"),
        "invalid topic filter 'a/#/b' in FROM: '#' must be the last character, alone in its level [MQTT-4.7.1-1]"
    );
    assert!(msg("SELECT * FROM sensors").starts_with("FROM takes quoted topic filters"));
}

#[test]
fn nesting_within_the_limits_is_fine() {
    let sql = format!("SELECT {}1 AS x FROM 'a'", "1 + ".repeat(100));
    assert_eq!(
        rule(&sql).apply(&msg("a", b"{}")).map(Value::Object),
        Some(json!({"x": 101}))
    );
    let sql = format!("SELECT {}1{} AS x FROM 'a'", "(".repeat(20), ")".repeat(20));
    assert!(Rule::parse(&sql).is_ok());
}

// --- never panics --------------------------------------------------------------------

const FRAGMENTS: &[&str] = &[
    "SELECT",
    "*",
    "FROM",
    "WHERE",
    "'a/#'",
    "\"b/+\"",
    "'$share/g/x'",
    "'+'",
    "','",
    "x",
    "payload",
    "payload.x",
    "o.a.b",
    "arr[0]",
    "arr[",
    "]",
    "topic",
    "topic(",
    "topic()",
    "clientid()",
    "(",
    ")",
    ",",
    ".",
    "+",
    "-",
    "*",
    "/",
    "%",
    "=",
    "!=",
    "<>",
    "<",
    "<=",
    ">",
    ">=",
    "AND",
    "OR",
    "NOT",
    "LIKE",
    "'%a_'",
    "ESCAPE",
    "'!'",
    "IN",
    "BETWEEN",
    "IS",
    "NULL",
    "TRUE",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "CAST",
    "AS",
    "int",
    "float",
    "string",
    "bool",
    "abs(",
    "round(",
    "floor(",
    "ceil(",
    "sqrt(",
    "power(",
    "lower(",
    "upper(",
    "length(",
    "concat(",
    "substring(",
    "coalesce(",
    "nullif(",
    "trim(",
    "count(",
    "1",
    "0",
    "-1",
    "1.5",
    "'31.5'",
    "9223372036854775807",
    "-9223372036854775808",
    "1e308",
    "||",
    ";",
    "GROUP",
    "BY",
    "JOIN",
    "ORDER",
    "LIMIT",
    "'",
    "\"",
    "::",
    "?",
    "$1",
    "@",
    "SUBSTRING",
    "FOR",
    "LEADING",
    "{",
    "}",
    "\\",
    "é",
    "\u{0}",
];

fn sqlish() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40).prop_map(|v| v.join(" "))
}

/// Expressions that parse, so that evaluation is exercised too.
fn expr() -> impl Strategy<Value = String> {
    let leaf = prop::sample::select(
        &[
            "x",
            "y",
            "s",
            "z",
            "arr",
            "arr[1]",
            "o.a",
            "o.a.b",
            "payload.x",
            "missing",
            "value",
            "payload",
            "topic",
            "qos",
            "timestamp",
            "1",
            "0",
            "-1",
            "2.5",
            "0.0",
            "'31.5'",
            "'a%'",
            "''",
            "NULL",
            "TRUE",
            "FALSE",
            "9223372036854775807",
            "-9223372036854775807",
            "topic()",
            "topic(2)",
            "username()",
            "1e300",
        ][..],
    )
    .prop_map(str::to_owned);
    leaf.prop_recursive(4, 32, 3, |inner| {
        let two = (inner.clone(), inner.clone());
        let three = (inner.clone(), inner.clone(), inner.clone());
        let binop = prop::sample::select(
            &[
                "+", "-", "*", "/", "%", "=", "<>", "<", ">=", "AND", "OR", "||", "LIKE",
                "NOT LIKE",
            ][..],
        );
        let func = prop::sample::select(
            &[
                "abs", "round", "floor", "ceil", "sqrt", "lower", "upper", "length", "concat",
                "coalesce", "trim",
            ][..],
        );
        let func2 = prop::sample::select(
            &[
                "round",
                "power",
                "concat",
                "substring",
                "coalesce",
                "nullif",
            ][..],
        );
        let ty = prop::sample::select(&["int", "float", "string", "bool"][..]);
        prop_oneof![
            (two.clone(), binop).prop_map(|((a, b), op)| format!("({a} {op} {b})")),
            inner.clone().prop_map(|a| format!("(- {a})")),
            inner.clone().prop_map(|a| format!("(NOT {a})")),
            inner.clone().prop_map(|a| format!("({a} IS NULL)")),
            (inner.clone(), func).prop_map(|(a, f)| format!("{f}({a})")),
            (two.clone(), func2).prop_map(|((a, b), f)| format!("{f}({a}, {b})")),
            three
                .clone()
                .prop_map(|(a, b, c)| format!("substring({a}, {b}, {c})")),
            three
                .clone()
                .prop_map(|(a, b, c)| format!("({a} BETWEEN {b} AND {c})")),
            three
                .clone()
                .prop_map(|(a, b, c)| format!("({a} IN ({b}, {c}))")),
            three.prop_map(|(a, b, c)| format!("CASE WHEN {a} THEN {b} ELSE {c} END")),
            (inner.clone(), ty).prop_map(|(a, t)| format!("CAST({a} AS {t})")),
            // parenthesised: sqlparser 0.64 misreads `f(CASE value WHEN ...)` (VALUE keyword)
            two.prop_map(|(a, b)| format!("CASE ({a}) WHEN 1 THEN {b} END")),
        ]
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(&[i64::MIN, i64::MAX, 0, -1, 1][..]).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        prop::sample::select(&["31.5", "abc", "", "1e999", "-0", "%", "é"][..])
            .prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec(
                (
                    prop::sample::select(
                        &[
                            "x", "y", "s", "z", "a", "b", "arr", "o", "topic", "payload", "value"
                        ][..]
                    ),
                    inner
                ),
                0..5
            )
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ]
}

fn topic() -> impl Strategy<Value = String> {
    prop::sample::select(&["a", "a/b", "b/x", "$SYS/x", "x/a/#", "", "/", "a//b"][..])
        .prop_map(str::to_owned)
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES=100000 for a longer hunt
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_sqlish_text_never_panics(sql in sqlish(), p in payload(), t in topic()) {
        if let Ok(r) = Rule::parse(&sql) {
            let _ = r.apply(&msg(&t, &p));
        }
    }

    #[test]
    fn random_text_never_panics(sql in "\\PC{0,80}") {
        let _ = Rule::parse(&sql);
    }

    #[test]
    fn random_expressions_on_random_payloads_never_panic(
        select in expr(), cond in expr(), p in payload(), t in topic()
    ) {
        let sql = format!("SELECT *, {select} AS v FROM '#', 'a/+', '$SYS/#' WHERE {cond}");
        let r = Rule::parse(&sql).map_err(|e| TestCaseError::fail(format!("{sql}: {e}")))?;
        let _ = r.apply(&msg(&t, &p));
        let r = Rule::parse(&format!("SELECT {select} FROM '#'"))
            .map_err(|e| TestCaseError::fail(format!("{select}: {e}")))?;
        // no WHERE: a matched message always gives a row
        if r.matches(&t) {
            prop_assert!(r.apply(&msg(&t, &p)).is_some());
        }
    }

    #[test]
    fn star_returns_the_payload_object_unchanged(v in json_value()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        let out = rule("SELECT * FROM '#'").apply(&msg("a", &bytes)).map(Value::Object);
        let want = match v {
            Value::Object(_) => v,
            other => json!({"value": other}),
        };
        prop_assert_eq!(out, Some(want));
    }
}
