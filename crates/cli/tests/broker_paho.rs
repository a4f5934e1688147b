//! midge serve against Python's paho-mqtt (2.x): the classic demo and the MQTT 5 features a
//! paho user reaches for. The scenarios live in `py/paho_scenarios.py`; each prints one JSON
//! object with what it observed, and the assertions are here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::time::Duration;

use common::{Midge, py_dir, run};
use serde_json::{Value, json};

fn scenario(b: &Midge, name: &str, args: &[&str]) -> Value {
    let script = py_dir().join("paho_scenarios.py");
    let port = b.port.to_string();
    let mut all = vec![script.to_str().unwrap(), name, &port];
    all.extend_from_slice(args);
    let d = run("python3", &all, Duration::from_secs(40));
    assert_eq!(d.code, Some(0), "paho scenario {name} failed: {d:#?}");
    let last = d.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{name}: {e}: {d:#?}"))
}

#[test]
fn paho_subscriber_on_baisong_receives_the_json_reading_in_3_1_1_and_5() {
    let b = Midge::start();
    for v in ["4", "5"] {
        let r = scenario(&b, "classic", &[v]);
        assert_eq!(
            r,
            json!({"msg": {"topic": "baisong", "payload": "{\"pin\": 17, \"value\": 10}",
                           "qos": 1, "retain": false}, "extra": 0}),
            "protocol {v}"
        );
    }
}

#[test]
fn v5_publish_properties_pass_through_unchanged() {
    let b = Midge::start();
    let r = scenario(&b, "properties", &[]);
    let m = &r["msg"];
    assert_eq!(m["payload"], "{\"pin\": 17, \"value\": 10}");
    // user properties keep their order and duplicates [MQTT-3.3.2-18]
    assert_eq!(
        m["UserProperty"],
        json!([["pin", "17"], ["unit", "mA"], ["pin", "18"]])
    );
    assert_eq!(m["ContentType"], "application/json");
    assert_eq!(m["ResponseTopic"], "baisong/reply");
    assert_eq!(m["CorrelationData"], "0102ff");
    assert_eq!(m["PayloadFormatIndicator"], 1);
    // the remaining lifetime is forwarded [MQTT-3.3.2-6]
    let left = m["MessageExpiryInterval"].as_u64().unwrap();
    assert!((45..=60).contains(&left), "{left}");
}

#[test]
fn an_expired_message_is_not_delivered_to_a_returning_session_and_the_rest_carry_their_remaining_lifetime()
 {
    let b = Midge::start();
    let r = scenario(&b, "expiry", &[]);
    assert_eq!(r["session_present"], true);
    let msgs = r["msgs"].as_array().unwrap();
    assert_eq!(msgs.len(), 1, "{r}");
    assert_eq!(msgs[0]["payload"], "long-lived");
    let left = msgs[0]["MessageExpiryInterval"].as_u64().unwrap();
    // 100 s minus the ~2.2 s it waited (generous for a loaded machine)
    assert!((85..=98).contains(&left), "remaining expiry {left}");
}

#[test]
fn v5_subscription_identifiers_of_every_matching_subscription_are_sent() {
    let b = Midge::start();
    let r = scenario(&b, "sub-ids", &[]);
    let msgs = r["msgs"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "one delivery per message per client: {r}");
    let mut ids: Vec<u64> = msgs[0]["SubscriptionIdentifier"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(msgs[0]["payload"], "21");
    assert_eq!(ids, vec![7, 9]);
    assert_eq!(
        msgs[0]["qos"], 1,
        "highest QoS of the overlapping subscriptions"
    );
    assert_eq!(msgs[1]["payload"], "40");
    assert_eq!(msgs[1]["SubscriptionIdentifier"], json!([9]));
    assert_eq!(msgs[1]["qos"], 0);
}

#[test]
fn shared_subscription_splits_messages_between_two_subscribers_with_none_lost() {
    let b = Midge::start();
    for v in ["4", "5"] {
        let r = scenario(&b, "shared", &[v, "200"]);
        let list = |k: &str| -> Vec<String> {
            r[k].as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        let (a, bb, other) = (list("a"), list("b"), list("other"));
        assert!(
            !a.is_empty() && !bb.is_empty(),
            "{v}: one member got nothing"
        );
        let mut all: Vec<String> = a.iter().chain(&bb).cloned().collect();
        all.sort();
        let mut want: Vec<String> = (0..200).map(|i| format!("job-{i}")).collect();
        want.sort();
        assert_eq!(all, want, "{v}: every job exactly once across the group");
        let want_in_order: Vec<String> = (0..200).map(|i| format!("job-{i}")).collect();
        assert_eq!(
            other, want_in_order,
            "{v}: the non-shared subscriber gets all"
        );
    }
}

#[test]
fn will_is_published_on_abnormal_disconnect_and_not_on_a_clean_one() {
    let b = Midge::start();
    let r = scenario(&b, "will", &[]);
    for abnormal in ["kill", "socket"] {
        assert_eq!(r[abnormal]["payload"], "child died", "{abnormal}: {r}");
        assert_eq!(r[abnormal]["qos"], 1);
    }
    assert_eq!(r["clean5"], Value::Null, "{r}");
    assert_eq!(r["clean311"], Value::Null, "{r}");
}

#[test]
fn will_delay_interval_postpones_the_will_and_a_reconnect_cancels_it() {
    let b = Midge::start();
    let r = scenario(&b, "will-delay", &[]);
    assert_eq!(r["early"], Value::Null, "will sent before its delay: {r}");
    assert_eq!(r["late"]["payload"], "delayed", "{r}");
    let after = r["after"].as_f64().unwrap();
    assert!(
        (1.8..=5.0).contains(&after),
        "will after {after} s, delay 2 s"
    );
    assert_eq!(r["cancelled"], Value::Null, "{r}");
    assert_eq!(r["session_end"]["payload"], "session ended", "{r}");
}

#[test]
fn session_expiry_keeps_the_session_for_its_interval_only() {
    let b = Midge::start();
    let r = scenario(&b, "session-expiry", &[]);
    assert_eq!(r["first_present"], false);
    assert_eq!(r["resumed_present"], true);
    assert_eq!(r["queued"]["payload"], "queued");
    assert_eq!(r["expired_present"], false, "{r}");
    assert_eq!(r["after_expiry"], json!([]));
}

#[test]
fn no_local_subscription_does_not_echo_the_clients_own_messages() {
    let b = Midge::start();
    let r = scenario(&b, "no-local", &[]);
    let msgs = r["msgs"].as_array().unwrap();
    let payloads: Vec<&str> = msgs
        .iter()
        .map(|m| m["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, vec!["other"]);
}

#[test]
fn retain_as_published_keeps_the_retain_flag_on_live_messages() {
    let b = Midge::start();
    let r = scenario(&b, "rap", &[]);
    let flags = |k: &str| -> Vec<(String, bool)> {
        r[k].as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["payload"].as_str().unwrap().to_owned(),
                    m["retain"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        flags("rap"),
        vec![("r1".to_owned(), true), ("n1".to_owned(), false)]
    );
    assert_eq!(
        flags("plain"),
        vec![("r1".to_owned(), false), ("n1".to_owned(), false)]
    );
}

#[test]
fn retain_handling_0_1_2_send_retained_messages_always_if_new_or_never() {
    let b = Midge::start();
    let r = scenario(&b, "retain-handling", &[]);
    let count = |k: &str| r[k].as_array().unwrap().len();
    assert_eq!(count("rh2"), 0, "{r}");
    assert_eq!(count("rh1_new"), 1, "{r}");
    assert_eq!(r["rh1_new"][0]["payload"], "stored");
    assert_eq!(r["rh1_new"][0]["retain"], true);
    assert_eq!(count("rh1_existing"), 0, "{r}");
    assert_eq!(count("rh0"), 2, "{r}");
}

#[test]
fn topic_aliases_set_by_the_client_are_resolved_and_can_be_remapped() {
    let b = Midge::start();
    let r = scenario(&b, "topic-alias", &[]);
    let got: Vec<(String, String)> = r["msgs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["topic"].as_str().unwrap().to_owned(),
                m["payload"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("alias/long/topic/name", "first"),
        ("alias/long/topic/name", "second"),
        ("alias/other", "third"),
        ("alias/other", "fourth"),
    ]
    .iter()
    .map(|(t, p)| ((*t).to_owned(), (*p).to_owned()))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn connack_assigns_a_client_id_and_announces_the_configured_limits() {
    let b = Midge::with_config(
        "[limits]\ntopic_alias_maximum = 12\nmax_packet_size = 65536\nreceive_maximum = 100\n",
    );
    let r = scenario(&b, "connack", &[]);
    let id = r["AssignedClientIdentifier"].as_str().unwrap();
    assert!(!id.is_empty());
    assert_ne!(r["second"].as_str().unwrap(), id, "assigned ids are unique");
    assert_eq!(r["TopicAliasMaximum"], 12);
    assert_eq!(r["MaximumPacketSize"], 65536);
    assert_eq!(r["ReceiveMaximum"], 100);
    // QoS 2 and retain are available: those properties are absent [MQTT-3.2.2-9]
    assert_eq!(r.get("MaximumQoS"), None);
    assert_eq!(r.get("RetainAvailable"), None);
}
