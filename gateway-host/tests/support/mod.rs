//! Shared by the tests that run a Python `unittest` suite against this crate's real
//! `gateway-host` binary (`GATEWAY_HOST_BIN`).

use std::path::Path;
use std::process::Command;

/// Run `python3 -m unittest discover -v -s <repo>/<dir>` with `GATEWAY_HOST_BIN` set and
/// fail with the suite's report unless it passes. `modules` are Python packages the suite
/// imports beyond the standard library (installed from `integrations/requirements-test.txt`);
/// a missing one fails at once with the install command.
pub fn python_unittest(suite: &str, dir: &str, modules: &[&str]) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("gateway-host lives inside the workspace");
    let tests = repo.join(dir);
    assert!(tests.is_dir(), "missing {}", tests.display());
    let python = |args: &[&str]| match Command::new("python3")
        .args(args)
        .env("GATEWAY_HOST_BIN", env!("CARGO_BIN_EXE_gateway-host"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .current_dir(repo)
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "python3 was not found on PATH: the {suite} tests need Python 3. Install \
                 python3 and run again."
        ),
        Err(e) => panic!("could not start python3 for the {suite} tests: {e}"),
    };
    for module in modules {
        let check = python(&["-c", &format!("import {module}")]);
        assert!(
            check.status.success(),
            "the {suite} tests need the Python package '{module}': install it with \
             `python3 -m pip install -r integrations/requirements-test.txt` (scripts/test.sh \
             does this) and run again.\n{}",
            String::from_utf8_lossy(&check.stderr)
        );
    }

    let output = python(&[
        "-m",
        "unittest",
        "discover",
        "-v",
        "-s",
        &tests.to_string_lossy(),
    ]);
    // unittest writes its report to stderr.
    let report = gateway_tests::process::output_text(&output);
    assert!(
        output.status.success(),
        "{suite} tests failed ({}):\n{report}",
        output.status
    );
    println!("{report}");
}
