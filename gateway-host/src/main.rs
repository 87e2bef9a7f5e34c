//! The `gateway-host` binary: the host with the built-in `openai-compat` gateway linked in.

use std::process::ExitCode;

use gateway_openai_compat as _; // linked for its inventory registration of `openai-compat`

/// jemalloc instead of the system allocator: with the settings in `.cargo/config.toml` it
/// returns the memory of a burst of turns to the system within a fraction of a second, where glibc
/// keeps the burst's high-water mark resident (see docs/performance.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    gateway_host::run()
}
