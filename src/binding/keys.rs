use napi::bindgen_prelude::{Buffer, Either};
use napi_derive::napi;

use super::error::{key_error, ErrorCode};
use crate::keys::{Key, KeyPair};

/// Decodes a 32-byte key or secret given as a 32-byte Buffer/Uint8Array, a 64-char hex
/// string or a 52-char z32 string (as `hypercore-id-encoding`). Throws with code
/// `ERR_INVALID_KEY` and a message that says what was wrong.
#[napi]
pub fn decode_key(input: Either<Buffer, String>) -> napi::Result<Buffer, ErrorCode> {
    Ok(parse_key(&input)?.0.to_vec().into())
}

/// Encodes a 32-byte key as z32 (`hypercore-id-encoding.normalize`).
#[napi]
pub fn normalize_key(input: Either<Buffer, String>) -> napi::Result<String, ErrorCode> {
    Ok(parse_key(&input)?.to_z32())
}

#[napi(object)]
pub struct JsKeyPair {
    pub public_key: Buffer,
    pub secret_key: Buffer,
}

/// A fresh ed25519 key pair, or the one derived from a 32-byte seed (as `HyperDHT.keyPair`).
#[napi]
pub fn key_pair(seed: Option<Buffer>) -> napi::Result<JsKeyPair, ErrorCode> {
    let pair = match seed {
        Some(seed) => KeyPair::from_seed(Key::from_bytes(&seed).map_err(key_error)?.0),
        None => KeyPair::generate(),
    };
    Ok(JsKeyPair {
        public_key: pair.public_key.0.to_vec().into(),
        secret_key: pair.secret_key.to_vec().into(),
    })
}

/// Shared by every entry point that takes a key from JS.
pub fn parse_key(input: &Either<Buffer, String>) -> napi::Result<Key, ErrorCode> {
    match input {
        Either::A(bytes) => Key::from_bytes(bytes),
        Either::B(text) => Key::parse_str(text),
    }
    .map_err(key_error)
}
