//! protomux frames (single messages, batches, channel open/reject/close) on arbitrary
//! bytes, then through the channel state machine: no panic, slices stay inside the frame,
//! and the batch list grows with the input, never with a length it claims.
#![no_main]

use dht_prom_client_rs::mux::{decode_frame, Channel, ChannelStep, Frame, LOCAL_CHANNEL};
use fuzz_support::{within_budget, Budget};
use libfuzzer_sys::fuzz_target;

const PROTOCOL: &str = "prometheus-metrics";

// A batch item takes at least 2 bytes of the frame (its length and a message type) and
// becomes a 32-byte ChannelMessage: 16 bytes per input byte, twice that while the Vec
// doubles. This is the decoder's real amplification, bounded by the frame (see README).
const BUDGET: Budget = Budget::new(1024, 32);

fuzz_target!(|data: &[u8]| {
    within_budget(data.len(), BUDGET, || {
        let Ok(frame) = decode_frame(data).map_err(|e| e.to_string()) else {
            return;
        };
        check_frame(&frame, data);

        // A channel the peer has paired with: only its messages come through.
        let mut paired = Channel::new(PROTOCOL);
        let open = Frame::Open {
            channel: 7,
            protocol: PROTOCOL,
            id: None,
            handshake: &[],
        };
        assert_eq!(paired.on_frame(open), ChannelStep::Nothing);
        match paired.on_frame(frame) {
            ChannelStep::Messages(messages) => assert!(messages.iter().all(|m| m.channel == 7)),
            ChannelStep::Reply(reply) => {
                assert!(matches!(decode_frame(&reply), Ok(Frame::Reject { .. })))
            }
            ChannelStep::Ended | ChannelStep::Nothing => {}
        }

        // Unpaired: no message belongs to it, and its own reject ends it.
        let Ok(frame) = decode_frame(data) else {
            unreachable!("decoded once already")
        };
        let mut unpaired = Channel::new(PROTOCOL);
        match unpaired.on_frame(frame) {
            ChannelStep::Messages(messages) => assert!(messages.is_empty()),
            ChannelStep::Reply(reply) => {
                assert!(matches!(decode_frame(&reply), Ok(Frame::Reject { .. })))
            }
            ChannelStep::Ended => assert!(matches!(
                decode_frame(data),
                Ok(Frame::Reject {
                    channel: LOCAL_CHANNEL
                })
            )),
            ChannelStep::Nothing => {}
        }
    });
});

fn inside(slice: &[u8], data: &[u8]) -> bool {
    let range = data.as_ptr_range();
    slice.is_empty() || (range.start <= slice.as_ptr() && slice.as_ptr_range().end <= range.end)
}

fn check_frame(frame: &Frame<'_>, data: &[u8]) {
    match frame {
        Frame::Open {
            protocol,
            id,
            handshake,
            ..
        } => {
            assert!(inside(protocol.as_bytes(), data) && inside(handshake, data));
            assert!(id.is_none_or(|id| !id.is_empty() && inside(id, data)));
        }
        Frame::Messages(messages) => {
            // One message per frame, or per at least 2 bytes of a batch.
            assert!(messages.len() <= 1.max(data.len() / 2));
            assert!(messages.iter().all(|m| inside(m.payload, data)));
        }
        Frame::Reject { .. } | Frame::Close { .. } => {}
    }
}
