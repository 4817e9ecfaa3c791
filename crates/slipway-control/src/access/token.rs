//! Token values: `slp_<id>_<secret>`, where the id (16 hex characters) names the token in
//! the store and the secret is 256 random bits (64 hex characters). The store keeps the
//! SHA-256 of the whole value, never the value; a presented value is found by its id and
//! compared by hash in constant time (`subtle`). A random 256-bit secret has no dictionary
//! to slow down, so a plain hash is enough (argon2 is for human passwords, and would cost
//! tens of milliseconds per request).

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const PREFIX: &str = "slp_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// A token's value. `Debug` never prints it; it is printed once, by `token create`.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenValue(String);

impl TokenValue {
    /// A fresh value from the operating system's random source.
    ///
    /// # Errors
    /// No randomness available (a broken sandbox).
    pub fn generate() -> Result<TokenValue, String> {
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::fill(&mut id)
            .and_then(|()| getrandom::fill(&mut secret))
            .map_err(|e| format!("cannot get random bytes for a token: {e}"))?;
        Ok(TokenValue::from_parts(&id, &secret))
    }

    /// The value made of these bytes.
    pub fn from_parts(id: &[u8; ID_BYTES], secret: &[u8; SECRET_BYTES]) -> TokenValue {
        TokenValue(format!(
            "{PREFIX}{}_{}",
            hex::encode(id),
            hex::encode(secret)
        ))
    }

    /// The id inside a presented value, if it has the shape of one.
    pub fn id_of(presented: &str) -> Option<&str> {
        let rest = presented.strip_prefix(PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        (hex(id, 2 * ID_BYTES) && hex(secret, 2 * SECRET_BYTES)).then_some(id)
    }

    pub fn id(&self) -> &str {
        TokenValue::id_of(&self.0).unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the store keeps.
    pub fn hash(&self) -> Vec<u8> {
        hash(&self.0)
    }
}

impl fmt::Debug for TokenValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenValue(<redacted>)")
    }
}

/// The SHA-256 of a value.
pub fn hash(value: &str) -> Vec<u8> {
    Sha256::digest(value.as_bytes()).to_vec()
}

/// Whether `presented` hashes to `stored`, compared in constant time.
pub fn matches(presented: &str, stored: &[u8]) -> bool {
    hash(presented).ct_eq(stored).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_has_its_id_and_secret_in_hex_and_only_its_whole_hash_matches() {
        let v = TokenValue::from_parts(&[0xab; 8], &[0x01; 32]);
        assert_eq!(v.as_str().len(), 4 + 16 + 1 + 64);
        assert!(v.as_str().starts_with("slp_abababababababab_0101"));
        assert_eq!(v.id(), "abababababababab");
        assert_eq!(format!("{v:?}"), "TokenValue(<redacted>)");
        let stored = v.hash();
        assert!(matches(v.as_str(), &stored));
        let mut wrong = v.as_str().to_owned();
        wrong.pop();
        wrong.push('2');
        assert!(!matches(&wrong, &stored));
        assert!(!matches(&v.as_str()[..80], &stored));
        assert!(!matches(v.as_str(), &stored[..31]));
    }

    #[test]
    fn only_well_formed_values_have_an_id() {
        let v = TokenValue::generate().unwrap();
        assert_eq!(TokenValue::id_of(v.as_str()), Some(v.id()));
        assert_ne!(v, TokenValue::generate().unwrap());
        for bad in [
            "",
            "slp_",
            "slp_abababababababab",
            "slp_abababababababab_01",
            "slp_ABABABABABABABAB_0101010101010101010101010101010101010101010101010101010101010101",
            "xyz_abababababababab_0101010101010101010101010101010101010101010101010101010101010101",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(TokenValue::id_of(bad), None, "{bad}");
        }
    }
}
