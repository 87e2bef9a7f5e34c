//! Profiles: OpenVoiceUI-format JSON files, one per profile, loaded once at start-up.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

/// Gateway used by a profile without `adapter_config.gateway_id`.
pub const DEFAULT_GATEWAY_ID: &str = "openai-compat";
/// Longest accepted profile or gateway id.
pub const MAX_ID_LEN: usize = 64;

/// True when `id` matches `^[a-z0-9-]+$` (and is at most `MAX_ID_LEN` (64) long).
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The fields of a profile the host uses; the whole file is kept in [`Profile::raw`].
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Profile id, `^[a-z0-9-]+$`.
    pub id: String,
    /// Display name.
    pub name: Option<String>,
    /// OpenVoiceUI adapter name (e.g. `clawdbot`), informational.
    pub adapter: Option<String>,
    /// Gateway instance that answers (`adapter_config.gateway_id`).
    pub gateway_id: String,
    /// Default session key (`adapter_config.sessionKey`).
    pub session_key: Option<String>,
    /// Gateways tried in order when the main one fails before its first token
    /// (`adapter_config.fallback_gateway_ids`; see `docs/backends.md`).
    pub fallback_gateway_ids: Vec<String>,
    /// Model override (`llm.model`).
    pub model: Option<String>,
    /// Answer length override (`llm.parameters.max_tokens`).
    pub max_tokens: Option<u32>,
    /// Sampling temperature (`llm.parameters.temperature`).
    pub temperature: Option<f32>,
    /// `llm.queue.mode`: `collect`, `steer` or `steer-backlog` (see `docs/voice.md`).
    pub queue_mode: Option<String>,
    /// `llm.queue.block_streaming_chunk`: shortest `sentence` event in characters.
    pub block_streaming_chunk: Option<u32>,
    /// The profile's own instructions, appended after the voice prompt file.
    pub system_prompt: Option<String>,
    /// History sent per turn (`context.max_history_messages`).
    pub max_history_messages: Option<usize>,
    /// OpenVoiceUI's `features.tools`: the profile may use tools.
    pub tools_enabled: bool,
    /// MCP servers (`[tools.servers]` names) whose tools the profile offers when
    /// `features.tools` is on (`adapter_config.tool_servers`; see `docs/tools.md`).
    pub tool_servers: Vec<String>,
    /// File the profile came from (`builtin` for in-memory profiles).
    pub file: String,
    /// The profile exactly as written, unknown fields included.
    pub raw: Arc<serde_json::Value>,
}

/// Why a profile could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// Not valid JSON or a used field has the wrong type.
    #[error("invalid profile JSON: {0}")]
    Json(String),
    /// The `id` is missing or does not match `^[a-z0-9-]+$`.
    #[error("invalid profile id {0:?} (expected 1-64 of a-z, 0-9, -)")]
    BadId(String),
    /// `adapter_config.sessionKey` is not a valid session key: every turn without a key of
    /// its own would be refused.
    #[error(
        "adapter_config.sessionKey is not a valid session key (expected 1-{} of {})",
        crate::turn::MAX_SESSION_KEY_LEN,
        crate::turn::SESSION_KEY_CHARS
    )]
    BadSessionKey,
    /// Another file already defines this id.
    #[error("duplicate profile id '{id}' (already defined by {first})")]
    Duplicate {
        /// The id.
        id: String,
        /// The file that defined it first.
        first: String,
    },
    /// The gateway (or a fallback) is not an instance of this host.
    #[error("profile '{profile}' names unknown gateway '{gateway}'")]
    UnknownGateway {
        /// The profile id.
        profile: String,
        /// The missing gateway id.
        gateway: String,
    },
    /// The file or directory could not be read.
    #[error("cannot read: {0}")]
    Io(String),
    /// An entry that looks meant as a profile but is not loaded (say why).
    #[error("not loaded: {0}")]
    NotLoaded(&'static str),
}

/// A problem with one profile file, reported by file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileProblem {
    /// File name (or directory path when the directory itself is unreadable).
    pub file: String,
    /// What is wrong.
    pub error: ProfileError,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawProfile {
    id: Option<String>,
    name: Option<String>,
    adapter: Option<String>,
    adapter_config: Option<RawAdapterConfig>,
    llm: Option<RawLlm>,
    system_prompt: Option<String>,
    context: Option<RawContext>,
    features: Option<RawFeatures>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawFeatures {
    /// Any JSON: only `true` turns tools on, so an unexpected type does not break the file.
    tools: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawAdapterConfig {
    gateway_id: Option<String>,
    #[serde(rename = "sessionKey")]
    session_key: Option<String>,
    fallback_gateway_ids: Option<Vec<String>>,
    tool_servers: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawLlm {
    model: Option<String>,
    parameters: Option<RawParameters>,
    queue: Option<RawQueue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawParameters {
    max_tokens: Option<u32>,
    temperature: Option<f32>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawQueue {
    mode: Option<String>,
    block_streaming_chunk: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawContext {
    max_history_messages: Option<usize>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

impl Profile {
    /// Parse a profile from its JSON; `file` names its origin in reports.
    pub fn from_json(raw: serde_json::Value, file: &str) -> Result<Self, ProfileError> {
        let parsed =
            RawProfile::deserialize(&raw).map_err(|e| ProfileError::Json(e.to_string()))?;
        let id = parsed.id.unwrap_or_default();
        if !is_valid_id(&id) {
            return Err(ProfileError::BadId(id));
        }
        let adapter = parsed.adapter_config.unwrap_or_default();
        let session_key = non_empty(adapter.session_key);
        if session_key
            .as_deref()
            .is_some_and(|key| !crate::turn::is_valid_session_key(key))
        {
            return Err(ProfileError::BadSessionKey);
        }
        let llm = parsed.llm.unwrap_or_default();
        let params = llm.parameters.unwrap_or_default();
        let queue = llm.queue.unwrap_or_default();
        Ok(Self {
            id,
            name: parsed.name,
            adapter: parsed.adapter,
            gateway_id: non_empty(adapter.gateway_id).unwrap_or_else(|| DEFAULT_GATEWAY_ID.into()),
            session_key,
            fallback_gateway_ids: adapter.fallback_gateway_ids.unwrap_or_default(),
            model: non_empty(llm.model),
            max_tokens: params.max_tokens,
            temperature: params.temperature,
            queue_mode: queue.mode,
            block_streaming_chunk: queue.block_streaming_chunk,
            system_prompt: non_empty(parsed.system_prompt),
            max_history_messages: parsed
                .context
                .unwrap_or_default()
                .max_history_messages
                .filter(|n| *n > 0),
            tools_enabled: parsed
                .features
                .and_then(|f| f.tools)
                .is_some_and(|on| on == true),
            tool_servers: adapter.tool_servers.unwrap_or_default(),
            file: file.to_string(),
            raw: Arc::new(raw),
        })
    }

    /// Parse a profile file's bytes.
    pub fn from_slice(bytes: &[u8], file: &str) -> Result<Self, ProfileError> {
        let raw: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ProfileError::Json(e.to_string()))?;
        Self::from_json(raw, file)
    }
}

/// The loaded profiles by id, plus every file that was skipped and why.
#[derive(Debug, Clone, Default)]
pub struct ProfileSet {
    profiles: BTreeMap<String, Arc<Profile>>,
    problems: Vec<ProfileProblem>,
}

impl ProfileSet {
    /// Load every `*.json` file of `dir` in name order. Broken files, duplicate ids and
    /// profiles naming a gateway for which `gateway_known` is false are reported and skipped.
    pub fn load_dir(dir: &Path, gateway_known: impl Fn(&str) -> bool) -> Self {
        let mut set = Self::default();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                set.problems.push(ProfileProblem {
                    file: dir.display().to_string(),
                    error: ProfileError::Io(e.to_string()),
                });
                return set;
            }
        };
        let mut files: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|ext| ext.eq_ignore_ascii_case("json"))
            })
            .collect();
        files.sort();
        for path in files {
            let file = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let result = not_loaded_why(&path)
                .map_or(Ok(()), |why| Err(ProfileError::NotLoaded(why)))
                .and_then(|()| std::fs::read(&path).map_err(|e| ProfileError::Io(e.to_string())))
                .and_then(|bytes| Profile::from_slice(&bytes, &file));
            match result {
                Ok(profile) => set.insert(profile, &gateway_known),
                Err(error) => set.problems.push(ProfileProblem { file, error }),
            }
        }
        set
    }

    /// A set of given profiles (e.g. the demo's built-in one), checked like files are.
    pub fn from_profiles(
        profiles: impl IntoIterator<Item = Profile>,
        gateway_known: impl Fn(&str) -> bool,
    ) -> Self {
        let mut set = Self::default();
        for profile in profiles {
            set.insert(profile, &gateway_known);
        }
        set
    }

    fn insert(&mut self, profile: Profile, gateway_known: &impl Fn(&str) -> bool) {
        let unknown = std::iter::once(&profile.gateway_id)
            .chain(&profile.fallback_gateway_ids)
            .find(|g| !gateway_known(g));
        let error = if let Some(gateway) = unknown {
            Some(ProfileError::UnknownGateway {
                profile: profile.id.clone(),
                gateway: gateway.clone(),
            })
        } else {
            self.profiles
                .get(&profile.id)
                .map(|first| ProfileError::Duplicate {
                    id: profile.id.clone(),
                    first: first.file.clone(),
                })
        };
        match error {
            Some(error) => self.problems.push(ProfileProblem {
                file: profile.file.clone(),
                error,
            }),
            None => {
                self.profiles.insert(profile.id.clone(), Arc::new(profile));
            }
        }
    }

    /// The profile with this id. Only the in-memory map is consulted.
    pub fn get(&self, id: &str) -> Option<&Arc<Profile>> {
        self.profiles.get(id)
    }

    /// All usable profiles, sorted by id.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Profile>> {
        self.profiles.values()
    }

    /// Files that were skipped, with the reason.
    pub fn problems(&self) -> &[ProfileProblem] {
        &self.problems
    }

    /// Number of usable profiles.
    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    /// True when no profile is usable.
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }
}

/// Why an entry named like a profile is not one: an upper-case `.JSON`, a directory, a
/// symlink to nothing. `None` for a loadable file.
fn not_loaded_why(path: &Path) -> Option<&'static str> {
    if path.extension().is_some_and(|ext| ext != "json") {
        return Some("profile files end in .json (lower case)");
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => None,
        Ok(_) => Some("a directory or special file, not a profile file"),
        Err(_) => Some("a symlink to nothing (or unreadable)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids() {
        assert!(is_valid_id("openai-agent-2"));
        for bad in ["", "A", "a/b", "../x", "a b", "é", &"a".repeat(65)] {
            assert!(!is_valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn tolerates_nulls_and_keeps_unknown_fields() {
        let raw = json!({
            "id": "p", "name": null, "adapter": null, "weird": {"x": 1},
            "adapter_config": {"agentId": null, "sessionKey": null, "gateway_id": null},
            "llm": {"model": null, "parameters": null, "queue": null},
            "context": null, "system_prompt": null
        });
        let p = Profile::from_json(raw.clone(), "p.json").unwrap();
        assert_eq!(p.gateway_id, DEFAULT_GATEWAY_ID);
        assert_eq!(p.model, None);
        assert_eq!(*p.raw, raw);
    }

    #[test]
    fn an_invalid_session_key_is_refused_at_load() {
        for key in ["bad key!/../x", &"k".repeat(300)] {
            let raw = json!({"id": "p", "adapter_config": {"sessionKey": key}});
            let error = Profile::from_json(raw, "p.json").unwrap_err().to_string();
            assert!(
                error.contains("adapter_config.sessionKey") && error.contains("1-128"),
                "{error}"
            );
        }
        let blank = json!({"id": "p", "adapter_config": {"sessionKey": "  "}});
        assert_eq!(
            Profile::from_json(blank, "p.json").unwrap().session_key,
            None
        );
    }

    #[test]
    fn reads_used_fields() {
        let raw = json!({
            "id": "p", "name": "P", "adapter": "clawdbot",
            "adapter_config": {"gateway_id": "groq", "sessionKey": "s-1",
                               "fallback_gateway_ids": ["a", "b"]},
            "llm": {"model": "m", "parameters": {"max_tokens": 64, "temperature": 0.5},
                    "queue": {"mode": "steer", "block_streaming_chunk": 60}},
            "context": {"max_history_messages": 4}, "system_prompt": "Be nice."
        });
        let p = Profile::from_json(raw, "p.json").unwrap();
        assert_eq!(p.gateway_id, "groq");
        assert_eq!(p.session_key.as_deref(), Some("s-1"));
        assert_eq!(p.fallback_gateway_ids, ["a", "b"]);
        assert_eq!(p.max_tokens, Some(64));
        assert_eq!(p.temperature, Some(0.5));
        assert_eq!(p.queue_mode.as_deref(), Some("steer"));
        assert_eq!(p.block_streaming_chunk, Some(60));
        assert_eq!(p.max_history_messages, Some(4));
    }

    /// Inputs kept from fuzzing (`tests/fuzz-regressions/profile/`): never a panic, and an
    /// accepted profile has a valid id.
    #[test]
    fn fuzz_regressions() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions/profile");
        let mut replayed = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            if let Ok(profile) = Profile::from_slice(&bytes, "fuzz.json") {
                assert!(is_valid_id(&profile.id));
                assert_eq!(ProfileSet::from_profiles([profile], |_| true).len(), 1);
            }
            replayed += 1;
        }
        assert!(replayed > 0);
    }

    #[test]
    fn bad_files_are_reported_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("a.json", r#"{"id": "a"}"#);
        write("b.json", r#"{"id": "a"}"#);
        write("c.json", "{not json");
        write("d.json", r#"{"id": "Bad/Id"}"#);
        write(
            "e.json",
            r#"{"id": "e", "adapter_config": {"gateway_id": "nope"}}"#,
        );
        write("notes.txt", "ignored");
        write("f.JSON", r#"{"id": "f"}"#);
        std::fs::create_dir(dir.path().join("g.json")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("h.json")).unwrap();
        let set = ProfileSet::load_dir(dir.path(), |g| g == DEFAULT_GATEWAY_ID);
        assert_eq!(set.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["a"]);
        let files: Vec<_> = set.problems().iter().map(|p| p.file.as_str()).collect();
        assert_eq!(
            files,
            ["b.json", "c.json", "d.json", "e.json", "f.JSON", "g.json", "h.json"]
        );
        let why: Vec<String> = set.problems()[4..]
            .iter()
            .map(|p| p.error.to_string())
            .collect();
        assert!(why[0].contains("lower case"), "{why:?}");
        assert!(why[1].contains("directory"), "{why:?}");
        assert!(why[2].contains("symlink to nothing"), "{why:?}");
    }
}
