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
    /// One message, or the items of a batch.
    Messages(Messages<'a>),
}

/// The messages of one frame, decoded one at a time as they are taken: a batch costs
/// nothing beyond the frame itself (a list of its items would cost 16 bytes per byte of
/// the frame). A malformed item ends the iteration with its error, after the items before
/// it, as JS protomux handles a batch.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    /// A single-message frame, decoded up front.
    single: Option<ChannelMessage<'a>>,
    /// The batch items not taken yet, and the channel they are on so far.
    rest: &'a [u8],
    channel: u64,
}

impl<'a> Messages<'a> {
    fn single(message: ChannelMessage<'a>) -> Self {
        Self { single: Some(message), rest: &[], channel: 0 }
    }

    /// The next item, `Ok(None)` for a channel switch.
    fn batch_item(&mut self) -> Result<Option<ChannelMessage<'a>>, MuxError> {
        let mut reader = Reader::new(self.rest);
        let len = reader.uint()?;
        if len == 0 {
            self.channel = reader.uint()?;
            self.rest = reader.raw();
            return Ok(None);
        }
        // Checked against what is left before anything is sliced.
        let len = usize::try_from(len)
            .ok()
            .filter(|len| *len <= reader.remaining())
            .ok_or(MuxError::BatchOverrun)?;
        let item = reader.take(len)?;
        self.rest = reader.raw();
        channel_message(self.channel, item).map(Some)
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<ChannelMessage<'a>, MuxError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(message) = self.single.take() {
            return Some(Ok(message));
        }
        while !self.rest.is_empty() {
            match self.batch_item() {
                Ok(Some(message)) => return Some(Ok(message)),
                Ok(None) => {}
                Err(err) => {
                    self.rest = &[];
                    return Some(Err(err));
                }
            }
        }
        None
    }
}

impl std::iter::FusedIterator for Messages<'_> {}

/// Equal when they yield the same items (a batch of one equals that one message).
impl PartialEq for Messages<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.clone().eq(other.clone())
    }
}

impl Eq for Messages<'_> {}

pub fn decode_frame(data: &[u8]) -> Result<Frame<'_>, MuxError> {
    if data.is_empty() {
        return Err(MuxError::Empty);
    }
    let mut reader = Reader::new(data);
    let channel = reader.uint()?;
    if channel != CONTROL_CHANNEL {
        return Ok(Frame::Messages(Messages::single(channel_message(channel, reader.raw())?)));
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
    let channel = reader.uint()?;
    Ok(Frame::Messages(Messages { single: None, rest: reader.raw(), channel }))
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
    Messages(ChannelMessages<'a>),
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
            Frame::Messages(messages) => ChannelStep::Messages(ChannelMessages { messages, remote: self.remote }),
        }
    }
}

/// A frame's messages that are on our channel, decoded as they are taken; a malformed
/// batch item still ends it with an error, whatever channel it was on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMessages<'a> {
    messages: Messages<'a>,
    remote: Option<u64>,
}

impl<'a> Iterator for ChannelMessages<'a> {
    type Item = Result<ChannelMessage<'a>, MuxError>;

    fn next(&mut self) -> Option<Self::Item> {
        let remote = self.remote;
        self.messages.find(|item| item.as_ref().map_or(true, |message| Some(message.channel) == remote))
    }
}

impl std::iter::FusedIterator for ChannelMessages<'_> {}

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
        let messages = messages_of(&request);
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0], Ok(ChannelMessage { channel: 1, message_type: 0, payload: &request[2..] }));
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
        assert_eq!(
            messages_of(&frame),
            vec![
                Ok(ChannelMessage { channel: 1, message_type: 0, payload: b"a" }),
                Ok(ChannelMessage { channel: 1, message_type: 1, payload: b"" }),
                Ok(ChannelMessage { channel: 2, message_type: 0, payload: b"bc" }),
            ]
        );
        // A batch of one is that message.
        assert_eq!(decode_frame(&hex("00 00 01 02 00 61")), decode_frame(&hex("01 00 61")));
    }

    /// The items of a frame, decoded; a frame that is not messages is a test failure.
    fn messages_of(frame: &[u8]) -> Vec<Result<ChannelMessage<'_>, MuxError>> {
        match decode_frame(frame) {
            Ok(Frame::Messages(messages)) => messages.collect(),
            other => panic!("not messages: {other:?}"),
        }
    }

    /// A batch frame of `(channel, type, payload)` items, switching channels as JS does.
    fn batch(items: &[(u64, u64, &[u8])]) -> Vec<u8> {
        let mut out = vec![0, 0];
        let mut current = items.first().map_or(0, |item| item.0);
        write_uint(&mut out, current);
        for &(channel, message_type, payload) in items {
            if channel != current {
                write_uint(&mut out, 0);
                write_uint(&mut out, channel);
                current = channel;
            }
            write_uint(&mut out, (uint_len(message_type) + payload.len()) as u64);
            write_uint(&mut out, message_type);
            out.extend_from_slice(payload);
        }
        out
    }

    #[test]
    fn batch_items_are_decoded_as_taken_and_an_error_comes_after_the_good_ones() {
        let mut frame = batch(&[(1, 0, b"a"), (1, 0, b"b")]);
        frame.extend_from_slice(&hex("05 00 61")); // claims 5 bytes, 2 are left
        let Ok(Frame::Messages(mut messages)) = decode_frame(&frame) else { panic!("batch") };
        assert_eq!(messages.next(), Some(Ok(ChannelMessage { channel: 1, message_type: 0, payload: b"a" })));
        assert_eq!(messages.next(), Some(Ok(ChannelMessage { channel: 1, message_type: 0, payload: b"b" })));
        assert_eq!(messages.next(), Some(Err(MuxError::BatchOverrun)));
        assert_eq!(messages.next(), None, "nothing after the error");
    }

    #[test]
    fn a_large_batch_of_tiny_items_is_walked_not_collected() {
        // 4 MiB of 2-byte items (length 1, type 0): the eager decoder built a 64 MiB list.
        let items = 2 << 20;
        let mut frame = vec![0, 0, 1];
        frame.resize(3 + 2 * items, 0);
        frame[3..].chunks_exact_mut(2).for_each(|item| item[0] = 1);
        let Ok(Frame::Messages(messages)) = decode_frame(&frame) else { panic!("batch") };
        // size_of proves nothing is buffered: the iterator is a few words, whatever the frame.
        assert!(std::mem::size_of_val(&messages) <= 64);
        assert_eq!(messages.map(|m| m.map(|m| m.channel)).filter(|m| *m == Ok(1)).count(), items);
    }

    #[test]
    fn a_hostile_batch_length_is_an_error_not_a_panic() {
        // The frame that panics peeroxide-dht's decoder: a batch item of length 2^64 - 1.
        let frame = hex("00 00 01 ff ff ff ff ff ff ff ff ff 00");
        assert_eq!(messages_of(&frame), vec![Err(MuxError::BatchOverrun)]);
        let frame = hex("00 00 01 05 00 61");
        assert_eq!(messages_of(&frame), vec![Err(MuxError::BatchOverrun)]);
        assert_eq!(decode_frame(&hex("00 00")), Err(MuxError::Malformed(WireError::Truncated)), "no channel");
        assert_eq!(decode_frame(&[]), Err(MuxError::Empty));
        assert_eq!(decode_frame(&hex("00 09")), Err(MuxError::UnknownControl(9)));
        assert!(decode_frame(&hex("00 01 01 ff ff")).is_err(), "truncated open");
    }

    #[test]
    fn the_channel_pairs_with_the_peers_open_and_refuses_others() {
        let mut channel = Channel::new("prometheus-metrics");
        let message = |channel| ChannelMessage { channel, message_type: 0, payload: b"" };
        fn on_ours(step: ChannelStep<'_>) -> Vec<Result<ChannelMessage<'_>, MuxError>> {
            match step {
                ChannelStep::Messages(messages) => messages.collect(),
                other => panic!("not messages: {other:?}"),
            }
        }
        let on_3 = batch(&[(3, 0, b"")]);
        let on_3_and_2 = batch(&[(3, 0, b""), (2, 0, b"")]);
        let frame = |bytes| decode_frame(bytes).expect("frame");
        // Messages before the pairing open belong to no channel of ours.
        assert_eq!(on_ours(channel.on_frame(frame(&on_3))), vec![]);
        let other = Frame::Open { channel: 2, protocol: "other", id: None, handshake: &[] };
        assert_eq!(channel.on_frame(other), ChannelStep::Reply(encode_reject(2)));
        let with_id = Frame::Open { channel: 2, protocol: "prometheus-metrics", id: Some(b"x"), handshake: &[] };
        assert_eq!(channel.on_frame(with_id), ChannelStep::Reply(encode_reject(2)));
        let ours = Frame::Open { channel: 3, protocol: "prometheus-metrics", id: None, handshake: &[] };
        assert_eq!(channel.on_frame(ours.clone()), ChannelStep::Nothing);
        assert_eq!(channel.on_frame(ours), ChannelStep::Reply(encode_reject(3)), "only one pairing");
        assert_eq!(on_ours(channel.on_frame(frame(&on_3_and_2))), vec![Ok(message(3))]);
        // A malformed item is an error whichever channel it claims.
        let mut bad = on_3_and_2.clone();
        bad.extend_from_slice(&hex("09 00"));
        assert_eq!(on_ours(channel.on_frame(frame(&bad))), vec![Ok(message(3)), Err(MuxError::BatchOverrun)]);
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
            if let Ok(Frame::Messages(messages)) = decode_frame(&bytes) {
                prop_assert!(messages.count() <= bytes.len());
            }
        }

        #[test]
        fn arbitrary_batches_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut frame = vec![0, 0];
            frame.extend_from_slice(&tail);
            if let Ok(Frame::Messages(messages)) = decode_frame(&frame) {
                prop_assert!(messages.count() <= frame.len() / 2);
            }
        }
    }
}
