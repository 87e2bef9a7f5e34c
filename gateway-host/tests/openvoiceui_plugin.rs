//! Runs the OpenVoiceUI plugin's Python tests (`integrations/openvoiceui/tests`) against this
//! crate's real `gateway-host` binary. Needs `python3` (standard library only) on `PATH`.

mod support;

#[test]
fn openvoiceui_plugin_python_tests_pass() {
    support::python_unittest("OpenVoiceUI plugin", "integrations/openvoiceui/tests", &[]);
}
