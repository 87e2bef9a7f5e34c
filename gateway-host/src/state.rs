//! Shared state of a running host: config, profiles, instances, prompts, memory, metrics.

use std::sync::Arc;

use gateway_core::{Env, Registry, SessionStore, StoreError};

use crate::config::instances::Instances;
use crate::config::profile::ProfileSet;
use crate::config::prompt::PromptStore;
use crate::config::{HostConfig, MemoryBackend};
use crate::http::auth::{Auth, AuthError};
use crate::metrics::Metrics;
use crate::sessions::cluster::Cluster;
use crate::sessions::Sessions;
use crate::shutdown::Shutdown;
use crate::tools::ToolServers;
use crate::turn::limits::StreamLimits;

/// Why a host cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The session store cannot be opened (e.g. Redis is down); names the host, never a password.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The authentication settings cannot be used.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    config: HostConfig,
    profiles: ProfileSet,
    instances: Instances,
    prompts: PromptStore,
    store: Arc<dyn SessionStore>,
    metrics: Metrics,
    sessions: Sessions,
    auth: Auth,
    limits: StreamLimits,
    shutdown: Shutdown,
    tools: ToolServers,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("profiles", &self.inner.profiles.len())
            .field("instances", &self.inner.instances)
            .finish()
    }
}

impl AppState {
    /// The standard start-up without I/O beyond the local files: build instances from
    /// `registry` and `env`, load the profiles directory, watch the prompts directory, and
    /// create the session store. Problems are kept for [`crate::cli::report::Report`], not fatal.
    /// A `redis` store needs a connection: use [`AppState::connect`] (here it answers 503).
    pub fn load(config: HostConfig, registry: &Registry, env: &Env) -> Self {
        let store = Self::store_for(&config);
        Self::with_store(config, registry, env, store)
    }

    /// [`AppState::load`], but the configured store is opened (Redis connected) and broken
    /// authentication settings are an error: what `serve` and `chat` use.
    pub async fn connect(
        config: HostConfig,
        registry: &Registry,
        env: &Env,
    ) -> Result<Self, StartError> {
        Auth::from_config(&config.auth)?;
        let store = crate::sessions::store::open(&config.memory).await?;
        let cluster = match config.memory.backend {
            MemoryBackend::Redis => Some(Cluster::connect(&config.memory).await?),
            MemoryBackend::Memory => None,
        };
        let state = Self::with_store(config, registry, env, store);
        if let Some((cluster, inbox)) = cluster {
            let store = state.store().clone();
            state.sessions().attach(cluster, inbox, store);
        }
        Ok(state)
    }

    fn with_store(
        config: HostConfig,
        registry: &Registry,
        env: &Env,
        store: Arc<dyn SessionStore>,
    ) -> Self {
        let instances = Instances::build(registry, &config, env);
        let profiles = ProfileSet::load_dir(&config.profiles_dir, |g| instances.is_known(g));
        Self::new(config, instances, profiles, store)
    }

    /// A state from parts made elsewhere (the demo, tests, embedding applications).
    pub fn new(
        config: HostConfig,
        instances: Instances,
        profiles: ProfileSet,
        store: Arc<dyn SessionStore>,
    ) -> Self {
        let prompts = PromptStore::new(&config.prompts_dir);
        let auth = Auth::from_config(&config.auth).unwrap_or_else(|e| {
            tracing::error!(error = %e, "authentication settings unusable: refusing every request");
            Auth::deny_all(&e)
        });
        let limits = StreamLimits::new(
            config.limits.max_streams,
            config.limits.max_streams_per_session,
        );
        let metrics = Metrics::new();
        let sessions = Sessions::counting_lost(metrics.memory_not_stored_counter("interrupted"));
        let tools = ToolServers::new(&config.tools);
        Self {
            inner: Arc::new(Shared {
                config,
                profiles,
                instances,
                prompts,
                store,
                metrics,
                sessions,
                auth,
                limits,
                shutdown: Shutdown::default(),
                tools,
            }),
        }
    }

    /// The session store selected by `memory.backend`, without connecting: the in-memory
    /// store, or for `redis` a stand-in that fails every call (see [`AppState::connect`]).
    pub fn store_for(config: &HostConfig) -> Arc<dyn SessionStore> {
        match config.memory.backend {
            MemoryBackend::Redis => Arc::new(crate::sessions::store::Unavailable(
                "the redis store is not connected (start the host with AppState::connect)".into(),
            )),
            MemoryBackend::Memory => crate::sessions::store::memory(&config.memory),
        }
    }

    /// The effective configuration.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// The loaded profiles and the problems found.
    pub fn profiles(&self) -> &ProfileSet {
        &self.inner.profiles
    }

    /// The gateway instances and the failures.
    pub fn instances(&self) -> &Instances {
        &self.inner.instances
    }

    /// The voice prompt file.
    pub fn prompts(&self) -> &PromptStore {
        &self.inner.prompts
    }

    /// Session memory.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.inner.store
    }

    /// Metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Sessions with turns running or waiting (queue modes, interrupts).
    pub fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// Client authentication.
    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    /// Stream limits (host-wide and per session).
    pub fn limits(&self) -> &StreamLimits {
        &self.inner.limits
    }

    /// Shutdown phases.
    pub fn shutdown(&self) -> &Shutdown {
        &self.inner.shutdown
    }

    /// The MCP tool servers (started on first use).
    pub fn tools(&self) -> &ToolServers {
        &self.inner.tools
    }
}
