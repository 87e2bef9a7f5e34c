//! Run with: cargo run -p scripted-gateway -- serve
//!
//! The gateway host with a third-party kind linked in: `scripted` (this crate) beside the
//! built-in `openai-compat`. Every subcommand of `gateway-host` works (`serve`, `chat`,
//! `check`, `demo`); declare instances in `gateway.toml`:
//!
//! ```toml
//! [gateways.robot]
//! kind = "scripted"
//! reply = "You said: {message}."
//! ```

use std::process::ExitCode;

// Linked for their `inventory::submit!` registrations. The binary never names these crates,
// and the linker drops a crate nothing references, its registration with it: without these
// lines the kinds `openai-compat` and `scripted` would not exist at run time.
use gateway_openai_compat as _;
use scripted_gateway as _;

fn main() -> ExitCode {
    gateway_host::run()
}
