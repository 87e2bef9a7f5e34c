//! The voice system prompt file, hot reloaded, combined with each profile's own prompt.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

/// File name of the voice prompt inside the prompts directory.
pub const PROMPT_FILE: &str = "voice-system-prompt.md";

/// Remove lines starting with `#` and leading/trailing blank lines.
pub fn strip_comments(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let start = lines.iter().position(|l| !l.trim().is_empty());
    let end = lines.iter().rposition(|l| !l.trim().is_empty());
    match (start, end) {
        (Some(s), Some(e)) => lines[s..=e].join("\n"),
        _ => String::new(),
    }
}

/// `file` then a blank line then `profile`; either may be empty; `None` when both are.
pub fn combine(file: &str, profile: &str) -> Option<Arc<str>> {
    match (file.is_empty(), profile.is_empty()) {
        (true, true) => None,
        (false, true) => Some(file.into()),
        (true, false) => Some(profile.into()),
        (false, false) => Some(format!("{file}\n\n{profile}").into()),
    }
}

/// State of the prompt file as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptStatus {
    /// Loaded: bytes of stripped text.
    Loaded(usize),
    /// The file does not exist or cannot be read.
    Missing,
    /// No prompts directory is configured.
    Disabled,
}

#[derive(Default)]
struct State {
    /// `(mtime, len)` of the file last read; `None` when missing.
    stamp: Option<(Option<SystemTime>, u64)>,
    loaded: bool,
    text: Arc<str>,
    generation: u64,
    warned_missing: bool,
    /// Combined prompt per profile id, valid for `generation`.
    combined: HashMap<String, (u64, Option<Arc<str>>)>,
}

/// The voice prompt file with a cheap change check: one `metadata()` per request, a re-read
/// only when mtime or length changed. A missing file is not fatal (warned once).
pub struct PromptStore {
    path: Option<PathBuf>,
    state: Mutex<State>,
}

impl PromptStore {
    /// Watch `dir/voice-system-prompt.md`; an empty `dir` means no file (profile prompts only).
    pub fn new(dir: &Path) -> Self {
        Self {
            path: (!dir.as_os_str().is_empty()).then(|| dir.join(PROMPT_FILE)),
            state: Mutex::new(State::default()),
        }
    }

    /// Path of the file, unless disabled.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Re-read the file if it changed; returns its current status.
    pub fn refresh(&self) -> PromptStatus {
        let Some(path) = &self.path else {
            return PromptStatus::Disabled;
        };
        let meta = std::fs::metadata(path).ok().filter(|m| m.is_file());
        let stamp = meta.map(|m| (m.modified().ok(), m.len()));
        let mut state = self.state.lock();
        if state.loaded && state.stamp == stamp {
            return status(&state);
        }
        let text = match stamp {
            Some(_) => std::fs::read_to_string(path).ok(),
            None => None,
        };
        match text {
            Some(text) => {
                state.text = strip_comments(&text).into();
                state.warned_missing = false;
                tracing::info!(path = %path.display(), bytes = state.text.len(), "voice prompt loaded");
            }
            None => {
                state.text = "".into();
                if !state.warned_missing {
                    state.warned_missing = true;
                    tracing::warn!(path = %path.display(),
                        "voice prompt file missing or unreadable; using profile prompts alone");
                }
            }
        }
        state.stamp = stamp;
        state.loaded = true;
        state.generation += 1;
        state.combined.clear();
        status(&state)
    }

    /// The system prompt for a profile: the file text then the profile's prompt. Cached per
    /// profile id until the file changes, so steady-state turns only clone an `Arc`.
    pub fn system_prompt(&self, profile_id: &str, profile_prompt: &str) -> Option<Arc<str>> {
        self.refresh();
        let mut state = self.state.lock();
        let generation = state.generation;
        if let Some((g, cached)) = state.combined.get(profile_id) {
            if *g == generation {
                return cached.clone();
            }
        }
        let combined = combine(&state.text, profile_prompt);
        state
            .combined
            .insert(profile_id.to_string(), (generation, combined.clone()));
        combined
    }
}

fn status(state: &State) -> PromptStatus {
    match state.stamp {
        Some(_) => PromptStatus::Loaded(state.text.len()),
        None => PromptStatus::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_comment_lines_and_blank_edges() {
        let text = "# title\n#\n\nHello\n  # kept, not at column 0\nworld #x\n\n# end\n\n";
        assert_eq!(
            strip_comments(text),
            "Hello\n  # kept, not at column 0\nworld #x"
        );
        assert_eq!(strip_comments("# only\r\n#\r\n"), "");
        assert_eq!(strip_comments("a\r\n# c\r\nb\r\n"), "a\nb");
    }

    #[test]
    fn combines() {
        assert_eq!(combine("", ""), None);
        assert_eq!(combine("a", "").as_deref(), Some("a"));
        assert_eq!(combine("", "b").as_deref(), Some("b"));
        assert_eq!(combine("a", "b").as_deref(), Some("a\n\nb"));
    }

    #[test]
    fn reloads_on_change_and_survives_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = PromptStore::new(dir.path());
        let path = store.path().unwrap().to_path_buf();
        assert_eq!(store.refresh(), PromptStatus::Missing);
        assert_eq!(store.system_prompt("p", "P").as_deref(), Some("P"));
        std::fs::write(&path, "# c\nOne").unwrap();
        assert_eq!(store.system_prompt("p", "P").as_deref(), Some("One\n\nP"));
        let first = store.system_prompt("p", "P").unwrap();
        let again = store.system_prompt("p", "P").unwrap();
        assert!(Arc::ptr_eq(&first, &again), "cached");
        std::fs::write(&path, "# c\nTwo two").unwrap();
        assert_eq!(
            store.system_prompt("p", "P").as_deref(),
            Some("Two two\n\nP")
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(store.system_prompt("p", "").as_deref(), None);
        let disabled = PromptStore::new(Path::new(""));
        assert_eq!(disabled.refresh(), PromptStatus::Disabled);
        assert_eq!(disabled.system_prompt("p", "P").as_deref(), Some("P"));
    }
}
