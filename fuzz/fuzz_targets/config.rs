//! `config::Config::parse` on arbitrary UTF-8 text.
//!
//! Invariants, beyond "never panics": an error's message starts with the file
//! name (and a line that exists, when it gives one); an accepted config prints
//! (`to_redacted_toml`, what `mcpgate check` shows) as TOML that is accepted
//! again, with the same variables, into an equal `[gateway]` section and the
//! same servers in the same order.

#![no_main]

use std::collections::HashMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mcpgate::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vars: HashMap<String, String> = [("TOKEN", "s3cret"), ("DIR", "/srv"), ("EMPTY", "")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let file = Path::new("fuzz.toml");
    let config = match Config::parse(file, text, &vars) {
        Ok(config) => config,
        Err(e) => {
            let shown = e.to_string();
            assert!(
                shown.starts_with("fuzz.toml"),
                "error does not name the file: {shown}"
            );
            if let Some((line, col)) = e.position {
                assert!(line >= 1 && col >= 1, "{shown}");
                assert!(
                    line <= text.split('\n').count(),
                    "line past the end: {shown}"
                );
            }
            return;
        }
    };
    let printed = config.to_redacted_toml();
    let again = Config::parse(file, &printed, &vars).unwrap_or_else(|e| {
        panic!("the printed config is refused: {e}\n--- printed ---\n{printed}")
    });
    assert_eq!(
        again.gateway, config.gateway,
        "the printed config has another [gateway]\n--- printed ---\n{printed}"
    );
    let ids = |c: &Config| c.servers.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&again), ids(&config), "--- printed ---\n{printed}");
});
