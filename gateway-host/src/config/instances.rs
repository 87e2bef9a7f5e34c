//! Gateway instances built from the kind registry and the `[gateways.*]` config.
//!
//! Every registered kind gets a built-in instance whose id is the kind id and whose defaults
//! come from `<KIND>_*` environment variables (`OPENAI_COMPAT_API_KEY`, ...). Every other
//! `[gateways.<id>]` table is a named instance of its `kind`. Each instance's upstream limits
//! reach its kind typed ([`gateway_core::Timeouts`]): `[timeouts]`, unless the table sets
//! `connect_timeout_ms`, `first_token_timeout_ms` or `idle_timeout_ms` (or, for a built-in
//! instance, `<KIND>_CONNECT_TIMEOUT_MS`, ... is set). Those keys are the host's, like `kind`,
//! `retry` and `max_concurrency`: a kind's settings never hold them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gateway_core::{Env, Gateway, GatewayError, InstanceConfig, Registry, Timeouts};

use crate::config::{GatewayConfig, HostConfig, TimeoutConfig};
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

/// The host's limit keys of a `[gateways.<id>]` table, with the variable (after a built-in
/// instance's prefix) that beats each.
const TIMEOUT_KEYS: [(&str, &str); 3] = [
    ("connect_timeout_ms", "CONNECT_TIMEOUT_MS"),
    ("first_token_timeout_ms", "FIRST_TOKEN_TIMEOUT_MS"),
    ("idle_timeout_ms", "IDLE_TIMEOUT_MS"),
];

/// An instance's limits: `<PREFIX>*_TIMEOUT_MS` (built-in instances) beats the table's
/// `*_timeout_ms`, which beats `[timeouts]`. The keys are taken out of `settings`. Errors name
/// the key or variable.
fn timeouts(
    settings: &mut serde_json::Map<String, serde_json::Value>,
    instance: &InstanceConfig,
    host: TimeoutConfig,
) -> Result<Timeouts, String> {
    let defaults = [
        ("timeouts.connect_ms", host.connect_ms),
        ("timeouts.first_token_ms", host.first_token_ms),
        ("timeouts.idle_ms", host.idle_ms),
    ];
    let mut limits = [Duration::ZERO; 3];
    for ((limit, (key, var)), default) in limits.iter_mut().zip(TIMEOUT_KEYS).zip(defaults) {
        let from_table = settings.remove(key);
        *limit = limit_ms(instance.env_default(var), (key, from_table), default)?;
    }
    let [connect, first_token, idle] = limits;
    Ok(Timeouts {
        connect,
        first_token,
        idle,
    })
}

/// One limit from the first source that has it (variable, table key, host default); zero is
/// refused.
fn limit_ms(
    from_env: Option<(String, &str)>,
    (key, from_table): (&str, Option<serde_json::Value>),
    (default_name, default_ms): (&str, u64),
) -> Result<Duration, String> {
    let (source, ms) = match (from_env, from_table) {
        (Some((var, value)), _) => {
            let value = value.trim();
            let ms = value
                .parse::<u64>()
                .map_err(|e| format!("{var}: cannot parse '{value}': {e}"))?;
            (var, ms)
        }
        (None, Some(value)) => {
            let ms = value.as_u64().ok_or_else(|| {
                format!("{key} must be a whole number of milliseconds, got {value}")
            })?;
            (key.to_string(), ms)
        }
        (None, None) => (default_name.to_string(), default_ms),
    };
    if ms == 0 {
        return Err(format!("{source} must be at least 1"));
    }
    Ok(Duration::from_millis(ms))
}

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
                env_prefix: Some(kind.env_prefix()),
                env: env.clone(),
                ..InstanceConfig::default()
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
                env_prefix: None,
                env: env.clone(),
                ..InstanceConfig::default()
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
        instance.timeouts = match timeouts(&mut settings, &instance, config.timeouts) {
            Ok(timeouts) => timeouts,
            Err(reason) => {
                let id = instance.id;
                let error = GatewayError::InvalidConfig {
                    gateway: id.clone(),
                    reason,
                };
                return self.fail(&id, kind.id, error.to_string());
            }
        };
        instance.settings = serde_json::Value::Object(settings);
        let limit = section
            .max_concurrency
            .unwrap_or(config.limits.max_upstream_concurrency);
        match (kind.build)(&instance) {
            Ok(gateway) if limit > 0 => {
                let wait = instance.timeouts.first_token;
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
        // Strict like real kinds: the host's keys (`max_concurrency`, the timeouts) must not
        // arrive here.
        let host_key = |k: &String| k == "max_concurrency" || k.ends_with("_timeout_ms");
        let mut keys = c.settings.as_object().into_iter().flat_map(|m| m.keys());
        if let Some(key) = keys.find(|k| *k == "bad" || host_key(k)) {
            return Err(GatewayError::InvalidConfig {
                gateway: c.id.clone(),
                reason: format!("unknown key `{key}`"),
            });
        }
        Ok(Arc::new(Fake {
            id: c.id.clone(),
            settings: c.settings.clone(),
        }))
    }

    static FAKE: GatewayKind = GatewayKind {
        id: "fake",
        description: "fake",
        build,
    };

    /// A kind that reports the timeouts it was handed as its model: `connect/first/idle` ms.
    fn build_timed(c: &InstanceConfig) -> Result<Arc<dyn Gateway>, GatewayError> {
        let t = c.timeouts;
        let ms = [t.connect, t.first_token, t.idle].map(|d| d.as_millis().to_string());
        let mut c = c.clone();
        c.settings["model"] = ms.join("/").into();
        build(&c)
    }

    static TIMED: GatewayKind = GatewayKind {
        id: "timed",
        description: "timed",
        build: build_timed,
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

    fn timed_instances(gateways: serde_json::Value, env: &[(&str, &str)]) -> Instances {
        let config = HostConfig::from_provider(figment::providers::Serialized::defaults(
            serde_json::json!({
                "timeouts": {"connect_ms": 100, "first_token_ms": 200, "idle_ms": 300},
                "gateways": gateways,
            }),
        ))
        .unwrap();
        let registry = Registry::from_kinds([&TIMED]).unwrap();
        Instances::build(&registry, &config, &Env::from_pairs(env.iter().copied()))
    }

    #[test]
    fn kinds_get_typed_timeouts_and_never_the_hosts_keys() {
        let inst = timed_instances(
            serde_json::json!({
                "timed": {"first_token_timeout_ms": 222, "idle_timeout_ms": 1},
                "named": {"kind": "timed", "idle_timeout_ms": 30},
                "plain": {"kind": "timed"},
            }),
            &[("TIMED_IDLE_TIMEOUT_MS", " 333 ")],
        );
        // The built-in instance: variable > table > [timeouts].
        assert_eq!(settings(inst.get("timed").unwrap()), "100/222/333");
        // A named instance has no variables: its table, else [timeouts].
        assert_eq!(settings(inst.get("named").unwrap()), "100/200/30");
        assert_eq!(settings(inst.get("plain").unwrap()), "100/200/300");
    }

    #[test]
    fn bad_timeouts_fail_the_instance_naming_the_key_or_variable() {
        let inst = timed_instances(
            serde_json::json!({
                "timed": {},
                "words": {"kind": "timed", "connect_timeout_ms": "soon"},
                "zero": {"kind": "timed", "first_token_timeout_ms": 0},
            }),
            &[("TIMED_IDLE_TIMEOUT_MS", "later")],
        );
        let reason = |id: &str| inst.failure(id).expect(id).reason.clone();
        assert!(reason("timed").contains("TIMED_IDLE_TIMEOUT_MS: cannot parse 'later'"));
        assert!(reason("words").contains("connect_timeout_ms must be a whole number"));
        assert!(reason("zero").contains("first_token_timeout_ms must be at least 1"));
        let zero = timed_instances(serde_json::json!({}), &[("TIMED_CONNECT_TIMEOUT_MS", "0")]);
        assert!(zero
            .failure("timed")
            .unwrap()
            .reason
            .contains("TIMED_CONNECT_TIMEOUT_MS must be at least 1"));
    }
}
