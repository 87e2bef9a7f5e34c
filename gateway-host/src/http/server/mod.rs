//! Serving client connections (HTTP/1.1, and HTTP/2 with prior knowledge) on a listener,
//! held against hostile networks: every connection has a phase with a deadline (`conn.rs`:
//! header-read and idle keep-alive timeouts), every request body a deadline (`service.rs`),
//! and the number of open connections a cap that sheds idle ones first (`table.rs`). Malformed
//! requests get the host's JSON errors. Settings: `[server]` (`config/server.rs`).
//!
//! Shutdown: once draining begins, the listener closes; open connections stay up, so a
//! request on a kept-alive connection gets an answer (a turn: 503 `shutting_down`) rather than
//! a closed socket, every answer says `Connection: close`; when the turns in flight are done
//! (or ended after `shutdown_grace_secs`), every connection is closed after its answer.

pub(crate) mod conn;
pub(crate) mod service;
pub(crate) mod table;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::state::AppState;
use conn::{Close, Timeouts, Watched};
use service::ConnService;
use table::{Cap, Connections, Entry};

pub use table::HEALTH_RESERVE;

/// Largest request head (request line and headers) read: 431 beyond.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How often the drain checks whether in-flight turns are done.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// Time for the last answers to be written once the turns are done or ended.
const FLUSH: Duration = Duration::from_secs(2);
/// Pause before accepting again after the process ran out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serve the host's API on `listener` until the host's shutdown (see
/// [`AppState::shutdown`]) has drained: turns in flight finished or ended, answers written,
/// the sessions' shared memory settled.
///
/// Connections are accepted here and served by `server.threads` threads (one per core by
/// default), each the one worker of a tokio runtime of its own; a new connection goes to the
/// thread serving the fewest. A connection, its turns and their upstream connections then stay
/// on one thread, so a token read from the upstream is written to the client without waking
/// another thread. Dropping the returned future stops the threads and closes their connections.
pub async fn serve(listener: TcpListener, state: AppState) -> io::Result<()> {
    let cap = connection_cap(&state, raise_open_file_limit());
    if cap.lowered {
        tracing::warn!(max_connections = cap.max, open_files = ?cap.open_files,
            "server.max_connections lowered to what the open-file limit allows");
    }
    let table = Arc::new(Connections::new(cap));
    let server = Arc::new(Server::new(&state, cap));
    let shards = (0..state.config().server.serving_threads())
        .map(|index| Shard::start(index, server.clone()))
        .collect::<io::Result<Vec<_>>>()?;
    let shutdown = state.shutdown().clone();
    loop {
        let accepted = tokio::select! {
            () = shutdown.draining() => break,
            accepted = async {
                table.room().await;
                listener.accept().await
            } => accepted,
        };
        match accepted {
            Ok((tcp, _)) => match table.admit() {
                Some(entry) => least_busy(&shards).hand(tcp, entry),
                None => drop(tcp),
            },
            Err(e) => accept_failed(&table, e).await,
        }
    }
    drop(listener);
    drain(&state).await;
    table.close_all();
    if tokio::time::timeout(FLUSH, table.all_closed())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; exiting");
    }
    // Memory writes of the last turns run on the serving threads: let them finish first.
    state.sessions().settle().await;
    drop(shards);
    Ok(())
}

/// The serving thread with the fewest open connections.
fn least_busy(shards: &[Shard]) -> &Shard {
    shards
        .iter()
        .min_by_key(|shard| shard.open.load(Ordering::Relaxed))
        .expect("at least one serving thread")
}

/// A new connection and its place in the connection table, on its way to a serving thread.
type Handed = (std::net::TcpStream, Entry);

/// One serving thread: where its connections are handed and how many it serves.
struct Shard {
    connections: mpsc::UnboundedSender<Handed>,
    open: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Shard {
    fn drop(&mut self) {
        // Not `drop(runtime)`: that blocks, and may run inside the host's own runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Shard {
    /// Start the runtime whose one worker is the thread `serve-{index}` (a runtime with one
    /// worker rather than a single-threaded one for its LIFO slot: under load a woken task runs
    /// next, while its data is still in cache). It serves the connections handed to it until
    /// the shard is dropped, which ends the runtime and closes them all.
    fn start(index: usize, server: Arc<Server>) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("serve-{index}"))
            .enable_all()
            .build()?;
        let (connections, handed) = mpsc::unbounded_channel();
        let open = Arc::new(AtomicUsize::new(0));
        runtime.spawn(Self::serve(handed, server, open.clone()));
        Ok(Self {
            connections,
            open,
            runtime: Some(runtime),
        })
    }

    /// Hand `tcp` to this thread (the thread registers it with its own runtime).
    fn hand(&self, tcp: TcpStream, entry: Entry) {
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => return tracing::debug!(error = %e, "cannot hand over a connection"),
        };
        self.open.fetch_add(1, Ordering::Relaxed);
        if self.connections.send((tcp, entry)).is_err() {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Serve every connection handed over until the sender is gone.
    async fn serve(
        mut handed: mpsc::UnboundedReceiver<Handed>,
        server: Arc<Server>,
        open: Arc<AtomicUsize>,
    ) {
        while let Some((tcp, entry)) = handed.recv().await {
            let open = OpenGuard(open.clone());
            match TcpStream::from_std(tcp) {
                Ok(tcp) => {
                    tokio::spawn(server.clone().connection(tcp, entry, open));
                }
                Err(e) => tracing::debug!(error = %e, "cannot serve a handed connection"),
            }
        }
    }
}

/// Counts a connection as open on its serving thread while it lives.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection cap for this host under `open_files` descriptors.
pub fn connection_cap(state: &AppState, open_files: Option<u64>) -> Cap {
    Cap::for_limit(state.config().server.max_connections, open_files)
}

/// Raise the soft open-file limit to the hard one and return it (`None` where unknown).
pub fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit::increase_nofile_limit(1 << 20).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The open-file limit `serve` will have (the hard limit it raises to), without raising it.
pub fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit::getrlimit(rlimit::Resource::NOFILE)
            .ok()
            .map(|(_, hard)| hard.min(1 << 20))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Accepting failed: out of descriptors (make room by shedding an idle connection and pause)
/// or a connection that died in the queue (go on).
async fn accept_failed(table: &Connections, e: io::Error) {
    let out_of_files = matches!(e.raw_os_error(), Some(23 | 24)); // ENFILE, EMFILE
    if !out_of_files {
        tracing::debug!(error = %e, "accept failed");
        return;
    }
    let shed = table.shed_one();
    tracing::warn!(error = %e, shed_idle = shed, cap = table.cap().max,
        "accept failed: out of file descriptors");
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

/// What every connection is served with.
struct Server {
    state: AppState,
    router: axum::Router,
    builder: auto::Builder<TokioExecutor>,
    timeouts: Timeouts,
    cap: Cap,
}

impl Server {
    fn new(state: &AppState, cap: Cap) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // The head and idle deadlines are the connection's own (`conn.rs`), not hyper's.
        builder
            .http1()
            .header_read_timeout(None)
            .max_buf_size(MAX_HEAD_BYTES);
        let settings = state.config().server;
        Self {
            state: state.clone(),
            router: crate::http::app(state.clone()),
            builder,
            timeouts: Timeouts {
                head: settings.header_read_timeout(),
                idle: settings.idle_timeout(),
            },
            cap,
        }
    }

    /// Serve one connection until its client closes it or [`conn::Conn::closed`] says so.
    async fn connection(self: Arc<Self>, tcp: TcpStream, entry: Entry, _open: OpenGuard) {
        // Each SSE chunk is a small write: without TCP_NODELAY, Nagle's algorithm holds the
        // second one until the client's delayed ACK (~40 ms on Linux), right at the first token.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let conn = entry.conn.clone();
        let service = ConnService {
            router: self.router.clone(),
            conn: conn.clone(),
            shutdown: self.state.shutdown().clone(),
            body_timeout: self.state.config().server.body_read_timeout(),
            max_connections: self.cap.max,
        };
        let io = TokioIo::new(Watched::new(tcp, conn.clone()));
        let served = self.builder.serve_connection(io, service);
        tokio::pin!(served);
        let why = tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            why = conn.closed(&self.timeouts) => why,
        };
        if why != Close::Shutdown {
            // Nothing in flight: dropping the connection closes the socket.
            tracing::debug!(id = conn.id, reason = ?why, "closing a connection");
            return;
        }
        served.as_mut().graceful_shutdown();
        let _ = served.await;
    }
}

/// Once draining begins: wait up to `shutdown_grace_secs` for in-flight turns, then end the
/// rest with an `error` event.
async fn drain(state: &AppState) {
    let grace = Duration::from_secs(state.config().shutdown_grace_secs);
    let shutdown = state.shutdown();
    tracing::info!(
        in_flight = state.limits().open(),
        grace_secs = grace.as_secs(),
        "draining: new turns refused"
    );
    let finished = async {
        while state.limits().open() > 0 {
            tokio::time::sleep(DRAIN_POLL).await;
        }
    };
    if tokio::time::timeout(grace, finished).await.is_err() {
        tracing::warn!(
            in_flight = state.limits().open(),
            "grace period over: ending the remaining turns"
        );
        shutdown.abort();
    }
}
