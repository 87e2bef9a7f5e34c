//! A profile's voice-turn settings: `llm.queue.mode`, `llm.queue.block_streaming_chunk` and the
//! host's own `voice.sentence_events` flag.

use crate::config::profile::Profile;
use crate::sessions::QueueMode;

/// How the host runs the turns of one profile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VoiceSettings {
    /// `llm.queue.mode` (default `collect`).
    pub queue_mode: QueueMode,
    /// `voice.sentence_events`: emit `sentence` events (a request's `sentences` overrides it).
    pub sentence_events: bool,
    /// `llm.queue.block_streaming_chunk`: shortest `sentence` event in characters (default 0).
    pub min_sentence_chars: usize,
}

impl VoiceSettings {
    /// The settings of a profile. An unknown queue mode is handled as `collect`, with a warning
    /// (`gateway-host check` reports it); a non-boolean `voice.sentence_events` counts as false.
    pub fn of(profile: &Profile) -> Self {
        let queue_mode = match profile.queue_mode.as_deref().map(str::trim) {
            None | Some("") => QueueMode::Collect,
            Some(name) => QueueMode::parse(name).unwrap_or_else(|| {
                tracing::warn!(profile = %profile.id, mode = %name,
                    "unknown llm.queue.mode; handled as collect");
                QueueMode::Collect
            }),
        };
        Self {
            queue_mode,
            sentence_events: profile
                .raw
                .pointer("/voice/sentence_events")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
            min_sentence_chars: profile.block_streaming_chunk.unwrap_or(0) as usize,
        }
    }

    /// Problems with a profile's voice settings, for `gateway-host check`.
    pub fn problems(profile: &Profile) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(name) = profile.queue_mode.as_deref() {
            if !name.trim().is_empty() && QueueMode::parse(name).is_none() {
                problems.push(format!(
                    "unknown llm.queue.mode {name:?} (expected {}); handled as collect",
                    QueueMode::NAMES
                ));
            }
        }
        match profile.raw.pointer("/voice/sentence_events") {
            None | Some(serde_json::Value::Null | serde_json::Value::Bool(_)) => {}
            Some(other) => problems.push(format!(
                "voice.sentence_events must be true or false, not {other}"
            )),
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn profile(value: serde_json::Value) -> Profile {
        Profile::from_json(value, "p.json").unwrap()
    }

    #[test]
    fn reads_queue_mode_chunk_and_sentence_flag() {
        let p = profile(json!({"id": "p",
            "llm": {"queue": {"mode": "steer-backlog", "block_streaming_chunk": 60}},
            "voice": {"sentence_events": true}}));
        assert_eq!(
            VoiceSettings::of(&p),
            VoiceSettings {
                queue_mode: QueueMode::SteerBacklog,
                sentence_events: true,
                min_sentence_chars: 60
            }
        );
        assert!(VoiceSettings::problems(&p).is_empty());
        assert_eq!(
            VoiceSettings::of(&profile(json!({"id": "p"}))),
            VoiceSettings::default()
        );
    }

    #[test]
    fn unknown_mode_is_collect_and_a_problem() {
        let p = profile(json!({"id": "p", "llm": {"queue": {"mode": "stear"}},
            "voice": {"sentence_events": "yes"}}));
        assert_eq!(VoiceSettings::of(&p).queue_mode, QueueMode::Collect);
        assert!(!VoiceSettings::of(&p).sentence_events);
        let problems = VoiceSettings::problems(&p);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("\"stear\""));
        assert!(problems[1].contains("voice.sentence_events"));
    }
}
