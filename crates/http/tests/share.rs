//! Issue 13: share links. A token opens the dashboard read-only without a login (also as
//! `Authorization: Bearer`), reads only its widgets' topics, cannot publish, expires, and
//! can be listed and revoked.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use midge_client::QoS;
use midge_http::{Widget, WidgetKind};
use serde_json::{Value, json};

fn basic() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    )
}

async fn locked_hub() -> Hub {
    Hub::start(|c, dir| {
        let hash = midge_auth::PasswordHash::create(
            b"s3cret",
            midge_auth::HashAlgorithm::Sha512Pbkdf2,
            1_000,
        )
        .unwrap();
        let path = dir.join("passwd");
        std::fs::write(&path, format!("alice:{}\n", hash.encode())).unwrap();
        c.allow_anonymous = false;
        c.password_file = Some(path);
        c.dashboard_file = Some(dir.join("dashboard.json"));
        // a shared dashboard's widgets start from the last values (off by default)
        c.last_values_topics = 10_000;
        let mut w = Widget::new(WidgetKind::Value, "sensors/+/temp");
        w.field = "temp".into();
        c.widgets = vec![w];
    })
    .await
}

async fn call(
    hub: &Hub,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = auth {
        headers.push(("authorization", a));
    }
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    request(
        hub.addr,
        method,
        path,
        &headers,
        body.map(|b| b.to_string().into_bytes()),
    )
    .await
}

#[tokio::test]
async fn a_share_link_opens_the_dashboard_read_only_until_it_expires_or_is_revoked() {
    let hub = locked_hub().await;
    let admin = basic();
    // nobody but an operator makes tokens
    let r = call(
        &hub,
        "POST",
        "/api/v1/tokens",
        None,
        Some(json!({"ttl": 60})),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = call(
        &hub,
        "POST",
        "/api/v1/tokens",
        Some(&admin),
        Some(json!({"ttl": 3600, "dashboard": "main"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let made = r.json();
    let token = made["token"].as_str().unwrap().to_owned();
    let id = made["id"].as_str().unwrap().to_owned();
    assert_eq!(made["path"], format!("/?token={token}"));
    assert!(
        made["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/?token={token}"))
    );

    let mut dev = hub.mqtt("share-dev").await;
    dev.publish("sensors/k/temp", QoS::AtLeastOnce, false, r#"{"temp": 21}"#)
        .await;
    dev.publish("secret/x", QoS::AtLeastOnce, false, "hidden")
        .await;

    // the page by its link sets the cookie the page's own requests then carry
    let page = call(&hub, "GET", &format!("/?token={token}"), None, None).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let cookie = page.header("set-cookie");
    assert!(
        cookie.starts_with(&format!("midge_share={token}")),
        "{cookie}"
    );
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let with_cookie = |path: String| {
        let addr = hub.addr;
        let c = cookie.clone();
        async move { request(addr, "GET", &path, &[("cookie", c.as_str())], None).await }
    };
    let bearer = format!("Bearer {token}");
    for path in [
        "/api/v1/dashboard".to_owned(),
        "/assets/app.js".to_owned(),
        "/api/v1/last?topic=sensors/%2B/temp".to_owned(),
        "/api/v1/last?topic=sensors/k/temp".to_owned(),
        "/api/v1/tables/telemetry/series?field=temp&topic=sensors/k/temp".to_owned(),
    ] {
        let r = with_cookie(path.clone()).await;
        assert!(
            r.status == 200 || r.status == 404,
            "{path}: {} {}",
            r.status,
            r.text()
        );
        let r = call(&hub, "GET", &path, Some(&bearer), None).await;
        assert!(
            r.status == 200 || r.status == 404,
            "{path}: {} {}",
            r.status,
            r.text()
        );
    }
    let last = eventually("the widget's last value", || async {
        let r = call(
            &hub,
            "GET",
            "/api/v1/last?topic=sensors/%2B/temp",
            Some(&bearer),
            None,
        )
        .await;
        let v = r.json();
        (!v["topics"].as_array().unwrap().is_empty()).then_some(v)
    })
    .await;
    assert_eq!(last["topics"][0]["payload"], r#"{"temp": 21}"#);
    // the live stream of the widget's topic works with the cookie
    let sse = Sse::open(
        hub.addr,
        "/api/v1/live?filter=sensors/%2B/temp",
        &[("cookie", cookie.as_str())],
    )
    .await;
    assert_eq!(sse.status, 200);
    drop(sse);

    // nothing else: no publishing, no other topic, no figures, no rules, no token admin
    for (method, path, body) in [
        (
            "POST",
            "/api/v1/publish",
            Some(json!({"topic": "sensors/k/temp", "payload": "x"})),
        ),
        ("GET", "/api/v1/last?topic=secret/x", None),
        ("GET", "/api/v1/last", None),
        ("GET", "/api/v1/last?topic=%23", None),
        ("GET", "/api/v1/live?filter=%23", None),
        ("GET", "/api/v1/tables/telemetry/rows", None),
        (
            "GET",
            "/api/v1/tables/telemetry/series?field=temp&topic=secret/x",
            None,
        ),
        ("GET", "/api/v1/stats", None),
        ("GET", "/metrics", None),
        ("GET", "/api/v1/rules", None),
        ("GET", "/api/v1/tokens", None),
        ("PUT", "/api/v1/dashboard", Some(json!({"widgets": []}))),
        ("DELETE", &format!("/api/v1/tokens/{id}"), None),
    ] {
        let r = call(&hub, method, path, Some(&bearer), body.clone()).await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text());
        let r = request(
            hub.addr,
            method,
            path,
            &[
                ("cookie", cookie.as_str()),
                ("content-type", "application/json"),
            ],
            body.map(|b| b.to_string().into_bytes()),
        )
        .await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text());
    }

    // listed (never the token), revoked: the link stops at once
    let l = call(&hub, "GET", "/api/v1/tokens", Some(&admin), None)
        .await
        .json();
    assert_eq!(l["tokens"][0]["id"], id.as_str());
    assert!(!l.to_string().contains(&token));
    let r = call(
        &hub,
        "DELETE",
        &format!("/api/v1/tokens/{id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    for r in [
        call(&hub, "GET", "/api/v1/dashboard", Some(&bearer), None).await,
        with_cookie("/api/v1/dashboard".to_owned()).await,
        call(&hub, "GET", &format!("/?token={token}"), None, None).await,
    ] {
        assert_eq!(r.status, 401, "{}", r.text());
        assert!(
            r.error().contains("expired or was revoked"),
            "{}",
            r.error()
        );
    }
    let r = call(
        &hub,
        "DELETE",
        &format!("/api/v1/tokens/{id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    // an operator's credentials win over a share cookie in the same browser
    let r = request(
        hub.addr,
        "GET",
        "/api/v1/stats",
        &[
            ("cookie", cookie.as_str()),
            ("authorization", admin.as_str()),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // the health check never needs anything, whatever is sent
    let r = call(&hub, "GET", "/api/v1/health", Some("Bearer nonsense"), None).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // a short TTL runs out
    let r = call(
        &hub,
        "POST",
        "/api/v1/tokens",
        Some(&admin),
        Some(json!({"ttl": 1})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let short = format!("Bearer {}", r.json()["token"].as_str().unwrap());
    assert_eq!(
        call(&hub, "GET", "/api/v1/dashboard", Some(&short), None)
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        call(&hub, "GET", "/api/v1/dashboard", Some(&short), None)
            .await
            .status,
        401
    );

    for bad in [
        json!({"ttl": 0}),
        json!({"ttl": 100_000_000}),
        json!({"nope": 1}),
    ] {
        let r = call(
            &hub,
            "POST",
            "/api/v1/tokens",
            Some(&admin),
            Some(bad.clone()),
        )
        .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    let r = call(
        &hub,
        "POST",
        "/api/v1/tokens",
        Some(&admin),
        Some(json!({"dashboard": "other"})),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
}

#[tokio::test]
async fn share_tokens_survive_a_restart_of_the_http_server() {
    let mut hub = locked_hub().await;
    let r = call(
        &hub,
        "POST",
        "/api/v1/tokens",
        Some(&basic()),
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    let bearer = format!("Bearer {}", v["token"].as_str().unwrap());
    let expires = v["expires"].as_i64().unwrap();
    assert!(
        expires - v["created"].as_i64().unwrap() == 86_400_000,
        "default ttl one day: {v}"
    );
    hub.restart_http().await;
    assert_eq!(
        call(&hub, "GET", "/api/v1/dashboard", Some(&bearer), None)
            .await
            .status,
        200
    );
    let saved = std::fs::read_to_string(hub.dir.path().join("share_tokens.json")).unwrap();
    assert!(
        !saved.contains(v["token"].as_str().unwrap()),
        "only a hash is kept"
    );
}
