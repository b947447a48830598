//! The key parser (32 raw bytes, 64-char hex, 52-char z32, `pear://` links) on arbitrary
//! input: no panic, every accepted spelling is one of the key's own, and small allocations.
#![no_main]

use dht_prom_client_rs::keys::{Key, KeyError, KEY_LEN};
use fuzz_support::{within_budget, Budget};
use libfuzzer_sys::fuzz_target;

// Hex and z32 decoding allocate the 32-byte key and a spelling or two of it.
const BUDGET: Budget = Budget::new(1024, 1);

fuzz_target!(|data: &[u8]| {
    within_budget(data.len(), BUDGET, || {
        match Key::from_bytes(data) {
            Ok(key) => assert_eq!(&key.0[..], data),
            Err(err) => assert_eq!(err, KeyError::WrongByteLength(data.len())),
        }
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        match Key::parse_str(text) {
            Ok(key) => {
                let bare = text
                    .strip_prefix("pear://")
                    .map_or(text, |rest| rest.split('/').next().unwrap_or(""));
                // Hex in either case, z32 only in its one canonical spelling.
                assert!(
                    bare.eq_ignore_ascii_case(&key.to_hex()) || bare == key.to_z32(),
                    "{text:?} -> {key:?}"
                );
                assert_eq!(key.0.len(), KEY_LEN);
            }
            Err(err) => drop(err.to_string()),
        }
    });
});
