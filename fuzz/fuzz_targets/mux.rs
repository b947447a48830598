//! protomux frames (single messages, batches, channel open/reject/close) on arbitrary
//! bytes, then through the channel state machine: no panic, slices stay inside the frame,
//! and a batch is walked item by item without allocating.
#![no_main]

use dht_prom_client_rs::mux::{decode_frame, Channel, ChannelStep, Frame, LOCAL_CHANNEL};
use fuzz_support::{within_budget, Budget};
use libfuzzer_sys::fuzz_target;

const PROTOCOL: &str = "prometheus-metrics";

// Decoding allocates nothing (batch items are decoded as they are taken, slices of the
// frame); the only allocation is a reject frame of a few bytes. 1 byte per input byte is
// slack, not need: the eager batch decoder it replaced needed 32.
const BUDGET: Budget = Budget::new(1024, 1);

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
            ChannelStep::Messages(mut messages) => {
                assert!(messages.all(|m| m.map_or(true, |m| m.channel == 7)))
            }
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
            ChannelStep::Messages(mut messages) => assert!(messages.all(|m| m.is_err())),
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
            // One message per frame, or per at least 2 bytes of a batch; at most one error,
            // and nothing after it.
            let mut count = 0;
            let mut failed = false;
            for message in messages.clone() {
                assert!(!failed, "an item after the error");
                count += 1;
                match message {
                    Ok(m) => assert!(inside(m.payload, data)),
                    Err(_) => failed = true,
                }
            }
            assert!(count <= 1.max(data.len() / 2));
        }
        Frame::Reject { .. } | Frame::Close { .. } => {}
    }
}
