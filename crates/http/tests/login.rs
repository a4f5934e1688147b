//! A browser that opens a locked listener gets a login page (not a raw JSON 401): wrong
//! password → a readable error in the page; right → the dashboard, whose API calls the
//! session cookie signs; "Log out" ends it. Scripts keep getting JSON 401 with
//! `WWW-Authenticate`. Headless Chromium over DevTools; set MIDGE_SCREENSHOTS=<dir> to
//! keep the pages as PNG.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::time::{Duration, Instant};

use common::browser::Browser;
use common::*;

fn write_password(dir: &std::path::Path) -> std::path::PathBuf {
    let hash =
        midge_auth::PasswordHash::create(b"s3cret", midge_auth::HashAlgorithm::Sha512Pbkdf2, 1_000)
            .unwrap();
    let path = dir.join("passwd");
    std::fs::write(&path, format!("alice:{}\n", hash.encode())).unwrap();
    path
}

async fn locked() -> Hub {
    Hub::start(|c, dir| {
        c.allow_anonymous = false;
        c.password_file = Some(write_password(dir));
    })
    .await
}

/// Fill the form and send it.
async fn log_in(b: &mut Browser, user: &str, password: &str) {
    b.until(
        "the login form",
        "document.getElementById('login-form') !== null && document.readyState === 'complete'",
        |v| v == true,
    )
    .await;
    b.eval(&format!(
        "(() => {{ document.getElementById('login-username').value = {user:?}; \
           document.getElementById('login-password').value = {password:?}; \
           document.getElementById('login-submit').click(); return true; }})()"
    ))
    .await;
}

#[tokio::test]
async fn a_browser_logs_in_with_a_form_and_the_cookie_opens_the_api() {
    let hub = locked().await;
    let mut b = Browser::open(&format!("http://{}/", hub.addr)).await;

    // the locked page: a login form, not JSON
    let v = b
        .until(
            "the login page",
            "({path: location.pathname, next: new URLSearchParams(location.search).get('next'), \
               form: !!document.getElementById('login-form'), \
               labels: [...document.querySelectorAll('label')].map(l => l.textContent), \
               error: document.getElementById('login-error').hidden})",
            |v| v["form"] == true,
        )
        .await;
    assert_eq!(v["path"], "/login", "{v}");
    assert_eq!(v["next"], "/", "{v}");
    assert_eq!(
        v["labels"],
        serde_json::json!(["Username", "Password"]),
        "{v}"
    );
    assert_eq!(v["error"], true, "no error shown before a try: {v}");
    b.screenshot("login-page").await;

    // a wrong password: the page again, with the reason in words
    log_in(&mut b, "alice", "wrong").await;
    let v = b
        .until(
            "the error text",
            "({shown: !document.getElementById('login-error').hidden, \
               text: document.getElementById('login-error').textContent, \
               user: document.getElementById('login-username').value})",
            |v| v["shown"] == true,
        )
        .await;
    assert_eq!(v["text"], "Wrong username or password.", "{v}");
    assert_eq!(v["user"], "alice", "the username is kept: {v}");
    b.screenshot("login-wrong-password").await;

    // the right one: the dashboard, and its API calls work with the cookie alone
    log_in(&mut b, "alice", "s3cret").await;
    b.until(
        "the dashboard",
        "location.pathname === '/' && document.body.dataset.ready === '1'",
        |v| v == true,
    )
    .await;
    let v = b
        .eval(
            "Promise.all([fetch('/api/v1/stats').then(r => r.status), \
               fetch('/api/v1/session').then(r => r.json())]) \
             .then(([s, who]) => ({stats: s, who, cookie: document.cookie}))",
        )
        .await;
    assert_eq!(v["stats"], 200, "{v}");
    assert_eq!(v["who"]["name"], "alice", "{v}");
    assert_eq!(v["who"]["session"], true, "{v}");
    assert_eq!(v["cookie"], "", "the session cookie is HttpOnly: {v}");
    let v = b
        .until(
            "the Log out link",
            "!document.getElementById('logout').hidden",
            |v| v == true,
        )
        .await;
    assert_eq!(v, true);
    b.screenshot("login-dashboard").await;

    // a script without the cookie still gets JSON 401 with WWW-Authenticate
    let r = request(hub.addr, "GET", "/api/v1/stats", &[], None).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").starts_with("Basic "));
    assert!(!r.error().is_empty());
    let r = request(hub.addr, "GET", "/", &[("accept", "*/*")], None).await;
    assert_eq!(r.status, 401, "no text/html asked: JSON");
    assert!(r.header("content-type").starts_with("application/json"));

    // log out: back to the form, and the old cookie opens nothing
    b.eval("document.getElementById('logout').click(), true")
        .await;
    b.until(
        "the login page after logging out",
        "location.pathname === '/login' && !!document.getElementById('login-form')",
        |v| v == true,
    )
    .await;
    // (the login page may not fetch: its CSP has no connect-src) opening the dashboard
    // again lands on the form
    b.eval("location.href = '/api/v1/stats', true").await;
    b.until(
        "the login page for the API after logging out",
        "location.pathname === '/login' && \
         new URLSearchParams(location.search).get('next') === '/api/v1/stats'",
        |v| v == true,
    )
    .await;
}

#[tokio::test]
async fn the_login_route_sets_a_strict_cookie_delays_failures_and_refuses_other_sites() {
    let hub = locked().await;
    let form = [("content-type", "application/x-www-form-urlencoded")];

    // a page request is sent to the form, keeping where it was going
    let r = request(
        hub.addr,
        "GET",
        "/dashboard?x=1",
        &[("accept", "text/html,application/xhtml+xml,*/*;q=0.8")],
        None,
    )
    .await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), "/login?next=%2Fdashboard%3Fx%3D1");
    // Basic credentials that are wrong are a script's: JSON, whatever Accept says
    let r = request(
        hub.addr,
        "GET",
        "/",
        &[
            ("accept", "text/html"),
            ("authorization", "Basic YWxpY2U6eA=="),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 401);

    // a failed login is answered after a delay, with the page and no cookie
    let started = Instant::now();
    let r = request(
        hub.addr,
        "POST",
        "/login",
        &form,
        Some(b"username=alice&password=nope&next=%2F".to_vec()),
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.status, 401);
    assert!(
        r.text().contains("Wrong username or password."),
        "{}",
        r.text()
    );
    assert!(r.header("set-cookie").is_empty());

    // a right one: a session cookie, HttpOnly and SameSite=Strict, expiring; back to next
    let r = request(
        hub.addr,
        "POST",
        "/login",
        &form,
        Some(b"username=alice&password=s3cret&next=%2F%3Ftab%3Ddata".to_vec()),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), "/?tab=data");
    let cookie = r.header("set-cookie");
    for part in [
        "midge_session=",
        "HttpOnly",
        "SameSite=Strict",
        "Max-Age=43200",
        "Path=/",
    ] {
        assert!(cookie.contains(part), "{part} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    let r = request(
        hub.addr,
        "GET",
        "/api/v1/stats",
        &[("cookie", pair.as_str())],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request(
        hub.addr,
        "GET",
        "/api/v1/stats",
        &[("cookie", "midge_session=forged")],
        None,
    )
    .await;
    assert_eq!(r.status, 401);

    // next may only name a page of this site
    let r = request(
        hub.addr,
        "POST",
        "/login",
        &form,
        Some(b"username=alice&password=s3cret&next=%2F%2Fevil.example%2F".to_vec()),
    )
    .await;
    assert_eq!(r.header("location"), "/");

    // a form posted from another site is refused
    let r = request(
        hub.addr,
        "POST",
        "/login",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", "http://evil.example"),
        ],
        Some(b"username=alice&password=s3cret".to_vec()),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.header("set-cookie").is_empty());

    // logging out ends the session on the server, not only in the browser
    let r = request(
        hub.addr,
        "GET",
        "/logout",
        &[("cookie", pair.as_str())],
        None,
    )
    .await;
    assert_eq!(r.status, 303);
    assert!(r.header("set-cookie").contains("Max-Age=0"));
    let r = request(
        hub.addr,
        "GET",
        "/api/v1/stats",
        &[("cookie", pair.as_str())],
        None,
    )
    .await;
    assert_eq!(r.status, 401);
}
