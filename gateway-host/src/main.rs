//! The `gateway-host` binary: the host with the built-in `openai-compat` gateway linked in.

use std::process::ExitCode;

use gateway_openai_compat as _; // linked for its inventory registration of `openai-compat`

fn main() -> ExitCode {
    gateway_host::run()
}
