//! One HTTP client, so one upstream connection pool, per thread that sends turns.
//!
//! The host serves each client connection on one of its one-thread runtimes (one per core). A turn's
//! upstream connection then belongs to the same thread as its client connection, so a token
//! read from the upstream is written to the client without waking another thread; a shared
//! pool would hand a turn a connection whose reading task lives on another runtime.

use std::time::Duration;

use reqwest::Client;
use thread_local::ThreadLocal;

/// Idle connections kept per upstream host and thread: the host may run ~1000 streams at once.
const POOL_MAX_IDLE_PER_HOST: usize = 1024;
/// How long an idle upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How every client of an instance is built.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientSettings {
    /// Limit of opening an upstream connection.
    pub connect_timeout: Duration,
    /// Skip `HTTP(S)_PROXY` (the upstream is on this machine).
    pub no_proxy: bool,
}

/// The clients of one gateway instance, one per thread, built on first use.
#[derive(Debug)]
pub(crate) struct Clients {
    settings: ClientSettings,
    per_thread: ThreadLocal<Client>,
}

impl Clients {
    /// Clients built with `settings`; fails if such a client cannot be built at all.
    pub fn new(settings: ClientSettings) -> reqwest::Result<Self> {
        let clients = Self {
            settings,
            per_thread: ThreadLocal::new(),
        };
        clients.current()?;
        Ok(clients)
    }

    /// The calling thread's client.
    pub fn current(&self) -> reqwest::Result<&Client> {
        self.per_thread.get_or_try(|| self.build())
    }

    fn build(&self) -> reqwest::Result<Client> {
        let mut builder = Client::builder()
            .connect_timeout(self.settings.connect_timeout)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(concat!("gateway-openai-compat/", env!("CARGO_PKG_VERSION")));
        if self.settings.no_proxy {
            builder = builder.no_proxy();
        }
        builder.build()
    }
}
