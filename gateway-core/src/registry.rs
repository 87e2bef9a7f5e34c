//! The registry of gateway kinds, collected at link time with `inventory`.
//!
//! A kind is a constant: an id and a plain `fn` that builds an instance from its configuration.
//! No work happens at registration; the host builds the id → kind map once at start-up.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::{GatewayError, RegistryError};
use crate::gateway::Gateway;

/// A gateway kind a crate contributes with `inventory::submit!`.
///
/// ```
/// # use std::sync::Arc;
/// # use gateway_core::{GatewayKind, InstanceConfig, Gateway, GatewayError};
/// fn build(_config: &InstanceConfig) -> Result<Arc<dyn Gateway>, GatewayError> {
///     Err(GatewayError::Other("example only".into()))
/// }
/// inventory::submit! {
///     GatewayKind { id: "my-kind", description: "an example kind", build }
/// }
/// ```
pub struct GatewayKind {
    /// Stable kind id, `^[a-z0-9-]+$`.
    pub id: &'static str,
    /// One line for `GET /v1/gateways` and `check`.
    pub description: &'static str,
    /// Builds an instance. A missing secret is not an error here: build an instance that
    /// reports it from `is_configured()` instead, so the host can list it.
    pub build: fn(&InstanceConfig) -> Result<Arc<dyn Gateway>, GatewayError>,
}

inventory::collect!(GatewayKind);

impl GatewayKind {
    /// Prefix of the environment variables of this kind's default instance:
    /// `openai-compat` → `OPENAI_COMPAT_`.
    pub fn env_prefix(&self) -> String {
        env_prefix(self.id)
    }
}

impl fmt::Debug for GatewayKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayKind")
            .field("id", &self.id)
            .field("description", &self.description)
            .finish()
    }
}

/// Environment-variable prefix for an id: upper case, `-` → `_`, with a trailing `_`.
pub fn env_prefix(id: &str) -> String {
    let mut prefix: String = id
        .chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    prefix.push('_');
    prefix
}

/// A snapshot of environment variables given to gateway builders, so that tests can inject
/// values without touching the process environment. Its `Debug` output shows no values.
#[derive(Clone, Default)]
pub struct Env(Arc<HashMap<String, String>>);

impl Env {
    /// Snapshot of the process environment (after `.env` was loaded).
    pub fn from_process() -> Self {
        Self(Arc::new(std::env::vars().collect()))
    }

    /// An environment made of the given pairs.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self(Arc::new(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        ))
    }

    /// The value of a variable; empty values count as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Env({} variables)", self.0.len())
    }
}

/// Upstream time limits of one instance, resolved by the host (from `[timeouts]`, the
/// instance's own `*_timeout_ms` keys and, for a built-in instance, `<PREFIX>*_TIMEOUT_MS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Limit on establishing the TCP/TLS connection.
    pub connect: Duration,
    /// Limit from sending the request to the first content token (covers waiting for headers).
    pub first_token: Duration,
    /// Limit on silence between two reads once the answer flows.
    pub idle: Duration,
}

impl Timeouts {
    /// The defaults: 5 s to connect, 30 s to the first token, 30 s of silence.
    pub const DEFAULT: Timeouts = Timeouts {
        connect: Duration::from_millis(5_000),
        first_token: Duration::from_millis(30_000),
        idle: Duration::from_millis(30_000),
    };
}

impl Default for Timeouts {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What a kind's `build` receives for one instance.
#[derive(Debug, Clone, Default)]
pub struct InstanceConfig {
    /// Instance id (what profiles name in `adapter_config.gateway_id`).
    pub id: String,
    /// The instance's own settings table (e.g. `[gateways.groq]` minus the host's keys: `kind`,
    /// `retry`, `max_concurrency` and the `*_timeout_ms` limits), a JSON object.
    pub settings: serde_json::Value,
    /// The instance's upstream time limits.
    pub timeouts: Timeouts,
    /// Prefix of environment variables that supply defaults (`OPENAI_COMPAT_` for the
    /// built-in instance of `openai-compat`); `None` for named instances.
    pub env_prefix: Option<String>,
    /// Environment to resolve secrets (`api_key_env`) and defaults from.
    pub env: Env,
}

impl InstanceConfig {
    /// Settings deserialised into the kind's own type; errors name the instance.
    pub fn settings_as<T: DeserializeOwned>(&self) -> Result<T, GatewayError> {
        let value = if self.settings.is_null() {
            serde_json::Value::Object(Default::default())
        } else {
            self.settings.clone()
        };
        serde_json::from_value(value).map_err(|e| GatewayError::InvalidConfig {
            gateway: self.id.clone(),
            reason: e.to_string(),
        })
    }

    /// The default-supplying variable `<prefix><NAME>` and its value, if this instance has a
    /// prefix and the variable is set.
    pub fn env_default(&self, name: &str) -> Option<(String, &str)> {
        let var = format!("{}{}", self.env_prefix.as_deref()?, name);
        let value = self.env.get(&var)?;
        Some((var, value))
    }
}

/// True for a valid kind id: `^[a-z0-9-]+$`. Ids name built-in instances, `kind = "..."`
/// values and (upper-cased) environment variable prefixes, so nothing else is allowed.
fn is_valid_kind_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The id → kind map, built once at start-up.
#[derive(Debug, Clone)]
pub struct Registry {
    kinds: BTreeMap<&'static str, &'static GatewayKind>,
}

impl Registry {
    /// Every kind linked into this binary. Fails if two kinds share an id or an id is not
    /// `^[a-z0-9-]+$`.
    pub fn from_inventory() -> Result<Self, RegistryError> {
        Self::from_kinds(inventory::iter::<GatewayKind>)
    }

    /// A registry of the given kinds only (for tests). Fails if two kinds share an id or an
    /// id is not `^[a-z0-9-]+$`.
    pub fn from_kinds(
        kinds: impl IntoIterator<Item = &'static GatewayKind>,
    ) -> Result<Self, RegistryError> {
        let mut map = BTreeMap::new();
        for kind in kinds {
            if !is_valid_kind_id(kind.id) {
                return Err(RegistryError::InvalidKindId(kind.id.to_string()));
            }
            if map.insert(kind.id, kind).is_some() {
                return Err(RegistryError::DuplicateKind(kind.id.to_string()));
            }
        }
        Ok(Self { kinds: map })
    }

    /// Look up a kind by id.
    pub fn get(&self, id: &str) -> Result<&'static GatewayKind, RegistryError> {
        self.kinds
            .get(id)
            .copied()
            .ok_or_else(|| RegistryError::UnknownKind {
                kind: id.to_string(),
                known: self.ids().collect::<Vec<_>>().join(", "),
            })
    }

    /// Registered kind ids, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }

    /// Registered kinds, sorted by id.
    pub fn kinds(&self) -> impl Iterator<Item = &'static GatewayKind> + '_ {
        self.kinds.values().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(_: &InstanceConfig) -> Result<Arc<dyn Gateway>, GatewayError> {
        Err(GatewayError::Other("test".into()))
    }

    static A: GatewayKind = GatewayKind {
        id: "a",
        description: "a",
        build,
    };
    static A2: GatewayKind = GatewayKind {
        id: "a",
        description: "another a",
        build,
    };
    static B: GatewayKind = GatewayKind {
        id: "b",
        description: "b",
        build,
    };

    #[test]
    fn looks_up_kinds_and_rejects_duplicates() {
        let registry = Registry::from_kinds([&B, &A]).unwrap();
        assert_eq!(registry.ids().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(registry.get("b").unwrap().description, "b");
        let err = registry.get("zzz").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown gateway kind 'zzz' (registered: a, b)"
        );
        assert_eq!(
            Registry::from_kinds([&A, &A2]).unwrap_err(),
            RegistryError::DuplicateKind("a".into())
        );
    }

    #[test]
    fn rejects_kind_ids_outside_the_documented_alphabet() {
        static GOOD: GatewayKind = GatewayKind {
            id: "my-kind-2",
            description: "ok",
            build,
        };
        assert!(Registry::from_kinds([&GOOD]).is_ok());
        for id in [
            "", "My-Kind", "my_kind", "my.kind", "my kind", "kind/x", "ünï",
        ] {
            let kind: &'static GatewayKind = Box::leak(Box::new(GatewayKind {
                id,
                description: "bad",
                build,
            }));
            let err = Registry::from_kinds([&A, kind]).unwrap_err();
            assert_eq!(err, RegistryError::InvalidKindId(id.to_string()));
            assert!(err.to_string().contains(&format!("'{id}'")), "{err}");
        }
    }

    #[test]
    fn env_prefix_and_defaults() {
        assert_eq!(env_prefix("openai-compat"), "OPENAI_COMPAT_");
        let config = InstanceConfig {
            id: "openai-compat".into(),
            settings: serde_json::Value::Null,
            env_prefix: Some("OPENAI_COMPAT_".into()),
            env: Env::from_pairs([("OPENAI_COMPAT_MODEL", "m"), ("OPENAI_COMPAT_EMPTY", " ")]),
            ..InstanceConfig::default()
        };
        assert_eq!(
            config.env_default("MODEL"),
            Some(("OPENAI_COMPAT_MODEL".to_string(), "m"))
        );
        assert_eq!(config.env_default("EMPTY"), None);
        assert!(!format!("{:?}", config.env).contains('m'));
    }
}
