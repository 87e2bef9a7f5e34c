//! Per-session stream counting: at most `max` turns of one session key stream at once in this
//! process. A plain count check, kept separate so a queueing or barge-in policy can wrap it
//! (ask [`SessionSlots::busy`] first, or try again once a slot is released).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// Open-stream counts by session key; a key is forgotten when its count drops to zero.
#[derive(Debug, Default)]
pub struct SessionSlots {
    max: usize,
    busy: Mutex<HashMap<String, usize>>,
}

/// One occupied slot of a session; released on drop.
#[derive(Debug)]
pub struct SessionSlot {
    slots: Arc<SessionSlots>,
    key: String,
}

impl SessionSlots {
    /// Slots allowing `max` concurrent turns per key; 0 means no limit.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            busy: Mutex::new(HashMap::new()),
        })
    }

    /// The configured limit (0 = none).
    pub fn max(&self) -> usize {
        self.max
    }

    /// Turns of `key` streaming now.
    pub fn busy(&self, key: &str) -> usize {
        self.busy.lock().get(key).copied().unwrap_or(0)
    }

    /// Keys with at least one open stream.
    pub fn sessions(&self) -> usize {
        self.busy.lock().len()
    }

    /// Take a slot of `key`, or `None` when `max` turns of it are already streaming.
    pub fn try_acquire(self: &Arc<Self>, key: &str) -> Option<SessionSlot> {
        let mut busy = self.busy.lock();
        let count = busy.entry(key.to_string()).or_insert(0);
        if self.max != 0 && *count >= self.max {
            return None;
        }
        *count += 1;
        Some(SessionSlot {
            slots: self.clone(),
            key: key.to_string(),
        })
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut busy = self.slots.busy.lock();
        if let Some(count) = busy.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                busy.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_and_forgets_idle_keys() {
        let slots = SessionSlots::new(2);
        let a1 = slots.try_acquire("a").unwrap();
        let a2 = slots.try_acquire("a").unwrap();
        assert!(
            slots.try_acquire("a").is_none(),
            "third turn of a is refused"
        );
        assert_eq!(slots.busy("a"), 2);
        let b = slots.try_acquire("b").unwrap();
        drop(a1);
        let a3 = slots.try_acquire("a").unwrap();
        drop((a2, a3, b));
        assert_eq!(slots.sessions(), 0, "no key kept once idle");
        let unlimited = SessionSlots::new(0);
        let held: Vec<_> = (0..100)
            .map(|_| unlimited.try_acquire("k").unwrap())
            .collect();
        assert_eq!(unlimited.busy("k"), 100);
        drop(held);
        assert_eq!(unlimited.sessions(), 0);
    }
}
