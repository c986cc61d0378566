//! The status page at `/admin/`: an operator's live view of servers, sessions
//! and warm spares, in a browser, behind `admin_key`.
//!
//! Owns the page's routes: the page itself (or, without a login, the login
//! form), its stylesheet and script, logging in and out. The page is plain
//! HTML, CSS and JavaScript compiled into the binary (no build step, nothing
//! fetched from elsewhere); its script reads the JSON of `/readyz` and
//! `/admin/sessions` and ends sessions through `DELETE /admin/sessions/{id}`,
//! authenticated by the login's cookie (`logins`). Every response carries a
//! strict `Content-Security-Policy`, `nosniff` and `no-store`. It never puts
//! the admin key in a cookie or a URL, and never writes a client's or a
//! backend's string into HTML (the script builds text nodes).

pub(super) mod logins;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::App;
use super::reply::HttpError;
use super::{endpoint, ops, rules};

const STATUS_HTML: &str = include_str!("status.html");
const LOGIN_HTML: &str = include_str!("login.html");
const PAGE_CSS: &str = include_str!("page.css");
const STATUS_JS: &str = include_str!("status.js");

/// Where the login form's message goes.
const MESSAGE_SLOT: &str = "<!--message-->";

/// The largest login form body read.
const MAX_LOGIN_BODY: u64 = 4096;

/// Nothing but the page's own script, stylesheet and JSON; no frames, no
/// forms to elsewhere, no inline script or style (so injected markup could
/// not run even if some were ever written into the page).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'none'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

/// A response of the page's, with its security headers.
fn page_response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Body>,
) -> Response {
    let mut response = (status, body.into()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: with it a browser sends `Origin: null` on the page's
    // own form posts, which the origin checks rightly refuse.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

const HTML: &str = "text/html; charset=utf-8";

/// The page exists only with `admin_key` configured, and answers only the
/// origins and hosts the MCP endpoints do: the refusal, if any.
fn refusal(app: &App, headers: &HeaderMap) -> Option<Response> {
    if let Err(e) = ops::check_origin(app, headers) {
        return Some(e.into_response());
    }
    app.core.gateway().admin_key.is_none().then(|| {
        page_response(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "Not Found: the status page is off (set [gateway] admin_key)\n",
        )
    })
}

/// A request that uses the page's cookie to change something must come from
/// the page itself: its `Origin` (required when `required`, else checked when
/// present) must be the gateway's own (`http[s]://` and the `Host` asked for)
/// or one of `allowed_origins`. `SameSite=Strict` already keeps the cookie off
/// cross-site requests; this also refuses another port of the same host (the
/// same site to a browser), which the loopback rule of `check_origin` admits.
pub(super) fn check_same_origin(
    app: &App,
    headers: &HeaderMap,
    required: bool,
) -> Result<(), HttpError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return if required {
            Err(rules::forbidden(
                "a request authenticated by the status page's cookie must carry an Origin",
            ))
        } else {
            Ok(())
        };
    };
    let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
    let gateway = app.core.gateway();
    let scheme = if gateway.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let own = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|host| origin.eq_ignore_ascii_case(&format!("{scheme}://{host}")));
    if own
        || gateway
            .allowed_origins
            .iter()
            .any(|o| o.trim_end_matches('/') == origin)
    {
        Ok(())
    } else {
        Err(rules::forbidden("the Origin is not the status page's own"))
    }
}

/// The login form, with `message` (a fixed text of the gateway's) above it.
fn login_form(status: StatusCode, message: Option<&'static str>) -> Response {
    let body = match message {
        Some(message) => LOGIN_HTML.replace(
            MESSAGE_SLOT,
            &format!("<p class=\"error\" role=\"alert\">{message}</p>"),
        ),
        None => LOGIN_HTML.to_owned(),
    };
    page_response(status, HTML, body)
}

/// `GET /admin/`: the status page with a login in force, else the login form.
pub(super) async fn page(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&app, &headers) {
        return refused;
    }
    if app.logins.holds_cookie_of(&headers) {
        page_response(StatusCode::OK, HTML, STATUS_HTML)
    } else {
        login_form(StatusCode::OK, None)
    }
}

/// `GET /admin`: to `/admin/`, where the page's relative links resolve.
pub(super) async fn to_page(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&app, &headers) {
        return refused;
    }
    see_other("/admin/", None)
}

/// `GET /admin/page.css`.
pub(super) async fn stylesheet(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&app, &headers) {
        return refused;
    }
    page_response(StatusCode::OK, "text/css; charset=utf-8", PAGE_CSS)
}

/// `GET /admin/status.js`.
pub(super) async fn script(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&app, &headers) {
        return refused;
    }
    page_response(StatusCode::OK, "text/javascript; charset=utf-8", STATUS_JS)
}

/// A 303 to `location`, setting `cookie` if given.
fn see_other(location: &'static str, cookie: Option<String>) -> Response {
    let mut response = page_response(StatusCode::SEE_OTHER, HTML, "");
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// The `key` field of an `application/x-www-form-urlencoded` body, decoded.
fn key_field(body: &[u8]) -> Option<Vec<u8>> {
    let field = body
        .split(|b| *b == b'&')
        .find_map(|pair| pair.strip_prefix(b"key="))?;
    let mut decoded = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        match field[i] {
            b'+' => decoded.push(b' '),
            b'%' => {
                let hex = field.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                decoded.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => decoded.push(b),
        }
        i += 1;
    }
    Some(decoded)
}

/// `POST /admin/login` (the form's `key`): a right key gets a new login's
/// cookie and a 303 to the page; a wrong one gets the form again with 401.
pub(super) async fn login(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    if let Some(refused) = refusal(&app, &headers) {
        return refused;
    }
    if let Err(e) = check_same_origin(&app, &headers, false) {
        return e.into_response();
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let body = match endpoint::read_body(&app, body, MAX_LOGIN_BODY, declared).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let key = app.core.gateway().admin_key.clone().unwrap_or_default();
    let right = key_field(&body)
        .is_some_and(|presented| super::rules::constant_time_eq(&presented, key.as_bytes()));
    if !right {
        tracing::warn!("status page: a login with a wrong admin key was refused");
        return login_form(StatusCode::UNAUTHORIZED, Some("That key is not valid."));
    }
    let token = app.logins.mint();
    tracing::info!("status page: logged in");
    let tls = app.core.gateway().tls.is_some();
    see_other("/admin/", Some(logins::set_cookie(&token, tls)))
}

/// `POST /admin/logout`: ends the login and drops its cookie.
pub(super) async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&app, &headers) {
        return refused;
    }
    if let Err(e) = check_same_origin(&app, &headers, false) {
        return e.into_response();
    }
    if let Some(token) = logins::token_in(&headers) {
        app.logins.forget(token);
    }
    let tls = app.core.gateway().tls.is_some();
    see_other("/admin/", Some(logins::clear_cookie(tls)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_field_is_decoded() {
        assert_eq!(key_field(b"key=a%2Bb+c").as_deref(), Some(&b"a+b c"[..]));
        assert_eq!(key_field(b"x=1&key=k").as_deref(), Some(&b"k"[..]));
        assert_eq!(key_field(b"key=%zz"), None);
        assert_eq!(key_field(b"key=%4"), None);
        assert_eq!(key_field(b"nokey=1"), None);
    }

    #[test]
    fn the_login_form_has_its_message_slot() {
        assert!(LOGIN_HTML.contains(MESSAGE_SLOT));
    }
}
