//! Scale-out: two gateway instances (tags `gw0` and `gw1`) behind a real nginx
//! (Debian's package, installed by `scripts/install-test-deps.sh`) running the
//! shipped `deploy/nginx/mcpgate.conf`, with only its instance addresses, its
//! listen port and its log directory replaced by the test's own. nginx runs as
//! the current user, with its config, pid file and temp files in a temp dir, on
//! a free loopback port, and is stopped by its pid.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::stateless::call as stateless_call;
use crate::common::*;

const TAGS: [&str; 2] = ["gw0", "gw1"];

/// The shipped nginx config and the placeholders the test replaces in it.
const SHIPPED_CONF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx/mcpgate.conf");
const SHIPPED_ADDRESSES: [&str; 2] = ["mcpgate-gw0.internal:3000", "mcpgate-gw1.internal:3000"];

/// The nginx binary: on PATH, or where Debian puts it (not on a user's PATH).
fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nginx is not installed: run scripts/install-test-deps.sh (the README's test \
                 command does); the scale-out tests run a real nginx in front of two gateways"
            )
        })
}

/// A free loopback port: bound to port 0, then released for nginx to bind.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Replaces every `from` in `text`, failing if the shipped file no longer has it.
fn replace_all(text: &str, from: &str, to: &str, at_least: usize) -> String {
    let found = text.matches(from).count();
    assert!(
        found >= at_least,
        "{SHIPPED_CONF} has {found} occurrence(s) of {from:?}, the test expects at least \
         {at_least}: update the substitutions in tests/cases/scale_out.rs with the file"
    );
    text.replace(from, to)
}

/// Writes `site` and a main config including it (one worker, temp paths in
/// `dir`) into `dir`; returns the main config's path.
fn write_confs(dir: &Path, site: &str) -> PathBuf {
    std::fs::write(dir.join("mcpgate.conf"), site).unwrap();
    let d = dir.display();
    // As root, nginx's workers would switch to `nobody`, who cannot enter the
    // temp dir; keep them as the current user (nginx needs the name only then).
    // SAFETY: geteuid(2) has no preconditions.
    #[allow(unsafe_code)]
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;"
    } else {
        ""
    };
    let main = format!(
        "worker_processes 1;\n{user}\nevents {{ worker_connections 512; }}\n\
         http {{\n\
         client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n\
         scgi_temp_path {d}/scgi;\n\
         include {d}/mcpgate.conf;\n}}\n"
    );
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, main).unwrap();
    conf
}

/// A running nginx.
struct Nginx {
    child: Option<Child>,
    reader: Option<std::thread::JoinHandle<()>>,
    pid: u32,
    base: String,
    dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

impl Nginx {
    /// Starts nginx with the http-level config `render` returns for its port
    /// and temp dir (a rendering of the shipped one) and waits until it answers.
    /// A port taken by someone else between `free_port` and nginx's bind gets a
    /// new try on another port.
    async fn start(render: impl Fn(u16, &Path) -> String) -> Nginx {
        for attempt in 1.. {
            let mut nginx = Nginx::spawn(&render);
            match nginx.wait_until_it_answers().await {
                Ok(()) => return nginx,
                Err(log) if attempt < 3 && log.contains("Address already in use") => continue,
                Err(log) => panic!("nginx did not start: {log}"),
            }
        }
        unreachable!()
    }

    fn spawn(render: &impl Fn(u16, &Path) -> String) -> Nginx {
        let nginx = nginx_binary();
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let conf = write_confs(dir.path(), &render(port, dir.path()));
        let d = dir.path().display();
        let mut child = Command::new(&nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .args(["-e", "stderr", "-g"])
            .arg(format!("daemon off; pid {d}/nginx.pid; error_log stderr;"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", nginx.display()));
        let pid = child.id();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let stderr_log = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[nginx] {line}");
                stderr_log.lock().unwrap().push(line);
            }
        });
        Nginx {
            child: Some(child),
            reader: Some(reader),
            pid,
            base: format!("http://127.0.0.1:{port}"),
            dir,
            log,
        }
    }

    /// Waits until nginx answers its own probe; `Err` with its log if it exits.
    async fn wait_until_it_answers(&mut self) -> Result<(), String> {
        let http = reqwest::Client::new();
        let url = format!("{}/nginx-healthz", self.base);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                // Every line it wrote: its stderr reader ends at the pipe's end.
                if let Some(reader) = self.reader.take() {
                    tokio::task::spawn_blocking(move || reader.join())
                        .await
                        .unwrap()
                        .unwrap();
                }
                let log = self.log.lock().unwrap().join("\n");
                self.child = None;
                return Err(format!("nginx exited with {status}:\n{log}"));
            }
            if let Ok(r) = http.get(&url).send().await
                && r.status() == 200
            {
                return Ok(());
            }
            assert!(
                start.elapsed() < DEADLINE,
                "nginx did not answer on {url}: {:?}",
                self.log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The access log (`deploy/nginx/mcpgate.conf` format), for failure messages.
    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Stops nginx gracefully by its pid (SIGQUIT), checks that it exited 0 and
    /// that its workers are gone. The test's client goes first: a graceful nginx
    /// waits for every connection that is not idle between requests, and a
    /// client's pool may hold one it opened but never used (which nginx counts
    /// as busy until client_header_timeout).
    async fn stop(mut self, client: Front) {
        drop(client);
        let workers = children_of(self.pid);
        assert!(!workers.is_empty(), "nginx runs a worker process");
        // SAFETY: kill(2) on the nginx master this test started.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.pid as i32, libc::SIGQUIT);
        };
        let mut child = self.child.take().unwrap();
        let status = tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    return status;
                }
                assert!(
                    start.elapsed() < DEADLINE,
                    "nginx did not exit after SIGQUIT"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap();
        assert!(status.success(), "nginx exited with {status}");
        wait_until("nginx's workers are gone", || {
            workers.iter().all(|w| !process_exists(*w))
        })
        .await;
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // A test that failed before `stop` still must not leave nginx behind.
        if let Some(mut child) = self.child.take() {
            let workers = children_of(self.pid);
            let _ = child.kill();
            let _ = child.wait();
            for pid in workers {
                // SAFETY: kill(2) on the workers of the nginx this test started.
                #[allow(unsafe_code)]
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                };
            }
        }
    }
}

/// Two gateways tagged gw0 and gw1 (through `${VAR}` expansion, as the
/// Kubernetes manifests do it) with `extra` in their `[gateway]` table, and the
/// shipped nginx config in front of them.
async fn two_instances_behind_nginx(extra: &str) -> ([Gateway; 2], Nginx) {
    let config = format!(
        "{FAST_GATEWAY}instance_tag = \"${{MCPGATE_INSTANCE}}\"\n{extra}\n{}",
        test_server("t", &[])
    );
    let gw0 = Gateway::start_with_env(&config, &[("MCPGATE_INSTANCE", TAGS[0])]).await;
    let gw1 = Gateway::start_with_env(&config, &[("MCPGATE_INSTANCE", TAGS[1])]).await;
    let addresses: Vec<String> = [&gw0, &gw1]
        .iter()
        .map(|gw| gw.base.trim_start_matches("http://").to_owned())
        .collect();
    let shipped = std::fs::read_to_string(SHIPPED_CONF).expect("read the shipped nginx config");
    let nginx = Nginx::start(|port, dir| {
        // Each address: its own upstream, the other's backup, and mcpgate_any.
        let mut site = shipped.clone();
        for (from, to) in SHIPPED_ADDRESSES.iter().zip(&addresses) {
            site = replace_all(&site, from, to, 3);
        }
        site = replace_all(&site, "listen 80;", &format!("listen 127.0.0.1:{port};"), 1);
        replace_all(&site, "/var/log/nginx/", &format!("{}/", dir.display()), 1)
    })
    .await;
    ([gw0, gw1], nginx)
}

/// A client of the nginx front.
struct Front {
    base: String,
    http: reqwest::Client,
}

impl Front {
    fn of(nginx: &Nginx) -> Front {
        Front {
            base: nginx.base.clone(),
            // A request that hangs fails the test instead of stalling it.
            http: reqwest::Client::builder()
                .timeout(DEADLINE)
                .build()
                .unwrap(),
        }
    }

    async fn post(
        &self,
        session: Option<&str>,
        body: &str,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/mcp/t", self.base))
            .header("content-type", "application/json")
            .header("accept", ACCEPT_BOTH)
            .header("mcp-protocol-version", PROTOCOL)
            .body(body.to_owned());
        if let Some(id) = session {
            request = request.header("mcp-session-id", id);
        }
        for (k, v) in extra {
            request = request.header(*k, *v);
        }
        request.send().await.expect("HTTP request through nginx")
    }

    /// `initialize` + `initialized` through nginx; returns the session id and
    /// the initialize answer's headers.
    async fn open_session(&self, extra: &[(&str, &str)]) -> (String, reqwest::header::HeaderMap) {
        let response = self.post(None, &initialize_body("1"), extra).await;
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        let id = headers
            .get("mcp-session-id")
            .expect("the initialize answer carries Mcp-Session-Id through nginx")
            .to_str()
            .unwrap()
            .to_owned();
        let body: Value = response.json().await.unwrap();
        assert!(body["result"]["serverInfo"].is_object(), "{body}");
        let note = self
            .post(
                Some(&id),
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                extra,
            )
            .await;
        assert_eq!(note.status(), 202);
        (id, headers)
    }

    /// The status and JSON body of a `pid` tool call in `session`.
    async fn try_pid(&self, session: &str) -> (u16, Value) {
        let body = json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"pid","arguments":{}}});
        let response = self.post(Some(session), &body.to_string(), &[]).await;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let answer = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("status {status}, not JSON ({e}): {text}"));
        (status, answer)
    }

    /// The backend pid the session's `pid` call reports.
    async fn pid(&self, session: &str) -> u32 {
        let (status, answer) = self.try_pid(session).await;
        assert_eq!(status, 200, "{answer}");
        pid_in(&answer)
    }

    async fn delete(&self, session: &str) -> u16 {
        self.http
            .delete(format!("{}/mcp/t", self.base))
            .header("mcp-session-id", session)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// A stateless (2026-07-28) `pid` call by the caller `identity` (extra headers).
    async fn stateless_pid(&self, identity: &[(&str, &str)]) -> u32 {
        let request = stateless_call(1, "pid", json!({}));
        let mut builder = self
            .http
            .post(format!("{}/mcp/t", self.base))
            .header("content-type", "application/json")
            .header("accept", ACCEPT_BOTH)
            .body(request.body());
        for (k, v) in request.headers().iter() {
            builder = builder.header(*k, v);
        }
        for (k, v) in identity {
            builder = builder.header(*k, *v);
        }
        let response = builder.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("mcp-session-id").is_none());
        pid_in(&response.json().await.unwrap())
    }
}

fn pid_in(answer: &Value) -> u32 {
    answer["result"]["structuredContent"]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("pid answer: {answer}")) as u32
}

/// The instance tag a session id names (`<tag>.<32 hex>`).
fn tag_of(id: &str) -> &str {
    let (tag, random) = id
        .split_once('.')
        .unwrap_or_else(|| panic!("untagged session id {id}"));
    assert!(
        random.len() == 32 && random.bytes().all(|b| b.is_ascii_hexdigit()),
        "session id {id}"
    );
    assert!(TAGS.contains(&tag), "session id {id} names no instance");
    tag
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Which gateway (index into `gws`) a backend pid runs under (backend ->
/// supervisor -> gateway).
fn instance_of(pid: u32, gws: &[Gateway; 2]) -> usize {
    let mut p = pid;
    for _ in 0..4 {
        p = parent_of(p).unwrap_or_else(|| panic!("backend {pid} has no parent chain"));
        if let Some(i) = gws.iter().position(|gw| gw.pid == p) {
            return i;
        }
    }
    panic!("backend {pid} runs under neither gateway")
}

fn index_of(tag: &str) -> usize {
    TAGS.iter().position(|t| *t == tag).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sessions_through_nginx_keep_their_backend_spread_over_both_and_delete_ends_the_right_one()
 {
    let (gws, nginx) = two_instances_behind_nginx("").await;
    let front = Front::of(&nginx);

    // 20 sessions, each with the backend pid every one of its requests reached.
    let mut sessions: Vec<(String, u32)> = Vec::new();
    for _ in 0..20 {
        let (id, headers) = front.open_session(&[]).await;
        let exposed = headers
            .get("access-control-expose-headers")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        assert!(exposed.contains("Mcp-Session-Id"), "{headers:?}");
        let pid = front.pid(&id).await;
        for _ in 0..3 {
            assert_eq!(front.pid(&id).await, pid, "session {id} changed backends");
        }
        // The pid belongs to the instance the id names.
        assert_eq!(
            instance_of(pid, &gws),
            index_of(tag_of(&id)),
            "session {id}"
        );
        sessions.push((id, pid));
    }
    let pids: BTreeSet<u32> = sessions.iter().map(|(_, p)| *p).collect();
    assert_eq!(pids.len(), 20, "every session has its own process");
    let mut per_instance: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, _) in &sessions {
        *per_instance.entry(tag_of(id)).or_default() += 1;
    }
    // Random spreading: all 20 on one instance has a chance of 2 in 2^20.
    assert_eq!(
        per_instance.len(),
        2,
        "sessions spread over both instances: {per_instance:?}\n{}",
        nginx.access_log()
    );
    eprintln!("sessions per instance: {per_instance:?}");

    // DELETE through nginx ends exactly the session's process, on each instance.
    for tag in TAGS {
        let (id, pid) = sessions
            .iter()
            .find(|(id, _)| tag_of(id) == tag)
            .cloned()
            .unwrap();
        assert_eq!(front.delete(&id).await, 200);
        wait_until("the deleted session's backend is gone", || {
            !process_alive(pid)
        })
        .await;
        assert_eq!(front.try_pid(&id).await.0, 404, "deleted session {id}");
        sessions.retain(|(s, _)| *s != id);
    }
    for (id, pid) in &sessions {
        assert!(process_alive(*pid), "session {id} lost its backend");
        assert_eq!(front.pid(id).await, *pid);
    }

    nginx.stop(front).await;
    for gw in gws {
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_instance_gives_only_its_sessions_404_and_reinitialising_lands_on_the_live_one()
{
    let (mut gws, nginx) = two_instances_behind_nginx("caller_header = \"x-mcp-caller\"").await;
    let front = Front::of(&nginx);

    // Sessions until each instance holds at least three (bounded).
    let mut sessions: Vec<(String, u32)> = Vec::new();
    while TAGS
        .iter()
        .any(|t| sessions.iter().filter(|(id, _)| tag_of(id) == *t).count() < 3)
    {
        assert!(sessions.len() < 64, "sessions never reached both instances");
        let (id, _) = front.open_session(&[]).await;
        let pid = front.pid(&id).await;
        sessions.push((id, pid));
    }
    // Stateless callers (caller_header) until each instance holds one.
    let mut callers: BTreeMap<usize, (String, u32)> = BTreeMap::new();
    for n in 0..64 {
        if callers.len() == 2 {
            break;
        }
        let name = format!("caller-{n}");
        let pid = front.stateless_pid(&[("x-mcp-caller", &name)]).await;
        assert_eq!(front.stateless_pid(&[("x-mcp-caller", &name)]).await, pid);
        callers.entry(instance_of(pid, &gws)).or_insert((name, pid));
    }
    assert_eq!(
        callers.len(),
        2,
        "stateless callers never reached both instances"
    );

    // gw0 dies at once, as a crashed machine's gateway would; its backends die with it.
    let dead: Vec<u32> = sessions
        .iter()
        .filter(|(id, _)| tag_of(id) == TAGS[0])
        .map(|(_, p)| *p)
        .collect();
    gws[0].signal(libc::SIGKILL);
    gws[0].wait_exit().await;
    wait_until("the killed instance's backends are gone", || {
        dead.iter().all(|p| !process_alive(*p))
    })
    .await;
    gws[0].assert_no_leftovers().await;

    // Only gw0's sessions get 404, a JSON-RPC answer of gw1's, not nginx's 502;
    // the first one also measures how long a client takes to recover.
    let mut recoveries = Vec::new();
    for (id, pid) in &sessions {
        if tag_of(id) == TAGS[1] {
            assert_eq!(
                front.pid(id).await,
                *pid,
                "gw1's session {id} keeps its backend"
            );
            continue;
        }
        let start = Instant::now();
        let (status, answer) = front.try_pid(id).await;
        assert_eq!(
            status,
            404,
            "gw0's session {id}: {answer}\n{}",
            nginx.access_log()
        );
        assert!(
            answer["error"]["code"].is_i64(),
            "a JSON-RPC error: {answer}"
        );
        let got_404 = start.elapsed();
        let (new_id, _) = front.open_session(&[]).await;
        assert_eq!(
            tag_of(&new_id),
            TAGS[1],
            "re-initialised on the live instance"
        );
        let new_pid = front.pid(&new_id).await;
        assert_eq!(instance_of(new_pid, &gws), 1);
        recoveries.push((got_404, start.elapsed()));
    }
    for (n, (to_404, total)) in recoveries.iter().enumerate() {
        eprintln!(
            "recovery of gw0 session {n}: 404 after {:.1} ms, re-initialised and answered after {:.1} ms",
            to_404.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3
        );
    }

    // Stateless callers: gw1's keeps its process; gw0's gets a new one on gw1.
    let (name, pid) = &callers[&1];
    assert_eq!(front.stateless_pid(&[("x-mcp-caller", name)]).await, *pid);
    let (name, old) = &callers[&0];
    let moved = front.stateless_pid(&[("x-mcp-caller", name)]).await;
    assert_ne!(moved, *old);
    assert_eq!(instance_of(moved, &gws), 1);
    assert_eq!(front.stateless_pid(&[("x-mcp-caller", name)]).await, moved);

    nginx.stop(front).await;
    let [_dead, live] = gws;
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_callers_are_hashed_by_api_key_each_to_one_instance() {
    let keys: Vec<(String, String)> = (0..64)
        .map(|n| (format!("k{n:02}"), format!("key-{n:02}-0123456789abcdef")))
        .collect();
    let table: Vec<String> = keys
        .iter()
        .map(|(name, key)| format!("{name} = \"{key}\""))
        .collect();
    let (gws, nginx) =
        two_instances_behind_nginx(&format!("api_keys = {{ {} }}", table.join(", "))).await;
    let front = Front::of(&nginx);

    // Callers until both instances hold some and at least eight were seen; each
    // caller's every request reaches one process, on one instance.
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    for (n, (_, key)) in keys.iter().enumerate() {
        if n >= 8 && seen.len() == 2 {
            break;
        }
        let auth = format!("Bearer {key}");
        let pid = front.stateless_pid(&[("authorization", &auth)]).await;
        for _ in 0..3 {
            assert_eq!(
                front.stateless_pid(&[("authorization", &auth)]).await,
                pid,
                "caller {n} changed processes"
            );
        }
        *seen.entry(instance_of(pid, &gws)).or_default() += 1;
    }
    assert_eq!(
        seen.len(),
        2,
        "callers spread over both instances: {seen:?}"
    );
    eprintln!("stateless callers per instance: {seen:?}");

    // A session of a keyed caller works through nginx too (its key travels along).
    let auth = format!("Bearer {}", keys[0].1);
    let (id, _) = front.open_session(&[("authorization", &auth)]).await;
    let response = front
        .post(
            Some(&id),
            &json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}).to_string(),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(response.status(), 200);
    // Another key does not get the session, wherever it is routed.
    let other = format!("Bearer {}", keys[1].1);
    let response = front
        .post(
            Some(&id),
            &json!({"jsonrpc":"2.0","id":3,"method":"tools/list"}).to_string(),
            &[("authorization", &other)],
        )
        .await;
    assert_eq!(response.status(), 404);

    nginx.stop(front).await;
    for gw in gws {
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_nginx_streams_are_not_buffered_and_oversized_bodies_get_the_gateways_413() {
    let (gws, nginx) = two_instances_behind_nginx("").await;
    let front = Front::of(&nginx);
    let (id, _) = front.open_session(&[]).await;

    // The GET stream: a backend notification arrives while the stream stays open.
    let stream = front
        .http
        .get(format!("{}/mcp/t", front.base))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &id)
        .header("mcp-protocol-version", PROTOCOL)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut events = SseReader::from_response(stream);
    let body = json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"announce_list_changed","arguments":{}}});
    let response = front.post(Some(&id), &body.to_string(), &[]).await;
    assert_eq!(response.status(), 200);
    let note = events
        .next_within(DEADLINE)
        .await
        .expect("the notification arrives on the open stream");
    assert_eq!(note["method"], "notifications/tools/list_changed", "{note}");
    drop(events);

    // A body over the gateway's max_body_bytes (4 MiB) passes nginx (5m) and
    // gets the gateway's own 413 with a JSON-RPC error.
    let padding = "x".repeat(4 * 1024 * 1024);
    let big = json!({"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"echo","arguments":{"message":padding}}});
    let response = front.post(Some(&id), &big.to_string(), &[]).await;
    assert_eq!(response.status(), 413);
    let answer: Value = response
        .json()
        .await
        .expect("a JSON-RPC body, not nginx's page");
    assert!(answer["error"]["code"].is_i64(), "{answer}");
    // One just under it is answered, and the answer (as large) comes back whole.
    let message = "x".repeat(4 * 1024 * 1024 - 200);
    let fits = json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"message":message}}});
    let response = front.post(Some(&id), &fits.to_string(), &[]).await;
    assert_eq!(response.status(), 200);
    let answer = answer_of(response).await;
    assert_eq!(
        answer["result"]["structuredContent"]["echo"]["message"].as_str(),
        Some(message.as_str())
    );

    // A browser's preflight is answered by nginx itself.
    let preflight = front
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/mcp/t", front.base))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(allowed.contains("Mcp-Session-Id") && allowed.contains("MCP-Protocol-Version"));

    assert_eq!(front.delete(&id).await, 200);
    nginx.stop(front).await;
    for gw in gws {
        gw.stop().await;
    }
}

// ---- deploy/kubernetes ----

const K8S: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");

fn k8s_file(name: &str) -> String {
    std::fs::read_to_string(format!("{K8S}/{name}")).unwrap_or_else(|e| panic!("{K8S}/{name}: {e}"))
}

/// The lines of an nginx config that do not depend on where the instances run:
/// without comments, blank lines, the tag map, the upstream blocks, `resolver`,
/// `listen` and `server_name`.
fn placement_free(conf: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut skipping = false;
    for line in conf.lines() {
        let line = line.split_once('#').map_or(line, |(code, _)| code).trim();
        if line.is_empty() {
            continue;
        }
        if skipping {
            skipping = line != "}";
            continue;
        }
        if line.starts_with("upstream ") || line.starts_with("map $http_mcp_session_id ") {
            skipping = true;
            continue;
        }
        if ["resolver ", "listen ", "server_name "]
            .iter()
            .any(|p| line.starts_with(p))
        {
            continue;
        }
        lines.push(line.to_owned());
    }
    lines
}

/// The number after `key:` in a YAML file (the first such line).
fn yaml_number(yaml: &str, key: &str) -> u64 {
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in the manifest"))
        .trim()
        .parse()
        .unwrap()
}

/// Seconds of a TOML duration `key = "<n>s"`.
fn toml_seconds(toml: &str, key: &str) -> u64 {
    toml.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key} = \"")))
        .and_then(|rest| rest.strip_suffix("s\""))
        .unwrap_or_else(|| panic!("no {key} = \"<n>s\" in mcpgate.toml"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_nginx_config_is_the_shipped_one_with_pod_names_and_nginx_accepts_it() {
    let shipped = std::fs::read_to_string(SHIPPED_CONF).unwrap();
    let k8s = k8s_file("nginx.conf");
    let (a, b) = (placement_free(&shipped), placement_free(&k8s));
    if let Some(n) = (0..a.len().max(b.len())).find(|n| a.get(*n) != b.get(*n)) {
        panic!(
            "deploy/kubernetes/nginx.conf and deploy/nginx/mcpgate.conf differ beyond where the \
             instances are: line {n} of what they share is {:?} in deploy/nginx, {:?} in \
             deploy/kubernetes",
            a.get(n),
            b.get(n)
        );
    }

    // One tag per replica, each pod in the map, in mcpgate_any and in its upstream.
    let replicas = yaml_number(&k8s_file("statefulset.yaml"), "replicas");
    for n in 0..replicas {
        let name = format!("mcpgate-{n}.mcpgate.mcpgate.svc.cluster.local:3000");
        assert!(
            k8s.contains(&format!("~^mcpgate-{n}\\.")),
            "pod {n} in the map"
        );
        assert_eq!(
            k8s.matches(&name).count() as u64,
            replicas + 1,
            "pod {n}'s servers"
        );
    }
    assert!(!k8s.contains(&format!("~^mcpgate-{replicas}\\.")));

    // `nginx -t` on it, with the pods' names as loopback addresses and without
    // `resolve` and `resolver` (Debian 12's nginx 1.22 predates them: 1.27.3).
    let dir = tempfile::tempdir().unwrap();
    let mut site = k8s
        .lines()
        .filter(|l| !l.starts_with("resolver ") && !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(" resolve;", ";")
        .replace(" resolve backup;", " backup;");
    for n in 0..replicas {
        site = site.replace(
            &format!("mcpgate-{n}.mcpgate.mcpgate.svc.cluster.local:3000"),
            &format!("127.0.0.1:{}", 3000 + n),
        );
    }
    assert!(!site.contains("resolve") && !site.contains("svc.cluster.local"));
    let site = replace_all(
        &site,
        "listen 80;",
        &format!("listen 127.0.0.1:{};", free_port()),
        1,
    )
    .replace("/var/log/nginx/", &format!("{}/", dir.path().display()));
    let conf = write_confs(dir.path(), &site);
    let d = dir.path().display();
    let output = Command::new(nginx_binary())
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .args(["-e", "stderr", "-g"])
        .arg(format!("pid {d}/nginx.pid; error_log stderr;"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "nginx -t: {stderr}");
    assert!(stderr.contains("test is successful"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_manifests_pass_schema_validation_and_agree_with_the_configs() {
    // Every manifest against the Kubernetes schemas bundled in kubernetes-validate
    // (offline), rejecting unknown fields.
    let validate = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/.testdeps/py-k8s/bin/kubernetes-validate"
    );
    assert!(
        Path::new(validate).exists(),
        "{validate} is missing: run scripts/install-test-deps.sh (the README's test command does)"
    );
    let manifests = [
        "statefulset.yaml",
        "nginx-deployment.yaml",
        "ingress.yaml",
        "ingress-direct.yaml",
    ];
    let output = Command::new(validate)
        .arg("--strict")
        .args(manifests.iter().map(|m| format!("{K8S}/{m}")))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "kubernetes-validate: {report}");
    // 2 + 2 + 1 + 1 resources, each reported as passed.
    assert_eq!(
        report.matches(" passed for resource ").count(),
        7,
        "{report}"
    );

    // Every file kustomization.yaml names exists.
    let kustomization = k8s_file("kustomization.yaml");
    let named: Vec<&str> = kustomization
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .filter(|f| !f.contains(':'))
        .map(|f| f.rsplit_once('=').map_or(f, |(_, file)| file))
        .collect();
    assert!(named.len() >= 5, "{named:?}");
    for file in named {
        assert!(
            Path::new(&format!("{K8S}/{file}")).is_file(),
            "kustomization.yaml names {file}"
        );
    }

    // The gateway's config is valid with the pod's environment, its tag is the pod
    // name, and every variable it uses is set by the StatefulSet.
    let toml = k8s_file("mcpgate.toml");
    let statefulset = k8s_file("statefulset.yaml");
    let mut vars = Vec::new();
    let mut rest = toml.as_str();
    while let Some((_, after)) = rest.split_once("${") {
        let (var, tail) = after.split_once('}').unwrap();
        vars.push(var.to_owned());
        rest = tail;
    }
    assert!(vars.contains(&"POD_NAME".to_owned()), "{vars:?}");
    for var in &vars {
        assert!(
            statefulset.contains(&format!("- name: {var}\n")),
            "the StatefulSet sets {var}"
        );
    }
    let output = Command::new(env!("CARGO_BIN_EXE_mcpgate"))
        .args(["check", "--config", &format!("{K8S}/mcpgate.toml")])
        .env("POD_NAME", "mcpgate-0")
        .env("MCPGATE_KEY_TEAM", "a-key-of-the-team-0123456789")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        printed.contains("instance_tag = \"mcpgate-0\""),
        "{printed}"
    );

    // The grace period covers shutdown_timeout and both stop_grace waits.
    let grace = yaml_number(&statefulset, "terminationGracePeriodSeconds");
    let needed = toml_seconds(&toml, "shutdown_timeout") + 2 * toml_seconds(&toml, "stop_grace");
    assert!(
        grace > needed,
        "terminationGracePeriodSeconds {grace} <= {needed}"
    );
}
