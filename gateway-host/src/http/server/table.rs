//! The table of open client connections and the cap on them (`server.max_connections`).
//!
//! At the cap, a new connection takes the place of the one that has held no request for the
//! longest (a silent or slow socket, or an idle keep-alive): it is closed at once, and live
//! streams are never touched. When every connection is answering a request, up to
//! [`HEALTH_RESERVE`] more are admitted that answer only `/healthz` (everything else gets 503
//! `overloaded`), so probes keep working; past those, new connections are closed unanswered.
//! The cap is lowered to what the open-file limit allows ([`Cap::for_limit`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::conn::{Close, Conn};

/// Connections admitted beyond the cap to answer `/healthz`.
pub const HEALTH_RESERVE: usize = 8;

/// Longest wait in [`Connections::room`] for shed connections to close.
pub const ROOM_WAIT: Duration = Duration::from_millis(100);

/// File descriptors kept for the process itself (runtime, listener, logs, files, Redis).
pub const OWN_FDS: u64 = 32;

/// The effective connection cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// Connections served normally.
    pub max: usize,
    /// The open-file limit it was derived from, when known.
    pub open_files: Option<u64>,
    /// True when the open-file limit lowered the configured cap.
    pub lowered: bool,
}

impl Cap {
    /// The configured cap, lowered so that every connection, the upstream connection its turn
    /// may open and the `/healthz` reserve fit in `open_files` descriptors.
    pub fn for_limit(configured: usize, open_files: Option<u64>) -> Self {
        let by_files = open_files.map(|n| {
            let pairs = n.saturating_sub(OWN_FDS) / 2;
            (pairs.saturating_sub(HEALTH_RESERVE as u64)).max(1)
        });
        let max = match by_files {
            Some(limit) => configured.min(usize::try_from(limit).unwrap_or(usize::MAX)),
            None => configured,
        };
        Self {
            max,
            open_files,
            lowered: max < configured,
        }
    }
}

/// The open connections.
#[derive(Debug)]
pub(crate) struct Connections {
    cap: Cap,
    next_id: AtomicU64,
    open: Mutex<Table>,
    /// Number of connections whose task still runs (shed ones included until they close).
    alive: watch::Sender<usize>,
}

#[derive(Debug, Default)]
struct Table {
    conns: HashMap<u64, Arc<Conn>>,
    overflow: usize,
}

impl Connections {
    /// An empty table with this cap.
    pub fn new(cap: Cap) -> Self {
        Self {
            cap,
            next_id: AtomicU64::new(0),
            open: Mutex::default(),
            alive: watch::Sender::new(0),
        }
    }

    /// The cap in force.
    pub fn cap(&self) -> Cap {
        self.cap
    }

    /// A place for a just-accepted connection (see the module docs), or `None` to close it.
    /// The entry leaves the table when dropped.
    pub fn admit(self: &Arc<Self>) -> Option<Entry> {
        let mut table = self.open.lock();
        let regular = table.conns.len() - table.overflow;
        let overflow = if regular < self.cap.max {
            false
        } else if let Some(victim) = oldest_unused(&table) {
            if let Some(conn) = table.conns.remove(&victim) {
                tracing::debug!(
                    id = victim,
                    "connection cap reached: closing the longest idle"
                );
                conn.close(Close::Shed);
            }
            false
        } else if table.overflow < HEALTH_RESERVE {
            true
        } else {
            tracing::debug!("connection cap and reserve reached: closing a new connection");
            return None;
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(id, overflow));
        table.conns.insert(id, conn.clone());
        table.overflow += usize::from(overflow);
        drop(table);
        self.alive.send_modify(|n| *n += 1);
        Some(Entry {
            conn,
            table: self.clone(),
        })
    }

    /// Close every connection: idle ones at once, busy ones after their answer.
    pub fn close_all(&self) {
        for conn in self.open.lock().conns.values() {
            conn.close(Close::Shutdown);
        }
    }

    /// Shed the longest-idle connection (when accepting fails for want of descriptors).
    pub fn shed_one(&self) -> bool {
        let mut table = self.open.lock();
        let Some(victim) = oldest_unused(&table) else {
            return false;
        };
        if let Some(conn) = table.conns.remove(&victim) {
            conn.close(Close::Shed);
        }
        true
    }

    /// Resolves when one more socket fits in the descriptors the cap allows: at once, unless
    /// shed connections are still closing their sockets (then once enough have, or after
    /// [`ROOM_WAIT`] at most: a shed connection that took a request first closes only after
    /// answering it).
    pub async fn room(&self) {
        let limit = self.cap.max + HEALTH_RESERVE;
        let mut alive = self.alive.subscribe();
        let closed = alive.wait_for(|n| *n < limit || *n <= self.open.lock().conns.len());
        let _ = tokio::time::timeout(ROOM_WAIT, closed).await;
    }

    /// Resolves once every connection's task has ended.
    pub async fn all_closed(&self) {
        let mut alive = self.alive.subscribe();
        let _ = alive.wait_for(|n| *n == 0).await;
    }

    fn leave(&self, conn: &Conn) {
        let mut table = self.open.lock();
        if table.conns.remove(&conn.id).is_some() && conn.overflow {
            table.overflow -= 1;
        }
        drop(table);
        self.alive.send_modify(|n| *n -= 1);
    }
}

/// The regular connection that has held no request for the longest.
fn oldest_unused(table: &Table) -> Option<u64> {
    table
        .conns
        .values()
        .filter(|c| !c.overflow)
        .filter_map(|c| c.unused_since().map(|since| (since, c.id)))
        .min()
        .map(|(_, id)| id)
}

/// A connection's place in the table, held by its task.
pub(crate) struct Entry {
    /// The connection.
    pub conn: Arc<Conn>,
    table: Arc<Connections>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.table.leave(&self.conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_lowers_the_cap() {
        assert_eq!(Cap::for_limit(1024, None).max, 1024);
        assert_eq!(Cap::for_limit(1024, Some(1 << 20)).max, 1024);
        let low = Cap::for_limit(1024, Some(128));
        assert_eq!(low.max, 40);
        assert!(low.lowered);
        assert_eq!(Cap::for_limit(1024, Some(10)).max, 1);
    }

    #[test]
    fn at_the_cap_the_longest_idle_goes_then_the_reserve_fills() {
        let table = Arc::new(Connections::new(Cap::for_limit(2, None)));
        let first = table.admit().expect("room");
        let second = table.admit().expect("room");
        let _busy = second.conn.request_started();
        let third = table.admit().expect("the idle first one is shed");
        assert!(!third.conn.overflow);
        assert!(!table.open.lock().conns.contains_key(&first.conn.id));
        let _busy = third.conn.request_started();
        let reserve: Vec<_> = (0..HEALTH_RESERVE)
            .map(|_| table.admit().expect("reserve"))
            .collect();
        assert!(reserve.iter().all(|e| e.conn.overflow));
        assert!(table.admit().is_none(), "past the reserve");
        drop(reserve);
        assert!(table.admit().is_some_and(|e| e.conn.overflow));
    }
}
