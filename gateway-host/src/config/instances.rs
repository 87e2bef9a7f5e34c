//! Gateway instances built from the kind registry and the `[gateways.*]` config.
//!
//! Every registered kind gets a built-in instance whose id is the kind id and whose defaults
//! come from `<KIND>_*` environment variables (`OPENAI_COMPAT_API_KEY`, ...). Every other
//! `[gateways.<id>]` table is a named instance of its `kind`. The host-wide timeouts are passed
//! to each instance as `connect_timeout_ms`, `first_token_timeout_ms` and `idle_timeout_ms`
//! unless the instance sets them (or, for a built-in instance, its environment does), so every
//! kind should accept these three settings keys.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gateway_core::{Env, Gateway, InstanceConfig, Registry};

use crate::config::{GatewayConfig, HostConfig};
use crate::turn::upstream_limit;

/// An instance that could not be built (unknown kind, invalid settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceFailure {
    /// The kind asked for.
    pub kind: String,
    /// Why it failed, without secrets.
    pub reason: String,
}

/// The gateway instances of a host by id, plus those that failed to build.
#[derive(Clone, Default)]
pub struct Instances {
    gateways: BTreeMap<String, Arc<dyn Gateway>>,
    failures: BTreeMap<String, InstanceFailure>,
}

impl std::fmt::Debug for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instances")
            .field("gateways", &self.gateways.keys().collect::<Vec<_>>())
            .field("failures", &self.failures)
            .finish()
    }
}

const TIMEOUT_KEYS: [(&str, &str); 3] = [
    ("connect_timeout_ms", "CONNECT_TIMEOUT_MS"),
    ("first_token_timeout_ms", "FIRST_TOKEN_TIMEOUT_MS"),
    ("idle_timeout_ms", "IDLE_TIMEOUT_MS"),
];

impl Instances {
    /// Build every instance. Failures are recorded, not fatal: the rest still serve.
    pub fn build(registry: &Registry, config: &HostConfig, env: &Env) -> Self {
        let mut out = Self::default();
        for kind in registry.kinds() {
            let section = config.gateways.get(kind.id).cloned().unwrap_or_default();
            if let Some(k) = section.kind.as_deref().filter(|k| *k != kind.id) {
                out.fail(
                    kind.id,
                    k,
                    format!("[gateways.{}] is the built-in instance of kind '{}' and cannot have kind '{k}'", kind.id, kind.id),
                );
                continue;
            }
            let instance = InstanceConfig {
                id: kind.id.to_string(),
                settings: serde_json::Value::Null,
                env_prefix: Some(kind.env_prefix()),
                env: env.clone(),
            };
            out.build_one(kind, section, instance, config);
        }
        for (id, section) in &config.gateways {
            if registry.get(id).is_ok() {
                continue;
            }
            let Some(kind_id) = section.kind.clone() else {
                out.fail(id, "", format!("[gateways.{id}] needs a `kind`"));
                continue;
            };
            let kind = match registry.get(&kind_id) {
                Ok(kind) => kind,
                Err(e) => {
                    out.fail(id, &kind_id, e.to_string());
                    continue;
                }
            };
            let instance = InstanceConfig {
                id: id.clone(),
                settings: serde_json::Value::Null,
                env_prefix: None,
                env: env.clone(),
            };
            out.build_one(kind, section.clone(), instance, config);
        }
        out
    }

    fn build_one(
        &mut self,
        kind: &'static gateway_core::GatewayKind,
        section: GatewayConfig,
        mut instance: InstanceConfig,
        config: &HostConfig,
    ) {
        let mut settings = section.settings;
        let t = config.timeouts;
        for ((key, env_name), value) in
            TIMEOUT_KEYS
                .iter()
                .zip([t.connect_ms, t.first_token_ms, t.idle_ms])
        {
            if !settings.contains_key(*key) && instance.env_default(env_name).is_none() {
                settings.insert((*key).to_string(), value.into());
            }
        }
        let limit = section
            .max_concurrency
            .unwrap_or(config.limits.max_upstream_concurrency);
        let first_token_ms = settings
            .get("first_token_timeout_ms")
            .and_then(|v| v.as_u64())
            .or_else(|| {
                instance
                    .env_default("FIRST_TOKEN_TIMEOUT_MS")
                    .and_then(|(_, v)| v.trim().parse().ok())
            })
            .unwrap_or(t.first_token_ms);
        instance.settings = serde_json::Value::Object(settings);
        match (kind.build)(&instance) {
            Ok(gateway) if limit > 0 => {
                let wait = Duration::from_millis(first_token_ms);
                let limited = upstream_limit::Limited::wrap(gateway, limit, wait);
                self.gateways.insert(instance.id, limited);
            }
            Ok(gateway) => {
                self.gateways.insert(instance.id, gateway);
            }
            Err(e) => self.fail(&instance.id, kind.id, e.to_string()),
        }
    }

    fn fail(&mut self, id: &str, kind: &str, reason: String) {
        tracing::error!(gateway = id, kind, %reason, "gateway instance not available");
        self.failures.insert(
            id.to_string(),
            InstanceFailure {
                kind: kind.to_string(),
                reason,
            },
        );
    }

    /// The usable instance with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<dyn Gateway>> {
        self.gateways.get(id)
    }

    /// Why the instance with this id could not be built, if it failed.
    pub fn failure(&self, id: &str) -> Option<&InstanceFailure> {
        self.failures.get(id)
    }

    /// True when an instance with this id exists or was declared (even if it failed to build),
    /// so profiles naming it are kept and answer 503 instead of disappearing.
    pub fn is_known(&self, id: &str) -> bool {
        self.gateways.contains_key(id) || self.failures.contains_key(id)
    }

    /// Usable instances, sorted by id.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Gateway>> {
        self.gateways.values()
    }

    /// Failed instances, sorted by id.
    pub fn failures(&self) -> impl Iterator<Item = (&String, &InstanceFailure)> {
        self.failures.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::{EventStream, GatewayError, GatewayKind, Turn};

    struct Fake {
        id: String,
        settings: serde_json::Value,
    }

    #[async_trait::async_trait]
    impl Gateway for Fake {
        fn id(&self) -> &str {
            &self.id
        }
        fn kind(&self) -> &str {
            "fake"
        }
        fn is_configured(&self) -> Result<(), GatewayError> {
            Ok(())
        }
        fn default_model(&self) -> Option<&str> {
            self.settings.get("model").and_then(|m| m.as_str())
        }
        async fn stream(&self, _turn: Turn) -> Result<EventStream, GatewayError> {
            Err(GatewayError::Other("fake".into()))
        }
    }

    fn build(c: &InstanceConfig) -> Result<Arc<dyn Gateway>, GatewayError> {
        // Strict like real kinds: `max_concurrency` is the host's key and must not arrive here.
        if c.settings.get("bad").is_some() || c.settings.get("max_concurrency").is_some() {
            return Err(GatewayError::InvalidConfig {
                gateway: c.id.clone(),
                reason: "unknown key `bad`".into(),
            });
        }
        let mut settings = c.settings.clone();
        if let Some((_, v)) = c.env_default("CONNECT_TIMEOUT_MS") {
            settings["env_connect"] = v.into();
        }
        Ok(Arc::new(Fake {
            id: c.id.clone(),
            settings,
        }))
    }

    static FAKE: GatewayKind = GatewayKind {
        id: "fake",
        description: "fake",
        build,
    };

    fn settings(g: &Arc<dyn Gateway>) -> serde_json::Value {
        // Downcasting is not needed: the fake exposes settings through default_model only,
        // so tests read the model key.
        serde_json::json!(g.default_model())
    }

    #[test]
    fn builds_builtin_and_named_instances_and_reports_failures() {
        let config: HostConfig = HostConfig::from_provider(
            figment::providers::Serialized::defaults(serde_json::json!({
                "gateways": {
                    "fake": {"model": "builtin-model"},
                    "other": {"kind": "fake", "model": "other-model"},
                    "broken": {"kind": "fake", "bad": 1},
                    "ghost": {"kind": "nope"},
                    "kindless": {}
                }
            })),
        )
        .unwrap();
        let registry = Registry::from_kinds([&FAKE]).unwrap();
        let inst = Instances::build(&registry, &config, &Env::default());
        assert_eq!(settings(inst.get("fake").unwrap()), "builtin-model");
        assert_eq!(settings(inst.get("other").unwrap()), "other-model");
        assert!(inst.failure("broken").unwrap().reason.contains("bad"));
        assert!(inst
            .failure("ghost")
            .unwrap()
            .reason
            .contains("unknown gateway kind"));
        assert!(inst.failure("kindless").is_some());
        assert!(inst.is_known("broken") && !inst.is_known("zzz"));
    }

    #[test]
    fn max_concurrency_is_the_hosts_key_not_the_kinds() {
        let config: HostConfig = HostConfig::from_provider(
            figment::providers::Serialized::defaults(serde_json::json!({
                "limits": {"max_upstream_concurrency": 3},
                "gateways": {
                    "limited": {"kind": "fake", "max_concurrency": 2, "model": "m"}
                }
            })),
        )
        .unwrap();
        let registry = Registry::from_kinds([&FAKE]).unwrap();
        let inst = Instances::build(&registry, &config, &Env::default());
        let limited = inst.get("limited").unwrap();
        assert_eq!(limited.id(), "limited");
        assert_eq!(settings(limited), "m", "forwarded to the wrapped instance");
        assert!(inst.get("fake").is_some(), "host-wide default applies too");
        let wrong = HostConfig::from_provider(figment::providers::Serialized::defaults(
            serde_json::json!({"gateways": {"wrong": {"kind": "fake", "max_concurrency": "many"}}}),
        ))
        .unwrap_err()
        .to_string();
        assert!(wrong.contains("max_concurrency"), "{wrong}");
    }
}
