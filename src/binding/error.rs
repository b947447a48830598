//! The one place where core errors become JS errors. napi-rs puts the error's status
//! string in the JS error's `code`, so each failure gets a stable code users can branch on.

use std::time::Duration;

use crate::keys::KeyError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidKey,
    InvalidArgument,
    Node,
    Listen,
    Napi(napi::Status),
}

impl AsRef<str> for ErrorCode {
    fn as_ref(&self) -> &str {
        match self {
            ErrorCode::InvalidKey => "ERR_INVALID_KEY",
            ErrorCode::InvalidArgument => "ERR_INVALID_ARG_VALUE",
            ErrorCode::Node => "ERR_DHT_NODE",
            ErrorCode::Listen => "ERR_LISTEN",
            ErrorCode::Napi(status) => status.as_ref(),
        }
    }
}

// napi-rs turns its own failures (argument conversion and the like) into this type.
impl From<napi::Status> for ErrorCode {
    fn from(status: napi::Status) -> Self {
        ErrorCode::Napi(status)
    }
}

pub fn core_error(code: ErrorCode, message: impl Into<String>) -> napi::Error<ErrorCode> {
    napi::Error::new(code, message.into())
}

pub fn key_error(err: KeyError) -> napi::Error<ErrorCode> {
    core_error(ErrorCode::InvalidKey, err.to_string())
}

/// Async napi functions can only reject with a plain `napi::Error`; keep the message and
/// the closest status (the facade validates arguments before it calls them).
pub fn into_async_error(err: napi::Error<ErrorCode>) -> napi::Error {
    let status = match err.status {
        ErrorCode::InvalidKey | ErrorCode::InvalidArgument => napi::Status::InvalidArg,
        ErrorCode::Napi(status) => status,
        ErrorCode::Node | ErrorCode::Listen => napi::Status::GenericFailure,
    };
    napi::Error::new(status, err.reason.clone())
}

/// A duration given in milliseconds from JS: positive and finite, else an error naming it.
pub fn positive_millis(ms: f64, name: &str) -> napi::Result<Duration, ErrorCode> {
    if !(ms.is_finite() && ms > 0.0) {
        return Err(core_error(ErrorCode::InvalidArgument, format!("{name} must be a positive finite number")));
    }
    // Clamped below Duration's range, so from_secs_f64 cannot panic.
    Ok(Duration::from_secs_f64((ms / 1000.0).min(1e10)))
}
