//! The status page's logins: random tokens of the gateway's own, held in
//! memory, each valid for [`LOGIN_LIFETIME`], carried by the browser in an
//! `HttpOnly`, `SameSite=Strict` cookie.
//!
//! Owns minting, finding and forgetting tokens, and the cookie's text. The
//! admin key itself never goes into a cookie: a stolen cookie expires, and a
//! logout (or a restart) ends it. Only the SHA-256 of a token is kept, so a
//! lookup's timing tells nothing about the tokens held.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};

/// The cookie's name.
pub(in crate::http) const COOKIE: &str = "mcpgate_admin";

/// How long a login lasts (the cookie's `Max-Age` too).
pub(in crate::http) const LOGIN_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// At most this many logins are held; a new one past it forgets the oldest.
const MAX_LOGINS: usize = 64;

type Digest = [u8; 32];

/// The logins in force: a token's digest and when it expires.
#[derive(Default)]
pub(in crate::http) struct Logins {
    held: Mutex<HashMap<Digest, Instant>>,
}

fn digest(token: &str) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    out
}

impl Logins {
    /// A new login; returns its token (64 hex digits from the OS's random
    /// source). Expired logins are forgotten here.
    pub(in crate::http) fn mint(&self) -> String {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random source works");
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut held = self.held.lock().expect("logins lock");
        held.retain(|_, expires| *expires > now);
        if held.len() >= MAX_LOGINS
            && let Some(oldest) = held.iter().min_by_key(|(_, e)| **e).map(|(d, _)| *d)
        {
            held.remove(&oldest);
        }
        held.insert(digest(&token), now + LOGIN_LIFETIME);
        token
    }

    /// True when `token` is a login in force.
    pub(in crate::http) fn holds(&self, token: &str) -> bool {
        let held = self.held.lock().expect("logins lock");
        held.get(&digest(token))
            .is_some_and(|expires| *expires > Instant::now())
    }

    /// Ends the login of `token`, if it is one.
    pub(in crate::http) fn forget(&self, token: &str) {
        self.held
            .lock()
            .expect("logins lock")
            .remove(&digest(token));
    }

    /// True when the request carries the cookie of a login in force.
    pub(in crate::http) fn holds_cookie_of(&self, headers: &HeaderMap) -> bool {
        token_in(headers).is_some_and(|token| self.holds(token))
    }
}

/// The token in the request's cookie, if it carries one.
pub(in crate::http) fn token_in(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
}

/// The `Set-Cookie` value that hands the browser `token`: only sent back to
/// `/admin/...`, never to scripts, never on a cross-site request, and over TLS
/// only when the gateway serves TLS.
pub(in crate::http) fn set_cookie(token: &str, tls: bool) -> String {
    format!(
        "{COOKIE}={token}; Path=/admin; Max-Age={}; HttpOnly; SameSite=Strict{}",
        LOGIN_LIFETIME.as_secs(),
        if tls { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that makes the browser drop the cookie.
pub(in crate::http) fn clear_cookie(tls: bool) -> String {
    format!(
        "{COOKIE}=; Path=/admin; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if tls { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_minted_token_is_held_until_forgotten() {
        let logins = Logins::default();
        let token = logins.mint();
        assert_eq!(token.len(), 64);
        assert!(logins.holds(&token));
        assert!(!logins.holds("0".repeat(64).as_str()));
        assert_ne!(logins.mint(), token);
        logins.forget(&token);
        assert!(!logins.holds(&token));
    }

    #[test]
    fn logins_past_the_cap_forget_the_oldest() {
        let logins = Logins::default();
        let first = logins.mint();
        for _ in 0..MAX_LOGINS {
            logins.mint();
        }
        assert!(!logins.holds(&first));
        assert_eq!(logins.held.lock().unwrap().len(), MAX_LOGINS);
    }

    #[test]
    fn the_token_is_found_among_other_cookies() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; mcpgate_admin=abc ; b=2"),
        );
        assert_eq!(token_in(&headers), Some("abc"));
        let mut other = HeaderMap::new();
        other.append(
            header::COOKIE,
            HeaderValue::from_static("xmcpgate_admin=abc"),
        );
        assert_eq!(token_in(&other), None);
    }

    #[test]
    fn the_cookie_is_http_only_and_strict_and_secure_over_tls() {
        let plain = set_cookie("t", false);
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(!plain.contains("Secure"));
        assert!(set_cookie("t", true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }
}
