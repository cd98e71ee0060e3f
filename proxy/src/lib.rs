//! baton's data path: a protocol-aware MySQL relay.
//!
//! # Layout (outside in)
//! - [`listener`]: accept, connection cap, handshake timeout, shutdown.
//! - [`handshake`] + [`auth`]: the connection phase and mysql_native_password.
//! - [`session`]: the command loop (each command parsed once: [`command`],
//!   its SQL read by [`sql`]) and its [`state`] (transaction, schema,
//!   variables, prepared statements owned by baton); [`tracking`] keeps each
//!   client's session-tracking choice; [`threads`] maps connection ids for KILL.
//! - [`relay`]: which backend packets form a response; relayed as bytes.
//! - [`backend`]: logging in to the primary as the client's user.
//! - [`packet`] (framing) and [`proto`] (the few packets baton reads or writes).
//! - [`context`]: what sessions share, including the watched topology.
//! - [`restore`]: re-creating a session's state on a new backend (after a reparent).
//! - [`error`]: the data path's errors and every error baton sends a client.

pub mod auth;
pub mod authenticate;
pub mod backend;
pub mod command;
pub mod context;
pub mod error;
pub mod handshake;
pub mod listener;
pub mod packet;
pub mod proto;
pub mod relay;
pub mod replay;
pub mod restore;
pub mod session;
pub mod sql;
pub mod state;
pub mod stream;
pub mod threads;
pub mod tls;
pub mod tracking;
pub mod workers;

pub use context::ProxyContext;
pub use listener::{serve, Shutdown};
pub use workers::Workers;
