//! The UDX header, SACK area and MTU-probe padding (crates/udx `packet`) on arbitrary
//! datagrams: no panic, no allocation, and what parses re-encodes to the same header.
#![no_main]

use fuzz_support::{within_budget, Budget};
use libfuzzer_sys::fuzz_target;
use udx::packet::{peek_stream_id, Packet, HEADER_SIZE, SACK_BLOCK_SIZE};

// Parsing borrows the datagram: nothing may be allocated at all.
const BUDGET: Budget = Budget::new(0, 0);

fuzz_target!(|data: &[u8]| {
    within_budget(data.len(), BUDGET, || {
        let peeked = peek_stream_id(data);
        match Packet::parse(data) {
            None => assert!(peeked.is_none()),
            Some(p) => {
                assert_eq!(peeked, Some(p.header.stream_id));
                assert_eq!(&p.header.to_bytes()[..], &data[..HEADER_SIZE]);
                let blocks = p.sack_blocks().count();
                assert!(blocks * SACK_BLOCK_SIZE <= data.len() - HEADER_SIZE);
                if let Some(payload) = p.payload {
                    assert_eq!(HEADER_SIZE + p.header.data_offset as usize + payload.len(), data.len());
                }
            }
        }
    });
});
