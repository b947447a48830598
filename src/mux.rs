//! Protomux frames, decoded without copying and without trusting lengths.
//!
//! Encoding uses peeroxide-dht's public `protomux::encode_*`. Decoding is ours: the
//! crate's `decode_frame` panics on a batch item with a huge length (index overflow) and
//! copies every payload, and the peer deciding that length is on the other side of the
//! network.

use thiserror::Error;

use crate::wire::{uint_len, write_uint, Reader, WireError};

const CONTROL_CHANNEL: u64 = 0;
const CONTROL_BATCH: u64 = 0;
const CONTROL_OPEN: u64 = 1;
const CONTROL_REJECT: u64 = 2;
const CONTROL_CLOSE: u64 = 3;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MuxError {
    #[error("malformed protomux frame: {0}")]
    Malformed(#[from] WireError),
    #[error("malformed protomux frame: empty")]
    Empty,
    #[error("malformed protomux frame: batch item overruns the frame")]
    BatchOverrun,
    #[error("malformed protomux frame: unknown control type {0}")]
    UnknownControl(u64),
}

/// One message on a channel; `channel` is the sender's id for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMessage<'a> {
    pub channel: u64,
    pub message_type: u64,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// The peer opened a channel under its id `channel`.
    Open { channel: u64, protocol: &'a str, id: Option<&'a [u8]>, handshake: &'a [u8] },
    /// The peer refused the channel we opened as `channel`.
    Reject { channel: u64 },
    /// The peer closed its channel `channel`.
    Close { channel: u64 },
    /// One message, or the contents of a batch.
    Messages(Vec<ChannelMessage<'a>>),
}

pub fn decode_frame(data: &[u8]) -> Result<Frame<'_>, MuxError> {
    if data.is_empty() {
        return Err(MuxError::Empty);
    }
    let mut reader = Reader::new(data);
    let channel = reader.uint()?;
    if channel != CONTROL_CHANNEL {
        return Ok(Frame::Messages(vec![channel_message(channel, reader.raw())?]));
    }
    match reader.uint()? {
        CONTROL_OPEN => {
            let channel = reader.uint()?;
            let protocol = reader.str()?;
            // optionalBuffer: a zero length is "no id", the same channel as an empty id.
            let id_len = reader.uint()?;
            let id = if id_len == 0 {
                None
            } else {
                let len = usize::try_from(id_len).map_err(|_| WireError::Truncated)?;
                Some(reader.take(len)?)
            };
            Ok(Frame::Open { channel, protocol, id, handshake: reader.raw() })
        }
        CONTROL_REJECT => Ok(Frame::Reject { channel: reader.uint()? }),
        CONTROL_CLOSE => Ok(Frame::Close { channel: reader.uint()? }),
        CONTROL_BATCH => decode_batch(reader),
        other => Err(MuxError::UnknownControl(other)),
    }
}

fn decode_batch(mut reader: Reader<'_>) -> Result<Frame<'_>, MuxError> {
    let mut channel = reader.uint()?;
    let mut messages = Vec::new();
    while reader.remaining() > 0 {
        let len = reader.uint()?;
        if len == 0 {
            channel = reader.uint()?;
            continue;
        }
        // Checked against what is left before anything is sliced or allocated.
        let len = usize::try_from(len)
            .ok()
            .filter(|len| *len <= reader.remaining())
            .ok_or(MuxError::BatchOverrun)?;
        let item = reader.take(len)?;
        messages.push(channel_message(channel, item)?);
    }
    Ok(Frame::Messages(messages))
}

fn channel_message(channel: u64, bytes: &[u8]) -> Result<ChannelMessage<'_>, MuxError> {
    let mut reader = Reader::new(bytes);
    let message_type = reader.uint()?;
    Ok(ChannelMessage { channel, message_type, payload: reader.raw() })
}

/// Frame header for a message on our channel `channel`; the payload follows it.
pub fn message_header_len(channel: u64, message_type: u64) -> usize {
    uint_len(channel) + uint_len(message_type)
}

pub fn write_message_header(out: &mut Vec<u8>, channel: u64, message_type: u64) {
    write_uint(out, channel);
    write_uint(out, message_type);
}

pub use peeroxide_dht::protomux::{encode_close, encode_open, encode_reject};

/// Our id for the one channel each connection here opens; the peer names its own.
pub const LOCAL_CHANNEL: u64 = 1;

/// The one protomux channel a connection carries, as both directions here use it: we open
/// `protocol` with an empty id as [`LOCAL_CHANNEL`]; the peer's open of the same pairs
/// with it; any other channel the peer opens is refused.
#[derive(Debug)]
pub struct Channel {
    protocol: &'static str,
    remote: Option<u64>,
}

/// What a frame means for the channel.
#[derive(Debug, PartialEq, Eq)]
pub enum ChannelStep<'a> {
    /// Messages on our channel (messages on other channels are dropped, as in JS).
    Messages(Vec<ChannelMessage<'a>>),
    /// Send this frame back (a reject of a channel we do not serve).
    Reply(Vec<u8>),
    /// The peer closed our channel or refused it: the connection is done.
    Ended,
    /// Nothing to do.
    Nothing,
}

impl Channel {
    pub fn new(protocol: &'static str) -> Self {
        Self { protocol, remote: None }
    }

    pub fn open_frame(&self) -> Vec<u8> {
        encode_open(LOCAL_CHANNEL, self.protocol, None, None)
    }

    pub fn close_frame(&self) -> Vec<u8> {
        encode_close(LOCAL_CHANNEL)
    }

    pub fn on_frame<'a>(&mut self, frame: Frame<'a>) -> ChannelStep<'a> {
        match frame {
            // A null id and an empty id are the same channel.
            Frame::Open { channel, protocol, id: None, .. } if protocol == self.protocol && self.remote.is_none() => {
                self.remote = Some(channel);
                ChannelStep::Nothing
            }
            Frame::Open { channel, .. } => ChannelStep::Reply(encode_reject(channel)),
            Frame::Close { channel } if Some(channel) == self.remote => ChannelStep::Ended,
            Frame::Reject { channel: LOCAL_CHANNEL } => ChannelStep::Ended,
            Frame::Close { .. } | Frame::Reject { .. } => ChannelStep::Nothing,
            Frame::Messages(mut messages) => {
                messages.retain(|message| Some(message.channel) == self.remote);
                ChannelStep::Messages(messages)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).expect("test hex")
    }

    #[test]
    fn decodes_the_frames_a_js_scraper_sends() {
        // From WIRE-NOTES.md: open, then a request, both on channel 1.
        let mut open = hex("00 01 01 12");
        open.extend_from_slice(b"prometheus-metrics");
        open.push(0);
        assert_eq!(
            decode_frame(&open),
            Ok(Frame::Open { channel: 1, protocol: "prometheus-metrics", id: None, handshake: &[] })
        );
        let mut request = hex("01 00 01 07");
        request.extend_from_slice(b"metrics");
        request.extend_from_slice(&[1, 1]);
        let Ok(Frame::Messages(messages)) = decode_frame(&request) else { panic!("messages") };
        assert_eq!(messages.len(), 1);
        assert_eq!((messages[0].channel, messages[0].message_type), (1, 0));
        assert_eq!(decode_frame(&hex("00 03 01")), Ok(Frame::Close { channel: 1 }));
        assert_eq!(decode_frame(&hex("00 02 05")), Ok(Frame::Reject { channel: 5 }));
    }

    #[test]
    fn our_frames_match_the_js_bytes() {
        let mut open = hex("00 01 01 12");
        open.extend_from_slice(b"prometheus-metrics");
        open.push(0);
        assert_eq!(encode_open(1, "prometheus-metrics", None, None), open);
        assert_eq!(encode_close(1), hex("00 03 01"));
        let mut header = Vec::new();
        write_message_header(&mut header, 1, 1);
        assert_eq!(header, hex("01 01"));
        assert_eq!(message_header_len(1, 1), 2);
    }

    #[test]
    fn decodes_batches_with_channel_switches() {
        // channel 1: [type 0, "a"], [type 1]; switch to channel 2: [type 0, "bc"]
        let frame = hex("00 00 01 02 00 61 01 01 00 02 03 00 62 63");
        let Ok(Frame::Messages(messages)) = decode_frame(&frame) else { panic!("batch") };
        assert_eq!(
            messages,
            vec![
                ChannelMessage { channel: 1, message_type: 0, payload: b"a" },
                ChannelMessage { channel: 1, message_type: 1, payload: b"" },
                ChannelMessage { channel: 2, message_type: 0, payload: b"bc" },
            ]
        );
    }

    #[test]
    fn a_hostile_batch_length_is_an_error_not_a_panic() {
        // The frame that panics peeroxide-dht's decoder: a batch item of length 2^64 - 1.
        let frame = hex("00 00 01 ff ff ff ff ff ff ff ff ff 00");
        assert_eq!(decode_frame(&frame), Err(MuxError::BatchOverrun));
        let frame = hex("00 00 01 05 00 61");
        assert_eq!(decode_frame(&frame), Err(MuxError::BatchOverrun));
        assert_eq!(decode_frame(&[]), Err(MuxError::Empty));
        assert_eq!(decode_frame(&hex("00 09")), Err(MuxError::UnknownControl(9)));
        assert!(decode_frame(&hex("00 01 01 ff ff")).is_err(), "truncated open");
    }

    #[test]
    fn the_channel_pairs_with_the_peers_open_and_refuses_others() {
        let mut channel = Channel::new("prometheus-metrics");
        let message = |channel| ChannelMessage { channel, message_type: 0, payload: b"" };
        // Messages before the pairing open belong to no channel of ours.
        assert_eq!(channel.on_frame(Frame::Messages(vec![message(3)])), ChannelStep::Messages(vec![]));
        let other = Frame::Open { channel: 2, protocol: "other", id: None, handshake: &[] };
        assert_eq!(channel.on_frame(other), ChannelStep::Reply(encode_reject(2)));
        let with_id = Frame::Open { channel: 2, protocol: "prometheus-metrics", id: Some(b"x"), handshake: &[] };
        assert_eq!(channel.on_frame(with_id), ChannelStep::Reply(encode_reject(2)));
        let ours = Frame::Open { channel: 3, protocol: "prometheus-metrics", id: None, handshake: &[] };
        assert_eq!(channel.on_frame(ours.clone()), ChannelStep::Nothing);
        assert_eq!(channel.on_frame(ours), ChannelStep::Reply(encode_reject(3)), "only one pairing");
        assert_eq!(
            channel.on_frame(Frame::Messages(vec![message(3), message(2)])),
            ChannelStep::Messages(vec![message(3)])
        );
        assert_eq!(channel.on_frame(Frame::Close { channel: 2 }), ChannelStep::Nothing);
        assert_eq!(channel.on_frame(Frame::Reject { channel: 2 }), ChannelStep::Nothing);
        assert_eq!(channel.on_frame(Frame::Close { channel: 3 }), ChannelStep::Ended);
        assert_eq!(channel.on_frame(Frame::Reject { channel: LOCAL_CHANNEL }), ChannelStep::Ended);
        assert_eq!(channel.open_frame(), encode_open(1, "prometheus-metrics", None, None));
        assert_eq!(channel.close_frame(), encode_close(1));
    }

    proptest! {
        #[test]
        fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_frame(&bytes);
        }

        #[test]
        fn arbitrary_batches_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut frame = vec![0, 0];
            frame.extend_from_slice(&tail);
            let _ = decode_frame(&frame);
        }
    }
}
