//! Clients that try to hold the gateway's resources over raw TCP: bodies that
//! stop coming, `Content-Length`s larger than what is sent, more connections
//! than `max_connections`, more body bytes than `max_buffered_body_bytes`, and
//! a request naming two sessions. Each test checks a healthy session beside
//! them keeps working and that the gateway's sockets are back to where they
//! started.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::common::*;

/// The raw address of the gateway.
fn addr(gw: &Gateway) -> String {
    gw.base.trim_start_matches("http://").to_owned()
}

/// Sockets the gateway has open (its listener, client connections).
fn open_sockets(gw: &Gateway) -> usize {
    gw.open_fds("socket:")
}

/// Waits until the gateway has at most `sockets` sockets open.
async fn wait_for_sockets(gw: &Gateway, sockets: usize) {
    wait_until(
        &format!("the gateway has at most {sockets} sockets open"),
        || open_sockets(gw) <= sockets,
    )
    .await;
}

/// Waits until the gateway's `/metrics` has a line `line`.
async fn wait_for_metric(gw: &Gateway, line: &str) {
    let start = Instant::now();
    loop {
        let text = gw.get_text("/metrics").await;
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "no {line:?} in {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The head of a POST to `/mcp/t` declaring `length` bytes of body.
fn post_head(length: usize, session: Option<&str>) -> Vec<u8> {
    let session = session.map_or(String::new(), |s| format!("mcp-session-id: {s}\r\n"));
    format!(
        "POST /mcp/t HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\nmcp-protocol-version: {PROTOCOL}\r\n\
         {session}content-length: {length}\r\n\r\n"
    )
    .into_bytes()
}

/// A JSON-RPC `ping` padded with spaces to exactly `length` bytes.
fn padded_ping(length: usize) -> Vec<u8> {
    let mut body = br#"{"jsonrpc":"2.0","id":"p","method":"ping"}"#.to_vec();
    assert!(body.len() <= length);
    body.resize(length, b' ');
    body
}

async fn connect(gw: &Gateway) -> TcpStream {
    tokio::time::timeout(DEADLINE, TcpStream::connect(addr(gw)))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// What a connection got: the status, the head, and the body, read until the
/// gateway closed the connection.
struct Reply {
    status: u16,
    head: String,
    body: Value,
}

/// Reads until the gateway closes the connection (failing the test if it
/// does not within [`DEADLINE`]) and parses the one response it sent.
async fn read_until_closed(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Reply {
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("the gateway closes the connection");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Reply {
        status,
        head: head.to_ascii_lowercase(),
        body: serde_json::from_str(body).unwrap_or_else(|e| panic!("body {body:?}: {e}")),
    }
}

/// Checks a healthy session can still call a tool.
async fn still_served(gw: &Gateway, session: &str, id: &str) {
    let answer = gw
        .call_tool("t", session, id, "echo", json!({"message": id}))
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], id, "{answer}");
}

fn config(gateway: &str) -> String {
    format!(
        "[gateway]\nstop_grace = \"500ms\"\nshutdown_timeout = \"5s\"\n{gateway}\n{}",
        test_server("t", &[])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_or_trickles_gets_408_and_its_connection_is_closed() {
    let gw = Gateway::start(&config(
        "body_read_timeout = \"1s\"\nbody_read_total_timeout = \"3s\"",
    ))
    .await;
    let session = gw.open_session("t").await;
    still_served(&gw, &session, "before").await;
    let sockets = open_sockets(&gw);

    // Headers and part of the body, then nothing.
    let mut stopped = connect(&gw).await;
    stopped.write_all(&post_head(100, None)).await.unwrap();
    stopped.write_all(b"{\"jsonrpc\":").await.unwrap();
    // A byte every 200 ms: never a second without one, never done either.
    let trickle = connect(&gw).await;
    let (mut trickle_reader, mut writer) = trickle.into_split();
    writer.write_all(&post_head(10_000, None)).await.unwrap();
    let trickling = tokio::spawn(async move {
        let start = Instant::now();
        while start.elapsed() < DEADLINE && writer.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    let reply = read_until_closed(&mut stopped).await;
    assert_eq!(reply.status, 408, "{}", reply.head);
    assert!(reply.head.contains("connection: close"), "{}", reply.head);
    assert_eq!(reply.body["error"]["code"], -32000, "{}", reply.body);
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("body_read_timeout"), "{message}");

    let reply = read_until_closed(&mut trickle_reader).await;
    assert_eq!(reply.status, 408, "{}", reply.head);
    let message = reply.body["error"]["message"].as_str().unwrap();
    // Which deadline ends it depends on how the machine keeps up; either is a 408.
    assert!(message.contains("body_read_"), "{message}");
    trickling.abort();
    let _ = trickling.await;
    drop((stopped, trickle_reader));

    still_served(&gw, &session, "after").await;
    wait_for_sockets(&gw, sockets).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_larger_than_the_body_sent_gets_408() {
    let gw = Gateway::start(&config("body_read_timeout = \"1s\"")).await;
    let session = gw.open_session("t").await;
    let sockets = open_sockets(&gw);
    let mut short = connect(&gw).await;
    let ping = padded_ping(50);
    short
        .write_all(&[post_head(1000, Some(&session)), ping].concat())
        .await
        .unwrap();
    let reply = read_until_closed(&mut short).await;
    assert_eq!(reply.status, 408, "{}", reply.head);
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Request Timeout")
    );
    drop(short);
    still_served(&gw, &session, "after").await;
    wait_for_sockets(&gw, sockets).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_get_503_until_others_close() {
    const MAX: usize = 8;
    let gw = Gateway::start(&config(&format!(
        "max_connections = {MAX}\nbody_read_timeout = \"60s\"\nbody_read_total_timeout = \"120s\""
    )))
    .await;
    let sockets = open_sockets(&gw);
    // MAX connections, each in the middle of a body.
    let mut holders = Vec::new();
    for _ in 0..MAX {
        let mut holder = connect(&gw).await;
        holder.write_all(&post_head(100, None)).await.unwrap();
        holder.write_all(b"{").await.unwrap();
        holders.push(holder);
    }
    wait_until("the gateway holds every connection", || {
        open_sockets(&gw) == sockets + MAX
    })
    .await;
    // Any more are refused at once, with an answer.
    for _ in 0..4 {
        let mut extra = connect(&gw).await;
        let _ = extra
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            .await;
        let reply = read_until_closed(&mut extra).await;
        assert_eq!(reply.status, 503, "{}", reply.head);
        assert!(reply.head.contains("retry-after: "), "{}", reply.head);
        assert!(reply.head.contains("connection: close"), "{}", reply.head);
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("max_connections (8)"), "{message}");
    }
    gw.wait_for_log(&["connection refused: max_connections are open"])
        .await;
    // Once the holders go, clients are served again.
    drop(holders);
    wait_for_sockets(&gw, sockets).await;
    let session = gw.open_session("t").await;
    still_served(&gw, &session, "after").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_held_past_max_buffered_body_bytes_get_503_until_released() {
    const BODY: usize = 40 << 10;
    let gw = Gateway::start(&config(
        "max_body_bytes = \"64KiB\"\nmax_buffered_body_bytes = \"64KiB\"\n\
         body_read_timeout = \"60s\"\nbody_read_total_timeout = \"120s\"",
    ))
    .await;
    let session = gw.open_session("t").await;
    let sockets = open_sockets(&gw);
    // One body of 40 KiB, half sent: its 40 KiB are reserved.
    let mut held = connect(&gw).await;
    held.write_all(&post_head(BODY, Some(&session)))
        .await
        .unwrap();
    held.write_all(&padded_ping(BODY)[..BODY / 2])
        .await
        .unwrap();
    wait_for_metric(&gw, &format!("mcpgate_buffered_body_bytes {BODY}")).await;
    // A second would take the total past 64 KiB: 503 (its body read and
    // thrown away, so that the answer is not lost in a reset).
    let mut second = connect(&gw).await;
    second
        .write_all(&[post_head(BODY, Some(&session)), padded_ping(BODY)].concat())
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while !(out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}")) {
        match tokio::time::timeout(DEADLINE, second.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&out).into_owned();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("retry-after: "), "{answer}");
    assert!(
        answer.contains("max_buffered_body_bytes (64KiB)"),
        "{answer}"
    );
    // Small bodies still fit beside the held one.
    still_served(&gw, &session, "beside").await;
    // Once the held body goes, a large one is taken again.
    drop((held, second));
    let padded = json!({"jsonrpc":"2.0","id":"big","method":"tools/call",
        "params":{"name":"echo","arguments":{"message":"x".repeat(BODY - 200)}}})
    .to_string();
    let start = Instant::now();
    loop {
        let response = gw.post("t", Some(&session), &padded, &[]).await;
        if response.status() == 200 {
            let answer = answer_of(response).await;
            assert_eq!(answer["id"], "big", "{answer}");
            break;
        }
        assert_eq!(response.status(), 503);
        assert!(
            start.elapsed() < DEADLINE,
            "the held body was never released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for_metric(&gw, "mcpgate_buffered_body_bytes 0").await;
    wait_for_sockets(&gw, sockets).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_different_session_ids_get_400() {
    let gw = Gateway::start(&config("")).await;
    let session = gw.open_session("t").await;
    let other = gw.open_session("t").await;
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let send = |ids: [&str; 2]| {
        gw.http
            .post(gw.url("t"))
            .header("content-type", "application/json")
            .header("accept", ACCEPT_BOTH)
            .header("mcp-protocol-version", PROTOCOL)
            .header("mcp-session-id", ids[0])
            .header("mcp-session-id", ids[1])
            .body(list)
            .send()
    };
    let response = send([&session, &other]).await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("two different Mcp-Session-Id headers"),
        "{body}"
    );
    // The same id twice is that id.
    let response = send([&session, &session]).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(answer_of(response).await["result"]["tools"].is_array());
    gw.stop().await;
}
