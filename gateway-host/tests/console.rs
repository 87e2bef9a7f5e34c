//! The web console: its files are served publicly with a strict CSP even with auth on, and the
//! browser tests (`integrations/console/tests`, real headless Chromium driven by
//! playwright-core) pass against this crate's real `gateway-host` binary.

use std::path::Path;
use std::process::Command;

use gateway_tests::TestHost;
use serde_json::json;

async fn get(host: &TestHost, path: &str, etag: Option<&str>) -> reqwest::Response {
    let mut request = host.client.get(format!("{}{path}", host.url));
    if let Some(etag) = etag {
        request = request.header("if-none-match", etag);
    }
    request.send().await.expect("request")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_page_is_public_and_locked_down_while_the_api_needs_a_token() {
    let host = TestHost::with_config(json!({"auth": {"tokens": ["console-token-1"]}})).await;
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
        ("/console/icon.svg", "image/svg+xml"),
        ("/console/config.json", "application/json"),
    ] {
        let response = get(&host, path, None).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(header(&response, "content-type"), content_type, "{path}");
        let csp = header(&response, "content-security-policy");
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        assert_eq!(header(&response, "cache-control"), "no-cache");
    }
    let config: serde_json::Value = get(&host, "/console/config.json", None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(config["auth_required"], true);
    assert_eq!(get(&host, "/v1/profiles", None).await.status(), 401);
    assert_eq!(get(&host, "/metrics", None).await.status(), 401);
    let missing = get(&host, "/console/secret.env", None).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(get(&host, "/console/..%2Fapi.rs", None).await.status(), 404);
}

#[tokio::test]
async fn unchanged_files_are_revalidated_with_their_etag() {
    let host = TestHost::start().await;
    let first = get(&host, "/console/app.js", None).await;
    let etag = header(&first, "etag").to_string();
    assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");
    let again = get(&host, "/console/app.js", Some(&etag)).await;
    assert_eq!(again.status(), 304);
    assert_eq!(header(&again, "etag"), etag);
    let other = get(&host, "/console/app.js", Some("\"stale\"")).await;
    assert_eq!(other.status(), 200);
    let config: serde_json::Value = get(&host, "/console/config.json", None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(config["auth_required"], false);
}

/// The folder of the browser tests, with its npm packages installed.
fn browser_tests_dir() -> std::path::PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("gateway-host lives inside the workspace");
    let dir = repo.join("integrations/console");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "the console's browser tests need their npm packages: run `npm ci` in {} \
         (scripts/test.sh does this), and Debian's chromium",
        dir.display()
    );
    dir
}

#[test]
fn console_browser_tests_pass() {
    let dir = browser_tests_dir();
    let output = match Command::new("node")
        .args(["--test", "--test-concurrency=1", "tests/console.test.mjs"])
        .env("GATEWAY_HOST_BIN", env!("CARGO_BIN_EXE_gateway-host"))
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .current_dir(&dir)
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("node was not found on PATH: the console's browser tests need Node.js 18+")
        }
        Err(e) => panic!("could not start node: {e}"),
    };
    let report = gateway_tests::process::output_text(&output);
    assert!(
        output.status.success(),
        "console browser tests failed ({}):\n{report}",
        output.status
    );
    println!("{report}");
}
