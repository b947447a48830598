//! What the core reports to its owner (the napi layer forwards these to the JS EventEmitter).

use std::sync::Arc;

use peeroxide_dht::hyperdht_messages::NoisePayload;

use crate::alias::AliasError;
use crate::keys::Key;

#[derive(Debug, Clone)]
pub enum Event {
    /// A scraper's connection is up (JS `connection-open`).
    ConnectionOpen { uid: Arc<str>, remote_address: String, remote_public_key: Key },
    /// A connection ended (JS `connection-close`); always the last event of a connection.
    ConnectionClose { uid: Arc<str>, remote_public_key: Key },
    /// A connection failed (JS `connection-error`); `ConnectionClose` follows.
    ConnectionError { uid: Arc<str>, remote_public_key: Key, error: ConnectionErrorKind },
    /// A handshake from a key that is not allowed was dropped (JS `firewall-block`).
    FirewallBlock { remote_public_key: Key, payload: Box<NoisePayload>, address: String },
    /// An alias registration is about to be sent (the reference's `alias-attempt`).
    AliasAttempt { scraper_public_key: Key, alias: String, target_public_key: Key, hostname: String, service: String },
    /// A scraper accepted the alias (JS `register-alias-success`).
    RegisterAliasSuccess { scraper_public_key: Key, updated: bool },
    /// A registration failed (JS `register-alias-error`); the schedule goes on.
    RegisterAliasError { scraper_public_key: Key, error: AliasError },
}

/// Why a connection failed; `code` is what the JS error's `code` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionErrorKind {
    pub code: &'static str,
    pub message: String,
}

impl ConnectionErrorKind {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// The peer went away (its stream reset, or its channel closed), as a JS socket
    /// reports it.
    pub fn reset() -> Self {
        Self::new("ECONNRESET", "connection reset by peer")
    }
}

/// Receives every event; the napi layer fills it with a threadsafe function.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// A sink that drops everything, for callers that do not listen.
pub fn ignore_events() -> EventSink {
    Arc::new(|_| {})
}
