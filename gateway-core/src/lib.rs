//! Contracts of the voice gateway host: the event protocol, the [`Gateway`] trait, the
//! [`GatewayKind`] registry collected with `inventory`, and [`SessionStore`] memory.
//!
//! ```
//! use gateway_core::Event;
//! let json = serde_json::to_string(&Event::delta("Hello")).unwrap();
//! assert_eq!(json, r#"{"type":"delta","text":"Hello"}"#);
//! ```
//!
//! # For gateway authors
//!
//! 1. Implement [`Gateway`]: `stream` returns an [`EventStream`] that yields `handshake`,
//!    `delta`s, one `tool_call` per [`ToolCall`] the answer holds, and ends with `text_done`
//!    (`finish_reason` `tool_calls` when it holds calls) or one `Err`; stop when `turn.cancel`
//!    fires.
//! 2. Register a kind: `inventory::submit! { GatewayKind { id: "my-kind", description: "...",
//!    build } }` where `build` reads its settings with [`InstanceConfig::settings_as`] and its
//!    upstream limits from [`InstanceConfig::timeouts`]. Ids are `^[a-z0-9-]+$`.
//! 3. Link it: a binary that calls the host's `run` must reference the crate
//!    (`use my_gateway as _;`), or the linker drops it and its registration with it.

pub mod cancel;
pub mod error;
pub mod event;
pub mod gateway;
pub mod message;
#[cfg(feature = "redis")]
pub mod redis_store;
pub mod registry;
pub mod secret;
pub mod session;
pub mod stream;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod tool;
pub mod turn;

pub use cancel::CancelWatch;
pub use error::{GatewayError, RegistryError, StoreError};
pub use event::{Event, Timing, Usage};
pub use gateway::{EventStream, Gateway, Health};
pub use message::{ChatMessage, Role};
#[cfg(feature = "redis")]
pub use redis_store::{RedisStore, RedisStoreConfig};
pub use registry::{Env, GatewayKind, InstanceConfig, Registry, Timeouts};
pub use secret::Secrets;
pub use session::{MemoryStore, MemoryStoreConfig, SessionStore, DEFAULT_HISTORY};
pub use tool::{ToolCall, TOOL_CALLS_FINISH};
pub use turn::Turn;

pub use async_trait::async_trait;
pub use inventory;
pub use tokio_util::sync::CancellationToken;
