//! End-to-end tests of the gateway host: the real host in front of a real mock upstream.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

// Linked for its inventory registration: without a reference the linker drops the crate and
// the `openai-compat` kind would not exist in this test binary.
use gateway_openai_compat as _;

mod e2e;
