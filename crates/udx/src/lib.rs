//! UDX: reliable, ordered byte streams (and unreliable messages) over UDP, wire-compatible
//! with the C libudx that JS HyperDHT peers run.
//!
//! Layers, bottom up:
//! - [`packet`]: the 20-byte header, SACK blocks and MTU-probe padding, parsed as C does;
//! - [`conn`]: one stream as a sans-I/O state machine (RACK, TLP, RTO, CUBIC, pacing) that
//!   takes `now` as an argument, so all of it is tested on a virtual clock;
//! - [`Socket`] and [`Stream`]: the thin tokio driver — one UDP socket demultiplexes
//!   packets by stream id and hands every other datagram to its other user (the DHT).
#![forbid(unsafe_code)]

mod backlog;
pub mod conn;
mod cubic;
mod error;
pub mod packet;
mod pacer;
mod rtt;
pub mod seq;
mod socket;
mod stream;

pub use conn::{CloseReason, Config};
pub use error::UdxError;
pub use socket::{Datagram, DatagramFilter, DatagramHandler, Socket, WeakSocket};
pub use stream::{FirewallHook, Stream, StreamHandle};
