//! Turns of one session, one at a time: the in-flight registry behind queue modes and
//! interrupts.
//!
//! Every turn with a session key takes a [`Ticket`] before it reads the session's history.
//! Turns of a session run one after the other (first come, first served); what a new turn does
//! to the turns ahead of it follows its profile's [`QueueMode`]. An interrupt (from
//! `POST /v1/sessions/{key}/interrupt` or from a steering turn) ends a turn at once and yields
//! a [`Cut`]: what memory keeps of the cut turn, written by [`Cut::store`] before the next turn
//! of the session may read the history. A session's entry is removed when its last turn ends,
//! so the registry holds only sessions with turns running or waiting.
//!
//! With `memory.backend = "redis"` the registry is attached to a [`cluster::Cluster`]: a turn
//! also takes its session's lease in Redis before it runs, steering cuts the session's turns
//! on every replica, and interrupts and views reach the replica that runs the turn.

pub(crate) mod cluster;
pub(crate) mod slots;
pub(crate) mod store;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

use gateway_core::{CancellationToken, ChatMessage, SessionStore, StoreError};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, OwnedMutexGuard};

use cluster::{Cluster, Inbox, Lease, RequestError};

/// What a new turn does with the turns of its session that are still running or waiting
/// (`llm.queue.mode` of its profile).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueueMode {
    /// Wait for the turns ahead to finish; the new turn sees them in its history.
    #[default]
    Collect,
    /// Interrupt the turns ahead (their streamed text counts as heard), then run. A cut turn
    /// of which nothing was streamed leaves no trace in memory.
    Steer,
    /// Like `steer`, but a cut turn's user message is kept even when nothing was streamed.
    SteerBacklog,
}

impl QueueMode {
    /// The accepted `llm.queue.mode` values.
    pub const NAMES: &'static str = "collect, steer, steer-backlog";

    /// The mode of an `llm.queue.mode` value; `None` for an unknown name.
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            "collect" => Some(QueueMode::Collect),
            "steer" => Some(QueueMode::Steer),
            "steer-backlog" => Some(QueueMode::SteerBacklog),
            _ => None,
        }
    }

    /// The profile spelling of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueMode::Collect => "collect",
            QueueMode::Steer => "steer",
            QueueMode::SteerBacklog => "steer-backlog",
        }
    }

    fn cuts_as(self) -> Option<CutBy> {
        match self {
            QueueMode::Collect => None,
            QueueMode::Steer => Some(CutBy::Steer),
            QueueMode::SteerBacklog => Some(CutBy::SteerBacklog),
        }
    }
}

/// Who ended a turn early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CutBy {
    /// `POST /v1/sessions/{key}/interrupt`.
    Api,
    /// A new turn of a `steer` profile.
    Steer,
    /// A new turn of a `steer-backlog` profile.
    SteerBacklog,
}

/// What memory keeps of a cut turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// Whether the user message is stored.
    pub user: bool,
    /// The assistant message stored, if any.
    pub assistant: Option<String>,
}

/// The memory rule for a cut turn. The assistant message is what the user heard: `heard`
/// when given (stored as given even when it is not a prefix of the streamed text, since a
/// client's TTS may have normalised it), else everything streamed; trailing whitespace is
/// dropped and an empty text stores no assistant message. The user message is kept when
/// something was heard, and always when the cut came from the API or from `steer-backlog`.
pub fn kept(streamed: &str, heard: Option<&str>, by: CutBy) -> Kept {
    let text = heard.unwrap_or(streamed).trim_end();
    let assistant = (!text.trim().is_empty()).then(|| text.to_string());
    Kept {
        user: assistant.is_some() || by != CutBy::Steer,
        assistant,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Queued behind other turns of the session.
    Waiting,
    /// Holds the session; streaming.
    Running,
    /// Completed; storing its memory.
    Finishing,
    /// Interrupted; its [`Cut`] stores the memory.
    Cut,
    /// Over.
    Done,
}

struct ControlState {
    phase: Phase,
    /// Text streamed to the client so far.
    streamed: String,
    /// The session's turn lock while this turn runs (or a cut of it stores memory).
    guard: Option<Hold>,
}

/// What a running turn holds: its session's lock in this process and, with a cluster, the
/// session's lease in Redis.
struct Hold {
    _local: OwnedMutexGuard<()>,
    _shared: Option<Lease>,
}

/// One turn as the registry sees it.
struct Control {
    user: Arc<str>,
    history_limit: usize,
    /// The turn's upstream cancellation.
    cancel: CancellationToken,
    /// Fired when the turn is cut.
    interrupted: CancellationToken,
    state: Mutex<ControlState>,
}

impl Control {
    /// Cut the turn if it is waiting or running; `None` when it already finished.
    fn cut(&self, key: &str, heard: Option<&str>, by: CutBy) -> Option<Cut> {
        let mut state = self.state.lock();
        if !matches!(state.phase, Phase::Waiting | Phase::Running) {
            return None;
        }
        state.phase = Phase::Cut;
        let streamed = state.streamed.clone();
        let guard = state.guard.take();
        drop(state);
        self.interrupted.cancel();
        self.cancel.cancel();
        Some(Cut {
            key: key.to_string(),
            streamed_chars: streamed.chars().count(),
            heard_is_prefix: heard.map(|h| streamed.trim_start().starts_with(h.trim())),
            kept: kept(&streamed, heard, by),
            user: self.user.clone(),
            history_limit: self.history_limit,
            _guard: guard,
        })
    }
}

/// An interrupted turn: what was cut and what memory keeps. Until [`Cut::store`] is done
/// (or the cut is dropped) the next turn of the session waits.
#[must_use = "a cut turn's memory is written by Cut::store"]
pub struct Cut {
    /// Session key.
    pub key: String,
    /// Characters streamed to the client before the cut.
    pub streamed_chars: usize,
    /// Whether `heard` was a prefix of the streamed text (`None` without `heard`).
    pub heard_is_prefix: Option<bool>,
    /// What memory keeps.
    pub kept: Kept,
    user: Arc<str>,
    history_limit: usize,
    _guard: Option<Hold>,
}

impl Cut {
    /// Append what is kept to the session's memory, then let the next turn run.
    pub async fn store(self, store: &dyn SessionStore) -> Result<(), StoreError> {
        self.store_ref(store).await
    }

    async fn store_ref(&self, store: &dyn SessionStore) -> Result<(), StoreError> {
        if !self.kept.user {
            return Ok(());
        }
        let mut messages = vec![ChatMessage::user(self.user.clone())];
        messages.extend(self.kept.assistant.as_deref().map(ChatMessage::assistant));
        store.append(&self.key, messages, self.history_limit).await
    }

    /// What the cut did, for the interrupt's answer; `store_error` says why memory was not
    /// updated when [`Cut::store`] failed.
    fn report(&self, store_error: Option<String>) -> CutReport {
        CutReport {
            streamed_chars: self.streamed_chars,
            heard_is_prefix: self.heard_is_prefix,
            kept: self.kept.clone(),
            store_error,
        }
    }
}

/// What an interrupt did, wherever the turn ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutReport {
    /// Characters streamed to the client before the cut.
    pub streamed_chars: usize,
    /// Whether `heard` was a prefix of the streamed text (`None` without `heard`).
    pub heard_is_prefix: Option<bool>,
    /// What memory keeps.
    pub kept: Kept,
    /// Why memory was not updated, when it was not.
    pub store_error: Option<String>,
}

/// A session's queue: the turn lock (first come, first served) and its turns in arrival order.
#[derive(Default)]
struct Slot {
    lock: Arc<tokio::sync::Mutex<()>>,
    turns: Mutex<Vec<Arc<Control>>>,
}

struct Inner {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    changes: watch::Sender<u64>,
    /// The other replicas, with `memory.backend = "redis"`.
    cluster: OnceLock<Cluster>,
    /// Counts cut turns whose memory could not be stored.
    lost: Counter,
}

impl Inner {
    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// The registry of sessions with turns running or waiting. Cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

/// A registry reference that does not keep it alive (for its cluster's tasks).
pub(crate) struct WeakSessions(Weak<Inner>);

impl WeakSessions {
    fn upgrade(&self) -> Option<Sessions> {
        self.0.upgrade().map(|inner| Sessions { inner })
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Self::counting_lost(Counter::default())
    }
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sessions({} active)", self.len())
    }
}

/// The registry's view of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// A turn is running (or storing its memory).
    pub in_flight: bool,
    /// Turns waiting behind it.
    pub queued: usize,
    /// Characters the running turn streamed so far.
    pub streamed_chars: Option<usize>,
}

/// What a turn needs to join its session's queue.
#[derive(Debug, Clone)]
pub struct TurnEntry {
    /// The user message (stored if the turn is cut).
    pub user: Arc<str>,
    /// History cap of the turn's profile.
    pub history_limit: usize,
    /// The turn's upstream cancellation, cancelled when the turn is cut.
    pub cancel: CancellationToken,
}

impl Sessions {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry counting in `lost` the cut turns whose memory was not stored.
    pub fn counting_lost(lost: Counter) -> Self {
        Self {
            inner: Arc::new(Inner {
                slots: Mutex::new(HashMap::new()),
                changes: watch::Sender::new(0),
                cluster: OnceLock::new(),
                lost,
            }),
        }
    }

    /// Share this registry's turns with the other replicas of `cluster`; requests from them
    /// are answered with memory written to `store`.
    pub(crate) fn attach(&self, cluster: Cluster, inbox: Inbox, store: Arc<dyn SessionStore>) {
        cluster.start(inbox, self, store);
        if self.inner.cluster.set(cluster).is_err() {
            tracing::warn!("the session registry already has a cluster");
        }
    }

    /// Before exit: give back the Redis leases of ended turns (at most a second's wait).
    pub async fn settle(&self) {
        if let Some(cluster) = self.cluster() {
            cluster.settle(std::time::Duration::from_secs(1)).await;
        }
    }

    /// The other replicas, when memory is shared through Redis.
    pub(crate) fn cluster(&self) -> Option<&Cluster> {
        self.inner.cluster.get()
    }

    fn downgrade(&self) -> WeakSessions {
        WeakSessions(Arc::downgrade(&self.inner))
    }

    /// Cut every turn of session `key` in this process (running and waiting), for a steering
    /// turn of another replica.
    pub fn cut_all(&self, key: &str, by: CutBy) -> Vec<Cut> {
        let cuts: Vec<Cut> = {
            let slots = self.inner.slots.lock();
            let Some(slot) = slots.get(key) else {
                return Vec::new();
            };
            let turns = slot.turns.lock();
            turns.iter().filter_map(|c| c.cut(key, None, by)).collect()
        };
        if !cuts.is_empty() {
            self.inner.changed();
        }
        cuts
    }

    /// Store what is kept of `cut` (then let the session's next turn run) and report it; a
    /// failure is logged and counted.
    pub async fn store_cut(&self, cut: Cut, store: &dyn SessionStore) -> CutReport {
        let error = cut.store_ref(store).await.err().map(|e| {
            self.inner.lost.inc();
            tracing::warn!(session = %cut.key, error = %e, "could not store the interrupted turn in session memory");
            format!("turn interrupted, but its memory was not stored: {e}")
        });
        cut.report(error)
    }

    /// Join the queue of session `key` and wait until this turn may run. Steering modes first
    /// cut every turn ahead (on every replica, with a cluster) and store what is kept of them.
    /// Returns early, already cut, when a later turn steers over this one while it waits.
    /// Dropping the future leaves the queue. Fails only when the cluster's Redis does.
    pub async fn enter(
        &self,
        store: &dyn SessionStore,
        key: &str,
        mode: QueueMode,
        entry: TurnEntry,
    ) -> Result<Ticket, StoreError> {
        let control = Arc::new(Control {
            user: entry.user,
            history_limit: entry.history_limit,
            cancel: entry.cancel,
            interrupted: CancellationToken::new(),
            state: Mutex::new(ControlState {
                phase: Phase::Waiting,
                streamed: String::new(),
                guard: None,
            }),
        });
        let (ticket, cuts) = self.join(key, mode, control);
        self.inner.changed();
        for cut in cuts {
            tracing::debug!(session = %key, mode = mode.as_str(), streamed_chars = cut.streamed_chars,
                "turn steered over");
            self.store_cut(cut, store).await;
        }
        if let (Some(cluster), Some(by)) = (self.cluster(), mode.cuts_as()) {
            for cut in cluster.cut_elsewhere(key, by).await? {
                tracing::debug!(session = %key, mode = mode.as_str(), streamed_chars = cut.streamed_chars,
                    "turn steered over on another replica");
            }
        }
        self.take_turn(&ticket).await?;
        self.inner.changed();
        Ok(ticket)
    }

    /// Put `control` at the end of session `key`'s queue, cutting the turns ahead when `mode`
    /// steers.
    fn join(&self, key: &str, mode: QueueMode, control: Arc<Control>) -> (Ticket, Vec<Cut>) {
        let mut slots = self.inner.slots.lock();
        let slot = slots.entry(key.to_string()).or_default().clone();
        let mut turns = slot.turns.lock();
        let cuts: Vec<Cut> = match mode.cuts_as() {
            Some(by) => turns.iter().filter_map(|c| c.cut(key, None, by)).collect(),
            None => Vec::new(),
        };
        turns.push(control.clone());
        drop(turns);
        let ticket = Ticket {
            inner: self.inner.clone(),
            key: key.to_string(),
            slot,
            control,
        };
        (ticket, cuts)
    }

    /// Wait for the session's lock in this process, then for its lease across replicas; the
    /// turn runs once it holds both (unless it was cut meanwhile).
    async fn take_turn(&self, ticket: &Ticket) -> Result<(), StoreError> {
        let control = &ticket.control;
        let lock = ticket.slot.lock.clone();
        let local = tokio::select! {
            biased;
            () = control.interrupted.cancelled() => return Ok(()),
            guard = lock.lock_owned() => guard,
        };
        let shared = match self.cluster() {
            Some(cluster) => match cluster.lock(&ticket.key, &control.interrupted).await? {
                Some(lease) => Some(lease),
                None => return Ok(()),
            },
            None => None,
        };
        let mut state = control.state.lock();
        if state.phase == Phase::Waiting {
            state.phase = Phase::Running;
            state.guard = Some(Hold {
                _local: local,
                _shared: shared,
            });
        }
        Ok(())
    }

    /// Cut the running turn of session `key`; `heard` is what the user heard of its answer.
    /// `None` when no turn is running (waiting turns are left alone).
    pub fn interrupt(&self, key: &str, heard: Option<&str>) -> Option<Cut> {
        let slots = self.inner.slots.lock();
        let turns = slots.get(key)?.turns.lock();
        let cut = turns
            .iter()
            .find(|c| c.state.lock().phase == Phase::Running)
            .and_then(|c| c.cut(key, heard, CutBy::Api));
        drop(turns);
        drop(slots);
        if cut.is_some() {
            self.inner.changed();
        }
        cut
    }

    /// What the registry knows of session `key`.
    pub fn view(&self, key: &str) -> SessionView {
        let slots = self.inner.slots.lock();
        let Some(slot) = slots.get(key) else {
            return SessionView::default();
        };
        let mut view = SessionView::default();
        for control in slot.turns.lock().iter() {
            let state = control.state.lock();
            match state.phase {
                Phase::Running | Phase::Finishing => {
                    view.in_flight = true;
                    view.streamed_chars = Some(state.streamed.chars().count());
                }
                Phase::Waiting => view.queued += 1,
                Phase::Cut | Phase::Done => {}
            }
        }
        view
    }

    /// Interrupt session `key`'s running turn wherever it runs (here, or on the replica
    /// holding its lease) and store what is kept. `None` when no turn of it is running.
    pub async fn interrupt_everywhere(
        &self,
        store: &dyn SessionStore,
        key: &str,
        heard: Option<&str>,
    ) -> Result<Option<CutReport>, RequestError> {
        if let Some(cut) = self.interrupt(key, heard) {
            return Ok(Some(self.store_cut(cut, store).await));
        }
        match self.cluster() {
            Some(cluster) => cluster.interrupt_elsewhere(key, heard).await,
            None => Ok(None),
        }
    }

    /// [`Sessions::view`] merged with the view of the replica running the session's turn,
    /// when another one does: its turn and queue, plus the turns waiting here.
    pub async fn view_everywhere(&self, key: &str) -> Result<SessionView, RequestError> {
        let here = self.view(key);
        let Some(cluster) = self.cluster().filter(|_| !here.in_flight) else {
            return Ok(here);
        };
        Ok(match cluster.view_elsewhere(key).await? {
            Some(there) => SessionView {
                queued: there.queued + here.queued,
                ..there
            },
            None => here,
        })
    }

    /// Number of sessions with turns running or waiting.
    pub fn len(&self) -> usize {
        self.inner.slots.lock().len()
    }

    /// True when no session has a turn running or waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A counter bumped on every change of any queue (turn joined, started, cut or left),
    /// for diagnostics and tests that wait for a state without polling.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }
}

/// A turn's place in its session's queue. Dropping it ends the turn for the registry: the
/// session is released and forgotten when no other turn is in it.
pub struct Ticket {
    inner: Arc<Inner>,
    key: String,
    slot: Arc<Slot>,
    control: Arc<Control>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("key", &self.key).finish()
    }
}

impl Ticket {
    /// Note text streamed to the client. False (and nothing noted) once the turn is cut: the
    /// text must then not be sent.
    pub fn record(&self, text: &str) -> bool {
        let mut state = self.control.state.lock();
        if state.phase == Phase::Cut {
            return false;
        }
        state.streamed.push_str(text);
        true
    }

    /// The token cancelled when the turn is cut, for a caller that watches it between many
    /// events (see [`gateway_core::CancelWatch`]).
    pub fn interrupted_token(&self) -> CancellationToken {
        self.control.interrupted.clone()
    }

    /// True once the turn is cut.
    pub fn is_cut(&self) -> bool {
        self.control.state.lock().phase == Phase::Cut
    }

    /// Text streamed to the client so far.
    pub fn streamed(&self) -> String {
        self.control.state.lock().streamed.clone()
    }

    /// Claim the completed turn's outcome: true when it was not cut, and then the turn stores
    /// its memory before [`Ticket::release`] lets the next turn run.
    pub fn claim(&self) -> bool {
        let mut state = self.control.state.lock();
        if state.phase != Phase::Running {
            return false;
        }
        state.phase = Phase::Finishing;
        true
    }

    /// The turn is over (completed and stored, or failed): let the next turn run.
    pub fn release(&self) {
        let guard = {
            let mut state = self.control.state.lock();
            if state.phase != Phase::Cut {
                state.phase = Phase::Done;
            }
            state.guard.take()
        };
        drop(guard);
        self.inner.changed();
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.release();
        let mut slots = self.inner.slots.lock();
        let mut turns = self.slot.turns.lock();
        turns.retain(|c| !Arc::ptr_eq(c, &self.control));
        let empty = turns.is_empty();
        drop(turns);
        if empty
            && slots
                .get(&self.key)
                .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
        {
            slots.remove(&self.key);
        }
        drop(slots);
        self.inner.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::MemoryStore;

    fn entry(user: &str) -> TurnEntry {
        TurnEntry {
            user: user.into(),
            history_limit: 20,
            cancel: CancellationToken::new(),
        }
    }

    async fn wait(sessions: &Sessions, mut cond: impl FnMut(&Sessions) -> bool) {
        let mut rx = sessions.subscribe();
        while !cond(sessions) {
            rx.changed().await.unwrap();
        }
    }

    /// A collect-mode turn of session `s` entered from its own task (with its own store),
    /// returned once it waits in the queue.
    async fn queued_turn(sessions: &Sessions, user: &str) -> tokio::task::JoinHandle<Ticket> {
        let task = {
            let sessions = sessions.clone();
            let user = user.to_string();
            tokio::spawn(async move {
                let store = MemoryStore::default();
                sessions
                    .enter(&store, "s", QueueMode::Collect, entry(&user))
                    .await
                    .unwrap()
            })
        };
        wait(sessions, |s| s.view("s").queued == 1).await;
        task
    }

    #[test]
    fn queue_modes_parse() {
        assert_eq!(QueueMode::parse("collect"), Some(QueueMode::Collect));
        assert_eq!(QueueMode::parse(" steer "), Some(QueueMode::Steer));
        assert_eq!(
            QueueMode::parse("steer-backlog"),
            Some(QueueMode::SteerBacklog)
        );
        assert_eq!(QueueMode::parse("stear"), None);
        for mode in [
            QueueMode::Collect,
            QueueMode::Steer,
            QueueMode::SteerBacklog,
        ] {
            assert_eq!(QueueMode::parse(mode.as_str()), Some(mode));
        }
    }

    #[test]
    fn memory_rule_of_cut_turns() {
        let k = kept("Hello there, how", Some("Hello there"), CutBy::Api);
        assert_eq!(k.assistant.as_deref(), Some("Hello there"));
        assert!(k.user);
        let k = kept("Hello there, how ", None, CutBy::Steer);
        assert_eq!(k.assistant.as_deref(), Some("Hello there, how"));
        // Not a prefix: stored as given.
        let k = kept("Hello", Some("Hallo!"), CutBy::Api);
        assert_eq!(k.assistant.as_deref(), Some("Hallo!"));
        // Nothing heard.
        assert_eq!(
            kept("", None, CutBy::Steer),
            Kept {
                user: false,
                assistant: None
            }
        );
        assert_eq!(
            kept(" ", None, CutBy::SteerBacklog),
            Kept {
                user: true,
                assistant: None
            }
        );
        assert_eq!(
            kept("Some text", Some(""), CutBy::Api),
            Kept {
                user: true,
                assistant: None
            }
        );
    }

    #[tokio::test]
    async fn collect_runs_turns_one_after_the_other_and_forgets_the_session() {
        let sessions = Sessions::new();
        let store = MemoryStore::default();
        let first = sessions
            .enter(&store, "s", QueueMode::Collect, entry("a"))
            .await
            .unwrap();
        assert!(sessions.view("s").in_flight);
        let second = queued_turn(&sessions, "b").await;
        assert!(first.claim());
        first.release();
        drop(first);
        let second = second.await.unwrap();
        assert!(!second.is_cut());
        assert_eq!(
            sessions.view("s"),
            SessionView {
                in_flight: true,
                queued: 0,
                streamed_chars: Some(0)
            }
        );
        drop(second);
        assert!(sessions.is_empty());
    }

    #[tokio::test]
    async fn interrupt_cuts_the_running_turn_once() {
        let sessions = Sessions::new();
        let store = MemoryStore::default();
        let e = entry("question");
        let cancel = e.cancel.clone();
        let turn = sessions
            .enter(&store, "s", QueueMode::Collect, e)
            .await
            .unwrap();
        assert!(turn.record("Hello there"));
        let cut = sessions.interrupt("s", Some("Hello")).unwrap();
        assert!(cancel.is_cancelled());
        assert!(turn.is_cut());
        assert!(!turn.record(" more"), "nothing is streamed after a cut");
        assert!(!turn.claim());
        assert_eq!(cut.streamed_chars, 11);
        assert_eq!(cut.heard_is_prefix, Some(true));
        assert!(sessions.interrupt("s", None).is_none(), "already cut");
        cut.store(&store).await.unwrap();
        let history = store.history("s", 10).await.unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(&*history[1].content, "Hello");
        drop(turn);
        assert!(sessions.interrupt("s", None).is_none());
        assert!(sessions.is_empty());
    }

    #[tokio::test]
    async fn steer_cuts_running_and_waiting_turns() {
        let sessions = Sessions::new();
        let store = MemoryStore::default();
        let running = sessions
            .enter(&store, "s", QueueMode::Collect, entry("one"))
            .await
            .unwrap();
        running.record("Partial");
        let waiting = queued_turn(&sessions, "two").await;
        let steering = sessions
            .enter(&store, "s", QueueMode::SteerBacklog, entry("three"))
            .await
            .unwrap();
        let waiting = waiting.await.unwrap();
        assert!(running.is_cut() && waiting.is_cut() && !steering.is_cut());
        let history: Vec<_> = store
            .history("s", 10)
            .await
            .unwrap()
            .iter()
            .map(|m| m.content.to_string())
            .collect();
        assert_eq!(history, ["one", "Partial", "two"]);
        drop((running, waiting, steering));
        assert!(sessions.is_empty());
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_the_queue() {
        let sessions = Sessions::new();
        let store = MemoryStore::default();
        let running = sessions
            .enter(&store, "s", QueueMode::Collect, entry("one"))
            .await
            .unwrap();
        let gave_up = queued_turn(&sessions, "two").await;
        gave_up.abort();
        assert!(gave_up.await.unwrap_err().is_cancelled());
        assert_eq!(sessions.view("s").queued, 0);
        drop(running);
        assert!(sessions.is_empty());
        for i in 0..100 {
            let t = sessions
                .enter(&store, &format!("k{i}"), QueueMode::Steer, entry("x"))
                .await
                .unwrap();
            drop(t);
        }
        assert!(sessions.is_empty(), "entries are removed when turns end");
    }
}
