//! Integration tests of the openai-compat gateway: one test binary, real HTTP servers on
//! 127.0.0.1, no internet.

// Links the crate into this test binary so its `inventory::submit!` registration exists
// (a crate nothing references is dropped by the linker, and its kind with it).
use gateway_openai_compat as _;

mod conformance;
mod conformance_tools;
mod fixtures;
mod fuzz_regressions;
mod server;
mod targeted;
mod tools;
