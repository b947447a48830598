//! protomux-rpc 1.10 messages inside an open protomux channel (the channel framing itself is
//! not here): type 0 request `uint id, string method, raw value`, type 1 response
//! `flags, uint id, raw value | error`. Bytes, accepted inputs and error texts follow
//! protomux-rpc's `index.js` and `lib/errors.js`; `tests/fixtures/golden.json` holds messages
//! captured from a real JS pair.
//!
//! protomux-rpc reads with compact-encoding 3, which refuses uints above 2^53 - 1, so ids
//! are read with [`Reader::safe_uint`]. A message that fails to decode makes JS destroy the
//! whole stream; a request *value* that fails to decode gets a `DECODE_ERROR` reply instead.

use std::fmt;

use crate::wire::{string_len, uint_len, write_string, write_uint, Reader, WireError};

/// protomux message type of a request within the channel.
pub const REQUEST_MESSAGE: u64 = 0;
/// protomux message type of a response within the channel.
pub const RESPONSE_MESSAGE: u64 = 1;

/// Largest id a JS peer accepts (`Number.MAX_SAFE_INTEGER`).
pub const MAX_ID: u64 = crate::wire::MAX_SAFE_INTEGER;

// Response flags, as `bits.of(error, code, cause, context)` puts them in one byte.
const FLAG_ERROR: u8 = 1;
const FLAG_CODE: u8 = 1 << 1;
const FLAG_CAUSE: u8 = 1 << 2;
const FLAG_CONTEXT: u8 = 1 << 3;

/// A request (or, with id 0, an event that gets no response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub id: u64,
    pub method: &'a str,
    /// The encoded request value (the rest of the message).
    pub value: &'a [u8],
}

impl<'a> Request<'a> {
    pub fn is_event(&self) -> bool {
        self.id == 0
    }

    pub fn encoded_len(&self) -> usize {
        uint_len(self.id) + string_len(self.method) + self.value.len()
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        write_uint(out, self.id);
        write_string(out, self.method);
        out.extend_from_slice(self.value);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    pub fn decode(payload: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(payload);
        let id = r.safe_uint()?;
        let method = r.str()?;
        Ok(Request {
            id,
            method,
            value: r.raw(),
        })
    }
}

/// The cause attached to an error response (the JS `err.cause`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcCause {
    pub message: String,
    /// Always on the wire; empty means the JS cause had no code.
    pub code: String,
    pub context: Option<String>,
}

impl RpcCause {
    pub fn new(message: impl Into<String>) -> Self {
        RpcCause {
            message: message.into(),
            code: String::new(),
            context: None,
        }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = code.into();
        self
    }

    pub fn with_context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }
}

impl fmt::Display for RpcCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RpcCause {}

/// An error response as it is on the wire: `message` is without the `"CODE: "` prefix the
/// JS `Error.message` carries. Decoding keeps everything the wire says (also a `code` or
/// `context` JS would drop), so a decoded error encodes back to the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub message: String,
    pub code: Option<String>,
    pub cause: Option<RpcCause>,
}

impl RpcError {
    fn with_code(code: ErrorCode, message: String, cause: Option<RpcCause>) -> Self {
        RpcError {
            message,
            code: Some(code.as_str().to_owned()),
            cause,
        }
    }

    /// No responder for `method`.
    pub fn unknown_method(method: &str) -> Self {
        Self::with_code(
            ErrorCode::UnknownMethod,
            format!("Unknown method '{method}'"),
            None,
        )
    }

    /// The request value did not decode; `cause` is the decoder's message (for our decoders,
    /// `WireError`'s text, which matches the JS one). The cause has no code, as in JS.
    pub fn decode_error(cause: impl Into<String>) -> Self {
        Self::with_code(
            ErrorCode::DecodeError,
            "Could not decode request".to_owned(),
            Some(RpcCause::new(cause)),
        )
    }

    /// The handler failed.
    pub fn request_error(cause: RpcCause) -> Self {
        Self::with_code(
            ErrorCode::RequestError,
            "Request failed".to_owned(),
            Some(cause),
        )
    }

    /// The handler's result did not encode (JS passes the encoder's error as the cause).
    pub fn encode_error(cause: Option<RpcCause>) -> Self {
        Self::with_code(
            ErrorCode::EncodeError,
            "Could not encode response".to_owned(),
            cause,
        )
    }

    /// The requester's own error when a response value does not decode (never on the wire).
    pub fn response_decode_error(cause: impl Into<String>) -> Self {
        Self::with_code(
            ErrorCode::DecodeError,
            "Could not decode response".to_owned(),
            Some(RpcCause::new(cause)),
        )
    }

    /// What a JS responder sends for an `Error` with this `message`, `code` and `cause`.
    /// JS writes `message.replace(code + ': ', '')`: the first occurrence anywhere, and with no
    /// code the text `"undefined: "` is what gets removed. An empty code or cause context is
    /// not sent (JS tests them for truthiness); a missing cause code is sent as "".
    pub fn from_js(message: &str, code: Option<&str>, cause: Option<RpcCause>) -> Self {
        let prefix = format!("{}: ", code.unwrap_or("undefined"));
        let cause = cause.map(|c| RpcCause {
            context: c.context.filter(|s| !s.is_empty()),
            ..c
        });
        RpcError {
            message: message.replacen(&prefix, "", 1),
            code: code.filter(|c| !c.is_empty()).map(str::to_owned),
            cause,
        }
    }

    /// The code a JS requester keeps: protomux-rpc rebuilds only the four responder codes;
    /// any other error becomes a plain `Error` without a code.
    pub fn js_code(&self) -> Option<ErrorCode> {
        ErrorCode::parse(self.code.as_deref()?).filter(|c| c.is_remote())
    }

    /// The `Error.message` a JS requester sees: `"CODE: message"` for the four responder
    /// codes, the bare message otherwise.
    pub fn js_message(&self) -> String {
        match self.js_code() {
            Some(code) => code.js_message(&self.message),
            None => self.message.clone(),
        }
    }

    fn flags(&self) -> u8 {
        let mut flags = FLAG_ERROR;
        if self.code.is_some() {
            flags |= FLAG_CODE;
        }
        if let Some(cause) = &self.cause {
            flags |= FLAG_CAUSE;
            if cause.context.is_some() {
                flags |= FLAG_CONTEXT;
            }
        }
        flags
    }

    fn encoded_len(&self) -> usize {
        let mut len = string_len(&self.message);
        if let Some(code) = &self.code {
            len += string_len(code);
        }
        if let Some(cause) = &self.cause {
            len += string_len(&cause.message) + string_len(&cause.code);
            if let Some(context) = &cause.context {
                len += string_len(context);
            }
        }
        len
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        write_string(out, &self.message);
        if let Some(code) = &self.code {
            write_string(out, code);
        }
        if let Some(cause) = &self.cause {
            write_string(out, &cause.message);
            write_string(out, &cause.code);
            if let Some(context) = &cause.context {
                write_string(out, context);
            }
        }
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.js_message())
    }
}

impl std::error::Error for RpcError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_ref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

/// A response: the encoded result value, or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<'a> {
    pub id: u64,
    pub result: Result<&'a [u8], RpcError>,
}

impl<'a> Response<'a> {
    pub fn encoded_len(&self) -> usize {
        1 + uint_len(self.id)
            + match &self.result {
                Ok(value) => value.len(),
                Err(err) => err.encoded_len(),
            }
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match &self.result {
            Ok(value) => {
                write_ok_response_header(out, self.id);
                out.extend_from_slice(value);
            }
            Err(err) => {
                out.push(err.flags());
                write_uint(out, self.id);
                err.encode_into(out);
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Non-canonical flags decode as JS reads them (a 2/4/8-byte bitfield keeps only its first
    /// byte; bits above 3, a code bit without the error bit, a context bit without the cause
    /// bit are ignored); encoding writes the canonical single byte.
    pub fn decode(payload: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(payload);
        let flags = read_flags(&mut r)?;
        let id = r.safe_uint()?;
        if flags & FLAG_ERROR == 0 {
            return Ok(Response {
                id,
                result: Ok(r.raw()),
            });
        }
        let message = r.string()?;
        let code = if flags & FLAG_CODE != 0 {
            Some(r.string()?)
        } else {
            None
        };
        let cause = if flags & FLAG_CAUSE != 0 {
            let message = r.string()?;
            let code = r.string()?;
            let context = if flags & FLAG_CONTEXT != 0 {
                Some(r.string()?)
            } else {
                None
            };
            Some(RpcCause {
                message,
                code,
                context,
            })
        } else {
            None
        };
        Ok(Response {
            id,
            result: Err(RpcError {
                message,
                code,
                cause,
            }),
        })
    }
}

/// compact-encoding-bitfield(1) as JS decodes it: a byte <= 0xFC is the bitfield; 0xFD, 0xFE,
/// 0xFF announce 2, 4, 8 bytes, of which only the first is used.
fn read_flags(r: &mut Reader<'_>) -> Result<u8, WireError> {
    let width = match r.u8()? {
        flags @ 0..=0xfc => return Ok(flags),
        0xfd => 2,
        0xfe => 4,
        0xff => 8,
    };
    r.take(width)?.first().copied().ok_or(WireError::Truncated)
}

/// Bytes of a success response before its value.
pub fn ok_response_header_len(id: u64) -> usize {
    1 + uint_len(id)
}

/// Writes the start of a success response; the caller appends the value right after, so a
/// large value is written once, straight into the frame.
pub fn write_ok_response_header(out: &mut Vec<u8>, id: u64) {
    out.push(0);
    write_uint(out, id);
}

/// A message inside a protomux-rpc channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcMessage<'a> {
    Request(Request<'a>),
    Response(Response<'a>),
}

impl<'a> RpcMessage<'a> {
    /// `Ok(None)` for a message type protomux-rpc does not define: JS ignores those.
    pub fn decode(message_type: u64, payload: &'a [u8]) -> Result<Option<Self>, WireError> {
        Ok(match message_type {
            REQUEST_MESSAGE => Some(RpcMessage::Request(Request::decode(payload)?)),
            RESPONSE_MESSAGE => Some(RpcMessage::Response(Response::decode(payload)?)),
            _ => None,
        })
    }

    pub fn message_type(&self) -> u64 {
        match self {
            RpcMessage::Request(_) => REQUEST_MESSAGE,
            RpcMessage::Response(_) => RESPONSE_MESSAGE,
        }
    }

    pub fn encoded_len(&self) -> usize {
        match self {
            RpcMessage::Request(m) => m.encoded_len(),
            RpcMessage::Response(m) => m.encoded_len(),
        }
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            RpcMessage::Request(m) => m.encode_into(out),
            RpcMessage::Response(m) => m.encode_into(out),
        }
    }
}

/// protomux-rpc error codes. The first four travel in responses; the others are made by the
/// requester itself (protomux-rpc's `RPCError`, and protomux-rpc-client's own errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    UnknownMethod,
    RequestError,
    DecodeError,
    EncodeError,
    /// A response did not come within the request's timeout (`timeout of <ms>ms exceeded`).
    TimeoutExceeded,
    ChannelClosed,
    ChannelDestroyed,
    DuplicateChannel,
    /// protomux-rpc-client: no connection or request slot within the timeout.
    RequestTimeout,
    /// protomux-rpc-client: the client is closing.
    ClientClosing,
}

impl ErrorCode {
    const ALL: [ErrorCode; 10] = [
        ErrorCode::UnknownMethod,
        ErrorCode::RequestError,
        ErrorCode::DecodeError,
        ErrorCode::EncodeError,
        ErrorCode::TimeoutExceeded,
        ErrorCode::ChannelClosed,
        ErrorCode::ChannelDestroyed,
        ErrorCode::DuplicateChannel,
        ErrorCode::RequestTimeout,
        ErrorCode::ClientClosing,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnknownMethod => "UNKNOWN_METHOD",
            ErrorCode::RequestError => "REQUEST_ERROR",
            ErrorCode::DecodeError => "DECODE_ERROR",
            ErrorCode::EncodeError => "ENCODE_ERROR",
            ErrorCode::TimeoutExceeded => "TIMEOUT_EXCEEDED",
            ErrorCode::ChannelClosed => "CHANNEL_CLOSED",
            ErrorCode::ChannelDestroyed => "CHANNEL_DESTROYED",
            ErrorCode::DuplicateChannel => "DUPLICATE_CHANNEL",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorCode::ClientClosing => "CLIENT_CLOSING",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// Sent by a responder (and rebuilt as an `RPCError` by a JS requester).
    pub fn is_remote(self) -> bool {
        matches!(
            self,
            ErrorCode::UnknownMethod
                | ErrorCode::RequestError
                | ErrorCode::DecodeError
                | ErrorCode::EncodeError
        )
    }

    /// The JS default message of the locally made errors.
    pub fn default_message(self) -> Option<&'static str> {
        match self {
            ErrorCode::ChannelClosed => Some("channel closed"),
            ErrorCode::ChannelDestroyed => Some("channel destroyed"),
            ErrorCode::DuplicateChannel => Some("duplicate channel"),
            ErrorCode::RequestTimeout => Some("The request timed out"),
            ErrorCode::ClientClosing => Some("The protomux-rpc client is closing"),
            _ => None,
        }
    }

    /// A JS error's `message`: `"CODE: msg"`.
    pub fn js_message(self, message: &str) -> String {
        format!("{}: {message}", self.as_str())
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The message of protomux-rpc's `TIMEOUT_EXCEEDED` (no space before "ms", as in JS).
pub fn timeout_exceeded_message(timeout_ms: u64) -> String {
    format!("timeout of {timeout_ms}ms exceeded")
}

/// Request ids as protomux-rpc hands them out: 1, 2, 3, ... (0 is reserved for events).
/// After 2^53 - 1, which a JS peer could not read, it starts over at 1.
#[derive(Debug, Clone)]
pub struct RequestIds {
    next: u64,
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds { next: 1 }
    }
}

impl RequestIds {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn next_id(&mut self) -> u64 {
        let id = self.next;
        self.next = if id >= MAX_ID { 1 } else { id + 1 };
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    fn hs(s: &str) -> String {
        hex::encode(s)
    }

    #[test]
    fn wire_notes_examples() {
        // From WIRE-NOTES.md, without the channel id and message type.
        let req = Request {
            id: 1,
            method: "metrics",
            value: &[1, 1],
        };
        assert_eq!(req.encode(), h(&format!("01 07 {} 01 01", hs("metrics"))));

        let ok = Response {
            id: 1,
            result: Ok(&h("00 01 04 61 20 31 0a")),
        };
        assert_eq!(ok.encode(), h("00 01 00 01 04 61 20 31 0a"));

        let cause = "Cannot decode RegisterRequest of other major version 1000 (own major: 1)";
        let decode = Response {
            id: 2,
            result: Err(RpcError::decode_error(cause)),
        };
        assert_eq!(
            hex::encode(decode.encode()),
            format!(
                "070218{}0c{}48{}00",
                hs("Could not decode request"),
                hs("DECODE_ERROR"),
                hs(cause)
            )
        );

        let unknown = Response {
            id: 3,
            result: Err(RpcError::unknown_method("nope")),
        };
        assert_eq!(
            hex::encode(unknown.encode()),
            format!(
                "030315{}0e{}",
                hs("Unknown method 'nope'"),
                hs("UNKNOWN_METHOD")
            )
        );

        let handler = Response {
            id: 4,
            result: Err(RpcError::request_error(
                RpcCause::new("nope").with_code("EX"),
            )),
        };
        assert_eq!(
            hex::encode(handler.encode()),
            format!(
                "07040e{}0d{}04{}02{}",
                hs("Request failed"),
                hs("REQUEST_ERROR"),
                hs("nope"),
                hs("EX")
            )
        );
    }

    #[test]
    fn js_messages() {
        assert_eq!(
            RpcError::unknown_method("x").js_message(),
            "UNKNOWN_METHOD: Unknown method 'x'"
        );
        let custom = RpcError {
            message: "hi".into(),
            code: Some("CUSTOM".into()),
            cause: None,
        };
        assert_eq!(custom.js_message(), "hi");
        assert_eq!(custom.js_code(), None);
        assert_eq!(
            timeout_exceeded_message(10000),
            "timeout of 10000ms exceeded"
        );
        assert_eq!(
            ErrorCode::ChannelClosed
                .js_message(ErrorCode::ChannelClosed.default_message().unwrap()),
            "CHANNEL_CLOSED: channel closed"
        );
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::parse("NOPE"), None);
    }

    #[test]
    fn from_js_replace_quirks() {
        let e = RpcError::from_js(
            "UNKNOWN_METHOD: Unknown method 'm'",
            Some("UNKNOWN_METHOD"),
            None,
        );
        assert_eq!(e, RpcError::unknown_method("m"));
        assert_eq!(
            RpcError::from_js("x undefined: y", None, None).message,
            "x y"
        );
        assert_eq!(
            RpcError::from_js("wrapped: X: inner X: again", Some("X"), None).message,
            "wrapped: inner X: again"
        );
        let empty = RpcError::from_js("a: b: c", Some(""), None);
        assert_eq!((empty.message.as_str(), empty.code), ("ab: c", None));
        let cause = RpcCause::new("m").with_context("");
        assert_eq!(
            RpcError::from_js("m", Some("C"), Some(cause))
                .cause
                .unwrap()
                .context,
            None
        );
    }

    #[test]
    fn flags_bitfield_like_js() {
        let two = h(&format!("fd 03 00 04 02 {} 02 {}", hs("hi"), hs("EX")));
        let got = Response::decode(&two).unwrap();
        assert_eq!(got.id, 4);
        assert_eq!(
            got.result,
            Err(RpcError {
                message: "hi".into(),
                code: Some("EX".into()),
                cause: None
            })
        );
        assert_eq!(
            Response::decode(&h("ff 01 00 00")),
            Err(WireError::Truncated)
        );
        // A code bit without the error bit: a success whose value is the rest.
        assert_eq!(
            Response::decode(&h("02 01 aa")),
            Ok(Response {
                id: 1,
                result: Ok(&[0xaa][..])
            })
        );
    }

    #[test]
    fn ids_beyond_js_range_are_rejected() {
        let mut big = vec![0];
        write_uint(&mut big, MAX_ID + 1);
        assert_eq!(Response::decode(&big), Err(WireError::UintOutOfRange));
        let mut req = Vec::new();
        write_uint(&mut req, MAX_ID + 1);
        req.push(0);
        assert_eq!(Request::decode(&req), Err(WireError::UintOutOfRange));
    }

    #[test]
    fn unknown_message_types_are_ignored() {
        assert_eq!(RpcMessage::decode(2, &[1, 2, 3]), Ok(None));
        assert_eq!(RpcMessage::decode(u64::MAX, &[]), Ok(None));
        assert_eq!(RpcMessage::decode(0, &[]), Err(WireError::Truncated));
    }

    #[test]
    fn ok_header_then_value() {
        let mut out = Vec::with_capacity(ok_response_header_len(300) + 3);
        write_ok_response_header(&mut out, 300);
        out.extend_from_slice(b"abc");
        assert_eq!(out.len(), ok_response_header_len(300) + 3);
        assert_eq!(
            Response::decode(&out),
            Ok(Response {
                id: 300,
                result: Ok(&b"abc"[..])
            })
        );
    }

    #[test]
    fn request_ids() {
        let mut ids = RequestIds::new();
        assert_eq!((ids.next_id(), ids.next_id(), ids.next_id()), (1, 2, 3));
        let mut ids = RequestIds { next: MAX_ID };
        assert_eq!((ids.next_id(), ids.next_id()), (MAX_ID, 1));
    }

    #[test]
    fn truncated_at_every_length() {
        let full_error = Response {
            id: 70_000,
            result: Err(RpcError::request_error(
                RpcCause::new("boom").with_code("E").with_context("ctx"),
            )),
        }
        .encode();
        for len in 0..full_error.len() {
            assert_eq!(
                Response::decode(&full_error[..len]),
                Err(WireError::Truncated),
                "prefix {len}"
            );
        }
        let req = Request {
            id: 70_000,
            method: "metrics",
            value: &[],
        }
        .encode();
        for len in 0..req.len() {
            assert_eq!(Request::decode(&req[..len]), Err(WireError::Truncated));
        }
    }

    #[test]
    fn huge_lengths_and_bad_utf8() {
        let huge = h("01 01 ff ff ff ff ff ff ff ff 7f");
        assert_eq!(Response::decode(&huge), Err(WireError::Truncated));
        assert_eq!(
            Request::decode(&h("01 ff ff ff ff ff ff ff ff 7f")),
            Err(WireError::Truncated)
        );
        assert_eq!(
            Request::decode(&h("01 02 c3 28")),
            Err(WireError::InvalidUtf8)
        );
        assert_eq!(
            Response::decode(&h("01 01 01 ff")),
            Err(WireError::InvalidUtf8)
        );
    }

    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), "\\PC{0,300}"]
    }

    fn any_cause() -> impl Strategy<Value = Option<RpcCause>> {
        proptest::option::of(
            (any_text(), any_text(), proptest::option::of(any_text())).prop_map(
                |(message, code, context)| RpcCause {
                    message,
                    code,
                    context,
                },
            ),
        )
    }

    proptest! {
        #[test]
        fn request_round_trip(id in 0..=MAX_ID, method in any_text(), value in proptest::collection::vec(any::<u8>(), 0..300)) {
            let req = Request { id, method: &method, value: &value };
            let bytes = req.encode();
            prop_assert_eq!(bytes.len(), req.encoded_len());
            prop_assert_eq!(Request::decode(&bytes), Ok(req));
            prop_assert_eq!(RpcMessage::decode(REQUEST_MESSAGE, &bytes), Ok(Some(RpcMessage::Request(req))));
        }

        #[test]
        fn ok_response_round_trip(id in 0..=MAX_ID, value in proptest::collection::vec(any::<u8>(), 0..300)) {
            let resp = Response { id, result: Ok(&value) };
            let bytes = resp.encode();
            prop_assert_eq!(bytes.len(), resp.encoded_len());
            prop_assert_eq!(Response::decode(&bytes), Ok(resp));
        }

        #[test]
        fn error_response_round_trip(
            id in 0..=MAX_ID,
            message in any_text(),
            code in proptest::option::of(any_text()),
            cause in any_cause(),
        ) {
            let resp = Response { id, result: Err(RpcError { message, code, cause }) };
            let bytes = resp.encode();
            prop_assert_eq!(bytes.len(), resp.encoded_len());
            prop_assert!(bytes[0] <= 0x0f);
            prop_assert_eq!(Response::decode(&bytes), Ok(resp));
        }

        #[test]
        fn decoders_never_panic(kind in 0u64..4, bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = RpcMessage::decode(kind, &bytes);
            let _ = Request::decode(&bytes);
            let _ = Response::decode(&bytes);
        }

        #[test]
        fn decoders_never_panic_on_mutated_messages(
            pos in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let error = Response {
                id: 7,
                result: Err(RpcError::request_error(RpcCause::new("boom").with_code("E").with_context("c"))),
            };
            for mut bytes in [
                Request { id: 3, method: "metrics", value: &[1, 1] }.encode(),
                error.encode(),
                Response { id: 9, result: Ok(&[0, 1, 2][..]) }.encode(),
            ] {
                let i = pos.index(bytes.len());
                bytes[i] = byte;
                bytes.truncate(cut.index(bytes.len() + 1));
                let _ = Request::decode(&bytes);
                let _ = Response::decode(&bytes);
            }
        }
    }
}
