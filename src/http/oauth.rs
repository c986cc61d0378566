//! OAuth 2.1 for clients: the gateway as a resource server (the MCP
//! authorization spec, RFC 9728 protected resource metadata, RFC 8707
//! resource indicators).
//!
//! Owns checking a bearer access token (a JWT): its signature against the
//! issuer's published keys (RS*, PS*, ES256/ES384, EdDSA; `none` and
//! symmetric algorithms never), `iss`, `aud` (this resource), `exp` and `nbf`
//! with leeway, the claim that names the caller, and its scopes; the cache of
//! the issuer's keys (found from its metadata unless `jwks_url` is set),
//! fetched again when a token names a key it does not hold, at most once per
//! `jwks_refresh_interval`; the protected resource metadata documents; and
//! the `WWW-Authenticate` challenges of a 401 or 403. It never does
//! cryptography itself (the `jsonwebtoken` crate does), never logs or keeps
//! a token, and never fails open: keys it cannot fetch mean 401s.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::App;
use super::reply::{self, HttpError};
use crate::config::{OAuthConfig, ServerConfig};
use crate::jsonrpc;

/// Largest metadata or key set document read from the issuer.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Longest a request waits for the next allowed key fetch when its token
/// names an unknown key; a fetch further away than this is not waited for.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(1);

/// Where the protected resource metadata lives (RFC 9728), before the path
/// of the resource it describes.
pub(super) const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// A token that is refused, and why (said in the 401, never with the token).
#[derive(Debug, thiserror::Error)]
pub(super) enum TokenError {
    #[error("the token is not a JWT with a known algorithm")]
    Malformed(#[source] jsonwebtoken::errors::Error),
    #[error("the token's algorithm {0:?} is not accepted (only the issuer's asymmetric keys are)")]
    Algorithm(Algorithm),
    #[error("the token is signed with key `{0}`, which the issuer does not publish")]
    UnknownKey(String),
    #[error("the issuer's signing keys are unavailable")]
    KeysUnavailable(#[source] FetchError),
    #[error("the token is invalid: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    #[error("the token has no string claim `{0}` to name the caller")]
    NoCaller(String),
}

/// Fetching the issuer's metadata or keys failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum FetchError {
    #[error("GET {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: the document is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { url: String },
    #[error("GET {url}: not the JSON expected: {source}")]
    Json {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the metadata at {url} is for issuer `{found}`, not the configured issuer")]
    WrongIssuer { url: String, found: String },
    #[error("the metadata at {url} has no jwks_uri")]
    NoJwksUri { url: String },
    #[error("the keys were fetched less than jwks_refresh_interval ago")]
    TooSoon,
}

/// A token that passed every check.
#[derive(Debug)]
pub(super) struct Verified {
    /// `<caller claim>@<issuer>`: what the caller's sessions and processes are keyed by.
    pub caller: Arc<str>,
    /// The token's scopes (`scope`, or `scp`).
    pub scopes: Arc<[String]>,
}

/// One of the issuer's public keys, with the algorithms it may verify.
struct Key {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

/// The issuer's keys as last fetched.
#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<Key>>,
    /// Keys published without a `kid`.
    unnamed: Vec<Arc<Key>>,
    /// Bumped by every successful fetch.
    generation: u64,
}

impl KeySet {
    /// The key a token's `kid` names; without a `kid`, the issuer's only key.
    fn find(&self, kid: Option<&str>) -> Option<Arc<Key>> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            None if self.by_kid.len() + self.unnamed.len() == 1 => self
                .unnamed
                .first()
                .or_else(|| self.by_kid.values().next())
                .cloned(),
            None => None,
        }
    }
}

/// When the keys were last fetched (or tried), and where they are.
#[derive(Default)]
struct Fetching {
    last_attempt: Option<Instant>,
    jwks_uri: Option<String>,
}

/// Checks access tokens for one issuer and resource.
pub(crate) struct Verifier {
    config: OAuthConfig,
    client: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    /// Held while fetching: one fetch at a time.
    fetching: tokio::sync::Mutex<Fetching>,
}

impl Verifier {
    pub(crate) fn new(config: OAuthConfig) -> Verifier {
        let client = reqwest::Client::builder()
            .timeout(config.fetch_timeout)
            .connect_timeout(config.fetch_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("mcpgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a reqwest client with rustls builds");
        Verifier {
            config,
            client,
            keys: RwLock::default(),
            fetching: tokio::sync::Mutex::default(),
        }
    }

    /// Fetches the keys once, now, so that a misconfigured issuer shows in
    /// the log at start rather than at the first request.
    pub(crate) fn prefetch(self: &Arc<Self>) {
        let verifier = Arc::clone(self);
        tokio::spawn(async move {
            let _ = verifier.refresh(None).await;
        });
    }

    fn key_set(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Checks `token`; on success, who it names and what it may do.
    pub(super) async fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(TokenError::Malformed)?;
        if matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(TokenError::Algorithm(header.alg));
        }
        let kid = header.kid.as_deref();
        let known = self.key_set();
        let key = match known.find(kid) {
            Some(key) => key,
            None => {
                let refreshed = self.refresh(Some(known.generation)).await;
                match self.key_set().find(kid) {
                    Some(key) => key,
                    None => {
                        return Err(match refreshed {
                            Err(e) if self.key_set().generation == 0 => {
                                TokenError::KeysUnavailable(e)
                            }
                            _ => TokenError::UnknownKey(kid.unwrap_or("(none)").to_owned()),
                        });
                    }
                }
            }
        };
        if !key.algorithms.contains(&header.alg) {
            return Err(TokenError::Algorithm(header.alg));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.config.leeway.as_secs();
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&self.config.audiences);
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key.key, &validation)
                .map_err(TokenError::Invalid)?;
        let claims = data.claims;
        let who = match claims.get(&self.config.caller_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(TokenError::NoCaller(self.config.caller_claim.clone())),
        };
        let scopes: Vec<String> = match (claims.get("scope"), claims.get("scp")) {
            (Some(Value::String(s)), _) | (None, Some(Value::String(s))) => {
                s.split_whitespace().map(str::to_owned).collect()
            }
            (None, Some(Value::Array(items))) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        Ok(Verified {
            caller: Arc::from(format!("{who}@{}", self.config.issuer)),
            scopes: scopes.into(),
        })
    }

    /// Fetches the keys again, unless another fetch did since the caller
    /// saw generation `seen`. Fetches are at least `jwks_refresh_interval`
    /// apart: a request waits for the next one if it is near, else is told
    /// [`FetchError::TooSoon`].
    async fn refresh(&self, seen: Option<u64>) -> Result<(), FetchError> {
        let mut fetching = self.fetching.lock().await;
        if seen.is_some_and(|seen| self.key_set().generation != seen) {
            return Ok(());
        }
        if let Some(last) = fetching.last_attempt {
            let next = last + self.config.jwks_refresh_interval;
            let now = Instant::now();
            if next > now {
                if next - now > MAX_FETCH_WAIT {
                    return Err(FetchError::TooSoon);
                }
                tokio::time::sleep_until(next.into()).await;
            }
        }
        fetching.last_attempt = Some(Instant::now());
        let fetched = self.fetch_keys(&mut fetching).await;
        match fetched {
            Ok(found) => {
                let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
                let generation = keys.generation + 1;
                tracing::info!(issuer = %self.config.issuer, keys = found.by_kid.len() + found.unnamed.len(),
                    "OAuth: fetched the issuer's signing keys");
                *keys = Arc::new(KeySet {
                    generation,
                    ..found
                });
                Ok(())
            }
            Err(e) => {
                tracing::warn!(issuer = %self.config.issuer, error = %e,
                    "OAuth: cannot fetch the issuer's signing keys; tokens signed with keys not yet known are refused (401)");
                Err(e)
            }
        }
    }

    async fn fetch_keys(&self, fetching: &mut Fetching) -> Result<KeySet, FetchError> {
        let jwks_uri = match (&self.config.jwks_url, &fetching.jwks_uri) {
            (Some(url), _) | (None, Some(url)) => url.clone(),
            (None, None) => {
                let url = self.discover_jwks_uri().await?;
                fetching.jwks_uri = Some(url.clone());
                url
            }
        };
        let document = self.get_json(&jwks_uri).await?;
        let mut set = KeySet::default();
        let keys = document.get("keys").and_then(Value::as_array);
        for jwk in keys.into_iter().flatten() {
            // A key of a type this gateway cannot use is skipped, not fatal.
            let Ok(jwk) = serde_json::from_value::<Jwk>(jwk.clone()) else {
                continue;
            };
            let Some(key) = usable_key(&jwk) else {
                continue;
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    set.by_kid.insert(kid.clone(), Arc::new(key));
                }
                None => set.unnamed.push(Arc::new(key)),
            }
        }
        Ok(set)
    }

    /// The issuer's `jwks_uri`, from its authorization server metadata
    /// (RFC 8414) or, failing that, its OpenID configuration.
    async fn discover_jwks_uri(&self) -> Result<String, FetchError> {
        let issuer = self.config.issuer.trim_end_matches('/');
        let (origin, path) = split_origin(issuer);
        let mut candidates = vec![
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{issuer}/.well-known/openid-configuration"),
        ];
        if !path.is_empty() {
            candidates.push(format!("{origin}/.well-known/openid-configuration{path}"));
        }
        let mut last_error = None;
        for url in candidates {
            match self.get_json(&url).await {
                Ok(metadata) => {
                    let found = metadata.get("issuer").and_then(Value::as_str);
                    if found != Some(self.config.issuer.as_str()) {
                        return Err(FetchError::WrongIssuer {
                            url,
                            found: found.unwrap_or("(none)").to_owned(),
                        });
                    }
                    return match metadata.get("jwks_uri").and_then(Value::as_str) {
                        Some(uri) => Ok(uri.to_owned()),
                        None => Err(FetchError::NoJwksUri { url }),
                    };
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("there is at least one candidate"))
    }

    /// GETs a JSON document of at most [`MAX_DOCUMENT_BYTES`].
    async fn get_json(&self, url: &str) -> Result<Value, FetchError> {
        let http = |source| FetchError::Http {
            url: url.to_owned(),
            source,
        };
        let mut response = self
            .client
            .get(url)
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(http)?;
        if !response.status().is_success() {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: response.status().as_u16(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(http)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(FetchError::TooLarge {
                    url: url.to_owned(),
                });
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|source| FetchError::Json {
            url: url.to_owned(),
            source,
        })
    }

    /// The absolute URL of the protected resource metadata of `path` (the
    /// request's path: `/mcp` or `/mcp/<id>`), on the resource's origin.
    fn metadata_url(&self, path: &str) -> String {
        let (origin, _) = split_origin(&self.config.resource);
        format!("{origin}{METADATA_PATH}{path}")
    }

    /// 401 for a request without a usable token (`error` set when one was
    /// sent), with the challenge that leads a client to the metadata and
    /// names the scopes to ask for (`needed`).
    pub(super) fn unauthorized(
        &self,
        path: &str,
        needed: &[String],
        error: Option<&TokenError>,
    ) -> HttpError {
        let mut challenge = format!("Bearer resource_metadata=\"{}\"", self.metadata_url(path));
        let scopes = needed.join(" ");
        if !scopes.is_empty() {
            challenge.push_str(&format!(", scope=\"{scopes}\""));
        }
        let message = match error {
            Some(error) => {
                challenge.push_str(&format!(
                    ", error=\"invalid_token\", error_description=\"{}\"",
                    quotable(&error.to_string())
                ));
                format!("Unauthorized: {error}")
            }
            None => "Unauthorized: send Authorization: Bearer <access token>".to_owned(),
        };
        HttpError::new(StatusCode::UNAUTHORIZED, jsonrpc::SERVER_ERROR, message)
            .with_challenge(challenge)
    }

    /// 403 for a valid token that lacks some of `needed`.
    pub(super) fn insufficient_scope(&self, path: &str, needed: &[String]) -> HttpError {
        let scope = needed.join(" ");
        HttpError::new(
            StatusCode::FORBIDDEN,
            jsonrpc::SERVER_ERROR,
            format!("Forbidden: the token lacks a scope this needs ({scope})"),
        )
        .with_challenge(format!(
            "Bearer error=\"insufficient_scope\", scope=\"{scope}\", resource_metadata=\"{}\"",
            self.metadata_url(path)
        ))
    }

    /// The scopes a request needs: the gateway's, and `server`'s.
    pub(super) fn needed(&self, server: Option<&ServerConfig>) -> Vec<String> {
        let mut needed = self.config.scopes.clone();
        for scope in server.map_or(&[][..], |s| &s.oauth_scopes) {
            if !needed.contains(scope) {
                needed.push(scope.clone());
            }
        }
        needed
    }

    /// The protected resource metadata (RFC 9728) for `server`'s endpoint,
    /// or the unified one.
    fn metadata(&self, server: Option<&ServerConfig>, all: &[Arc<ServerConfig>]) -> Value {
        let mut scopes = self.needed(server);
        if server.is_none() {
            for s in all {
                for scope in &s.oauth_scopes {
                    if !scopes.contains(scope) {
                        scopes.push(scope.clone());
                    }
                }
            }
        }
        serde_json::json!({
            "resource": self.config.resource,
            "authorization_servers": [self.config.issuer],
            "scopes_supported": scopes,
            "bearer_methods_supported": ["header"],
            "resource_name": "mcpgate",
        })
    }
}

/// Every scope of `needed` is in `have`.
pub(super) fn has_all(have: &[String], needed: &[String]) -> bool {
    needed.iter().all(|s| have.contains(s))
}

/// A JWK this gateway can verify with, and the algorithms it may verify:
/// the one its `alg` names, else every one its type allows. Symmetric keys
/// and encryption keys are never used.
fn usable_key(jwk: &Jwk) -> Option<Key> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        _ => return None,
    };
    let algorithms = match jwk.common.key_algorithm {
        None => by_type,
        Some(named) => {
            let named = match named {
                KeyAlgorithm::UNKNOWN_ALGORITHM => return None,
                other => Algorithm::try_from(other).ok()?,
            };
            if !by_type.contains(&named) {
                return None;
            }
            vec![named]
        }
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key { key, algorithms })
}

/// `https://host:port/path` as (`https://host:port`, `/path`).
fn split_origin(url: &str) -> (&str, &str) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find(['/', '?']) {
        Some(i) => url.split_at(after_scheme + i),
        None => (url, ""),
    }
}

/// Text safe inside a quoted-string of a header (no quotes, backslashes or controls).
fn quotable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == '"' || c == '\\' || !(' '..='~').contains(&c) {
                '\''
            } else {
                c
            }
        })
        .collect()
}

/// `GET /.well-known/oauth-protected-resource` and `.../mcp`: the unified endpoint's metadata.
pub(super) async fn unified_metadata(State(app): State<Arc<App>>) -> Response {
    match &app.oauth {
        Some(oauth) => metadata_response(&oauth.metadata(None, &app.core.servers())),
        None => not_found(),
    }
}

/// `GET /.well-known/oauth-protected-resource/mcp/{serverID}`.
pub(super) async fn routed_metadata(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let server = path.ok().and_then(|Path(id)| app.core.server(&id));
    match (&app.oauth, server) {
        (Some(oauth), Some(server)) => {
            metadata_response(&oauth.metadata(Some(&server), &app.core.servers()))
        }
        _ => not_found(),
    }
}

fn metadata_response(document: &Value) -> Response {
    let body = serde_json::to_vec(document).expect("metadata serialises");
    let mut response = reply::json_body(StatusCode::OK, body.into());
    // Browser-based clients read it from another origin.
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

fn not_found() -> Response {
    HttpError::new(
        StatusCode::NOT_FOUND,
        jsonrpc::SERVER_ERROR,
        "Not Found: no protected resource here",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_paths_are_split() {
        assert_eq!(
            split_origin("https://a.example:8443/mcp"),
            ("https://a.example:8443", "/mcp")
        );
        assert_eq!(split_origin("https://a.example"), ("https://a.example", ""));
        assert_eq!(
            split_origin("http://127.0.0.1:5/realms/x"),
            ("http://127.0.0.1:5", "/realms/x")
        );
    }

    #[test]
    fn symmetric_and_encryption_keys_are_never_used() {
        let jwk = |json: Value| serde_json::from_value::<Jwk>(json).expect("a JWK");
        assert!(usable_key(&jwk(serde_json::json!({"kty": "oct", "k": "c2VjcmV0"}))).is_none());
        let ed = serde_json::json!({"kty": "OKP", "crv": "Ed25519",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        let key = usable_key(&jwk(ed.clone())).expect("an Ed25519 key");
        assert_eq!(key.algorithms, vec![Algorithm::EdDSA]);
        let mut enc = ed;
        enc["use"] = "enc".into();
        assert!(usable_key(&jwk(enc)).is_none());
    }

    #[test]
    fn challenges_quote_safely() {
        assert_eq!(quotable("a \"b\"\n\\"), "a 'b'''");
    }
}
