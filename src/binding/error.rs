//! The one place where core errors become JS errors. Each JS error carries a `code`
//! (napi-rs puts the status string there), so callers can branch without parsing text.

use crate::keys::KeyError;

/// Codes the facade and users can rely on.
pub const INVALID_KEY: &str = "ERR_INVALID_KEY";


pub fn key_error(err: KeyError) -> napi::Error<&'static str> {
    napi::Error::new(INVALID_KEY, err.to_string())
}
