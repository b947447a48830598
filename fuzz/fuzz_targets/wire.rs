//! The four dht-prom-client / dht-prom-alias-rpc messages and the compact-encoding reader
//! under them, on arbitrary bytes: no panic, and nothing allocated beyond a copy of the input.
#![no_main]

use dht_prom_client_rs::wire::{
    AliasOutcome, AliasRequest, AliasResponse, MetricsReply, MetricsRequest, Reader, MAJOR_VERSION,
    MAX_SAFE_INTEGER, MINOR_VERSION,
};
use fuzz_support::{debug_digest, within_budget, Budget};
use libfuzzer_sys::fuzz_target;

// Decoded strings are copies of input bytes (at most the input, once each), the alias
// request is cloned once for the Debug check; error texts are short formats.
const BUDGET: Budget = Budget::new(1024, 2);

fuzz_target!(|data: &[u8]| {
    within_budget(data.len(), BUDGET, || {
        messages(data);
        reader_walk(data);
    });
});

fn messages(data: &[u8]) {
    match MetricsRequest::decode(data) {
        Ok(m) => assert!(
            m.major == MAJOR_VERSION && m.minor <= MINOR_VERSION,
            "{m:?}"
        ),
        Err(e) => drop(e.to_string()),
    }
    match MetricsReply::decode(data) {
        Ok(m) => assert!(m.text().len() <= data.len()),
        Err(e) => drop(e.to_string()),
    }
    match AliasRequest::decode(data) {
        Ok(m) => {
            assert!(m.major == MAJOR_VERSION && m.minor <= MINOR_VERSION);
            assert!(m.alias.len() + m.hostname.len() + m.service.len() + 64 <= data.len());
            // Debug is what could reach a log: it must not depend on the secret.
            let without_secret = AliasRequest {
                secret: [0; 32],
                ..m.clone()
            };
            assert_eq!(debug_digest(&m), debug_digest(&without_secret));
        }
        Err(e) => drop(e.to_string()),
    }
    match AliasResponse::decode(data) {
        Ok(m) => {
            assert_eq!(m.major, MAJOR_VERSION);
            if let AliasOutcome::Failure { error_message } = &m.outcome {
                assert!(error_message.len() <= data.len());
            }
        }
        Err(e) => drop(e.to_string()),
    }
}

/// Drives the primitives in an order the input picks: one byte chooses the next read.
fn reader_walk(data: &[u8]) {
    let mut r = Reader::new(data);
    while r.remaining() > 0 {
        let Ok(op) = r.u8() else {
            unreachable!("a byte remains")
        };
        let before = r.position();
        let ok = match op % 8 {
            0 => r.uint().is_ok(),
            1 => r.safe_uint().is_ok_and(|n| n <= MAX_SAFE_INTEGER),
            2 => r.bool().is_ok(),
            3 => r.fixed32().is_ok(),
            4 => r.str().is_ok_and(|s| s.len() <= data.len()),
            5 => r.string().is_ok_and(|s| s.len() <= data.len()),
            6 => {
                let n = r.uint().map(|n| usize::try_from(n).unwrap_or(usize::MAX));
                n.and_then(|n| r.take(n)).is_ok()
            }
            _ => {
                let finished = r.finish().is_ok();
                let rest = r.raw();
                assert_eq!(finished, rest.is_empty());
                assert!(r.finish().is_ok());
                true
            }
        };
        assert!(r.position() <= data.len() && r.position() >= before);
        assert_eq!(r.remaining(), data.len() - r.position());
        if !ok {
            break;
        }
    }
}
