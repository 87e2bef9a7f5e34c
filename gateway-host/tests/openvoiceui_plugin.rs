//! Runs the OpenVoiceUI plugin's Python tests (`integrations/openvoiceui/tests`) against this
//! crate's real `gateway-host` binary. Needs `python3` (standard library only) on `PATH`.

use std::path::Path;
use std::process::Command;

#[test]
fn openvoiceui_plugin_python_tests_pass() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("gateway-host lives inside the workspace");
    let tests = repo.join("integrations/openvoiceui/tests");
    assert!(tests.is_dir(), "missing {}", tests.display());

    let output = match Command::new("python3")
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(&tests)
        .env("GATEWAY_HOST_BIN", env!("CARGO_BIN_EXE_gateway-host"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(repo)
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "python3 was not found on PATH: the OpenVoiceUI plugin tests need Python 3.8 or \
             newer (standard library only). Install python3 and run again."
        ),
        Err(e) => panic!("could not start python3 for the OpenVoiceUI plugin tests: {e}"),
    };

    // unittest writes its report to stderr.
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "OpenVoiceUI plugin tests failed ({}):\n{report}",
        output.status
    );
    println!("{report}");
}
