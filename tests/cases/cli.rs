//! The command line: `mcpgate check`, config errors, and `--help`.

use std::process::Command;

use crate::common::*;

fn mcpgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mcpgate"))
        .args(args)
        .env("MCPGATE_TEST_SECRET", "hunter2-secret")
        .output()
        .expect("run mcpgate")
}

#[test]
fn check_prints_the_normalised_config_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[gateway]\ntool_timeout = 90\n[servers.a]\ncommand = \"x\"\nenv = { TOKEN = \"${MCPGATE_TEST_SECRET}\" }\n",
    )
    .unwrap();
    let out = mcpgate(&["check", "--config", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("tool_timeout = \"90s\""), "{stdout}");
    assert!(stdout.contains("TOKEN = \"<redacted>\""), "{stdout}");
    assert!(!stdout.contains("hunter2"), "{stdout}");
}

#[test]
fn a_bad_config_is_refused_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[gateway]\nlisten = \"127.0.0.1:0\"\ntypo_key = 1\n").unwrap();
    for args in [vec!["check", "--config"], vec!["--config"]] {
        let mut args = args;
        args.push(path.to_str().unwrap());
        let out = mcpgate(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains(&format!("{}:3:", path.display())),
            "{stderr}"
        );
        assert!(stderr.contains("typo_key"), "{stderr}");
    }
    std::fs::write(
        &path,
        "[servers.a]\ncommand = \"${MCPGATE_SURELY_UNDEFINED}\"\n",
    )
    .unwrap();
    let out = mcpgate(&["check", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("MCPGATE_SURELY_UNDEFINED") && stderr.contains("servers.a.command"),
        "{stderr}"
    );
}

#[test]
fn without_a_config_it_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mcpgate"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("./mcpgate.toml") && stderr.contains("/etc/mcpgate/mcpgate.toml"),
        "{stderr}"
    );
}

#[test]
fn check_refuses_a_command_path_that_does_not_exist_and_warns_of_a_name_not_on_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[servers.gone]\ncommand = \"/nonexistent/mcpgate-no-such-binary\"\n",
    )
    .unwrap();
    let out = mcpgate(&["check", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("server `gone`") && stderr.contains("/nonexistent/mcpgate-no-such-binary"),
        "{stderr}"
    );

    // A name may be installed later: valid, with a warning that names it.
    std::fs::write(
        &path,
        "[servers.later]\ncommand = \"mcpgate-no-such-binary-xyz\"\n",
    )
    .unwrap();
    let out = mcpgate(&["check", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("server `later`"),
        "{stderr}"
    );
    assert!(stderr.contains("mcpgate-no-such-binary-xyz"), "{stderr}");
}

#[test]
fn an_address_in_use_is_said_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, test_server("t", &[])).unwrap();
    let out = mcpgate(&["--config", path.to_str().unwrap(), "--listen", &addr]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn the_shipped_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let out = mcpgate(&["check", "--config", example]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_flag_overrides_the_file() {
    // The harness always passes --listen 127.0.0.1:0; the file says port 1.
    let gw = Gateway::start(&format!(
        "[gateway]\nlisten = \"127.0.0.1:1\"\n{}",
        test_server("t", &[])
    ))
    .await;
    assert!(gw.base.starts_with("http://127.0.0.1:") && !gw.base.ends_with(":1"));
    gw.stop().await;
}
