//! Issue 13 items 7 and 8 in a real browser (headless Chromium over DevTools): a rule edited
//! in the Rules tab takes effect, a disabled rule stops matching, the Test panel shows the
//! row of a matching message and why another one does not match, and the Alarms tab shows an
//! alarm raised by a published value and then cleared. MIDGE_SCREENSHOTS=<dir> keeps PNGs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::browser::Browser;
use common::*;
use midge_client::QoS;
use serde_json::{Value, json};

/// The hub service with one rule of the configuration file, the HTTP server on it, and the
/// page open at `#tab`.
async fn page(tab: &str) -> (Hub, Arc<midge_hub::HubService>, tempfile::TempDir, Browser) {
    let mut hub = Hub::start(|_, _| {}).await;
    let state = tempfile::tempdir().unwrap();
    let service = midge_hub::HubService::start(
        midge_hub::HubConfig {
            rules: vec![midge_hub::RuleConfig {
                name: "hot".into(),
                sql: "SELECT * FROM 'sensors/#' WHERE temp > 30".into(),
                actions: vec![midge_hub::ActionConfig::Store {
                    table: "telemetry".into(),
                }],
            }],
            state_dir: Some(state.path().to_path_buf()),
            ..midge_hub::HubConfig::default()
        },
        hub.deps.connector.clone(),
        Some(hub.store.clone()),
    )
    .await
    .unwrap();
    hub.deps.hub = Some(service.clone());
    hub.restart_http().await;
    let b = Browser::open(&format!("http://{}/#{tab}", hub.addr)).await;
    (hub, service, state, b)
}

async fn rule(hub: &Hub, name: &str) -> Value {
    let list = hub.get("/api/v1/rules").await.json();
    list["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no rule {name}: {list}"))
}

/// Set form fields by id (checkboxes take "true"/"false").
async fn set(b: &mut Browser, fields: &[(&str, &str)]) {
    let mut js = String::from("(() => { ");
    for (id, value) in fields {
        let v = serde_json::to_string(value).unwrap();
        js.push_str(&format!(
            "{{ const e = document.getElementById('{id}'); \
               if (e.type === 'checkbox') e.checked = {v} === 'true'; else e.value = {v}; \
               e.dispatchEvent(new Event('input')); }} "
        ));
    }
    js.push_str("})()");
    b.eval(&js).await;
}

async fn click(b: &mut Browser, selector: &str) {
    let sel = serde_json::to_string(selector).unwrap();
    let found = b
        .eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return false; e.click(); return true; }})()"
        ))
        .await;
    assert_eq!(found, true, "nothing to click at {selector}");
}

/// Wait until the hub has handled everything published before: a reading for the
/// configuration's rule `hot`, seen in its count.
async fn barrier(hub: &Hub, dev: &mut Mqtt) {
    let before = rule(hub, "hot").await["matched"].as_u64().unwrap();
    dev.publish("sensors/sync", QoS::AtLeastOnce, false, r#"{"temp": 1}"#)
        .await;
    eventually("the hub caught up", || async {
        (rule(hub, "hot").await["matched"].as_u64().unwrap() > before).then_some(())
    })
    .await;
}

const TEST_RESULT: &str = "(() => { const r = document.getElementById('rule-test-result'); \
     return { hidden: r.hidden, state: r.dataset.state, \
       verdict: document.getElementById('rule-test-verdict').textContent, \
       reason: (r.querySelector('[data-role=reason]') || {}).textContent || null, \
       row: Object.fromEntries([...r.querySelectorAll('#rule-test-row tbody tr')].map(t => [t.dataset.column, t.children[1].textContent])) }; })()";

#[tokio::test]
async fn a_rule_is_edited_in_the_page_disabled_and_tried_in_the_test_panel() {
    let (hub, service, _state, mut b) = page("rules").await;
    let r = hub
        .send_json(
            "POST",
            "/api/v1/rules",
            &json!({"name": "warm", "sql": "SELECT temp FROM 'dev/+/t' WHERE temp > 30", "store": "alerts"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    b.until(
        "the API rule with its buttons",
        "!!document.querySelector('[data-rule=warm] [data-action=edit-rule]')",
        |v| v == true,
    )
    .await;

    // the form opens filled; the name cannot be changed
    click(&mut b, "[data-rule=warm] [data-action=edit-rule]").await;
    let form = b
        .eval(
            "({ mode: document.getElementById('rule-form').dataset.mode, \
                title: document.getElementById('rule-form-title').textContent, \
                name: document.getElementById('rule-name').value, \
                readOnly: document.getElementById('rule-name').readOnly, \
                sql: document.getElementById('rule-sql').value, \
                store: document.getElementById('rule-store').value, \
                submit: document.getElementById('rule-submit').textContent })",
        )
        .await;
    assert_eq!(
        form,
        json!({"mode": "edit", "title": "Edit rule warm", "name": "warm", "readOnly": true,
               "sql": "SELECT temp FROM 'dev/+/t' WHERE temp > 30", "store": "alerts",
               "submit": "Save changes"})
    );
    set(
        &mut b,
        &[("rule-sql", "SELECT temp FROM 'dev/+/t' WHERE temp > 10")],
    )
    .await;
    click(&mut b, "#rule-submit").await;
    b.until(
        "the change saved",
        "document.getElementById('rule-form').dataset.state",
        |v| v == "saved",
    )
    .await;
    let saved = rule(&hub, "warm").await;
    assert_eq!(
        saved["spec"],
        json!({"name": "warm", "sql": "SELECT temp FROM 'dev/+/t' WHERE temp > 10", "store": "alerts"})
    );

    // the change takes effect: 20 passes now
    let mut dev = hub.mqtt("dev-1").await;
    dev.publish("dev/a/t", QoS::AtLeastOnce, false, r#"{"temp": 20}"#)
        .await;
    eventually("the edited rule's row", || async {
        let r = hub.get("/api/v1/tables/alerts/rows").await;
        (r.status == 200 && r.json()["rows"].as_array().is_some_and(|a| a.len() == 1)).then_some(())
    })
    .await;
    b.until(
        "the counts in the table",
        "[...document.querySelectorAll('[data-rule=warm] td.num')].map(t => t.textContent)",
        |v| v == &json!(["1", "1", "0"]),
    )
    .await;

    // disabled in the page: it stops matching
    click(&mut b, "[data-rule=warm] [data-action=toggle-rule]").await;
    b.until(
        "the row shows it disabled",
        "document.querySelector('[data-rule=warm]').dataset.enabled",
        |v| v == "false",
    )
    .await;
    assert_eq!(rule(&hub, "warm").await["enabled"], false);
    dev.publish("dev/a/t", QoS::AtLeastOnce, false, r#"{"temp": 50}"#)
        .await;
    barrier(&hub, &mut dev).await;
    let off = rule(&hub, "warm").await;
    assert_eq!(
        (off["matched"].as_u64(), off["passed"].as_u64()),
        (Some(1), Some(1)),
        "{off}"
    );
    let rows = hub.get("/api/v1/tables/alerts/rows").await.json();
    assert_eq!(rows["rows"].as_array().unwrap().len(), 1, "{rows}");
    // and runs again once enabled
    click(&mut b, "[data-rule=warm] [data-action=toggle-rule]").await;
    b.until(
        "enabled again",
        "document.querySelector('[data-rule=warm]').dataset.enabled",
        |v| v == "true",
    )
    .await;
    dev.publish("dev/a/t", QoS::AtLeastOnce, false, r#"{"temp": 60}"#)
        .await;
    eventually("the enabled rule's second row", || async {
        let r = hub.get("/api/v1/tables/alerts/rows").await;
        (r.json()["rows"].as_array().is_some_and(|a| a.len() == 2)).then_some(())
    })
    .await;

    // the Test panel: the row of a matching payload
    click(&mut b, "[data-rule=warm] [data-action=test-rule]").await;
    let filled = b
        .eval(
            "[document.getElementById('rule-test').hidden, document.getElementById('rule-test-sql').value, \
              document.getElementById('rule-test-topic').value]",
        )
        .await;
    assert_eq!(
        filled,
        json!([
            false,
            "SELECT temp FROM 'dev/+/t' WHERE temp > 10",
            "dev/test/t"
        ])
    );
    set(
        &mut b,
        &[("rule-test-payload", r#"{"temp": 25, "hum": 40}"#)],
    )
    .await;
    click(&mut b, "#rule-test-run").await;
    let shown = b
        .until("the row", TEST_RESULT, |v| v["state"] == "matched")
        .await;
    assert_eq!(shown["row"], json!({"temp": "25"}), "{shown}");
    assert!(
        shown["verdict"].as_str().unwrap().starts_with("Matches"),
        "{shown}"
    );

    // ... and why another does not match
    set(&mut b, &[("rule-test-payload", r#"{"temp": 5}"#)]).await;
    click(&mut b, "#rule-test-run").await;
    let shown = b
        .until("the reason", TEST_RESULT, |v| v["state"] == "nomatch")
        .await;
    assert_eq!(
        shown["reason"], "WHERE is false for this message",
        "{shown}"
    );
    assert_eq!(shown["row"], json!({}));
    set(&mut b, &[("rule-test-topic", "other/x")]).await;
    click(&mut b, "#rule-test-run").await;
    let shown = b
        .until("the topic reason", TEST_RESULT, |v| {
            v["reason"].as_str().is_some_and(|r| r.contains("topic"))
        })
        .await;
    assert!(
        shown["verdict"].as_str().unwrap().contains("FROM dev/+/t"),
        "{shown}"
    );
    set(&mut b, &[("rule-test-sql", "SELECT FROM")]).await;
    click(&mut b, "#rule-test-run").await;
    b.until("the SQL error", TEST_RESULT, |v| v["state"] == "error")
        .await;

    // a bad change is refused next to the form, the rule unchanged
    click(&mut b, "[data-rule=warm] [data-action=edit-rule]").await;
    set(
        &mut b,
        &[
            ("rule-republish-topic", "out/${nosuch}"),
            ("rule-sql", "SELECT temp FROM 'dev/+/t'"),
        ],
    )
    .await;
    click(&mut b, "#rule-submit").await;
    let problems = b
        .until(
            "the server's problem",
            "[...document.querySelectorAll('#rule-problems-list [data-role=problem]')].map(l => l.textContent)",
            |v| v.as_array().is_some_and(|a| !a.is_empty()),
        )
        .await;
    assert!(problems.to_string().contains("nosuch"), "{problems}");
    assert_eq!(
        rule(&hub, "warm").await["sql"],
        "SELECT temp FROM 'dev/+/t' WHERE temp > 10"
    );

    // a rule of the configuration file opens read-only with the note
    click(&mut b, "[data-rule=hot] [data-action=view-rule]").await;
    let view = b
        .eval(
            "({ mode: document.getElementById('rule-form').dataset.mode, \
                note: !document.getElementById('rule-readonly-note').hidden, \
                noteText: document.getElementById('rule-readonly-note').textContent, \
                sqlDisabled: document.getElementById('rule-sql').disabled, \
                submit: !document.getElementById('rule-submit').hidden, \
                actions: document.getElementById('rule-config-actions').textContent })",
        )
        .await;
    assert_eq!(view["mode"], "view");
    assert_eq!(view["note"], true);
    assert!(view["noteText"].as_str().unwrap().contains("midge.toml"));
    assert_eq!(
        (&view["sqlDisabled"], &view["submit"]),
        (&json!(true), &json!(false))
    );
    assert_eq!(view["actions"], "Actions: store telemetry");

    // for the screenshot: the edit form and the test panel with a row
    click(&mut b, "[data-rule=warm] [data-action=edit-rule]").await;
    set(
        &mut b,
        &[
            (
                "rule-test-sql",
                "SELECT temp FROM 'dev/+/t' WHERE temp > 10",
            ),
            ("rule-test-topic", "dev/boiler/t"),
            ("rule-test-payload", r#"{"temp": 25}"#),
        ],
    )
    .await;
    click(&mut b, "#rule-test-run").await;
    b.until("the row again", TEST_RESULT, |v| v["state"] == "matched")
        .await;
    b.eval("window.scrollTo(0, 0)").await;
    b.screenshot("rules-edit-test").await;
    b.eval("document.getElementById('rule-test-result').scrollIntoView({block: 'end'})")
        .await;
    b.screenshot("rules-test-panel").await;
    service.stop().await;
}

#[tokio::test]
async fn the_alarms_tab_shows_an_alarm_raised_by_a_published_value_and_then_cleared() {
    let (hub, service, _state, mut b) = page("rules").await;
    b.until(
        "the Rules tab",
        "!!document.querySelector('[data-rule=hot]')",
        |v| v == true,
    )
    .await;
    // the alarm made in the Rules form
    click(&mut b, "#rule-new").await;
    set(
        &mut b,
        &[
            ("rule-name", "boiler"),
            ("rule-sql", "SELECT temp FROM 'boiler/+'"),
            ("rule-store", ""),
            ("rule-alarm-name", "boiler-hot"),
            ("rule-alarm-raise", "temp > 80"),
            ("rule-alarm-clear", "temp < 75"),
            ("rule-alarm-severity", "critical"),
        ],
    )
    .await;
    click(&mut b, "#rule-submit").await;
    b.until(
        "the rule added",
        "document.getElementById('rule-form').dataset.state",
        |v| v == "added",
    )
    .await;
    assert_eq!(
        rule(&hub, "boiler").await["spec"],
        json!({"name": "boiler", "sql": "SELECT temp FROM 'boiler/+'",
               "alarm": {"name": "boiler-hot", "raise": "temp > 80", "clear": "temp < 75",
                         "severity": "critical", "source": "topic"}})
    );

    click(&mut b, "#tab-alarms").await;
    b.until(
        "no active alarm",
        "!document.getElementById('alarms-empty').hidden",
        |v| v == true,
    )
    .await;
    let mut dev = hub.mqtt("boiler-1").await;
    for (topic, t) in [
        ("boiler/1", 79),
        ("boiler/1", 81),
        ("boiler/2", 95),
        ("boiler/1", 78),
    ] {
        dev.publish(
            topic,
            QoS::AtLeastOnce,
            false,
            &format!(r#"{{"temp": {t}}}"#),
        )
        .await;
    }
    const ACTIVE: &str = "[...document.querySelectorAll('#alarms-active tbody tr')].map(r => ({ \
         name: r.dataset.name, source: r.dataset.source, severity: r.dataset.severity, \
         value: r.querySelector('[data-role=value]').textContent, acked: r.dataset.acknowledged }))";
    let active = b
        .until("two active alarms", ACTIVE, |v| {
            v.as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
    let sources: Vec<&str> = active
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources.len(), 2);
    assert!(sources.contains(&"boiler/1") && sources.contains(&"boiler/2"));
    let one = active
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["source"] == "boiler/1")
        .unwrap();
    assert_eq!(
        one,
        &json!({"name": "boiler-hot", "source": "boiler/1", "severity": "critical", "value": "81", "acked": "false"})
    );
    let badge = b
        .eval("[document.getElementById('alarms-badge').textContent, document.getElementById('alarms-badge').hidden]")
        .await;
    assert_eq!(badge, json!(["2", false]));

    // acknowledged in the page
    click(
        &mut b,
        "#alarms-active tr[data-source='boiler/2'] [data-action=ack]",
    )
    .await;
    b.until(
        "acknowledged",
        &format!("{ACTIVE}.find(a => a.source === 'boiler/2').acked"),
        |v| v == "true",
    )
    .await;

    // 74 clears boiler/1: gone from the active list, in the history as cleared
    dev.publish("boiler/1", QoS::AtLeastOnce, false, r#"{"temp": 74}"#)
        .await;
    b.until(
        "boiler/1 cleared",
        &format!("{ACTIVE}.map(a => a.source)"),
        |v| v == &json!(["boiler/2"]),
    )
    .await;
    let history = b
        .until(
            "the history",
            "[...document.querySelectorAll('#alarms-history tbody tr')].map(r => [r.dataset.source, r.dataset.status])",
            |v| v.as_array().is_some_and(|a| a.len() == 2),
        )
        .await;
    assert!(
        history
            .as_array()
            .unwrap()
            .contains(&json!(["boiler/1", "cleared"])),
        "{history}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.screenshot("alarms").await;

    // cleared by hand in the page
    click(
        &mut b,
        "#alarms-active tr[data-source='boiler/2'] [data-action=clear]",
    )
    .await;
    b.until(
        "nothing active",
        "!document.getElementById('alarms-empty').hidden",
        |v| v == true,
    )
    .await;
    b.until(
        "the badge gone",
        "document.getElementById('alarms-badge').hidden",
        |v| v == true,
    )
    .await;
    let api = hub.get("/api/v1/alarms").await.json();
    assert_eq!(api["active"], 0, "{api}");
    service.stop().await;
}
