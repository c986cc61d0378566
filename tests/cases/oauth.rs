//! OAuth 2.1 for clients: the gateway as a resource server of a real
//! authorization server (oidc-provider, run by tests/oauth/issuer.mjs), and a
//! process per user.

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::*;

/// The API key that works beside OAuth in these tests.
const CI_KEY: &str = "ci-key-0123456789abcdef";

/// A running oidc-provider (tests/oauth/issuer.mjs).
struct Issuer {
    child: tokio::process::Child,
    url: String,
    http: reqwest::Client,
}

impl Issuer {
    async fn start() -> Issuer {
        let mut child = tokio::process::Command::new(test_dep(NODE22))
            .arg(repo_path("tests/oauth/issuer.mjs"))
            .env("OIDC_DIR", test_dep("npm-oidc"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the issuer");
        let stdout = child.stdout.take().expect("the issuer's stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("the issuer reports its port in time")
            .expect("the issuer's stdout reads")
            .expect("the issuer prints its port");
        let started: Value = serde_json::from_str(&first).expect("the issuer's JSON line");
        Issuer {
            child,
            url: started["issuer"].as_str().unwrap().to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    /// A client-credentials access token of `client` for `resource`.
    async fn token(&self, client: &str, resource: &str, scope: &str) -> String {
        let body = json_of(
            self.http
                .post(format!("{}/token", self.url))
                .basic_auth(client, Some(format!("{client}-secret-0123456789")))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("resource", resource),
                    ("scope", scope),
                ]),
        )
        .await;
        body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access token: {body}"))
            .to_owned()
    }

    /// A JWT of `claims` signed by the issuer's current key (`"current"`) or
    /// by a key it never published (`"stray"`).
    async fn sign(&self, claims: Value, key: &str) -> String {
        let body = json_of(
            self.http
                .post(format!("{}/test/sign", self.url))
                .json(&json!({"claims": claims, "key": key})),
        )
        .await;
        body["token"].as_str().unwrap().to_owned()
    }

    /// Replaces the signing key with a new one of `alg`; returns its kid.
    async fn rotate(&self, alg: &str) -> String {
        let body = json_of(
            self.http
                .post(format!("{}/test/rotate?alg={alg}", self.url)),
        )
        .await;
        body["kid"].as_str().unwrap().to_owned()
    }

    async fn test_get(&self, what: &str) -> Value {
        json_of(self.http.get(format!("{}/test/{what}", self.url))).await
    }

    async fn jwks_fetches(&self) -> u64 {
        self.test_get("stats").await["jwks_fetches"]
            .as_u64()
            .unwrap()
    }

    async fn stop(mut self) {
        self.child.start_kill().expect("the issuer can be killed");
        let _ = tokio::time::timeout(DEADLINE, self.child.wait()).await;
    }
}

/// The JSON body of the answer to `request` (to the issuer: it answers).
async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A gateway config for `issuer`, the gateway on `port`, with `servers`.
fn config(issuer: &Issuer, port: u16, oauth_extra: &str, servers: &str) -> String {
    format!(
        "{FAST_GATEWAY}api_keys = {{ ci = \"{CI_KEY}\" }}\n\
         [gateway.oauth]\nissuer = \"{}\"\nresource = \"http://127.0.0.1:{port}/mcp\"\n\
         scopes = [\"mcp\"]\nleeway = \"5s\"\njwks_refresh_interval = \"200ms\"\n{oauth_extra}\n{servers}",
        issuer.url
    )
}

/// The servers `echo` (open to every token) and `files` (needing the scope
/// `files:read`).
fn echo_and_scoped_files() -> String {
    format!(
        "{}{}oauth_scopes = [\"files:read\"]\n",
        test_server("echo", &[]),
        test_server("files", &[])
    )
}

/// Starts a gateway on `port` with `config_text` (made by [`config`], and
/// naming that port).
async fn gateway_on(port: u16, config_text: &str) -> Gateway {
    Gateway::start_on(config_text, &format!("127.0.0.1:{port}")).await
}

/// An audit log, and a gateway on `port` with one `echo` test server writing
/// it (the gateway is dropped, and stopped, before the file).
async fn audited_echo_gateway(issuer: &Issuer, port: u16) -> (tempfile::NamedTempFile, Gateway) {
    let audit = tempfile::NamedTempFile::new().unwrap();
    let gw = gateway_on(
        port,
        &config(issuer, port, "", &test_server("echo", &[])).replace(
            "api_keys =",
            &format!("audit_log = {:?}\napi_keys =", audit.path()),
        ),
    )
    .await;
    (audit, gw)
}

fn resource(port: u16) -> String {
    format!("http://127.0.0.1:{port}/mcp")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Opens a session on `server` with `token`; returns its id.
async fn open(gw: &Gateway, server: &str, token: &str) -> String {
    let auth = bearer(token);
    let response = gw
        .post(
            server,
            None,
            &initialize_body("1"),
            &[("authorization", &auth)],
        )
        .await;
    let status = response.status();
    let challenge = response.headers().get("www-authenticate").cloned();
    assert_eq!(
        status,
        200,
        "{challenge:?} {}",
        response.text().await.unwrap()
    );
    let id = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let note = gw
        .post(
            server,
            Some(&id),
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(note.status(), 202);
    id
}

/// Calls `tool` on a session with `token`: the status and the answer.
async fn call(gw: &Gateway, server: &str, session: &str, token: &str, tool: &str) -> (u16, Value) {
    let body = json!({"jsonrpc":"2.0","id":7,"method":"tools/call",
        "params":{"name":tool,"arguments":{"message":"hi"}}});
    let response = gw
        .post(
            server,
            Some(session),
            &body.to_string(),
            &[("authorization", &bearer(token))],
        )
        .await;
    let status = response.status().as_u16();
    if status == 200 {
        (status, answer_of(response).await)
    } else {
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

async fn pid_of(gw: &Gateway, server: &str, session: &str, token: &str) -> u64 {
    let (status, answer) = call(gw, server, session, token, "pid").await;
    assert_eq!(status, 200, "{answer}");
    answer["result"]["structuredContent"]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("pid answer: {answer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_gets_own_processes_and_sessions_and_keeps_them_across_token_refresh() {
    let issuer = Issuer::start().await;
    let port = free_port();
    let (audit, gw) = audited_echo_gateway(&issuer, port).await;
    let alice = issuer.token("alice", &resource(port), "mcp").await;
    let bob = issuer.token("bob", &resource(port), "mcp").await;

    let alice_session = open(&gw, "echo", &alice).await;
    let bob_session = open(&gw, "echo", &bob).await;
    let (status, answer) = call(&gw, "echo", &alice_session, &alice, "echo").await;
    assert_eq!(status, 200);
    assert_eq!(answer["result"]["content"][0]["text"], "hi", "{answer}");
    let alice_pid = pid_of(&gw, "echo", &alice_session, &alice).await;
    let bob_pid = pid_of(&gw, "echo", &bob_session, &bob).await;
    assert_ne!(alice_pid, bob_pid, "each user has a process of their own");

    // Bob presenting Alice's session id: as unknown as any (404).
    let (status, _) = call(&gw, "echo", &alice_session, &bob, "echo").await;
    assert_eq!(status, 404);

    // A refreshed token (a new one for the same user) keeps the session.
    let refreshed = issuer.token("alice", &resource(port), "mcp").await;
    assert_ne!(refreshed, alice);
    assert_eq!(
        pid_of(&gw, "echo", &alice_session, &refreshed).await,
        alice_pid
    );

    // The API key still works beside OAuth, with sessions of its own.
    let response = gw
        .post(
            "echo",
            None,
            &initialize_body("1"),
            &[("authorization", &bearer(CI_KEY))],
        )
        .await;
    assert_eq!(response.status(), 200);

    // The audit log names the user (claim@issuer), never the token.
    let expected = format!("\"caller\":\"alice@{}\"", issuer.url);
    wait_until("the audit log names alice", || {
        std::fs::read_to_string(audit.path()).is_ok_and(|log| log.contains(&expected))
    })
    .await;
    let log = std::fs::read_to_string(audit.path()).unwrap();
    assert!(!log.contains(&alice) && !log.contains(&refreshed));
    assert!(!gw.log().iter().any(|l| l.contains(&alice)));

    gw.stop().await;
    issuer.stop().await;
}

/// The status, `WWW-Authenticate` and body of an `initialize` on `/mcp/echo`
/// with `authorization`.
async fn refused(gw: &Gateway, authorization: Option<&str>) -> (u16, String, Value) {
    let extra: Vec<(&str, &str)> = authorization
        .map(|a| ("authorization", a))
        .into_iter()
        .collect();
    let response = gw.post("echo", None, &initialize_body("1"), &extra).await;
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, challenge, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_401_and_a_missing_scope_403_with_their_challenges() {
    let issuer = Issuer::start().await;
    let port = free_port();
    let gw = gateway_on(port, &config(&issuer, port, "", &test_server("echo", &[]))).await;
    let metadata = format!(
        "resource_metadata=\"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp/echo\""
    );

    // No token: 401 pointing at the metadata, no error.
    let (status, challenge, body) = refused(&gw, None).await;
    assert_eq!(status, 401);
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(challenge.contains(&metadata), "{challenge}");
    assert!(!challenge.contains("error="), "{challenge}");
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Unauthorized")
    );

    let good = issuer.token("alice", &resource(port), "mcp").await;
    let claims = |changes: Value| {
        let mut claims = json!({"iss": issuer.url, "aud": resource(port), "sub": "mallory",
            "scope": "mcp", "iat": now(), "exp": now() + 600});
        for (k, v) in changes.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let (header, payload, _) = split3(&good);
    let mut tampered_payload: Value =
        serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap();
    tampered_payload["sub"] = "bob".into();
    let tampered = format!(
        "{header}.{}.{}",
        B64.encode(tampered_payload.to_string()),
        split3(&good).2
    );
    let none = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        B64.encode(claims(json!({})).to_string())
    );
    let jwk = issuer.test_get("jwk").await["jwk"].clone();
    let hs256 = {
        let header = B64.encode(json!({"alg": "HS256", "kid": jwk["kid"]}).to_string());
        let payload = B64.encode(claims(json!({})).to_string());
        let input = format!("{header}.{payload}");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, jwk.to_string().as_bytes());
        let tag = ring::hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", B64.encode(tag.as_ref()))
    };
    let cases = [
        (
            "expired",
            issuer
                .sign(
                    claims(json!({"iat": now() - 7200, "exp": now() - 3600})),
                    "current",
                )
                .await,
        ),
        (
            "not yet valid",
            issuer
                .sign(
                    claims(json!({"nbf": now() + 3600, "exp": now() + 7200})),
                    "current",
                )
                .await,
        ),
        (
            "wrong issuer",
            issuer
                .sign(claims(json!({"iss": "http://issuer.invalid"})), "current")
                .await,
        ),
        (
            "wrong audience",
            issuer
                .token("alice", "http://127.0.0.1:9/another-resource", "mcp")
                .await,
        ),
        ("tampered signature", tampered),
        ("alg none", none),
        ("HS256 signed with the public key", hs256),
        (
            "a key the issuer never published",
            issuer.sign(claims(json!({})), "stray").await,
        ),
        ("not a JWT", "an-api-key-that-is-wrong-0123".to_owned()),
    ];
    for (what, token) in &cases {
        let (status, challenge, body) = refused(&gw, Some(&bearer(token))).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(challenge.starts_with("Bearer "), "{what}: {challenge}");
        assert!(challenge.contains(&metadata), "{what}: {challenge}");
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{what}: {challenge}"
        );
        assert!(body["error"]["message"].is_string(), "{what}: {body}");
    }

    // A valid token without the gateway's scope: 403 naming the scope.
    let no_mcp = issuer.token("alice", &resource(port), "files:read").await;
    let (status, challenge, body) = refused(&gw, Some(&bearer(&no_mcp))).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        challenge.starts_with("Bearer error=\"insufficient_scope\", scope=\"mcp\""),
        "{challenge}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Forbidden")
    );

    // The same token signed properly by the issuer passes: the checks above
    // refused the tokens, not the setup.
    let fine = issuer.sign(claims(json!({})), "current").await;
    let (status, _, body) = refused(&gw, Some(&bearer(&fine))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        children_of(gw.pid).len(),
        1,
        "only the good token started a process"
    );

    gw.stop().await;
    issuer.stop().await;
}

fn split3(token: &str) -> (&str, &str, &str) {
    let mut parts = token.splitn(3, '.');
    (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_are_fetched_for_rs256_es256_and_eddsa() {
    let issuer = Issuer::start().await;
    let port = free_port();
    let gw = gateway_on(port, &config(&issuer, port, "", &test_server("echo", &[]))).await;
    let first = issuer.token("alice", &resource(port), "mcp").await;
    let session = open(&gw, "echo", &first).await;
    for alg in ["ES256", "EdDSA", "RS256"] {
        let kid = issuer.rotate(alg).await;
        let token = issuer.token("alice", &resource(port), "mcp").await;
        let (header, _, _) = split3(&token);
        let header: Value = serde_json::from_slice(&B64.decode(header).unwrap()).unwrap();
        assert_eq!(header["kid"], kid.as_str());
        assert_eq!(header["alg"], alg);
        let (status, answer) = call(&gw, "echo", &session, &token, "echo").await;
        assert_eq!(status, 200, "{alg}: {answer}");
        assert_eq!(answer["result"]["content"][0]["text"], "hi");
    }
    gw.stop().await;
    issuer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_ids_cause_no_refresh_storm() {
    let issuer = Issuer::start().await;
    let port = free_port();
    // Fetches at most once an hour: a bogus kid never waits for one.
    let gw = gateway_on(
        port,
        &config(&issuer, port, "", &test_server("echo", &[])).replace(
            "jwks_refresh_interval = \"200ms\"",
            "jwks_refresh_interval = \"1h\"",
        ),
    )
    .await;
    let good = issuer.token("alice", &resource(port), "mcp").await;
    open(&gw, "echo", &good).await;
    let before = issuer.jwks_fetches().await;
    assert!(before >= 1);
    let now = now();
    let bogus = issuer
        .sign(
            json!({"iss": issuer.url, "aud": resource(port), "sub": "x", "exp": now + 600}),
            "stray",
        )
        .await;
    let auth = bearer(&bogus);
    let init = initialize_body("1");
    let extra = [("authorization", auth.as_str())];
    let tries = (0..20).map(|_| gw.post("echo", None, &init, &extra));
    for response in futures_util::future::join_all(tries).await {
        assert_eq!(response.status(), 401);
    }
    assert_eq!(
        issuer.jwks_fetches().await,
        before,
        "no fetch for bogus kids"
    );
    gw.stop().await;
    issuer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_issuer_fails_closed_with_401() {
    let port = free_port();
    let nowhere = free_port();
    let gw = gateway_on(
        port,
        &format!(
            "{FAST_GATEWAY}[gateway.oauth]\nissuer = \"http://127.0.0.1:{nowhere}\"\n\
             resource = \"http://127.0.0.1:{port}/mcp\"\nfetch_timeout = \"2s\"\n{}",
            test_server("echo", &[])
        ),
    )
    .await;
    gw.wait_for_log(&["cannot fetch the issuer's signing keys"])
        .await;
    let token = format!(
        "{}.{}.c2ln",
        B64.encode(r#"{"alg":"RS256","kid":"k1"}"#),
        B64.encode(r#"{"sub":"a"}"#)
    );
    let (status, challenge, body) = refused(&gw, Some(&bearer(&token))).await;
    assert_eq!(status, 401, "{body}");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("signing keys are unavailable"),
        "{body}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_resource_metadata_names_the_issuer_resource_and_scopes() {
    let issuer = Issuer::start().await;
    let port = free_port();
    let servers = echo_and_scoped_files();
    let gw = gateway_on(port, &config(&issuer, port, "", &servers)).await;
    let get = |path: &str| {
        let url = format!("{}/.well-known/oauth-protected-resource{path}", gw.base);
        let http = gw.http.clone();
        async move { http.get(url).send().await.unwrap() }
    };
    for (path, scopes) in [
        ("", json!(["mcp", "files:read"])),
        ("/mcp", json!(["mcp", "files:read"])),
        ("/mcp/echo", json!(["mcp"])),
        ("/mcp/files", json!(["mcp", "files:read"])),
    ] {
        let response = get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let document: Value = response.json().await.unwrap();
        assert_eq!(document["resource"], resource(port), "{path}");
        assert_eq!(
            document["authorization_servers"],
            json!([issuer.url]),
            "{path}"
        );
        assert_eq!(document["scopes_supported"], scopes, "{path}");
    }
    assert_eq!(get("/mcp/nope").await.status(), 404);
    gw.stop().await;
    issuer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_needing_a_scope_is_refused_and_left_out_of_the_unified_lists() {
    let issuer = Issuer::start().await;
    let port = free_port();
    let servers = echo_and_scoped_files();
    let gw = gateway_on(port, &config(&issuer, port, "", &servers)).await;
    let plain = issuer.token("alice", &resource(port), "mcp").await;
    let with_files = issuer.token("bob", &resource(port), "mcp files:read").await;

    // Routed: a 401 asks for every scope the server needs, a 403 names them.
    let response = gw.post("files", None, &initialize_body("1"), &[]).await;
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains("scope=\"mcp files:read\""),
        "{challenge}"
    );
    let response = gw
        .post(
            "files",
            None,
            &initialize_body("1"),
            &[("authorization", &bearer(&plain))],
        )
        .await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.headers()["www-authenticate"].to_str().unwrap(),
        format!(
            "Bearer error=\"insufficient_scope\", scope=\"mcp files:read\", \
             resource_metadata=\"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp/files\""
        )
    );
    open(&gw, "files", &with_files).await;

    // Unified: the server is left out of alice's lists and calls, not bob's.
    let tools = |token: String| {
        let gw = &gw;
        async move {
            let session = open(gw, "", &token).await;
            let response = gw
                .post(
                    "",
                    Some(&session),
                    r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
                    &[("authorization", &bearer(&token))],
                )
                .await;
            let answer = answer_of(response).await;
            let names: Vec<String> = answer["result"]["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_owned())
                .collect();
            let (_, call) = call(gw, "", &session, &token, "files___echo").await;
            (names, call)
        }
    };
    let (alice_tools, alice_call) = tools(plain.clone()).await;
    assert!(
        alice_tools.contains(&"echo___echo".to_owned()),
        "{alice_tools:?}"
    );
    assert!(
        !alice_tools.iter().any(|t| t.starts_with("files___")),
        "{alice_tools:?}"
    );
    assert!(alice_call["error"].is_object(), "{alice_call}");
    let (bob_tools, bob_call) = tools(with_files).await;
    assert!(
        bob_tools.contains(&"files___echo".to_owned()),
        "{bob_tools:?}"
    );
    assert_eq!(bob_call["result"]["content"][0]["text"], "hi", "{bob_call}");

    gw.stop().await;
    issuer.stop().await;
}

/// Runs tests/oauth/ts_oauth_client.mjs (the TypeScript SDK's OAuth flow,
/// the login played by HTTP requests) against `url`; returns its JSON line.
async fn ts_oauth_client(url: &str, tool_prefix: &str) -> Value {
    let mut command = tokio::process::Command::new(test_dep(NODE22));
    command
        .arg(repo_path("tests/oauth/ts_oauth_client.mjs"))
        .arg(url)
        .env(
            "TS_SDK_DIR",
            test_dep("npm/node_modules/@modelcontextprotocol/sdk"),
        )
        .env("TS_CLIENT_TOOL_PREFIX", tool_prefix)
        .env("TS_CLIENT_TIMEOUT", "15");
    last_json_line(&run_client(command, "typescript oauth client").await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_logs_in_through_the_gateway_and_calls_a_tool() {
    let issuer = Issuer::start().await;
    let port = free_port();
    let (audit, gw) = audited_echo_gateway(&issuer, port).await;
    let out = ts_oauth_client(&gw.url("echo"), "").await;
    let requests: Vec<&str> = out["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    // The discovery the spec asks for, in order: the 401, the resource's
    // metadata, the issuer's, registration, the token, then MCP with it.
    let position = |wanted: &str| {
        requests
            .iter()
            .position(|r| *r == wanted)
            .unwrap_or_else(|| panic!("no `{wanted}` in {requests:?}"))
    };
    let steps = [
        "POST /mcp/echo 401",
        "GET /.well-known/oauth-protected-resource/mcp/echo 200",
        "GET /.well-known/oauth-authorization-server 200",
        "POST /reg 201",
        "POST /token 200",
        "POST /mcp/echo 200",
    ];
    let positions: Vec<usize> = steps.iter().map(|s| position(s)).collect();
    assert!(positions.is_sorted(), "{requests:?}");
    assert_eq!(out["resource"], resource(port), "{out}");
    assert_eq!(out["scope"], "mcp", "{out}");
    assert_eq!(out["echo"], "through oauth", "{out}");
    assert!(
        out["tools"].as_array().unwrap().contains(&json!("echo")),
        "{out}"
    );
    // The unified endpoint: its own metadata, and the tool by its prefixed name.
    let unified = ts_oauth_client(&gw.url(""), "echo___").await;
    let requests = unified["requests"].to_string();
    assert!(
        requests.contains("GET /.well-known/oauth-protected-resource/mcp 200"),
        "{requests}"
    );
    assert_eq!(unified["echo"], "through oauth", "{unified}");
    assert!(
        unified["tools"]
            .as_array()
            .unwrap()
            .contains(&json!("echo___echo")),
        "{unified}"
    );

    // The user who logged in (oidc-provider's `sub`) is the caller.
    let expected = format!("\"caller\":\"carol@{}\"", issuer.url);
    wait_until("the audit log names carol", || {
        std::fs::read_to_string(audit.path()).is_ok_and(|log| log.contains(&expected))
    })
    .await;
    gw.stop().await;
    issuer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_callers_get_a_process_per_user_whatever_their_token() {
    let issuer = Issuer::start().await;
    let port = free_port();
    let servers = echo_and_scoped_files();
    let gw = gateway_on(port, &config(&issuer, port, "", &servers)).await;
    let stateless_pid = |server: &'static str, token: String| {
        let gw = &gw;
        async move {
            let (status, answer) = super::stateless::call(1, "pid", json!({}))
                .to(server)
                .send_with(gw, |h, _| h.push(("authorization", bearer(&token))))
                .await;
            (
                status,
                answer["result"]["structuredContent"]["pid"].as_u64(),
            )
        }
    };
    let alice = issuer.token("alice", &resource(port), "mcp").await;
    let (status, alice_pid) = stateless_pid("echo", alice.clone()).await;
    assert_eq!(status, 200);
    let (_, bob_pid) =
        stateless_pid("echo", issuer.token("bob", &resource(port), "mcp").await).await;
    let refreshed = issuer.token("alice", &resource(port), "mcp").await;
    let (_, again) = stateless_pid("echo", refreshed).await;
    assert!(alice_pid.is_some() && bob_pid.is_some());
    assert_eq!(
        alice_pid, again,
        "alice's refreshed token reaches her process"
    );
    assert_ne!(alice_pid, bob_pid, "bob has a process of his own");
    // A server needing a scope the token lacks: 403, nothing started.
    let (status, _) = stateless_pid("files", alice).await;
    assert_eq!(status, 403);
    assert_eq!(
        children_of(gw.pid).len(),
        2,
        "one process per user, none for files"
    );
    gw.stop().await;
    issuer.stop().await;
}
