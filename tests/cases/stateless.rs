//! Stateless (2026-07-28) clients on the routed endpoint, bridged to the
//! session-era test server: era classification, the transport's header and
//! `_meta` checks, caller processes, and multi round-trip requests (MRTR)
//! with a signed `requestState`.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::common::*;

const MODERN: &str = "2026-07-28";
const ALICE: &str = "Bearer alice-key-0123456789";
const BOB: &str = "Bearer bob-key-0123456789";

fn keyed_config() -> String {
    format!(
        "{FAST_GATEWAY}api_keys = {{ alice = \"alice-key-0123456789\", bob = \"bob-key-0123456789\" }}\n{}",
        test_server("t", &[])
    )
}

/// `_meta` of a stateless request declaring `capabilities`.
fn meta(capabilities: Value) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "stateless-test", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": capabilities,
    })
}

/// A stateless request: `params` gets the `_meta`, the headers mirror the body.
pub(super) struct Stateless {
    pub id: Value,
    pub method: &'static str,
    pub params: Value,
    pub capabilities: Value,
    pub auth: Option<&'static str>,
    /// The server id of the route (`t` unless changed).
    pub server: &'static str,
}

impl Stateless {
    pub fn new(id: u64, method: &'static str, params: Value) -> Stateless {
        Stateless {
            id: json!(id),
            method,
            params,
            capabilities: json!({"elicitation": {}}),
            auth: None,
            server: "t",
        }
    }

    /// The same request to `/mcp/<server>`.
    pub fn to(mut self, server: &'static str) -> Stateless {
        self.server = server;
        self
    }

    pub fn by(mut self, auth: &'static str) -> Stateless {
        self.auth = Some(auth);
        self
    }

    pub fn body(&self) -> String {
        let mut params = self.params.clone();
        params["_meta"] = meta(self.capabilities.clone());
        json!({"jsonrpc": "2.0", "id": self.id, "method": self.method, "params": params})
            .to_string()
    }

    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("mcp-protocol-version", MODERN.to_owned()),
            ("mcp-method", self.method.to_owned()),
        ];
        if let Some(name) = self.params["name"].as_str().or(self.params["uri"].as_str()) {
            headers.push(("mcp-name", name.to_owned()));
        }
        if let Some(auth) = self.auth {
            headers.push(("authorization", auth.to_owned()));
        }
        headers
    }

    /// The POST of `body` with exactly `headers` (the harness's `post` would
    /// add a session-era version) besides the content type and `Accept`.
    fn post(
        &self,
        gw: &Gateway,
        headers: &[(&'static str, String)],
        body: String,
    ) -> reqwest::RequestBuilder {
        let mut request = gw
            .http
            .post(gw.url(self.server))
            .header("content-type", "application/json")
            .header("accept", ACCEPT_BOTH)
            .body(body);
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        request
    }

    /// The request with its own headers, not yet sent.
    pub fn request(&self, gw: &Gateway) -> reqwest::RequestBuilder {
        self.post(gw, &self.headers(), self.body())
    }

    /// Sends it with its headers, changed by `adjust`; returns status and body.
    pub async fn send_with(
        &self,
        gw: &Gateway,
        adjust: impl FnOnce(&mut Vec<(&'static str, String)>, &mut String),
    ) -> (u16, Value) {
        let (mut headers, mut body) = (self.headers(), self.body());
        adjust(&mut headers, &mut body);
        let response = self
            .post(gw, &headers, body)
            .send()
            .await
            .expect("HTTP request");
        let status = response.status().as_u16();
        assert!(
            response.headers().get("mcp-session-id").is_none(),
            "no session id for a stateless request"
        );
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub async fn send(&self, gw: &Gateway) -> (u16, Value) {
        self.send_with(gw, |_, _| {}).await
    }
}

pub(super) fn call(id: u64, tool: &str, arguments: Value) -> Stateless {
    Stateless::new(
        id,
        "tools/call",
        json!({"name": tool, "arguments": arguments}),
    )
}

fn ask_name() -> Value {
    json!({
        "method": "elicitation/create",
        "params": {
            "mode": "form",
            "message": "Name?",
            "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}},
        }
    })
}

async fn pid_of(gw: &Gateway, request: Stateless) -> u64 {
    let (status, answer) = request.send(gw).await;
    assert_eq!(status, 200, "{answer}");
    answer["result"]["structuredContent"]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("pid answer: {answer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_client_gets_discover_lists_and_calls_from_a_session_era_backend() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;

    let (status, discover) = Stateless::new(1, "server/discover", json!({}))
        .send(&gw)
        .await;
    assert_eq!(status, 200, "{discover}");
    let result = &discover["result"];
    assert_eq!(discover["id"], 1);
    assert_eq!(result["resultType"], "complete");
    assert_eq!(result["supportedVersions"], json!([MODERN]));
    assert_eq!(result["ttlMs"], 0);
    assert_eq!(result["cacheScope"], "private");
    assert!(result["capabilities"]["tools"].is_object(), "{discover}");
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "mcpgate-test-server"
    );

    let (status, list) = Stateless::new(2, "tools/list", json!({})).send(&gw).await;
    assert_eq!(status, 200);
    assert_eq!(list["result"]["resultType"], "complete");
    assert_eq!(list["result"]["ttlMs"], 0);
    assert!(
        list["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "echo")
    );

    // A string id comes back as sent; the result is the backend's own plus resultType.
    let mut echo = call(3, "echo", json!({"message": "hi"}));
    echo.id = json!("call-3");
    let (status, answer) = echo.send(&gw).await;
    assert_eq!(status, 200);
    assert_eq!(answer["id"], "call-3");
    assert_eq!(answer["result"]["resultType"], "complete");
    assert_eq!(answer["result"]["content"][0]["text"], "hi");
    assert!(
        answer["result"].get("ttlMs").is_none(),
        "tools/call is not cacheable"
    );

    // The backend saw the gateway's initialize, with the client's clientInfo.
    let (_, info) = call(4, "client_info", json!({})).send(&gw).await;
    let seen = &info["result"]["structuredContent"]["initializeParams"];
    assert_eq!(seen["clientInfo"]["name"], "stateless-test", "{info}");
    assert!(seen["capabilities"]["elicitation"].is_object(), "{info}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stateless_fault_gets_the_status_and_error_the_transport_asks_for() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    // A session-era client is served alongside throughout.
    let session = gw.open_session("t").await;
    let echo = || call(1, "echo", json!({"message": "x"}));
    type Adjust = fn(&mut Vec<(&'static str, String)>, &mut String);
    let cases: Vec<(&str, Adjust, u16, i64)> = vec![
        (
            "no MCP-Protocol-Version",
            |h, _| h.retain(|(k, _)| *k != "mcp-protocol-version"),
            400,
            -32020,
        ),
        (
            "header and body versions differ",
            |_, b| *b = b.replace("2026-07-28", "2026-12-01"),
            400,
            -32020,
        ),
        (
            "an unsupported version",
            |h, b| {
                *b = b.replace("2026-07-28", "2099-01-01");
                h[0].1 = "2099-01-01".into();
            },
            400,
            -32022,
        ),
        (
            "no clientCapabilities",
            |_, b| {
                *b = b.replace(
                    r#""io.modelcontextprotocol/clientCapabilities":{"elicitation":{}}"#,
                    r#""x":1"#,
                );
            },
            400,
            -32602,
        ),
        (
            "no Mcp-Method",
            |h, _| h.retain(|(k, _)| *k != "mcp-method"),
            400,
            -32020,
        ),
        (
            "Mcp-Method differs",
            |h, _| h[1].1 = "tools/list".into(),
            400,
            -32020,
        ),
        (
            "no Mcp-Name",
            |h, _| h.retain(|(k, _)| *k != "mcp-name"),
            400,
            -32020,
        ),
        (
            "Mcp-Name differs",
            |h, _| h[2].1 = "pid".into(),
            400,
            -32020,
        ),
        (
            "Mcp-Name badly encoded",
            |h, _| h[2].1 = "=?base64?!!!?=".into(),
            400,
            -32020,
        ),
    ];
    for (what, adjust, status, code) in cases {
        let (got, body) = echo().send_with(&gw, adjust).await;
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        assert_eq!(body["id"], 1, "{what}: {body}");
    }
    // -32022 names what is supported.
    let (_, body) = echo()
        .send_with(&gw, |h, b| {
            *b = b.replace("2026-07-28", "2099-01-01");
            h[0].1 = "2099-01-01".into();
        })
        .await;
    assert_eq!(body["error"]["data"]["requested"], "2099-01-01");
    assert!(
        body["error"]["data"]["supported"]
            .as_array()
            .unwrap()
            .contains(&json!(MODERN)),
        "{body}"
    );
    // Mcp-Name in the base64 sentinel form is decoded before comparing.
    let (status, body) = echo()
        .send_with(&gw, |h, _| h[2].1 = "=?base64?ZWNobw==?=".into())
        .await;
    assert_eq!(status, 200, "{body}");
    // An unknown method: 404 with -32601.
    let (status, body) = Stateless::new(5, "tools/dance", json!({})).send(&gw).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!(-32601)),
        "{body}"
    );
    // GET and DELETE have no meaning in 2026-07-28: 405.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = gw
            .http
            .request(method.clone(), gw.url("t"))
            .header("mcp-protocol-version", MODERN)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method}");
    }
    // A request of neither era gets a plain 400, so dual-era clients fall back
    // to initialize.
    let plain = gw
        .post(
            "t",
            None,
            r#"{"jsonrpc":"2.0","id":1,"method":"server/discover"}"#,
            &[],
        )
        .await;
    assert_eq!(plain.status(), 400);
    let body: Value = plain.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32000, "{body}");

    let answer = gw
        .call_tool("t", &session, "9", "echo", json!({"message": "still here"}))
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], "still here");
    gw.stop().await;
}

/// A backend that asks its client something while a list is in flight is
/// answered with an error at once: 2026-07-28 allows an `InputRequiredResult`
/// only for `tools/call`, `prompts/get` and `resources/read`, so the list is
/// answered as a list, on both endpoints, and nothing is left parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_is_never_answered_with_input_required() {
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}{}",
        test_server("t", &["--ask-roots-on-list"])
    ))
    .await;
    for (id, route) in [(1, "t"), (2, "")] {
        let mut list = Stateless::new(id, "tools/list", json!({})).to(route);
        list.capabilities = json!({"roots": {}, "elicitation": {}});
        let (status, answer) = list.send(&gw).await;
        assert_eq!(status, 200, "{route}: {answer}");
        let result = &answer["result"];
        assert_eq!(result["resultType"], "complete", "{route}: {answer}");
        assert!(
            result["tools"].as_array().is_some_and(|t| !t.is_empty()),
            "{route}: {answer}"
        );
    }
    gw.wait_for_log(&[
        "roots/list during tools/list was answered",
        "cannot carry input requests",
    ])
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_elicitation_round_trip_goes_through_the_bridge_once() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let (status, first) = call(1, "ask_client", ask_name()).send(&gw).await;
    assert_eq!(status, 200, "{first}");
    let result = &first["result"];
    assert_eq!(result["resultType"], "input_required", "{first}");
    let requests = result["inputRequests"].as_object().unwrap();
    assert_eq!(requests.len(), 1);
    let (key, request) = requests.iter().next().unwrap();
    assert_eq!(request["method"], "elicitation/create");
    assert_eq!(request["params"]["message"], "Name?");
    assert!(request.get("id").is_none(), "input requests carry no id");
    let state = result["requestState"].as_str().unwrap().to_owned();

    // The retry: a new id, the same request, the input and the state.
    let mut params = ask_name_params();
    params["inputResponses"] = json!({ key: {"action": "accept", "content": {"name": "octocat"}} });
    params["requestState"] = json!(state);
    let retry = Stateless::new(2, "tools/call", params.clone());
    let (status, done) = retry.send(&gw).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["id"], 2);
    assert_eq!(done["result"]["resultType"], "complete");
    let response = &done["result"]["structuredContent"]["response"];
    assert_eq!(response["result"]["content"]["name"], "octocat", "{done}");

    // The same state again: the call it stood for is over.
    let (status, again) = Stateless::new(3, "tools/call", params).send(&gw).await;
    assert_eq!(status, 400, "{again}");
    assert_eq!(again["error"]["code"], -32602);
    gw.stop().await;
}

fn ask_name_params() -> Value {
    json!({"name": "ask_client", "arguments": ask_name()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_and_foreign_request_states_are_refused_and_consume_nothing() {
    let gw = Gateway::start(&keyed_config()).await;
    let (_, first) = call(1, "ask_client", ask_name()).by(ALICE).send(&gw).await;
    let state = first["result"]["requestState"]
        .as_str()
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    let key = first["result"]["inputRequests"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let retry = |state: &str, name: &str| {
        let mut params = json!({"name": name, "arguments": ask_name()});
        params["inputResponses"] =
            json!({ &key: {"action": "accept", "content": {"name": "octocat"}} });
        params["requestState"] = json!(state);
        Stateless::new(2, "tools/call", params)
    };
    let mut tampered = state.clone().into_bytes();
    tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for (what, request) in [
        (
            "bob presents alice's state",
            retry(&state, "ask_client").by(BOB),
        ),
        ("a tampered state", retry(&tampered, "ask_client").by(ALICE)),
        ("the state on another tool", retry(&state, "echo").by(ALICE)),
        ("a made-up state", retry("abc.def", "ask_client").by(ALICE)),
    ] {
        let (status, body) = request.send(&gw).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["error"]["code"], -32602, "{what}: {body}");
    }
    // None of that consumed alice's parked call.
    let (status, done) = retry(&state, "ask_client").by(ALICE).send(&gw).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_first_requests_of_a_caller_start_one_process_and_each_caller_has_its_own() {
    let gw = Gateway::start(&keyed_config()).await;
    let calls = (0..16).map(|i| {
        let gw = &gw;
        async move { pid_of(gw, call(i, "pid", json!({})).by(ALICE)).await }
    });
    let alice: BTreeSet<u64> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .collect();
    assert_eq!(alice.len(), 1, "alice's 16 first calls reached {alice:?}");
    let bob = pid_of(&gw, call(1, "pid", json!({})).by(BOB)).await;
    assert!(!alice.contains(&bob), "bob has his own process");
    assert_eq!(
        children_of(gw.pid).len(),
        2,
        "one supervisor per caller, nothing more"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_api_keys_caller_header_names_the_caller() {
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}caller_header = \"x-caller\"\n{}",
        test_server("t", &[])
    ))
    .await;
    let named = |name: &'static str| {
        let gw = &gw;
        async move {
            let (status, answer) = call(1, "pid", json!({}))
                .send_with(gw, |h, _| h.push(("x-caller", name.to_owned())))
                .await;
            assert_eq!(status, 200, "{answer}");
            answer["result"]["structuredContent"]["pid"]
                .as_u64()
                .unwrap()
        }
    };
    let (a1, b, a2) = (named("a").await, named("b").await, named("a").await);
    assert_eq!(a1, a2);
    assert_ne!(a1, b);
    let anonymous = pid_of(&gw, call(1, "pid", json!({}))).await;
    assert!(anonymous != a1 && anonymous != b);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_the_needed_capability_gets_32021() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let mut ask = call(1, "ask_client", ask_name());
    ask.capabilities = json!({"sampling": {}});
    let (status, body) = ask.send(&gw).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], -32021);
    assert!(
        body["error"]["data"]["requiredCapabilities"]["elicitation"].is_object(),
        "{body}"
    );
    // The backend got an error answer and goes on serving.
    let (status, echo) = call(2, "echo", json!({"message": "on"})).send(&gw).await;
    assert_eq!(status, 200);
    assert_eq!(echo["result"]["content"][0]["text"], "on");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_client_that_goes_away_cancels_its_call_at_the_backend() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    // Open the caller's process first, so the slow call is the only one in flight.
    pid_of(&gw, call(1, "pid", json!({}))).await;
    let request = call(7, "sleep", json!({"ms": 60_000}))
        .request(&gw)
        .timeout(std::time::Duration::from_millis(500));
    assert!(request.send().await.is_err(), "the client gives up");
    // The test server says `cancelled <id>` on stderr, which the gateway logs.
    gw.wait_for_log(&["mcpgate::backend", "cancelled "]).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_request_with_two_calls_of_the_caller_in_flight_is_refused_not_guessed() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    pid_of(&gw, call(1, "pid", json!({}))).await;
    let slow = call(2, "sleep", json!({"ms": 3_000}));
    let (ask, slept) = tokio::join!(
        async {
            // Once the slow call is in flight at the backend.
            gw.wait_for_log(&["mcpgate::backend", "sleeping "]).await;
            call(3, "ask_client", ask_name()).send(&gw).await
        },
        slow.send(&gw)
    );
    let (status, answer) = ask;
    assert_eq!(status, 200, "{answer}");
    // The backend's elicitation/create got an error answer, which the tool reports.
    let response = &answer["result"]["structuredContent"]["response"];
    assert!(
        response["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("several calls")),
        "{answer}"
    );
    assert_eq!(slept.0, 200, "{}", slept.1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_client_does_not_come_back_in_time_expires_and_is_cancelled() {
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}input_required_timeout = \"1s\"\ncleanup_interval = \"100ms\"\n{}",
        test_server("t", &[])
    ))
    .await;
    let (_, first) = call(1, "ask_client", ask_name()).send(&gw).await;
    let state = first["result"]["requestState"].clone();
    assert!(state.is_string(), "{first}");
    // The sweep drops it: the backend's call is cancelled, its question answered.
    gw.wait_for_log(&["a call waiting for its client's input expired"])
        .await;
    let mut params = ask_name_params();
    params["inputResponses"] =
        json!({"input-1": {"action": "accept", "content": {"name": "late"}}});
    params["requestState"] = state;
    let (status, late) = Stateless::new(2, "tools/call", params).send(&gw).await;
    assert_eq!(status, 400, "{late}");
    assert!(
        late["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{late}"
    );
    // The backend goes on serving the caller.
    let (status, _) = call(3, "echo", json!({"message": "x"})).send(&gw).await;
    assert_eq!(status, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_call_does_not_keep_its_callers_process_from_going_idle() {
    // The call waits for its client far longer than the idle timeout: the
    // process goes idle anyway, and the call ends with it.
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}session_idle_timeout = \"1s\"\ninput_required_timeout = \"10m\"\ncleanup_interval = \"100ms\"\n{}",
        test_server("t", &[])
    ))
    .await;
    let pid = pid_of(&gw, call(1, "pid", json!({}))).await as u32;
    let (_, first) = call(2, "ask_client", ask_name()).send(&gw).await;
    let state = first["result"]["requestState"].clone();
    assert!(state.is_string(), "{first}");
    wait_until("the caller's process is stopped once idle", || {
        !process_alive(pid)
    })
    .await;
    let mut params = ask_name_params();
    params["inputResponses"] =
        json!({"input-1": {"action": "accept", "content": {"name": "late"}}});
    params["requestState"] = state;
    let (status, late) = Stateless::new(3, "tools/call", params).send(&gw).await;
    assert_eq!(status, 400, "{late}");
    assert!(
        late["error"]["message"]
            .as_str()
            .unwrap()
            .contains("its call has ended"),
        "{late}"
    );
    // The caller's next request opens a new process.
    let next = pid_of(&gw, call(4, "pid", json!({}))).await as u32;
    assert_ne!(next, pid);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_listen_streams_get_the_list_changes_they_asked_for_tagged_with_their_id() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let open = |id: u64, notifications: Value| {
        let listen = Stateless::new(
            id,
            "subscriptions/listen",
            json!({"notifications": notifications}),
        );
        let request = listen.request(&gw);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            SseReader::from_response(response)
        }
    };
    let mut tools = open(
        11,
        json!({"toolsListChanged": true, "promptsListChanged": true}),
    )
    .await;
    let mut prompts = open(12, json!({"promptsListChanged": true})).await;
    // Each stream starts with its acknowledgment, stating what the backend can
    // honour (the test server announces tool-list changes only).
    let ack = tools.next().await.unwrap();
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        11
    );
    assert_eq!(
        ack["params"]["notifications"],
        json!({"toolsListChanged": true})
    );
    let ack = prompts.next().await.unwrap();
    assert_eq!(ack["params"]["notifications"], json!({}));

    let (status, _) = call(1, "announce_list_changed", json!({})).send(&gw).await;
    assert_eq!(status, 200);
    let change = tools.next().await.expect("the tool-list change");
    assert_eq!(
        change["method"], "notifications/tools/list_changed",
        "{change}"
    );
    assert_eq!(
        change["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        11
    );
    // The stream that did not ask for it gets nothing (a keep-alive at most).
    assert!(
        prompts
            .next_within(std::time::Duration::from_millis(500))
            .await
            .is_none(),
        "a notification type the listener did not ask for"
    );
    drop((tools, prompts));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unified_endpoint_serves_stateless_clients_with_prefixed_names_and_mrtr() {
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}{}{}",
        test_server("t", &[]),
        test_server("u", &[])
    ))
    .await;
    let (status, discover) = Stateless::new(1, "server/discover", json!({}))
        .to("")
        .send(&gw)
        .await;
    assert_eq!(status, 200, "{discover}");
    assert_eq!(
        discover["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "mcpgate",
        "the gateway's own: {discover}"
    );
    let (_, list) = Stateless::new(2, "tools/list", json!({}))
        .to("")
        .send(&gw)
        .await;
    assert_eq!(list["result"]["resultType"], "complete", "{list}");
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"t___echo") && names.contains(&"u___echo"),
        "{names:?}"
    );
    let (_, echo) = call(3, "u___echo", json!({"message": "via /mcp"}))
        .to("")
        .send(&gw)
        .await;
    assert_eq!(echo["result"]["content"][0]["text"], "via /mcp", "{echo}");
    // An elicitation from one of the backends, through the unified session.
    let (_, first) = call(4, "t___ask_client", ask_name()).to("").send(&gw).await;
    assert_eq!(first["result"]["resultType"], "input_required", "{first}");
    let mut params = json!({"name": "t___ask_client", "arguments": ask_name()});
    params["inputResponses"] =
        json!({"input-1": {"action": "accept", "content": {"name": "octocat"}}});
    params["requestState"] = first["result"]["requestState"].clone();
    let (status, done) = Stateless::new(5, "tools/call", params)
        .to("")
        .send(&gw)
        .await;
    assert_eq!(status, 200, "{done}");
    let response = &done["result"]["structuredContent"]["response"];
    assert_eq!(response["result"]["content"]["name"], "octocat", "{done}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_process_goes_idle_once_its_listen_streams_are_closed() {
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}session_idle_timeout = \"1s\"\ncleanup_interval = \"100ms\"\nsse_keepalive = \"200ms\"\n{}",
        test_server("t", &[])
    ))
    .await;
    let pid = pid_of(&gw, call(1, "pid", json!({}))).await as u32;
    let listen = Stateless::new(
        2,
        "subscriptions/listen",
        json!({"notifications": {"toolsListChanged": true}}),
    );
    let mut stream = SseReader::from_response(listen.request(&gw).send().await.unwrap());
    assert!(stream.next().await.is_some(), "the acknowledgment");
    // While the stream is open the process stays, well past the idle timeout.
    assert!(
        stream
            .next_within(std::time::Duration::from_millis(1500))
            .await
            .is_none()
    );
    assert!(
        process_alive(pid),
        "a listening caller's process is not idle"
    );
    drop(stream);
    wait_until("the caller's process is stopped once idle", || {
        !process_alive(pid)
    })
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_max_in_flight_gets_429() {
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}max_in_flight_per_session = 2\n{}",
        test_server("t", &[])
    ))
    .await;
    pid_of(&gw, call(1, "pid", json!({}))).await;
    let slow = |id: u64| call(id, "sleep", json!({"ms": 3_000}));
    let (first, second) = (slow(2), slow(3));
    let (a, b, c) = tokio::join!(first.send(&gw), second.send(&gw), async {
        wait_until("two calls in flight at the backend", || {
            gw.log().iter().filter(|l| l.contains("sleeping ")).count() >= 2
        })
        .await;
        call(4, "echo", json!({"message": "x"})).send(&gw).await
    });
    let (status, body) = c;
    assert_eq!(status, 429, "{body}");
    assert_eq!((a.0, b.0), (200, 200));
    gw.stop().await;
}
