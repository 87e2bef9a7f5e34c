//! The voice system prompt file, combined with each profile's own prompt. Edits are live on
//! the next request, and turns never wait for the disk: they read the cached text (an `Arc`
//! swapped in after a reload), and a changed file is re-read off the async runtime.
//!
//! How a change is noticed: on Linux an inotify watch of the prompts directory queues an event
//! when the file is written, created, replaced or removed, and each turn drains that queue with
//! one non-blocking read that never touches the disk. Where there is no watch (another OS, a
//! directory missing at start-up or removed later) the file's mtime and length are checked off
//! the runtime at most every [`POLL_EVERY`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use tokio::time::Instant;

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

/// Longest time between two checks of the file where no directory watch tells of changes.
pub const POLL_EVERY: Duration = Duration::from_millis(250);

/// `(mtime, len)` of a file; `None` when it is missing.
type Stamp = Option<(Option<SystemTime>, u64)>;

/// The file's text as last read, with the combined prompts built from it.
struct Snapshot {
    /// The file's stamp when read; `None` before the first read.
    stamp: Option<Stamp>,
    text: Arc<str>,
    /// Combined prompt per profile id, for this text.
    combined: RwLock<HashMap<String, Option<Arc<str>>>>,
}

impl Snapshot {
    fn new(stamp: Option<Stamp>, text: Arc<str>) -> Self {
        Self {
            stamp,
            text,
            combined: RwLock::new(HashMap::new()),
        }
    }

    fn status(&self) -> PromptStatus {
        match self.stamp {
            Some(Some(_)) => PromptStatus::Loaded(self.text.len()),
            _ => PromptStatus::Missing,
        }
    }

    /// The file text then `profile_prompt`, built once per profile.
    fn combined(&self, profile_id: &str, profile_prompt: &str) -> Option<Arc<str>> {
        if let Some(cached) = self.combined.read().get(profile_id) {
            return cached.clone();
        }
        let combined = combine(&self.text, profile_prompt);
        self.combined
            .write()
            .insert(profile_id.to_string(), combined.clone());
        combined
    }
}

/// The voice prompt file, cached. A missing file is not fatal (warned once).
pub struct PromptStore {
    path: Option<PathBuf>,
    current: RwLock<Arc<Snapshot>>,
    /// The directory watch, while there is one.
    watch: Option<watch::DirWatch>,
    /// When the file is next checked without a watch.
    poll_due: Mutex<Instant>,
    /// Changes noticed so far (starts at 1: the file was never read).
    seen: AtomicU64,
    /// Changes the current snapshot reflects.
    loaded: AtomicU64,
    /// One reload at a time; turns that need the new text wait here, not on a thread lock.
    reloading: tokio::sync::Mutex<()>,
    warned_missing: Mutex<bool>,
}

impl PromptStore {
    /// Watch `dir/voice-system-prompt.md`; an empty `dir` means no file (profile prompts only).
    pub fn new(dir: &Path) -> Self {
        let mut store = Self::polling(dir);
        store.watch = store.path.as_ref().and_then(|_| watch::DirWatch::new(dir));
        store
    }

    /// Like [`new`](Self::new), but the file is only ever polled.
    fn polling(dir: &Path) -> Self {
        Self {
            path: (!dir.as_os_str().is_empty()).then(|| dir.join(PROMPT_FILE)),
            current: RwLock::new(Arc::new(Snapshot::new(None, "".into()))),
            watch: None,
            poll_due: Mutex::new(Instant::now()),
            seen: AtomicU64::new(1),
            loaded: AtomicU64::new(0),
            reloading: tokio::sync::Mutex::new(()),
            warned_missing: Mutex::new(false),
        }
    }

    /// Path of the file, unless disabled.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Read the file now if it changed, blocking the calling thread: for start-up and
    /// `check`, never for turns. Returns its current status.
    pub fn refresh(&self) -> PromptStatus {
        let Some(path) = &self.path else {
            return PromptStatus::Disabled;
        };
        let target = self.seen.load(Ordering::Acquire);
        let read = read_if_changed(path, self.snapshot().stamp);
        self.install(read, target);
        self.snapshot().status()
    }

    /// The system prompt for a profile: the file text then the profile's prompt. Cached per
    /// profile id until the file changes, so steady-state turns only clone an `Arc`.
    pub async fn system_prompt(&self, profile_id: &str, profile_prompt: &str) -> Option<Arc<str>> {
        if self.path.is_some() {
            self.notice_changes();
            if self.loaded.load(Ordering::Acquire) < self.seen.load(Ordering::Acquire) {
                self.reload().await;
            }
        }
        self.snapshot().combined(profile_id, profile_prompt)
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.current.read().clone()
    }

    /// Counts the changes the watch reports, or a due poll as a possible change.
    fn notice_changes(&self) {
        match self.watch.as_ref().map(watch::DirWatch::drain) {
            Some(watch::Drained::Quiet) => {}
            Some(watch::Drained::Changed) => self.note_change(),
            None | Some(watch::Drained::Lost) => {
                let now = Instant::now();
                let mut due = self.poll_due.lock();
                if now >= *due {
                    *due = now + POLL_EVERY;
                    self.note_change();
                }
            }
        }
    }

    fn note_change(&self) {
        self.seen.fetch_add(1, Ordering::AcqRel);
    }

    /// Re-reads the file off the runtime unless another turn already did.
    async fn reload(&self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let _one_at_a_time = self.reloading.lock().await;
        let target = self.seen.load(Ordering::Acquire);
        if self.loaded.load(Ordering::Acquire) >= target {
            return;
        }
        let stamp = self.snapshot().stamp;
        match tokio::task::spawn_blocking(move || read_if_changed(&path, stamp)).await {
            Ok(read) => self.install(read, target),
            Err(e) => tracing::warn!(error = %e, "could not check the voice prompt file"),
        }
    }

    /// Makes a read the current snapshot (nothing to do when the file did not change) and
    /// notes that changes up to `target` are reflected.
    fn install(&self, read: Option<(Stamp, Option<String>)>, target: u64) {
        if let Some((stamp, text)) = read {
            let text: Arc<str> = text
                .as_deref()
                .map(strip_comments)
                .unwrap_or_default()
                .into();
            self.log_load(stamp.is_some(), text.len());
            *self.current.write() = Arc::new(Snapshot::new(Some(stamp), text));
        }
        self.loaded.fetch_max(target, Ordering::AcqRel);
    }

    fn log_load(&self, present: bool, bytes: usize) {
        let path = self.path.as_deref().unwrap_or(Path::new("")).display();
        let mut warned = self.warned_missing.lock();
        if present {
            *warned = false;
            tracing::info!(path = %path, bytes, "voice prompt loaded");
        } else if !std::mem::replace(&mut *warned, true) {
            tracing::warn!(path = %path,
                "voice prompt file missing or unreadable; using profile prompts alone");
        }
    }
}

/// The file's new stamp and text (`None` text when missing or unreadable), or `None` when its
/// stamp is still `last` (`None`: never read). Blocking.
fn read_if_changed(path: &Path, last: Option<Stamp>) -> Option<(Stamp, Option<String>)> {
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_file());
    let stamp = meta.map(|m| (m.modified().ok(), m.len()));
    if last == Some(stamp) {
        return None;
    }
    let text = stamp
        .and_then(|_| std::fs::read(path).ok())
        .map(|bytes| utf8_or_replaced(path, bytes));
    Some((stamp.filter(|_| text.is_some()), text))
}

/// The file's text; invalid UTF-8 (a stray Windows-1252 quote) is replaced with U+FFFD and
/// reported, rather than dropping the whole prompt.
fn utf8_or_replaced(path: &Path, bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| {
        let at = e.utf8_error().valid_up_to();
        tracing::warn!(path = %path.display(), byte = at,
            "voice prompt file is not valid UTF-8; invalid bytes replaced with U+FFFD");
        String::from_utf8_lossy(e.as_bytes()).into_owned()
    })
}

/// The inotify watch of the prompts directory (Linux).
#[cfg(target_os = "linux")]
mod watch {
    use std::mem::MaybeUninit;
    use std::path::Path;

    use rustix::fd::OwnedFd;
    use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
    use rustix::io::Errno;

    /// What draining the watch found.
    pub enum Drained {
        /// No event in the directory.
        Quiet,
        /// An entry of the directory was written, created, replaced or removed (or events
        /// were lost): the prompt file may have changed.
        Changed,
        /// The directory itself went away: the watch is gone.
        Lost,
    }

    /// A non-blocking inotify instance watching one directory.
    pub struct DirWatch {
        fd: OwnedFd,
        lost: std::sync::atomic::AtomicBool,
    }

    impl DirWatch {
        /// A watch of `dir`, or `None` when it cannot be set up (no such directory, ...).
        pub fn new(dir: &Path) -> Option<Self> {
            let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).ok()?;
            let flags = WatchFlags::CLOSE_WRITE
                | WatchFlags::MODIFY
                | WatchFlags::CREATE
                | WatchFlags::DELETE
                | WatchFlags::MOVED_FROM
                | WatchFlags::MOVED_TO
                | WatchFlags::ATTRIB
                | WatchFlags::DELETE_SELF
                | WatchFlags::MOVE_SELF
                | WatchFlags::ONLYDIR;
            inotify::add_watch(&fd, dir, flags).ok()?;
            Some(Self {
                fd,
                lost: false.into(),
            })
        }

        /// Reads every queued event without blocking.
        pub fn drain(&self) -> Drained {
            use std::sync::atomic::Ordering;
            if self.lost.load(Ordering::Acquire) {
                return Drained::Lost;
            }
            let mut buf = [MaybeUninit::uninit(); 4096];
            let mut reader = inotify::Reader::new(&self.fd, &mut buf);
            let mut found = Drained::Quiet;
            loop {
                let event = match reader.next() {
                    Ok(event) => event,
                    Err(Errno::INTR) => continue,
                    // WOULDBLOCK: the queue is empty. Anything else: assume a change.
                    Err(Errno::WOULDBLOCK) => return found,
                    Err(_) => return Drained::Changed,
                };
                let flags = event.events();
                let gone = ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF | ReadFlags::IGNORED;
                if flags.intersects(gone) {
                    // From now on the file is polled; this time it counts as changed.
                    self.lost.store(true, Ordering::Release);
                    return Drained::Changed;
                }
                // Any entry counts, not only the prompt file: the file may be a symlink
                // through another entry (a Kubernetes ConfigMap swaps `..data` in one rename),
                // and a check that finds the file unchanged costs one `stat`.
                found = Drained::Changed;
            }
        }
    }
}

/// Without inotify every change is found by polling.
#[cfg(not(target_os = "linux"))]
mod watch {
    use std::path::Path;

    /// What draining the watch found.
    pub enum Drained {
        Quiet,
        Changed,
        Lost,
    }

    /// No watch on this platform.
    pub struct DirWatch;

    impl DirWatch {
        pub fn new(_dir: &Path) -> Option<Self> {
            None
        }

        pub fn drain(&self) -> Drained {
            Drained::Lost
        }
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

    #[tokio::test]
    async fn edits_are_live_on_the_next_request() {
        let dir = tempfile::tempdir().unwrap();
        let store = PromptStore::new(dir.path());
        if cfg!(target_os = "linux") {
            assert!(store.watch.is_some(), "the directory is watched");
        }
        let path = store.path().unwrap().to_path_buf();
        assert_eq!(store.refresh(), PromptStatus::Missing);
        assert_eq!(store.system_prompt("p", "P").await.as_deref(), Some("P"));
        std::fs::write(&path, "# c\nOne").unwrap();
        let first = store.system_prompt("p", "P").await.unwrap();
        assert_eq!(&*first, "One\n\nP");
        let again = store.system_prompt("p", "P").await.unwrap();
        assert!(Arc::ptr_eq(&first, &again), "cached");
        std::fs::write(&path, "# c\nTwo two").unwrap();
        assert_eq!(
            store.system_prompt("p", "P").await.as_deref(),
            Some("Two two\n\nP")
        );
        // An editor's save: a new file renamed over the old one.
        let temp = dir.path().join("prompt.swp");
        std::fs::write(&temp, "Three").unwrap();
        std::fs::rename(&temp, &path).unwrap();
        assert_eq!(store.system_prompt("p", "").await.as_deref(), Some("Three"));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(store.system_prompt("p", "").await.as_deref(), None);
        assert_eq!(store.refresh(), PromptStatus::Missing);
        let disabled = PromptStore::new(Path::new(""));
        assert_eq!(disabled.refresh(), PromptStatus::Disabled);
        assert_eq!(disabled.system_prompt("p", "P").await.as_deref(), Some("P"));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_watch_the_file_is_checked_every_poll_period() {
        let dir = tempfile::tempdir().unwrap();
        let store = PromptStore::polling(dir.path());
        let path = store.path().unwrap().to_path_buf();
        std::fs::write(&path, "One").unwrap();
        assert_eq!(store.system_prompt("p", "").await.as_deref(), Some("One"));
        std::fs::write(&path, "Two two").unwrap();
        assert_eq!(
            store.system_prompt("p", "").await.as_deref(),
            Some("One"),
            "not checked again within the period"
        );
        tokio::time::advance(POLL_EVERY).await;
        assert_eq!(
            store.system_prompt("p", "").await.as_deref(),
            Some("Two two")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_removed_directory_falls_back_to_polling() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("prompts");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(PROMPT_FILE), "One").unwrap();
        let store = PromptStore::new(&dir);
        assert_eq!(store.system_prompt("p", "").await.as_deref(), Some("One"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(store.system_prompt("p", "").await.as_deref(), None);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(PROMPT_FILE), "Back").unwrap();
        tokio::time::advance(POLL_EVERY).await;
        assert_eq!(store.system_prompt("p", "").await.as_deref(), Some("Back"));
    }
}
