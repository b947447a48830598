//! compact-encoding, the part dht-prom-client uses, and its four messages: MetricsRequest and
//! MetricsReply (`dht-prom-client/lib/encodings.js`), AliasRequest and AliasResponse
//! (`dht-prom-alias-rpc/lib/encodings.js`). Bytes, accepted inputs and error texts follow the JS
//! packages; `tests/fixtures/golden.json` holds what they really produce.
//!
//! The primitives are written by hand, not taken from the `compact-encoding` crate (2.2.0),
//! because checking that crate showed: `Vec<T>` decoders call `Vec::with_capacity` with an
//! untrusted count (5 input bytes abort the process on a 51 GB allocation); its `u32` decoder
//! reads 4 bytes after a 0xFF prefix where JS reads 8; it has no `bool`; and its error texts
//! are not the JS ones, which peers see as the cause of a `DECODE_ERROR`.
//!
//! JS behaviours kept on purpose (all pinned by the golden fixtures):
//! - `uint` accepts non-minimal encodings (`fd 05 00` is 5), like JS.
//! - `bool` is true only for byte 1; any other byte is false, never an error.
//! - trailing bytes after a message are ignored (`c.decode` does not check the end).
//! - JS reads a 0xFF-prefixed `uint` into a double (compact-encoding 2 does not check the
//!   range); we keep the exact u64, and error texts print the number the way JS would.
//!
//! One deliberate difference: JS decodes invalid UTF-8 into U+FFFD replacement characters;
//! we return [`WireError::InvalidUtf8`] rather than pass altered text on. A JS peer never
//! produces invalid UTF-8 (its encoder writes replacement bytes for lone surrogates).

use thiserror::Error;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// The input ends before the value does (also: a length prefix larger than the rest).
    /// Same text as JS, so a `DECODE_ERROR` cause reads exactly like the one a JS server sends.
    #[error("Out of bounds")]
    Truncated,
    /// A uint above 2^53 - 1, which compact-encoding 3 (used by protomux-rpc) refuses.
    #[error("uint must be between 0 and 9007199254740991, use biguint")]
    UintOutOfRange,
    /// A string that is not UTF-8 (JS would substitute U+FFFD instead).
    #[error("Invalid UTF-8 string")]
    InvalidUtf8,
    /// Bytes left after a value that must fill its input (only [`Reader::finish`] reports this;
    /// the JS messages ignore trailing bytes).
    #[error("Unexpected trailing bytes")]
    TrailingBytes,
    /// A version check failed; the text is exactly the JS `Error` message.
    #[error("{0}")]
    VersionMismatch(String),
}

/// Largest integer a JS number holds exactly (`Number.MAX_SAFE_INTEGER`).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// A number as JS prints it after reading it with compact-encoding 2: the uint becomes a
/// double (rounded above 2^53) and `${n}` shows its shortest round-trip digits. Rust's `f64`
/// `Display` prints the same digits, without exponent, for every value a u64 can hold.
pub fn js_number(n: u64) -> String {
    if n <= MAX_SAFE_INTEGER {
        n.to_string()
    } else {
        // JS computes lo + hi * 2^32 in doubles: one rounding, the same as this cast.
        format!("{}", n as f64)
    }
}

/// Decoder state: a byte slice and a position. No method panics or allocates more than the
/// input holds.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let bytes = self.take(N)?;
        bytes.try_into().map_err(|_| WireError::Truncated)
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    /// compact-encoding `uint` as compact-encoding 2 reads it: any value, non-minimal
    /// encodings accepted.
    pub fn uint(&mut self) -> Result<u64, WireError> {
        Ok(match self.u8()? {
            n @ 0..=0xfc => u64::from(n),
            0xfd => u64::from(u16::from_le_bytes(self.array()?)),
            0xfe => u64::from(u32::from_le_bytes(self.array()?)),
            0xff => u64::from_le_bytes(self.array()?),
        })
    }

    /// compact-encoding `uint` as compact-encoding 3 reads it (protomux-rpc): values above
    /// 2^53 - 1 are an error.
    pub fn safe_uint(&mut self) -> Result<u64, WireError> {
        let n = self.uint()?;
        if n > MAX_SAFE_INTEGER {
            return Err(WireError::UintOutOfRange);
        }
        Ok(n)
    }

    /// compact-encoding `bool`: true only for byte 1, like JS (`=== 1`).
    pub fn bool(&mut self) -> Result<bool, WireError> {
        Ok(self.u8()? == 1)
    }

    pub fn fixed32(&mut self) -> Result<[u8; 32], WireError> {
        self.array()
    }

    /// compact-encoding `string`: uint byte length, then UTF-8. The length is checked against
    /// the remaining input before anything is read.
    pub fn str(&mut self) -> Result<&'a str, WireError> {
        let len = self.uint()?;
        let len = usize::try_from(len).map_err(|_| WireError::Truncated)?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| WireError::InvalidUtf8)
    }

    pub fn string(&mut self) -> Result<String, WireError> {
        self.str().map(str::to_owned)
    }

    /// compact-encoding `raw`: the rest of the input.
    pub fn raw(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        rest
    }

    /// Error if input is left (for callers that want strictness; JS does not check).
    pub fn finish(&self) -> Result<(), WireError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }
}

/// Bytes `write_uint` writes for `n` (always minimal, like JS).
pub fn uint_len(n: u64) -> usize {
    match n {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

pub fn write_uint(out: &mut Vec<u8>, n: u64) {
    // The casts are exact: each arm's range fits the target type.
    match n {
        0..=0xfc => out.push(n as u8),
        0xfd..=0xffff => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xfe);
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        _ => {
            out.push(0xff);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

pub fn write_bool(out: &mut Vec<u8>, b: bool) {
    out.push(u8::from(b));
}

/// Bytes `write_string` writes for `s`.
pub fn string_len(s: &str) -> usize {
    uint_len(s.len() as u64) + s.len()
}

pub fn write_string(out: &mut Vec<u8>, s: &str) {
    write_uint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

pub fn write_fixed32(out: &mut Vec<u8>, bytes: &[u8; 32]) {
    out.extend_from_slice(bytes);
}

/// Protocol versions of dht-prom-client 2.1.0 and dht-prom-alias-rpc 2.1.0.
pub const MAJOR_VERSION: u64 = 1;
pub const MINOR_VERSION: u64 = 1;
pub const METRICS_REPLY_VERSION: u64 = 0;

/// JS encodes `m.major || 1`: an unset or zero version goes out as the default.
fn or_default(v: u64, default: u64) -> u64 {
    if v == 0 {
        default
    } else {
        v
    }
}

/// The version check both request decoders share (both say "RegisterRequest" in JS).
fn check_request_versions(major: u64, minor: u64) -> Result<(), WireError> {
    if major != MAJOR_VERSION {
        return Err(WireError::VersionMismatch(format!(
            "Cannot decode RegisterRequest of other major version {} (own major: {MAJOR_VERSION})",
            js_number(major)
        )));
    }
    if minor > MINOR_VERSION {
        return Err(WireError::VersionMismatch(format!(
            "Cannot decode RegisterRequest of higher minor version {} (own minor: {MINOR_VERSION})",
            js_number(minor)
        )));
    }
    Ok(())
}

/// The scraper's `metrics` request: two version numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsRequest {
    pub major: u64,
    pub minor: u64,
}

impl Default for MetricsRequest {
    fn default() -> Self {
        MetricsRequest {
            major: MAJOR_VERSION,
            minor: MINOR_VERSION,
        }
    }
}

impl MetricsRequest {
    pub fn encoded_len(&self) -> usize {
        uint_len(or_default(self.major, MAJOR_VERSION))
            + uint_len(or_default(self.minor, MINOR_VERSION))
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        write_uint(out, or_default(self.major, MAJOR_VERSION));
        write_uint(out, or_default(self.minor, MINOR_VERSION));
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Major must be 1 and minor at most 1; both are read before either is checked, as in JS.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let major = r.uint()?;
        let minor = r.uint()?;
        check_request_versions(major, minor)?;
        Ok(MetricsRequest { major, minor })
    }
}

/// The reply to `metrics`: version 0, then the metrics text or an error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsReply {
    Success { metrics: String },
    Failure { error_message: String },
}

impl MetricsReply {
    pub fn is_success(&self) -> bool {
        matches!(self, MetricsReply::Success { .. })
    }

    /// The metrics text or the error message.
    pub fn text(&self) -> &str {
        match self {
            MetricsReply::Success { metrics } => metrics,
            MetricsReply::Failure { error_message } => error_message,
        }
    }

    pub fn encoded_len(&self) -> usize {
        metrics_reply_len(self.text())
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        encode_metrics_reply_into(out, self.is_success(), self.text());
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let version = r.uint()?;
        if version > METRICS_REPLY_VERSION {
            return Err(WireError::VersionMismatch(format!(
                "Cannot decode MetricsReply of future version {} (own version: {METRICS_REPLY_VERSION})",
                js_number(version)
            )));
        }
        Ok(if r.bool()? {
            MetricsReply::Success {
                metrics: r.string()?,
            }
        } else {
            MetricsReply::Failure {
                error_message: r.string()?,
            }
        })
    }
}

/// Bytes of a MetricsReply carrying `text` (success or not), for sizing the output buffer.
pub fn metrics_reply_len(text: &str) -> usize {
    uint_len(METRICS_REPLY_VERSION) + 1 + string_len(text)
}

/// Appends a MetricsReply around a borrowed text: the scrape path copies the metrics once,
/// straight into the frame being built.
pub fn encode_metrics_reply_into(out: &mut Vec<u8>, success: bool, text: &str) {
    write_uint(out, METRICS_REPLY_VERSION);
    write_bool(out, success);
    write_string(out, text);
}

/// The alias client's `alias` request to the scraper.
#[derive(Clone, PartialEq, Eq)]
pub struct AliasRequest {
    pub major: u64,
    pub minor: u64,
    pub secret: [u8; 32],
    pub alias: String,
    pub target_public_key: [u8; 32],
    pub hostname: String,
    pub service: String,
}

// Hand-written so the shared secret never ends up in a log.
impl std::fmt::Debug for AliasRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AliasRequest")
            .field("major", &self.major)
            .field("minor", &self.minor)
            .field("secret", &"<redacted>")
            .field("alias", &self.alias)
            .field("target_public_key", &hex::encode(self.target_public_key))
            .field("hostname", &self.hostname)
            .field("service", &self.service)
            .finish()
    }
}

impl AliasRequest {
    /// A request with the current protocol versions.
    pub fn new(
        secret: [u8; 32],
        alias: impl Into<String>,
        target_public_key: [u8; 32],
        hostname: impl Into<String>,
        service: impl Into<String>,
    ) -> Self {
        AliasRequest {
            major: MAJOR_VERSION,
            minor: MINOR_VERSION,
            secret,
            alias: alias.into(),
            target_public_key,
            hostname: hostname.into(),
            service: service.into(),
        }
    }

    pub fn encoded_len(&self) -> usize {
        uint_len(or_default(self.major, MAJOR_VERSION))
            + uint_len(or_default(self.minor, MINOR_VERSION))
            + 32
            + string_len(&self.alias)
            + 32
            + string_len(&self.hostname)
            + string_len(&self.service)
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        write_uint(out, or_default(self.major, MAJOR_VERSION));
        write_uint(out, or_default(self.minor, MINOR_VERSION));
        write_fixed32(out, &self.secret);
        write_string(out, &self.alias);
        write_fixed32(out, &self.target_public_key);
        write_string(out, &self.hostname);
        write_string(out, &self.service);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Versions are checked before the fields are read, as in JS.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let major = r.uint()?;
        let minor = r.uint()?;
        check_request_versions(major, minor)?;
        Ok(AliasRequest {
            major,
            minor,
            secret: r.fixed32()?,
            alias: r.string()?,
            target_public_key: r.fixed32()?,
            hostname: r.string()?,
            service: r.string()?,
        })
    }
}

/// What the scraper answered to an alias request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasOutcome {
    /// `updated`: the alias pointed elsewhere (or nowhere) before.
    Success {
        updated: bool,
    },
    Failure {
        error_message: String,
    },
}

/// The scraper's reply to `alias`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasResponse {
    pub major: u64,
    /// Any minor is accepted (JS checks only the major here).
    pub minor: u64,
    pub outcome: AliasOutcome,
}

impl AliasResponse {
    pub fn success(updated: bool) -> Self {
        AliasResponse {
            major: MAJOR_VERSION,
            minor: MINOR_VERSION,
            outcome: AliasOutcome::Success { updated },
        }
    }

    pub fn failure(error_message: impl Into<String>) -> Self {
        AliasResponse {
            major: MAJOR_VERSION,
            minor: MINOR_VERSION,
            outcome: AliasOutcome::Failure {
                error_message: error_message.into(),
            },
        }
    }

    pub fn encoded_len(&self) -> usize {
        uint_len(or_default(self.major, MAJOR_VERSION))
            + uint_len(or_default(self.minor, MINOR_VERSION))
            + 1
            + match &self.outcome {
                AliasOutcome::Success { .. } => 1,
                AliasOutcome::Failure { error_message } => string_len(error_message),
            }
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        write_uint(out, or_default(self.major, MAJOR_VERSION));
        write_uint(out, or_default(self.minor, MINOR_VERSION));
        match &self.outcome {
            AliasOutcome::Success { updated } => {
                write_bool(out, true);
                write_bool(out, *updated);
            }
            AliasOutcome::Failure { error_message } => {
                write_bool(out, false);
                write_string(out, error_message);
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let major = r.uint()?;
        let minor = r.uint()?;
        if major != MAJOR_VERSION {
            // The missing ")" is in the JS source; kept so the texts match.
            return Err(WireError::VersionMismatch(format!(
                "Cannot decode AliasResp of different major version {} (own version: {MAJOR_VERSION}",
                js_number(major)
            )));
        }
        let outcome = if r.bool()? {
            AliasOutcome::Success { updated: r.bool()? }
        } else {
            AliasOutcome::Failure {
                error_message: r.string()?,
            }
        };
        Ok(AliasResponse {
            major,
            minor,
            outcome,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    fn sample_alias() -> AliasRequest {
        AliasRequest::new([7; 32], "alias-ü", [9; 32], "host", "svc")
    }

    #[test]
    fn uint_boundaries() {
        for (n, enc) in [
            (0u64, "00"),
            (0xfc, "fc"),
            (0xfd, "fd fd 00"),
            (0xffff, "fd ff ff"),
            (0x1_0000, "fe 00 00 01 00"),
            (0xffff_ffff, "fe ff ff ff ff"),
            (0x1_0000_0000, "ff 00 00 00 00 01 00 00 00"),
            (u64::MAX, "ff ff ff ff ff ff ff ff ff"),
        ] {
            let mut out = Vec::new();
            write_uint(&mut out, n);
            assert_eq!(out, h(enc), "{n}");
            assert_eq!(uint_len(n), out.len());
            assert_eq!(Reader::new(&out).uint(), Ok(n));
        }
    }

    #[test]
    fn uint_accepts_non_minimal_like_js() {
        assert_eq!(Reader::new(&h("fd 05 00")).uint(), Ok(5));
        assert_eq!(Reader::new(&h("fe 05 00 00 00")).uint(), Ok(5));
        assert_eq!(Reader::new(&h("ff 05 00 00 00 00 00 00 00")).uint(), Ok(5));
    }

    #[test]
    fn safe_uint_limit() {
        let mut max = Vec::new();
        write_uint(&mut max, MAX_SAFE_INTEGER);
        assert_eq!(Reader::new(&max).safe_uint(), Ok(MAX_SAFE_INTEGER));
        let mut over = Vec::new();
        write_uint(&mut over, MAX_SAFE_INTEGER + 1);
        assert_eq!(
            Reader::new(&over).safe_uint(),
            Err(WireError::UintOutOfRange)
        );
        assert_eq!(Reader::new(&over).uint(), Ok(MAX_SAFE_INTEGER + 1));
    }

    #[test]
    fn bool_is_true_only_for_one() {
        for b in 0..=255u8 {
            assert_eq!(Reader::new(&[b]).bool(), Ok(b == 1));
        }
        assert_eq!(Reader::new(&[]).bool(), Err(WireError::Truncated));
    }

    #[test]
    fn js_number_formats_like_js() {
        assert_eq!(js_number(1000), "1000");
        assert_eq!(js_number(MAX_SAFE_INTEGER), "9007199254740991");
        assert_eq!(js_number(MAX_SAFE_INTEGER + 2), "9007199254740992");
        assert_eq!(js_number(u64::MAX), "18446744073709552000");
        assert_eq!(js_number((1 << 63) + 2049), "9223372036854778000");
    }

    #[test]
    fn truncated_uint_prefixes() {
        for bad in ["", "fd", "fd 01", "fe 01 02 03", "ff 01 02 03 04 05 06 07"] {
            assert_eq!(
                Reader::new(&h(bad)).uint(),
                Err(WireError::Truncated),
                "{bad}"
            );
        }
    }

    #[test]
    fn huge_string_lengths_are_truncation_not_allocation() {
        for bad in [
            "ff ff ff ff ff ff ff ff 7f",
            "ff ff ff ff ff ff ff ff ff",
            "fe ff ff ff ff 61 62",
            "fd ff ff 61",
            "05 61",
        ] {
            assert_eq!(
                Reader::new(&h(bad)).str(),
                Err(WireError::Truncated),
                "{bad}"
            );
        }
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        for bad in ["01 ff", "02 c3 28", "01 e2", "03 ed a0 80"] {
            assert_eq!(
                Reader::new(&h(bad)).str(),
                Err(WireError::InvalidUtf8),
                "{bad}"
            );
        }
        assert_eq!(
            MetricsReply::decode(&h("00 01 03 61 ff 62")),
            Err(WireError::InvalidUtf8)
        );
    }

    #[test]
    fn reader_raw_and_finish() {
        let data = h("01 02 03");
        let mut r = Reader::new(&data);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.finish(), Err(WireError::TrailingBytes));
        assert_eq!(r.raw(), &[2, 3]);
        assert_eq!(r.raw(), &[] as &[u8]);
        assert_eq!(r.finish(), Ok(()));
        assert_eq!(r.take(1), Err(WireError::Truncated));
        assert_eq!(r.take(usize::MAX), Err(WireError::Truncated));
        assert_eq!(r.position(), 3);
    }

    #[test]
    fn metrics_request_versions() {
        assert_eq!(MetricsRequest::default().encode(), h("01 01"));
        assert_eq!(MetricsRequest { major: 0, minor: 0 }.encode(), h("01 01"));
        assert_eq!(
            MetricsRequest::decode(&h("01 00")),
            Ok(MetricsRequest { major: 1, minor: 0 })
        );
        assert_eq!(
            MetricsRequest::decode(&h("fd e8 03 01")),
            Err(WireError::VersionMismatch(
                "Cannot decode RegisterRequest of other major version 1000 (own major: 1)".into()
            ))
        );
        assert_eq!(
            MetricsRequest::decode(&h("01 fd e8 03"))
                .unwrap_err()
                .to_string(),
            "Cannot decode RegisterRequest of higher minor version 1000 (own minor: 1)"
        );
        // Both numbers are read before the check: truncation wins over a bad major.
        assert_eq!(MetricsRequest::decode(&h("05")), Err(WireError::Truncated));
        // Trailing bytes are ignored, as in JS.
        assert_eq!(
            MetricsRequest::decode(&h("01 01 ff")),
            Ok(MetricsRequest::default())
        );
    }

    #[test]
    fn metrics_reply_versions_and_bools() {
        assert_eq!(
            MetricsReply::decode(&h("01")).unwrap_err().to_string(),
            "Cannot decode MetricsReply of future version 1 (own version: 0)"
        );
        assert_eq!(
            MetricsReply::decode(&h("00 02 02 68 69")),
            Ok(MetricsReply::Failure {
                error_message: "hi".into()
            })
        );
    }

    #[test]
    fn metrics_reply_into_borrowed_text() {
        let text = "a 1\n".repeat(20_000); // 80 KB: 0xfe length prefix
        let mut out = Vec::with_capacity(metrics_reply_len(&text));
        let cap = out.capacity();
        encode_metrics_reply_into(&mut out, true, &text);
        assert_eq!(out.len(), metrics_reply_len(&text));
        assert_eq!(out.capacity(), cap, "pre-sized buffer must not grow");
        assert_eq!(&out[..7], &h("00 01 fe 80 38 01 00")[..]);
        assert_eq!(
            MetricsReply::decode(&out),
            Ok(MetricsReply::Success { metrics: text })
        );
    }

    #[test]
    fn alias_response_error_text_lacks_paren_like_js() {
        assert_eq!(
            AliasResponse::decode(&h("02 01 01 01"))
                .unwrap_err()
                .to_string(),
            "Cannot decode AliasResp of different major version 2 (own version: 1"
        );
        assert_eq!(
            AliasResponse::decode(&h("01 fd e8 03 01 00")),
            Ok(AliasResponse {
                major: 1,
                minor: 1000,
                outcome: AliasOutcome::Success { updated: false }
            })
        );
    }

    #[test]
    fn alias_request_debug_hides_secret() {
        let dbg = format!("{:?}", sample_alias());
        assert!(dbg.contains("<redacted>"));
        assert!(!dbg.contains("7, 7"));
        assert!(!dbg.contains("0707"));
    }

    /// Every proper prefix of a valid message is an error, never a panic.
    #[test]
    fn truncated_at_every_length() {
        type FailsOn = fn(&[u8]) -> bool;
        let cases: Vec<(Vec<u8>, FailsOn)> = vec![
            (MetricsRequest::default().encode(), |b| {
                MetricsRequest::decode(b).is_err()
            }),
            (
                MetricsReply::Success {
                    metrics: "x".repeat(300),
                }
                .encode(),
                |b| MetricsReply::decode(b).is_err(),
            ),
            (
                MetricsReply::Failure {
                    error_message: "nope".into(),
                }
                .encode(),
                |b| MetricsReply::decode(b).is_err(),
            ),
            (sample_alias().encode(), |b| {
                AliasRequest::decode(b).is_err()
            }),
            (AliasResponse::success(true).encode(), |b| {
                AliasResponse::decode(b).is_err()
            }),
            (AliasResponse::failure("Unauthorised").encode(), |b| {
                AliasResponse::decode(b).is_err()
            }),
        ];
        for (full, fails) in cases {
            for len in 0..full.len() {
                assert!(
                    fails(&full[..len]),
                    "prefix {len} of {}",
                    hex::encode(&full)
                );
            }
        }
        for len in 0..sample_alias().encode().len() {
            assert_eq!(
                AliasRequest::decode(&sample_alias().encode()[..len]),
                Err(WireError::Truncated)
            );
        }
    }

    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "\\PC{0,300}",
            proptest::collection::vec(any::<char>(), 250..260)
                .prop_map(|v| v.into_iter().collect()),
        ]
    }

    proptest! {
        #[test]
        fn uint_round_trip(n in any::<u64>()) {
            let mut out = Vec::new();
            write_uint(&mut out, n);
            prop_assert_eq!(out.len(), uint_len(n));
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.uint(), Ok(n));
            prop_assert_eq!(r.remaining(), 0);
        }

        #[test]
        fn string_round_trip(s in any_text()) {
            let mut out = Vec::new();
            write_string(&mut out, &s);
            prop_assert_eq!(out.len(), string_len(&s));
            prop_assert_eq!(Reader::new(&out).str(), Ok(s.as_str()));
        }

        #[test]
        fn metrics_request_round_trip(major in any::<u64>(), minor in any::<u64>()) {
            let req = MetricsRequest { major, minor };
            let bytes = req.encode();
            prop_assert_eq!(bytes.len(), req.encoded_len());
            let major = or_default(major, 1);
            let minor = or_default(minor, 1);
            match MetricsRequest::decode(&bytes) {
                Ok(got) => {
                    prop_assert_eq!(got, MetricsRequest { major, minor });
                    prop_assert!(major == 1 && minor <= 1);
                }
                Err(WireError::VersionMismatch(text)) => {
                    prop_assert!(major != 1 || minor > 1);
                    let shown = if major != 1 { major } else { minor };
                    prop_assert!(text.contains(&format!(" {} (own", js_number(shown))), "{}", text);
                }
                Err(other) => prop_assert!(false, "unexpected {:?}", other),
            }
        }

        #[test]
        fn metrics_reply_round_trip(success in any::<bool>(), text in any_text()) {
            let reply = if success {
                MetricsReply::Success { metrics: text.clone() }
            } else {
                MetricsReply::Failure { error_message: text.clone() }
            };
            let bytes = reply.encode();
            prop_assert_eq!(bytes.len(), reply.encoded_len());
            let mut direct = Vec::new();
            encode_metrics_reply_into(&mut direct, success, &text);
            prop_assert_eq!(&direct, &bytes);
            prop_assert_eq!(MetricsReply::decode(&bytes), Ok(reply));
        }

        #[test]
        fn large_metrics_reply_round_trip(len in 65_000usize..70_000, c in any::<char>()) {
            let text: String = std::iter::repeat_n(c, len / c.len_utf8()).collect();
            let bytes = MetricsReply::Success { metrics: text.clone() }.encode();
            prop_assert_eq!(MetricsReply::decode(&bytes), Ok(MetricsReply::Success { metrics: text }));
        }

        #[test]
        fn alias_request_round_trip(
            secret in any::<[u8; 32]>(),
            target in any::<[u8; 32]>(),
            alias in any_text(),
            hostname in any_text(),
            service in any_text(),
            minor in 0u64..=1,
        ) {
            let mut req = AliasRequest::new(secret, alias, target, hostname, service);
            req.minor = minor;
            let bytes = req.encode();
            prop_assert_eq!(bytes.len(), req.encoded_len());
            let expected = AliasRequest { minor: or_default(minor, 1), ..req };
            prop_assert_eq!(AliasRequest::decode(&bytes), Ok(expected));
        }

        #[test]
        fn alias_response_round_trip(
            minor in any::<u64>(),
            success in any::<bool>(),
            updated in any::<bool>(),
            text in any_text(),
        ) {
            let mut resp = if success { AliasResponse::success(updated) } else { AliasResponse::failure(text) };
            resp.minor = minor;
            let bytes = resp.encode();
            prop_assert_eq!(bytes.len(), resp.encoded_len());
            let expected = AliasResponse { minor: or_default(minor, 1), ..resp };
            prop_assert_eq!(AliasResponse::decode(&bytes), Ok(expected));
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = MetricsRequest::decode(&bytes);
            let _ = MetricsReply::decode(&bytes);
            let _ = AliasRequest::decode(&bytes);
            let _ = AliasResponse::decode(&bytes);
            let mut r = Reader::new(&bytes);
            while r.remaining() > 0 {
                if r.str().is_err() && r.uint().is_err() {
                    break;
                }
            }
        }

        #[test]
        fn decoders_never_panic_on_mutated_messages(
            pos in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            for mut bytes in [
                MetricsRequest::default().encode(),
                MetricsReply::Success { metrics: "up 1\n".into() }.encode(),
                sample_alias().encode(),
                AliasResponse::failure("Unauthorised").encode(),
            ] {
                let i = pos.index(bytes.len());
                bytes[i] = byte;
                bytes.truncate(cut.index(bytes.len() + 1));
                let _ = MetricsRequest::decode(&bytes);
                let _ = MetricsReply::decode(&bytes);
                let _ = AliasRequest::decode(&bytes);
                let _ = AliasResponse::decode(&bytes);
            }
        }
    }
}
