//! protomux-rpc request and response messages (the payload of a channel message) on
//! arbitrary bytes: no panic, ids within what JS accepts, and no allocation beyond copies
//! of the input.
#![no_main]

use dht_prom_client_rs::rpc::{
    Request, Response, RpcMessage, MAX_ID, REQUEST_MESSAGE, RESPONSE_MESSAGE,
};
use fuzz_support::{within_budget, Budget};
use libfuzzer_sys::fuzz_target;

// An error response copies its strings out of the input; js_message and Display build
// "CODE: message" from them.
const BUDGET: Budget = Budget::new(1024, 4);

fuzz_target!(|data: &[u8]| {
    within_budget(data.len(), BUDGET, || {
        match Request::decode(data) {
            Ok(request) => {
                assert!(request.id <= MAX_ID);
                assert!(request.method.len() + request.value.len() < data.len());
                assert_eq!(request.is_event(), request.id == 0);
            }
            Err(e) => drop(e.to_string()),
        }
        match Response::decode(data) {
            Ok(response) => {
                assert!(response.id <= MAX_ID);
                if let Err(error) = &response.result {
                    // What the requester turns a remote error into.
                    drop(error.js_message());
                    drop(error.to_string());
                    assert!(error.js_code().is_none_or(|code| code.is_remote()));
                    drop(std::error::Error::source(error).map(ToString::to_string));
                }
            }
            Err(e) => drop(e.to_string()),
        }
        // The channel hands over any message type; only 0 and 1 mean something.
        for message_type in [REQUEST_MESSAGE, RESPONSE_MESSAGE, 2, u64::MAX] {
            if let Ok(Some(message)) = RpcMessage::decode(message_type, data) {
                assert_eq!(message.message_type(), message_type);
            }
        }
    });
});
