//! Shared state of a running host: config, profiles, instances, prompts, memory, metrics.

use std::sync::Arc;
use std::time::Duration;

use gateway_core::{Env, MemoryStore, MemoryStoreConfig, Registry, SessionStore};

use crate::config::HostConfig;
use crate::instances::Instances;
use crate::metrics::Metrics;
use crate::profile::ProfileSet;
use crate::prompt::PromptStore;
use crate::sessions::Sessions;

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
    /// The standard start-up: build instances from `registry` and `env`, load the profiles
    /// directory, watch the prompts directory, and create the configured session store.
    /// Problems are kept for [`crate::report::Report`], not fatal.
    pub fn load(config: HostConfig, registry: &Registry, env: &Env) -> Self {
        let instances = Instances::build(registry, &config, env);
        let profiles = ProfileSet::load_dir(&config.profiles_dir, |g| instances.is_known(g));
        let store = Self::store_for(&config);
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
        Self {
            inner: Arc::new(Shared {
                config,
                profiles,
                instances,
                prompts,
                store,
                metrics: Metrics::new(),
                sessions: Sessions::new(),
            }),
        }
    }

    /// The session store selected by `memory.backend` (validated by the config: `memory`).
    pub fn store_for(config: &HostConfig) -> Arc<dyn SessionStore> {
        Arc::new(MemoryStore::new(MemoryStoreConfig {
            max_sessions: config.memory.max_sessions,
            idle_ttl: Duration::from_secs(config.memory.idle_ttl_secs),
        }))
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
}
