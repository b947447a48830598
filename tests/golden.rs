//! Checks wire.rs and rpc.rs against tests/fixtures/golden.json, which scripts/gen-fixtures.js
//! makes with the real JS packages: every entry decodes to what JS decoded (or fails with the
//! JS error text), and encodes back to the same bytes JS produced.

use std::collections::BTreeMap;

use dht_prom_client_rs::rpc::{Request, Response, RpcCause, RpcError};
use dht_prom_client_rs::wire::{
    AliasOutcome, AliasRequest, AliasResponse, MetricsReply, MetricsRequest, WireError,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden.json");

#[test]
fn golden_fixtures() {
    let text = std::fs::read_to_string(FIXTURES).expect("read golden.json");
    let root = Json::parse(&text).expect("parse golden.json");
    let entries = root.get("entries").array();
    assert!(entries.len() > 100, "too few entries: {}", entries.len());

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for entry in entries {
        let kind = entry.get("kind").str();
        let name = entry.get("name").str();
        let ctx = format!("{kind} / {name}");
        match kind {
            "metrics_request" => metrics_request(entry, &ctx),
            "metrics_reply" => metrics_reply(entry, &ctx),
            "alias_request" => alias_request(entry, &ctx),
            "alias_response" => alias_response(entry, &ctx),
            "rpc_request" => rpc_request(entry, &ctx),
            "rpc_response" => rpc_response(entry, &ctx),
            other => panic!("unknown kind {other}"),
        }
        *counts.entry(kind.to_owned()).or_default() += 1;
    }
    for kind in [
        "metrics_request",
        "metrics_reply",
        "alias_request",
        "alias_response",
        "rpc_request",
        "rpc_response",
    ] {
        assert!(counts.get(kind).copied().unwrap_or(0) >= 5, "few {kind}");
    }
}

/// The decode result an entry expects: Ok(expect object) or Err(JS error text), and whether
/// Rust is expected to refuse input JS accepts (invalid UTF-8).
fn expected<'a>(entry: &'a Json, ctx: &str) -> Result<&'a Json, String> {
    if let Some(err) = entry.opt("error") {
        return Err(err.str().to_owned());
    }
    Ok(entry
        .opt("expect")
        .unwrap_or_else(|| panic!("{ctx}: neither expect nor error")))
}

fn rust_rejects_utf8(entry: &Json) -> bool {
    entry.opt("rust_rejects").map(Json::str) == Some("invalid-utf8")
}

/// Shared shape of the four message checks.
fn check_message<T: std::fmt::Debug>(
    entry: &Json,
    ctx: &str,
    decode: impl Fn(&[u8]) -> Result<T, WireError>,
    encode: impl Fn(&T) -> Vec<u8>,
    compare: impl Fn(&T, &Json, &str),
) {
    let bytes = hex_field(entry, "hex");
    let got = decode(&bytes);
    if rust_rejects_utf8(entry) {
        assert_eq!(got.unwrap_err(), WireError::InvalidUtf8, "{ctx}");
        return;
    }
    match (expected(entry, ctx), got) {
        (Ok(expect), Ok(value)) => {
            compare(&value, expect, ctx);
            let reencoded = hex_field(entry, "reencode_hex");
            assert_eq!(
                hex::encode(encode(&value)),
                hex::encode(reencoded),
                "{ctx}: re-encode"
            );
        }
        (Err(text), Err(err)) => assert_eq!(err.to_string(), text, "{ctx}: error text"),
        (want, got) => panic!("{ctx}: expected {want:?}, got {got:?}"),
    }
}

fn metrics_request(entry: &Json, ctx: &str) {
    check_message(
        entry,
        ctx,
        MetricsRequest::decode,
        MetricsRequest::encode,
        |v, e, ctx| {
            assert_eq!(v.major, e.get("major").u64(), "{ctx}");
            assert_eq!(v.minor, e.get("minor").u64(), "{ctx}");
        },
    );
    if let Some(input) = entry.opt("input") {
        let req = MetricsRequest {
            major: input.opt("major").map_or(0, Json::u64),
            minor: input.opt("minor").map_or(0, Json::u64),
        };
        assert_eq!(
            hex::encode(req.encode()),
            entry.get("hex").str(),
            "{ctx}: encode"
        );
    }
}

fn metrics_reply(entry: &Json, ctx: &str) {
    check_message(
        entry,
        ctx,
        MetricsReply::decode,
        MetricsReply::encode,
        |v, e, ctx| match v {
            MetricsReply::Success { metrics } => {
                assert!(e.get("success").bool(), "{ctx}");
                assert_eq!(metrics, e.get("metrics").str(), "{ctx}");
            }
            MetricsReply::Failure { error_message } => {
                assert!(!e.get("success").bool(), "{ctx}");
                assert_eq!(error_message, e.get("errorMessage").str(), "{ctx}");
            }
        },
    );
    if let Some(input) = entry.opt("input") {
        let success = input.get("success").bool();
        let text = if success {
            input.get("metrics").str()
        } else {
            input.get("errorMessage").str()
        };
        let reply = if success {
            MetricsReply::Success {
                metrics: text.to_owned(),
            }
        } else {
            MetricsReply::Failure {
                error_message: text.to_owned(),
            }
        };
        assert_eq!(
            hex::encode(reply.encode()),
            entry.get("hex").str(),
            "{ctx}: encode"
        );
        // The borrowed-text encoder the scrape path uses writes the same bytes.
        let mut out = Vec::new();
        dht_prom_client_rs::wire::encode_metrics_reply_into(&mut out, success, text);
        assert_eq!(
            hex::encode(out),
            entry.get("hex").str(),
            "{ctx}: encode_into"
        );
    }
}

fn alias_request(entry: &Json, ctx: &str) {
    check_message(
        entry,
        ctx,
        AliasRequest::decode,
        AliasRequest::encode,
        |v, e, ctx| {
            assert_eq!(v.major, e.get("major").u64(), "{ctx}");
            assert_eq!(v.minor, e.get("minor").u64(), "{ctx}");
            assert_eq!(hex::encode(v.secret), e.get("secret").str(), "{ctx}");
            assert_eq!(v.alias, e.get("alias").str(), "{ctx}");
            assert_eq!(
                hex::encode(v.target_public_key),
                e.get("targetPublicKey").str(),
                "{ctx}"
            );
            assert_eq!(v.hostname, e.get("hostname").str(), "{ctx}");
            assert_eq!(v.service, e.get("service").str(), "{ctx}");
        },
    );
    if let Some(input) = entry.opt("input") {
        let req = AliasRequest {
            major: input.opt("major").map_or(0, Json::u64),
            minor: input.opt("minor").map_or(0, Json::u64),
            secret: fixed32(input.get("secret").str()),
            alias: input.get("alias").str().to_owned(),
            target_public_key: fixed32(input.get("targetPublicKey").str()),
            hostname: input.get("hostname").str().to_owned(),
            service: input.get("service").str().to_owned(),
        };
        assert_eq!(
            hex::encode(req.encode()),
            entry.get("hex").str(),
            "{ctx}: encode"
        );
    }
}

fn alias_response(entry: &Json, ctx: &str) {
    check_message(
        entry,
        ctx,
        AliasResponse::decode,
        AliasResponse::encode,
        |v, e, ctx| {
            assert_eq!(v.major, e.get("major").u64(), "{ctx}");
            assert_eq!(v.minor, e.get("minor").u64(), "{ctx}");
            match &v.outcome {
                AliasOutcome::Success { updated } => {
                    assert!(e.get("success").bool(), "{ctx}");
                    assert_eq!(*updated, e.get("updated").bool(), "{ctx}");
                }
                AliasOutcome::Failure { error_message } => {
                    assert!(!e.get("success").bool(), "{ctx}");
                    assert_eq!(error_message, e.get("errorMessage").str(), "{ctx}");
                }
            }
        },
    );
    if let Some(input) = entry.opt("input") {
        let outcome = if input.get("success").bool() {
            AliasOutcome::Success {
                updated: input.get("updated").bool(),
            }
        } else {
            AliasOutcome::Failure {
                error_message: input.get("errorMessage").str().to_owned(),
            }
        };
        let resp = AliasResponse {
            major: input.opt("major").map_or(0, Json::u64),
            minor: input.opt("minor").map_or(0, Json::u64),
            outcome,
        };
        assert_eq!(
            hex::encode(resp.encode()),
            entry.get("hex").str(),
            "{ctx}: encode"
        );
    }
}

fn rpc_request(entry: &Json, ctx: &str) {
    let bytes = hex_field(entry, "hex");
    let got = Request::decode(&bytes);
    if rust_rejects_utf8(entry) {
        assert_eq!(got.unwrap_err(), WireError::InvalidUtf8, "{ctx}");
        return;
    }
    match (expected(entry, ctx), got) {
        (Ok(e), Ok(req)) => {
            assert_eq!(req.id, e.get("id").u64(), "{ctx}");
            assert_eq!(req.method, e.get("method").str(), "{ctx}");
            assert_eq!(hex::encode(req.value), e.get("value_hex").str(), "{ctx}");
            if entry.opt("noncanonical").is_none() {
                assert_eq!(req.encode(), bytes, "{ctx}: re-encode");
            }
        }
        (Err(text), Err(err)) => assert_eq!(err.to_string(), text, "{ctx}: error text"),
        (want, got) => panic!("{ctx}: expected {want:?}, got {got:?}"),
    }
    // Captured frames: channel 1, message type 0, then the request.
    if let Some(frame) = entry.opt("frame_hex") {
        assert_eq!(
            frame.str(),
            format!("0100{}", entry.get("hex").str()),
            "{ctx}"
        );
    }
}

fn rpc_response(entry: &Json, ctx: &str) {
    let bytes = hex_field(entry, "hex");
    let got = Response::decode(&bytes);
    let resp = match (expected(entry, ctx), got) {
        (Ok(e), Ok(resp)) => {
            assert_eq!(resp.id, e.get("id").u64(), "{ctx}");
            match &resp.result {
                Ok(value) => {
                    assert_eq!(hex::encode(value), e.get("value_hex").str(), "{ctx}");
                    assert!(e.get("error").is_null(), "{ctx}");
                }
                Err(err) => compare_js_error(err, e.get("error"), ctx),
            }
            resp
        }
        (Err(text), Err(err)) => {
            assert_eq!(err.to_string(), text, "{ctx}: error text");
            return;
        }
        (want, got) => panic!("{ctx}: expected {want:?}, got {got:?}"),
    };
    if entry.opt("noncanonical").is_none() {
        assert_eq!(
            hex::encode(resp.encode()),
            hex::encode(&bytes),
            "{ctx}: re-encode"
        );
    }
    if let Some(frame) = entry.opt("frame_hex") {
        assert_eq!(
            frame.str(),
            format!("0101{}", entry.get("hex").str()),
            "{ctx}"
        );
    }
    // What the JS requester's promise really settled with matches our JS view.
    if let Some(saw) = entry.opt("requester_saw") {
        match (&resp.result, saw.opt("error")) {
            (Err(err), Some(js)) => compare_js_error(err, js, ctx),
            (Ok(_), None) => {}
            (result, _) => panic!("{ctx}: requester saw {saw:?}, we have {result:?}"),
        }
    }
    // Server-side errors built with our constructors give the captured bytes.
    if let Some(server) = entry.opt("server") {
        if let Some(code) = server.opt("code") {
            let Err(decoded) = &resp.result else {
                panic!("{ctx}: expected an error")
            };
            let cause = decoded.cause.clone();
            let built = match code.str() {
                "UNKNOWN_METHOD" => RpcError::unknown_method(server.get("method").str()),
                "DECODE_ERROR" => RpcError::decode_error(cause.expect("cause").message),
                "REQUEST_ERROR" => RpcError::request_error(cause.expect("cause")),
                "ENCODE_ERROR" => RpcError::encode_error(cause),
                other => panic!("{ctx}: code {other}"),
            };
            let built = Response {
                id: resp.id,
                result: Err(built),
            };
            assert_eq!(
                hex::encode(built.encode()),
                hex::encode(&bytes),
                "{ctx}: constructor"
            );
        }
    }
    // Errors a JS server encoded from an Error object: `RpcError::from_js` gives the same bytes.
    if let Some(input) = entry.opt("js_error_input") {
        let err = input.get("error");
        let cause = err.opt("cause").filter(|c| !c.is_null()).map(|c| RpcCause {
            message: c.get("message").str().to_owned(),
            code: c.opt_str("code").unwrap_or_default().to_owned(),
            context: c.opt_str("context").map(str::to_owned),
        });
        let built = RpcError::from_js(err.get("message").str(), err.opt_str("code"), cause);
        let built = Response {
            id: input.get("id").u64(),
            result: Err(built),
        };
        assert_eq!(
            hex::encode(built.encode()),
            hex::encode(&bytes),
            "{ctx}: from_js"
        );
    }
}

/// Our error as a JS requester would see it.
fn compare_js_error(err: &RpcError, js: &Json, ctx: &str) {
    assert_eq!(
        err.js_message(),
        js.get("message").str(),
        "{ctx}: js message"
    );
    assert_eq!(
        err.js_code().map(|c| c.as_str()),
        js.opt_str("code"),
        "{ctx}: js code"
    );
    let js_cause = js.opt("cause").filter(|c| !c.is_null());
    match (&err.cause, js_cause) {
        (None, None) => {}
        (Some(cause), Some(jc)) => {
            assert_eq!(
                cause.message,
                jc.get("message").str(),
                "{ctx}: cause message"
            );
            // JS sets cause.code / cause.context only when non-empty.
            let code = Some(cause.code.as_str()).filter(|c| !c.is_empty());
            assert_eq!(code, jc.opt_str("code"), "{ctx}: cause code");
            let context = cause.context.as_deref().filter(|c| !c.is_empty());
            assert_eq!(context, jc.opt_str("context"), "{ctx}: cause context");
        }
        (ours, theirs) => panic!("{ctx}: cause {ours:?} vs {theirs:?}"),
    }
}

fn hex_field(entry: &Json, key: &str) -> Vec<u8> {
    hex::decode(entry.get(key).str()).expect("hex")
}

fn fixed32(s: &str) -> [u8; 32] {
    hex::decode(s).expect("hex").try_into().expect("32 bytes")
}

/// Just enough JSON for the fixture file (keeps the crate free of a serde_json dev-dependency).
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing data at {}", p.i));
        }
        Ok(v)
    }

    fn opt(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn get(&self, key: &str) -> &Json {
        self.opt(key)
            .unwrap_or_else(|| panic!("missing key {key} in {self:?}"))
    }

    /// A string field that may be absent or null.
    fn opt_str(&self, key: &str) -> Option<&str> {
        self.opt(key).filter(|v| !v.is_null()).map(Json::str)
    }

    fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    fn bool(&self) -> bool {
        match self {
            Json::Bool(b) => *b,
            other => panic!("not a bool: {other:?}"),
        }
    }

    fn u64(&self) -> u64 {
        match self {
            // Fixture numbers are exact integers (JS numbers up to 2^53).
            Json::Number(n) if n.fract() == 0.0 && *n >= 0.0 && *n <= 9_007_199_254_740_991.0 => {
                *n as u64
            }
            other => panic!("not a safe uint: {other:?}"),
        }
    }

    fn array(&self) -> &[Json] {
        match self {
            Json::Array(items) => items,
            other => panic!("not an array: {other:?}"),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, lit: &str) -> Result<(), String> {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(format!("expected {lit} at {}", self.i))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.peek().ok_or("unexpected end")? {
            b'{' => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Json::Object(fields));
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.ws();
                    self.eat(":")?;
                    fields.push((key, self.value()?));
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Object(fields));
                        }
                        _ => return Err(format!("bad object at {}", self.i)),
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Json::Array(items));
                }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Array(items));
                        }
                        _ => return Err(format!("bad array at {}", self.i)),
                    }
                }
            }
            b'"' => Ok(Json::Str(self.string()?)),
            b't' => self.eat("true").map(|_| Json::Bool(true)),
            b'f' => self.eat("false").map(|_| Json::Bool(false)),
            b'n' => self.eat("null").map(|_| Json::Null),
            _ => {
                let start = self.i;
                while matches!(
                    self.peek(),
                    Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                ) {
                    self.i += 1;
                }
                let text =
                    std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
                text.parse()
                    .map(Json::Number)
                    .map_err(|_| format!("bad number {text:?} at {start}"))
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self.s.get(self.i..self.i + 4).ok_or("short \\u escape")?;
        self.i += 4;
        let digits = std::str::from_utf8(digits).map_err(|e| e.to_string())?;
        u32::from_str_radix(digits, 16).map_err(|e| e.to_string())
    }

    fn string(&mut self) -> Result<String, String> {
        self.eat("\"")?;
        let mut out = Vec::new();
        loop {
            let b = self.peek().ok_or("unterminated string")?;
            self.i += 1;
            match b {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let e = self.peek().ok_or("bad escape")?;
                    self.i += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xd800..0xdc00).contains(&hi) {
                                self.eat("\\u")?;
                                let lo = self.hex4()?;
                                0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                            } else {
                                hi
                            };
                            // JSON.stringify escapes lone surrogates; the fixtures have none.
                            char::from_u32(code).ok_or("lone surrogate")?
                        }
                        _ => return Err(format!("bad escape at {}", self.i)),
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                _ => out.push(b),
            }
        }
    }
}
