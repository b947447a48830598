//! 32-byte keys and secrets in the forms `hypercore-id-encoding` accepts: raw bytes,
//! 64-char hex, 52-char z32 (optionally behind `pear://`), plus ed25519 key pairs.

use thiserror::Error;

/// Length of a public key or shared secret.
pub const KEY_LEN: usize = 32;
/// Length of an ed25519 secret key in libsodium layout (seed ‖ public key).
pub const SECRET_KEY_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("must be 32 bytes, got {0} bytes")]
    WrongByteLength(usize),
    #[error("must be a 64-char hex or 52-char z32 string, got {0} chars")]
    WrongStringLength(usize),
    #[error("is not valid hex")]
    InvalidHex,
    #[error("is not valid z32")]
    InvalidZ32,
    #[error("secret key must be 64 bytes, got {0} bytes")]
    WrongSecretKeyLength(usize),
    #[error("secret key does not belong to the public key")]
    KeyPairMismatch,
}

/// A 32-byte public key or shared secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub [u8; KEY_LEN]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.to_hex())
    }
}

impl Key {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| KeyError::WrongByteLength(bytes.len()))?;
        Ok(Key(arr))
    }

    /// Parses hex or z32, the string forms `hypercore-id-encoding.decode` accepts.
    pub fn parse_str(text: &str) -> Result<Self, KeyError> {
        // hypercore-id-encoding strips a `pear://` link down to its key.
        let text = match text.strip_prefix("pear://") {
            Some(rest) => rest.split('/').next().unwrap_or(""),
            None => text,
        };
        match text.len() {
            64 => {
                let bytes = hex::decode(text).map_err(|_| KeyError::InvalidHex)?;
                Self::from_bytes(&bytes)
            }
            52 => {
                let bytes = z32::decode(text.as_bytes()).map_err(|_| KeyError::InvalidZ32)?;
                // 52 z32 chars carry 260 bits: the crate may hand back a padding byte.
                let key = bytes.get(..KEY_LEN).ok_or(KeyError::InvalidZ32)?;
                let parsed = Self::from_bytes(key)?;
                // Reject strings that only decode by ignoring non-zero padding bits,
                // so that every key has exactly one z32 spelling.
                if z32::encode(&parsed.0) != text {
                    return Err(KeyError::InvalidZ32);
                }
                Ok(parsed)
            }
            n => Err(KeyError::WrongStringLength(n)),
        }
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The form `hypercore-id-encoding.normalize` prints (z32), used in log lines.
    pub fn to_z32(&self) -> String {
        z32::encode(&self.0)
    }
}

/// An ed25519 key pair: the public key and the 64-byte libsodium secret key.
#[derive(Clone)]
pub struct KeyPair {
    pub public_key: Key,
    pub secret_key: [u8; SECRET_KEY_LEN],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("KeyPair").field("public_key", &self.public_key).finish_non_exhaustive()
    }
}

impl KeyPair {
    pub fn generate() -> Self {
        Self::from_dht(peeroxide_dht::hyperdht::KeyPair::generate())
    }

    pub fn from_seed(seed: [u8; KEY_LEN]) -> Self {
        Self::from_dht(peeroxide_dht::hyperdht::KeyPair::from_seed(seed))
    }

    /// Builds a key pair from a 64-byte secret key, checking it against `public_key`.
    pub fn from_parts(public_key: &[u8], secret_key: &[u8]) -> Result<Self, KeyError> {
        let public_key = Key::from_bytes(public_key)?;
        let from_secret = Self::from_secret_key(secret_key)?;
        if from_secret.public_key != public_key {
            return Err(KeyError::KeyPairMismatch);
        }
        Ok(from_secret)
    }

    /// Derives the key pair from a 64-byte libsodium secret key (its first half is the seed).
    pub fn from_secret_key(secret_key: &[u8]) -> Result<Self, KeyError> {
        if secret_key.len() != SECRET_KEY_LEN {
            return Err(KeyError::WrongSecretKeyLength(secret_key.len()));
        }
        let mut seed = [0u8; KEY_LEN];
        seed.copy_from_slice(&secret_key[..KEY_LEN]);
        let pair = Self::from_seed(seed);
        if pair.secret_key[..] != secret_key[..] {
            return Err(KeyError::KeyPairMismatch);
        }
        Ok(pair)
    }

    pub fn to_dht(&self) -> peeroxide_dht::hyperdht::KeyPair {
        let mut seed = [0u8; KEY_LEN];
        seed.copy_from_slice(&self.secret_key[..KEY_LEN]);
        peeroxide_dht::hyperdht::KeyPair::from_seed(seed)
    }

    fn from_dht(pair: peeroxide_dht::hyperdht::KeyPair) -> Self {
        Self { public_key: Key(pair.public_key), secret_key: pair.secret_key }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_hex_and_z32_to_the_same_key() {
        let key = Key::parse_str(HEX).expect("valid hex");
        assert_eq!(key.to_hex(), HEX);
        let z = key.to_z32();
        assert_eq!(z.len(), 52);
        assert_eq!(Key::parse_str(&z), Ok(key));
        assert_eq!(Key::parse_str(&format!("pear://{z}/some/path")), Ok(key));
        assert_eq!(Key::parse_str(&HEX.to_uppercase()), Ok(key));
    }

    #[test]
    fn names_what_is_wrong() {
        assert_eq!(Key::from_bytes(&[0; 31]), Err(KeyError::WrongByteLength(31)));
        assert_eq!(Key::parse_str("abc"), Err(KeyError::WrongStringLength(3)));
        assert_eq!(Key::parse_str(&"g".repeat(64)), Err(KeyError::InvalidHex));
        // 'l' and 'v' are not in the z32 alphabet.
        assert_eq!(Key::parse_str(&"l".repeat(52)), Err(KeyError::InvalidZ32));
        // A multi-byte character makes a 64-byte string that is not hex; never a panic.
        assert!(Key::parse_str(&format!("é{}", &HEX[2..])).is_err());
        assert_eq!(
            Key::parse_str(&"é".repeat(26)),
            Err(KeyError::InvalidZ32),
            "52 bytes of non-ASCII are not z32"
        );
    }

    #[test]
    fn rejects_z32_with_nonzero_padding_bits() {
        let z = Key([0xff; 32]).to_z32();
        // The last char holds 4 padding bits; 'y' (value 0) stays the canonical one.
        let mut tampered = z.clone();
        tampered.pop();
        tampered.push('9');
        assert_ne!(tampered, z);
        assert_eq!(Key::parse_str(&tampered), Err(KeyError::InvalidZ32));
    }

    #[test]
    fn key_pair_round_trip_and_mismatch() {
        let pair = KeyPair::generate();
        let again = KeyPair::from_parts(&pair.public_key.0, &pair.secret_key).expect("matching pair");
        assert_eq!(again.public_key, pair.public_key);
        let other = KeyPair::generate();
        assert_eq!(
            KeyPair::from_parts(&other.public_key.0, &pair.secret_key).err(),
            Some(KeyError::KeyPairMismatch)
        );
        assert_eq!(
            KeyPair::from_secret_key(&[1; 63]).err(),
            Some(KeyError::WrongSecretKeyLength(63))
        );
        assert_eq!(pair.to_dht().public_key, pair.public_key.0);
    }

    proptest! {
        #[test]
        fn any_key_round_trips(bytes in proptest::array::uniform32(any::<u8>())) {
            let key = Key(bytes);
            prop_assert_eq!(Key::parse_str(&key.to_hex()), Ok(key));
            prop_assert_eq!(Key::parse_str(&key.to_z32()), Ok(key));
        }

        #[test]
        fn arbitrary_strings_never_panic(text in ".{0,80}") {
            let _ = Key::parse_str(&text);
        }
    }
}
