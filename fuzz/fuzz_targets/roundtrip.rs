//! decode -> encode -> decode is stable wherever we have an encoder: the first byte picks
//! the message kind, the rest is decoded; what decodes must encode to bytes that decode to
//! the same value (after the normalisations JS also makes) and encode to the same bytes.
#![no_main]

use dht_prom_client_rs::keys::Key;
use dht_prom_client_rs::mux::{
    decode_frame, encode_close, encode_open, encode_reject, write_message_header, Frame,
};
use dht_prom_client_rs::rpc::{Request, Response};
use dht_prom_client_rs::wire::{AliasRequest, AliasResponse, MetricsReply, MetricsRequest};
use fuzz_support::{within_budget, Budget};
use libfuzzer_sys::fuzz_target;

// The decoded value, its encoding and the second decode are each about the input's size.
const BUDGET: Budget = Budget::new(4096, 8);
// Frames decode without allocating (batch items are taken one at a time); the encoding
// is about the input's size, as for the other kinds.
const FRAME_BUDGET: Budget = Budget::new(4096, 8);
const FRAME_KIND: u8 = 6;

/// Kinds, by the first input byte modulo their count (scripts/gen-fuzz-corpus.js uses
/// the same numbers).
const KINDS: u8 = 8;

/// Decodes `$input`; if that works, encodes, decodes again, and checks both steps.
macro_rules! round_trip {
    ($input:expr, $decode:expr, $encode:expr) => {
        round_trip!($input, $decode, $encode, |_| ())
    };
    ($input:expr, $decode:expr, $encode:expr, $normalise:expr) => {{
        if let Ok(first) = $decode($input) {
            let bytes: Vec<u8> = $encode(&first);
            // An empty encoding: no encoder for this shape (a batch frame).
            if !bytes.is_empty() {
                let second = $decode(&bytes[..]).unwrap_or_else(|e| {
                    panic!("{first:?} encodes to {bytes:02x?}, which fails: {e:?}")
                });
                // The normalisation edits the first value in place (when it has one to make).
                let mut expected = first.clone();
                #[allow(clippy::redundant_closure_call)]
                $normalise(&mut expected);
                assert_eq!(second, expected, "from {bytes:02x?}");
                assert_eq!($encode(&second), bytes, "encoding is not stable");
            }
        }
    }};
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let budget = if kind % KINDS == FRAME_KIND {
        FRAME_BUDGET
    } else {
        BUDGET
    };
    within_budget(data.len(), budget, || match kind % KINDS {
        0 => round_trip!(
            body,
            MetricsRequest::decode,
            |m: &MetricsRequest| with_len(m.encode(), m.encoded_len()),
            // JS encodes `minor || 1`: a minor of 0 goes out as 1.
            |m: &mut MetricsRequest| m.minor = or_one(m.minor)
        ),
        1 => round_trip!(body, MetricsReply::decode, |m: &MetricsReply| with_len(
            m.encode(),
            m.encoded_len()
        )),
        2 => round_trip!(
            body,
            AliasRequest::decode,
            |m: &AliasRequest| with_len(m.encode(), m.encoded_len()),
            |m: &mut AliasRequest| m.minor = or_one(m.minor)
        ),
        3 => round_trip!(
            body,
            AliasResponse::decode,
            |m: &AliasResponse| with_len(m.encode(), m.encoded_len()),
            |m: &mut AliasResponse| m.minor = or_one(m.minor)
        ),
        4 => round_trip!(body, Request::decode, |m: &Request<'_>| with_len(
            m.encode(),
            m.encoded_len()
        )),
        5 => round_trip!(body, Response::decode, |m: &Response<'_>| with_len(
            m.encode(),
            m.encoded_len()
        )),
        FRAME_KIND => round_trip!(body, decode_frame_text, encode_frame),
        _ => keys(body),
    });
});

fn or_one(n: u64) -> u64 {
    if n == 0 {
        1
    } else {
        n
    }
}

fn with_len(bytes: Vec<u8>, encoded_len: usize) -> Vec<u8> {
    assert_eq!(
        bytes.len(),
        encoded_len,
        "encoded_len() must match what encode() writes"
    );
    bytes
}

fn decode_frame_text(bytes: &[u8]) -> Result<Frame<'_>, String> {
    decode_frame(bytes).map_err(|e| e.to_string())
}

/// Open, reject, close and single-message frames; batches have no encoder here.
fn encode_frame(frame: &Frame<'_>) -> Vec<u8> {
    match frame {
        Frame::Open {
            channel,
            protocol,
            id,
            handshake,
        } => encode_open(*channel, protocol, *id, Some(handshake)),
        Frame::Reject { channel } => encode_reject(*channel),
        Frame::Close { channel } => encode_close(*channel),
        // Channel 0 would make it a control frame.
        Frame::Messages(messages) => {
            let mut items = messages.clone();
            match (items.next(), items.next()) {
                (Some(Ok(message)), None) if message.channel != 0 => {
                    let mut out = Vec::new();
                    write_message_header(&mut out, message.channel, message.message_type);
                    out.extend_from_slice(message.payload);
                    out
                }
                _ => Vec::new(),
            }
        }
    }
}

/// Every key spelling we print parses back to the key.
fn keys(body: &[u8]) {
    let key = match (Key::from_bytes(body), std::str::from_utf8(body)) {
        (Ok(key), _) => key,
        (Err(_), Ok(text)) => match Key::parse_str(text) {
            Ok(key) => key,
            Err(_) => return,
        },
        (Err(_), Err(_)) => return,
    };
    assert_eq!(Key::parse_str(&key.to_hex()), Ok(key));
    assert_eq!(Key::parse_str(&key.to_z32()), Ok(key));
    assert_eq!(
        Key::parse_str(&format!("pear://{}/x", key.to_z32())),
        Ok(key)
    );
    assert_eq!(Key::from_bytes(key.as_bytes()), Ok(key));
}
