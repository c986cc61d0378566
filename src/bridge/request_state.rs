//! The `requestState` of an `InputRequiredResult`: what a stateless client
//! must echo back to resume a call that is waiting for its input.
//!
//! Owns the token's format and its integrity: `<payload>.<mac>`, both
//! base64url without padding, the payload a small JSON object (the parked
//! call's id, the caller, the server, the method and name of the request, and
//! an expiry), the MAC an HMAC-SHA256 under a key drawn at random when the
//! gateway starts. A token that was altered, signed by another gateway run,
//! expired, or presented by another caller, on another server or for another
//! request is refused. It never looks at the parked call itself (that is
//! `bridge`), and never logs a token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// What a token binds a parked call to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Binding {
    /// The parked call's id in the gateway's table.
    #[serde(rename = "p")]
    pub parked: String,
    /// The caller the call belongs to.
    #[serde(rename = "c")]
    pub caller: String,
    /// The server the call went to.
    #[serde(rename = "s")]
    pub server: String,
    /// The request's method and its `params.name`/`params.uri`.
    #[serde(rename = "m")]
    pub method: String,
    #[serde(rename = "n")]
    pub name: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    #[serde(rename = "v")]
    version: u8,
    #[serde(flatten)]
    binding: Binding,
    /// Expiry, in milliseconds since the Unix epoch.
    #[serde(rename = "e")]
    expires_ms: u64,
}

/// Why a token was refused (said to the client as is).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("requestState is not one this gateway issued")]
    Malformed,
    #[error("requestState failed verification")]
    BadSignature,
    #[error("requestState has expired")]
    Expired,
    /// The token is genuine but was issued for something else.
    #[error("requestState was issued for another {0}")]
    Mismatch(&'static str),
}

/// Signs and verifies tokens with one key.
pub(crate) struct Signer {
    key: hmac::Key,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Signer {
    /// A signer with a fresh random key.
    pub(crate) fn random() -> Signer {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the OS random source works");
        Signer::with_key(&key)
    }

    pub(crate) fn with_key(key: &[u8]) -> Signer {
        Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// A token for `binding`, valid for `ttl`.
    pub(crate) fn sign(&self, binding: &Binding, ttl: Duration) -> String {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.sign_expiring(binding, now_ms().saturating_add(ttl_ms))
    }

    fn sign_expiring(&self, binding: &Binding, expires_ms: u64) -> String {
        let payload = Payload {
            version: 1,
            binding: binding.clone(),
            expires_ms,
        };
        let json = serde_json::to_vec(&payload).expect("the payload always serialises");
        let payload = B64.encode(json);
        let mac = hmac::sign(&self.key, payload.as_bytes());
        format!("{payload}.{}", B64.encode(mac.as_ref()))
    }

    /// The binding of a genuine, unexpired token that matches `expected` in
    /// everything but the parked id (which it returns).
    pub(crate) fn verify(&self, token: &str, expected: &Binding) -> Result<String, Refused> {
        let (payload, mac) = token.split_once('.').ok_or(Refused::Malformed)?;
        let mac = B64.decode(mac).map_err(|_| Refused::Malformed)?;
        hmac::verify(&self.key, payload.as_bytes(), &mac).map_err(|_| Refused::BadSignature)?;
        let json = B64.decode(payload).map_err(|_| Refused::Malformed)?;
        let payload: Payload = serde_json::from_slice(&json).map_err(|_| Refused::Malformed)?;
        if payload.version != 1 {
            return Err(Refused::Malformed);
        }
        if payload.expires_ms <= now_ms() {
            return Err(Refused::Expired);
        }
        let got = payload.binding;
        if got.caller != expected.caller {
            return Err(Refused::Mismatch("caller"));
        }
        if got.server != expected.server {
            return Err(Refused::Mismatch("server"));
        }
        if got.method != expected.method || got.name != expected.name {
            return Err(Refused::Mismatch("request"));
        }
        Ok(got.parked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> Binding {
        Binding {
            parked: "p1".into(),
            caller: "alice".into(),
            server: "s".into(),
            method: "tools/call".into(),
            name: Some("ask".into()),
        }
    }

    #[test]
    fn a_genuine_token_verifies_and_names_its_parked_call() {
        let signer = Signer::random();
        let token = signer.sign(&binding(), Duration::from_secs(60));
        let mut expected = binding();
        expected.parked = String::new();
        assert_eq!(signer.verify(&token, &expected), Ok("p1".to_owned()));
    }

    #[test]
    fn tampered_foreign_expired_and_misbound_tokens_are_refused() {
        let signer = Signer::random();
        let token = signer.sign(&binding(), Duration::from_secs(60));
        let (payload, mac) = token.split_once('.').unwrap();
        // Another caller's payload under the original MAC.
        let mut other = binding();
        other.caller = "mallory".into();
        let forged_payload = signer
            .sign(&other, Duration::from_secs(60))
            .split_once('.')
            .unwrap()
            .0
            .to_owned();
        assert_eq!(
            signer.verify(&format!("{forged_payload}.{mac}"), &binding()),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            signer.verify(&format!("{payload}x.{mac}"), &binding()),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            signer.verify("garbage", &binding()),
            Err(Refused::Malformed)
        );
        assert_eq!(
            Signer::random().verify(&token, &binding()),
            Err(Refused::BadSignature)
        );
        let expired = signer.sign_expiring(&binding(), now_ms() - 1);
        assert_eq!(signer.verify(&expired, &binding()), Err(Refused::Expired));
        assert_eq!(
            signer.verify(&token, &other),
            Err(Refused::Mismatch("caller"))
        );
        let mut other_tool = binding();
        other_tool.name = Some("other".into());
        assert_eq!(
            signer.verify(&token, &other_tool),
            Err(Refused::Mismatch("request"))
        );
    }

    #[test]
    fn refusals_keep_the_words_clients_see() {
        assert_eq!(
            Refused::Malformed.to_string(),
            "requestState is not one this gateway issued"
        );
        assert_eq!(
            Refused::BadSignature.to_string(),
            "requestState failed verification"
        );
        assert_eq!(Refused::Expired.to_string(), "requestState has expired");
        assert_eq!(
            Refused::Mismatch("server").to_string(),
            "requestState was issued for another server"
        );
    }
}
