//! The status page at `/admin/`: in a real browser (headless Chromium) with a
//! login through its form, live sessions, hostile stderr shown as text, and a
//! session ended by its button; and over plain HTTP, who may reach it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::browser::Browser;
use crate::common::*;

const KEY: &str = "admin-key-0123456789";

fn admin_gateway_config(servers: &str) -> String {
    format!("{FAST_GATEWAY}admin_key = \"{KEY}\"\n{servers}")
}

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(90))
        .build()
        .unwrap()
}

/// Logs in through the form's POST; returns the response.
async fn post_login(client: &reqwest::Client, gw: &Gateway, key: &str) -> reqwest::Response {
    client
        .post(format!("{}/admin/login", gw.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("key={key}"))
        .send()
        .await
        .unwrap()
}

/// The `name=value` part of a login's `Set-Cookie`.
fn cookie_of(response: &reqwest::Response) -> (String, String) {
    let set = response
        .headers()
        .get("set-cookie")
        .expect("a login sets a cookie")
        .to_str()
        .unwrap()
        .to_owned();
    (set.split(';').next().unwrap().to_owned(), set)
}

async fn admin_get(gw: &Gateway, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut request = gw.http.get(format!("{}{path}", gw.base));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

async fn admin_delete(
    gw: &Gateway,
    session: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
) -> u16 {
    let mut request = gw
        .http
        .delete(format!("{}/admin/sessions/{session}", gw.base));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_admin_key_the_status_page_does_not_exist() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    for path in ["/admin", "/admin/", "/admin/status.js", "/admin/page.css"] {
        assert_eq!(admin_get(&gw, path, None).await.status(), 404, "{path}");
    }
    let login = post_login(&no_redirects(), &gw, KEY).await;
    assert_eq!(login.status(), 404);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_login_cookie_is_http_only_strict_and_ends_sessions_only_from_the_page() {
    let gw = Gateway::start(&admin_gateway_config(&test_server("t", &[]))).await;
    let session = gw.open_session("t").await;
    let backend = gw.backend_pid("t", &session).await;
    let client = no_redirects();

    // Without a login: the form, with the page's security headers.
    let form = admin_get(&gw, "/admin/", None).await;
    assert_eq!(form.status(), 200);
    let headers = form.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-store");
    let html = form.text().await.unwrap();
    assert!(
        html.contains("name=\"key\"") && !html.contains("status.js"),
        "{html}"
    );
    for path in ["/admin/status.js", "/admin/page.css"] {
        let asset = admin_get(&gw, path, None).await;
        assert_eq!(asset.status(), 200, "{path}");
        assert_eq!(asset.headers()["x-content-type-options"], "nosniff");
    }

    // Neither the JSON API nor DELETE without the key or a login.
    assert_eq!(admin_get(&gw, "/admin/sessions", None).await.status(), 401);
    let bogus = "mcpgate_admin=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    assert_eq!(
        admin_get(&gw, "/admin/sessions", Some(bogus))
            .await
            .status(),
        401
    );
    assert_eq!(admin_delete(&gw, &session, None, None).await, 401);
    assert_eq!(
        admin_delete(&gw, &session, Some(bogus), Some(&gw.base)).await,
        401
    );

    // A wrong key at the form: 401, the form again, no cookie.
    let wrong = post_login(&client, &gw, "wrong-key-0123456789").await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    assert!(wrong.text().await.unwrap().contains("not valid"));
    // A login posted from a foreign page: 403.
    let foreign = client
        .post(format!("{}/admin/login", gw.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "http://evil.example.com")
        .body(format!("key={KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    assert!(foreign.headers().get("set-cookie").is_none());

    // The right key: a 303 to the page with a cookie that is the gateway's
    // own token (not the key), HttpOnly, SameSite=Strict, only for /admin.
    let login = post_login(&client, &gw, KEY).await;
    assert_eq!(login.status(), 303);
    assert_eq!(login.headers()["location"], "/admin/");
    let (cookie, set_cookie) = cookie_of(&login);
    assert!(set_cookie.contains("; HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("; SameSite=Strict"), "{set_cookie}");
    assert!(set_cookie.contains("; Path=/admin"), "{set_cookie}");
    assert!(set_cookie.contains("; Max-Age=28800"), "{set_cookie}");
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    assert!(!set_cookie.contains(KEY), "{set_cookie}");
    let page = admin_get(&gw, "/admin/", Some(&cookie)).await;
    assert!(page.text().await.unwrap().contains("status.js"));
    let table: Value = admin_get(&gw, "/admin/sessions", Some(&cookie))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(table["sessions"][0]["id"], session.as_str(), "{table}");

    // With the cookie, DELETE only from the page's own origin: not from a
    // foreign one, not from another port of this host (the same site to a
    // browser), not without an Origin.
    let port = gw.base.rsplit(':').next().unwrap();
    let other_port = if port == "1" { "2" } else { "1" };
    for origin in [
        Some("http://evil.example.com".to_owned()),
        Some(format!("http://127.0.0.1:{other_port}")),
        None,
    ] {
        let status = admin_delete(&gw, &session, Some(&cookie), origin.as_deref()).await;
        assert_eq!(status, 403, "Origin {origin:?}");
    }
    assert!(process_alive(backend), "a refused DELETE ended nothing");
    assert_eq!(
        admin_delete(&gw, &session, Some(&cookie), Some(&gw.base)).await,
        200
    );
    wait_until("the backend is stopped", || !process_alive(backend)).await;
    gw.assert_session_gone("t", &session).await;

    // Logging out ends the login on the gateway, not only in the browser.
    let logout = client
        .post(format!("{}/admin/logout", gw.base))
        .header("cookie", &cookie)
        .header("origin", &gw.base)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 303);
    assert!(cookie_of(&logout).1.contains("Max-Age=0"));
    assert_eq!(
        admin_get(&gw, "/admin/sessions", Some(&cookie))
            .await
            .status(),
        401
    );
    gw.stop().await;
}

/// The supervisor pids the admin API shows for `session`.
fn pids_of(table: &Value, session: &str) -> Vec<u64> {
    table["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == session)
        .unwrap_or_else(|| panic!("no {session} in {table}"))["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect()
}

const SCRIPT_LINE: &str = "<script>window.pwned=1</script>";
const IMG_LINE: &str = "<img src=x onerror=\"window.pwned=2\">";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_the_status_page_logs_in_shows_sessions_safely_and_ends_one() {
    // Three servers (one keeping a warm spare), three sessions, one restart:
    // what an operator might see.
    let servers = format!(
        "{}warm_spares = 1\n{}{}",
        test_server("notes", &[]),
        test_server("search", &[]),
        test_server("tickets", &[])
    );
    let gw = Gateway::start(&admin_gateway_config(&servers)).await;
    let notes = gw.open_session("notes").await;
    let search = gw.open_session("search").await;
    let notes_again = gw.open_session("notes").await;
    let notes_backend = gw.backend_pid("notes", &notes).await;
    for text in [SCRIPT_LINE, IMG_LINE] {
        let answer = gw
            .call_tool(
                "notes",
                &notes,
                "e",
                "stderr",
                json!({"lines": 1, "text": text}),
            )
            .await;
        assert!(answer["result"].is_object(), "{answer}");
    }
    // The search backend crashes once and is started again.
    let _ = gw
        .call_tool("search", &search, "c", "crash", json!({}))
        .await;
    let search_backend = gw.backend_pid("search", &search).await;
    let bearer = format!("Bearer {KEY}");
    let mut table = Value::Null;
    let mut wanted = false;
    let deadline = std::time::Instant::now() + DEADLINE;
    // Until the admin API shows the stderr lines and a ready spare.
    while !wanted {
        assert!(std::time::Instant::now() < deadline, "admin API: {table}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        table = gw.admin_sessions(&bearer).await;
        let tail = table.to_string();
        wanted = tail.contains("window.pwned=1")
            && tail.contains("onerror")
            && table["spares"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["server"] == "notes" && s["ready"] == true);
    }
    let notes_pids = pids_of(&table, &notes);
    let search_pids = pids_of(&table, &search);
    let notes_again_pids = pids_of(&table, &notes_again);

    let mut browser = Browser::start();
    let page = browser.new_page(1360, 860).await;
    browser
        .navigate(&page, &format!("{}/admin/", gw.base))
        .await;
    browser
        .wait_for(
            &page,
            "the login form is shown",
            "document.getElementById('key') !== null",
        )
        .await;
    browser
        .eval(&page, "document.getElementById('key').focus()")
        .await
        .unwrap();
    browser.type_text(&page, KEY).await;
    browser
        .eval(
            &page,
            "document.querySelector('button[type=submit]').click()",
        )
        .await
        .unwrap();
    let rows = format!(
        "(() => {{ const ids = [...document.querySelectorAll('#sessions tbody tr')]
            .map(r => r.dataset.sessionId); return ids.length === 3
            && ids.includes('{notes}') && ids.includes('{search}')
            && ids.includes('{notes_again}'); }})()"
    );
    browser
        .wait_for(&page, "both sessions are listed", &rows)
        .await;
    // Each row shows its session's pids.
    for (session, pids) in [
        (&notes, &notes_pids),
        (&search, &search_pids),
        (&notes_again, &notes_again_pids),
    ] {
        let shown: Value = browser
            .eval(
                &page,
                &format!(
                    "[...document.querySelectorAll('tr[data-session-id=\"{session}\"] .pid')]
                        .map(p => Number(p.textContent))"
                ),
            )
            .await
            .unwrap();
        assert_eq!(shown, json!(pids), "session {session}");
    }
    // The hostile stderr lines are text on the page, and ran nothing.
    let shown_as_text = format!(
        "[...document.querySelectorAll('tr[data-session-id=\"{notes}\"] pre.stderr')]
            .some(p => p.textContent.includes({SCRIPT_LINE:?}) && p.textContent.includes({IMG_LINE:?}))"
    );
    browser
        .wait_for(&page, "the stderr lines are shown as text", &shown_as_text)
        .await;
    assert_eq!(
        browser.eval(&page, "typeof window.pwned").await.unwrap(),
        "undefined"
    );
    assert_eq!(
        browser
            .eval(
                &page,
                "document.querySelectorAll('main script, main img').length"
            )
            .await
            .unwrap(),
        0
    );
    // The login cookie is out of the page's scripts' reach (HttpOnly), and
    // the stylesheet applied under the page's CSP.
    assert_eq!(browser.eval(&page, "document.cookie").await.unwrap(), "");
    assert_eq!(
        browser
            .eval(
                &page,
                "getComputedStyle(document.querySelector('header')).display"
            )
            .await
            .unwrap(),
        "flex"
    );
    // The servers (with the crash remembered) and the spare.
    browser
        .wait_for(
            &page,
            "the servers and the spare are listed",
            "document.querySelectorAll('#servers tbody tr').length === 3
             && document.querySelector('#servers tr[data-server=search]').textContent.includes('exited')
             && document.querySelectorAll('#spares tbody tr').length === 1",
        )
        .await;
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    browser.screenshot(&page, &shot).await;
    eprintln!("status page screenshot: {}", shot.display());

    // End the notes session with its button: the row goes, and so does its backend.
    browser
        .eval(
            &page,
            &format!(
                "document.querySelector('tr[data-session-id=\"{notes}\"] button.end').click()"
            ),
        )
        .await
        .unwrap();
    let without_notes = format!(
        "(() => {{ const ids = [...document.querySelectorAll('#sessions tbody tr')]
            .map(r => r.dataset.sessionId); return ids.length === 2 && !ids.includes('{notes}'); }})()"
    );
    browser
        .wait_for(&page, "the ended session's row is gone", &without_notes)
        .await;
    wait_until("the ended session's backend is stopped", || {
        !process_alive(notes_backend)
    })
    .await;
    gw.assert_session_gone("notes", &notes).await;
    assert!(
        process_alive(search_backend),
        "the other session is untouched"
    );
    // A later poll does not bring it back.
    browser
        .wait_for(
            &page,
            "a later poll shows the other two sessions",
            &format!(
                "document.getElementById('summary').textContent.includes('2 sessions') && {without_notes}"
            ),
        )
        .await;

    // Logging out shows the form again, and the page's fetches are refused.
    browser
        .eval(&page, "document.getElementById('logout').click()")
        .await
        .unwrap();
    browser
        .wait_for(
            &page,
            "the login form is back",
            "document.getElementById('key') !== null",
        )
        .await;
    assert_eq!(
        browser
            .eval(&page, "fetch('/admin/sessions').then(r => r.status)")
            .await
            .unwrap(),
        401
    );
    assert!(
        !browser
            .events
            .iter()
            .any(|e| e["method"] == "Runtime.exceptionThrown"),
        "the page threw: {:?}",
        browser.events
    );
    browser.stop().await;
    gw.stop().await;
}
