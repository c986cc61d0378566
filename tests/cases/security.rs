//! Who may use the gateway, and limits that keep one client from holding it.

use std::io::{Read, Write};
use std::time::Instant;

use serde_json::{Value, json};

use crate::common::*;

const ALICE: &str = "Bearer alice-key-0123456789";
const BOB: &str = "Bearer bob-key-0123456789";

fn keyed_config() -> String {
    format!(
        "[gateway]\nstop_grace = \"500ms\"\napi_keys = {{ alice = \"alice-key-0123456789\", bob = \"bob-key-0123456789\" }}\n{}",
        test_server("t", &[])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_required_and_a_session_belongs_to_its_key() {
    let gw = Gateway::start(&keyed_config()).await;
    let init = initialize_body("1");
    // No key, a wrong key, another scheme: 401 with WWW-Authenticate.
    for auth in [
        None,
        Some("Bearer nope-nope-nope-nope"),
        Some("Basic YWxpY2U6a2V5"),
    ] {
        let extra: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let response = gw.post("t", None, &init, &extra).await;
        assert_eq!(response.status(), 401, "{auth:?}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"mcpgate\""
        );
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Unauthorized"),
            "{body}"
        );
    }
    assert_eq!(children_of(gw.pid).len(), 0, "nothing was started for them");

    let response = gw.post("t", None, &init, &[("authorization", ALICE)]).await;
    assert_eq!(response.status(), 200);
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let call = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"mine"}}});
    let mine = gw
        .post(
            "t",
            Some(&session),
            &call.to_string(),
            &[("authorization", ALICE)],
        )
        .await;
    assert_eq!(
        answer_of(mine).await["result"]["content"][0]["text"],
        "mine"
    );

    // Bob holding Alice's session id gets exactly what an unknown session gets.
    let theirs = gw
        .post(
            "t",
            Some(&session),
            &call.to_string(),
            &[("authorization", BOB)],
        )
        .await;
    assert_eq!(theirs.status(), 404);
    let get = gw
        .http
        .get(gw.url("t"))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("authorization", BOB)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 404);
    let delete = |auth: &'static str| {
        gw.http
            .delete(gw.url("t"))
            .header("mcp-session-id", &session)
            .header("authorization", auth)
            .send()
    };
    assert_eq!(delete(BOB).await.unwrap().status(), 404);
    assert_eq!(delete(ALICE).await.unwrap().status(), 200);

    // Liveness needs no key.
    let health = gw
        .http
        .get(format!("{}/healthz", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    gw.stop().await;
}

#[test]
fn the_gateway_refuses_a_non_loopback_address_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open.toml");
    std::fs::write(&path, "[gateway]\nlisten = \"0.0.0.0:3000\"\n").unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mcpgate"))
            .args(args)
            .output()
            .unwrap()
    };
    for args in [
        vec!["--config", path.to_str().unwrap()],
        vec!["check", "--config", path.to_str().unwrap()],
    ] {
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr.contains("refusing to listen") && stderr.contains("api_keys"),
            "{stderr}"
        );
    }
    std::fs::write(
        &path,
        "[gateway]\nlisten = \"0.0.0.0:3000\"\nallow_unauthenticated = true\n",
    )
    .unwrap();
    assert!(
        run(&["check", "--config", path.to_str().unwrap()])
            .status
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_per_session_are_limited_with_429() {
    let config = format!(
        "[gateway]\nstop_grace = \"500ms\"\nmax_in_flight_per_session = 2\n{}",
        test_server("t", &["--stderr-noise"])
    );
    let gw = Gateway::start(&config).await;
    let session = gw.open_session("t").await;
    let other = gw.open_session("t").await;
    let slow = |id: &'static str| gw.call_tool("t", &session, id, "sleep", json!({"ms": 1500}));
    let third = async {
        wait_until("two requests are at the backend", || {
            gw.log()
                .iter()
                .filter(|l| l.contains("handling tools/call"))
                .count()
                >= 2
        })
        .await;
        let call = json!({"jsonrpc":"2.0","id":"3","method":"tools/call","params":{"name":"echo","arguments":{"message":"x"}}});
        let refused = gw.post("t", Some(&session), &call.to_string(), &[]).await;
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.headers()["retry-after"], "1");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["id"], "3");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("max_in_flight_per_session")
        );
        // Another session is not affected.
        let fine = gw
            .call_tool("t", &other, "o", "echo", json!({"message": "other"}))
            .await;
        assert_eq!(fine["result"]["content"][0]["text"], "other");
    };
    let (a, b, ()) = tokio::join!(slow("1"), slow("2"), third);
    assert_eq!(a["result"]["content"][0]["text"], "slept 1500 ms");
    assert_eq!(b["result"]["content"][0]["text"], "slept 1500 ms");
    let after = gw
        .call_tool("t", &session, "4", "echo", json!({"message": "again"}))
        .await;
    assert_eq!(after["result"]["content"][0]["text"], "again");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_gets_431() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let huge = "x".repeat(64 << 10);
    let response = gw
        .post("t", None, &initialize_body("1"), &[("x-padding", &huge)])
        .await;
    assert_eq!(response.status(), 431);
    let session = gw.open_session("t").await;
    assert!(gw.backend_pid("t", &session).await > 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_no_request_head_is_disconnected() {
    let config = format!(
        "[gateway]\nstop_grace = \"500ms\"\nheader_read_timeout = \"500ms\"\n{}",
        test_server("t", &[])
    );
    let gw = Gateway::start(&config).await;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let outcome = tokio::task::spawn_blocking(move || {
        // One client that never sends, one that trickles a request line and stops.
        let mut silent = std::net::TcpStream::connect(&addr).unwrap();
        let mut trickle = std::net::TcpStream::connect(&addr).unwrap();
        trickle
            .write_all(b"POST /mcp/t HTTP/1.1\r\nHost: 127")
            .unwrap();
        for stream in [&mut silent, &mut trickle] {
            stream.set_read_timeout(Some(DEADLINE)).unwrap();
        }
        let start = Instant::now();
        let mut buf = Vec::new();
        let silent_end = silent.read_to_end(&mut buf).map(|_| start.elapsed());
        let trickle_end = trickle.read_to_end(&mut buf).map(|_| start.elapsed());
        (silent_end, trickle_end)
    })
    .await
    .unwrap();
    // Both connections were closed by the gateway (read_to_end returned), well
    // before the read deadline would have fired.
    let (silent, trickle) = outcome;
    assert!(silent.unwrap() < DEADLINE);
    assert!(trickle.unwrap() < DEADLINE);
    let session = gw.open_session("t").await;
    assert!(gw.backend_pid("t", &session).await > 0);
    gw.stop().await;
}

/// Runs curl (a real, independent HTTPS client) and returns (status, headers+body).
fn curl(args: &[&str]) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-i", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, text + &String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_served_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let config = format!(
        "[gateway]\nstop_grace = \"500ms\"\ntls_cert = {:?}\ntls_key = {:?}\n{}",
        cert_path.display().to_string(),
        key_path.display().to_string(),
        test_server("t", &[])
    );
    let gw = Gateway::start(&config).await;
    assert!(gw.base.starts_with("https://"), "{}", gw.base);
    let port = gw.base.rsplit(':').next().unwrap().to_owned();
    let url = format!("https://localhost:{port}/mcp/t");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let cacert = cert_path.display().to_string();
    let (url2, resolve2, cacert2) = (url.clone(), resolve.clone(), cacert.clone());
    let (status, text) = tokio::task::spawn_blocking(move || {
        curl(&[
            "--cacert",
            &cacert2,
            "--resolve",
            &resolve2,
            "-H",
            "content-type: application/json",
            "-H",
            "accept: application/json, text/event-stream",
            "--data",
            &initialize_body("1"),
            &url2,
        ])
    })
    .await
    .unwrap();
    assert_eq!(status, "200", "{text}");
    assert!(
        text.to_ascii_lowercase().contains("mcp-session-id: "),
        "{text}"
    );
    assert!(text.contains("mcpgate-test-server"), "{text}");
    // A client that does not trust the certificate is refused by TLS itself.
    let (status, text) = tokio::task::spawn_blocking(move || {
        curl(&[
            "--resolve",
            &resolve,
            &format!("https://localhost:{port}/healthz"),
        ])
    })
    .await
    .unwrap();
    assert_ne!(status, "200", "{text}");
    gw.stop().await;
}

#[test]
fn a_bad_tls_file_is_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tls.toml");
    let cert = dir.path().join("nope.pem");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = {:?}\n",
            cert.display().to_string(),
            cert.display().to_string()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcpgate"))
        .args(["--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("tls_cert") && stderr.contains("nope.pem"),
        "{stderr}"
    );
}
