//! What holepunching reads off the network before any authentication: the handshake and
//! holepunch messages (peeroxide-dht's decoders, which `src/holepunch/wire.rs` calls on
//! the values of requests for our key) and our address checks on the hosts they carry.
//! No panic; allocations bounded by the input.
//!
//! Not here: peeroxide-dht's DHT message envelope (`messages::decode_message`), which
//! reserves room by a count the datagram claims (this target found 742 KB reserved for a
//! 74-byte datagram). peeroxide-dht decodes every datagram its node receives that way
//! before any code of ours sees it, so it cannot be guarded here; README, Security.
#![no_main]

use dht_prom_client_rs::holepunch::{addr_of, is_bogon, is_private, is_reserved};
use fuzz_support::{within_budget, Budget};
use libfuzzer_sys::fuzz_target;
use peeroxide_dht::hyperdht_messages::{decode_handshake_from_bytes, decode_holepunch_msg_from_bytes};

const BUDGET: Budget = Budget::new(64 * 1024, 64);

fuzz_target!(|data: &[u8]| {
    within_budget(data.len(), BUDGET, || {
        if let Ok(h) = decode_handshake_from_bytes(data) {
            for peer in h.peer_address.iter().chain(h.relay_address.iter()) {
                let _ = (is_bogon(&peer.host), is_private(&peer.host), is_reserved(&peer.host), addr_of(peer));
            }
        }
        if let Ok(m) = decode_holepunch_msg_from_bytes(data) {
            if let Some(peer) = m.peer_address.as_ref() {
                let _ = (is_bogon(&peer.host), addr_of(peer));
            }
        }
    });
});
