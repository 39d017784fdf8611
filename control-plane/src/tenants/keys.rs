//! API keys: random and high-entropy, shown once, stored as a SHA-256 hash beside a short
//! lookup prefix, and compared in constant time.

use rand::RngExt;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What every key starts with.
pub const KEY_SCHEME: &str = "tdm-";
/// Characters after the scheme that are stored in clear to find the key.
const LOOKUP_CHARS: usize = 12;
/// Secret characters after those (62^40: about 238 bits).
const SECRET_CHARS: usize = 40;

/// A new key: (the key, its lookup prefix, its hash).
pub fn generate() -> (String, String, String) {
    let mut rng = rand::rng();
    let body: String = (0..LOOKUP_CHARS + SECRET_CHARS)
        .map(|_| char::from(rng.sample(Alphanumeric)))
        .collect();
    let key = format!("{KEY_SCHEME}{body}");
    let prefix = lookup_prefix(&key).unwrap_or_default().to_owned();
    let hash = hash(&key);
    (key, prefix, hash)
}

/// The lookup prefix of something presented as a key, if it has a key's shape.
pub fn lookup_prefix(key: &str) -> Option<&str> {
    let body = key.strip_prefix(KEY_SCHEME)?;
    (body.len() == LOOKUP_CHARS + SECRET_CHARS && body.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| &key[..KEY_SCHEME.len() + LOOKUP_CHARS])
}

/// The stored hash of a key (hex SHA-256; the key's entropy makes a slow hash unnecessary).
pub fn hash(key: &str) -> String {
    let d = Sha256::digest(key.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `key` hashes to `stored`, in time independent of where they differ.
pub fn verify(key: &str, stored: &str) -> bool {
    hash(key).as_bytes().ct_eq(stored.as_bytes()).into()
}

/// A random id with a prefix (`key_`, `ten_`).
pub fn new_id(prefix: &str) -> String {
    let mut rng = rand::rng();
    let body: String = (0..16)
        .map(|_| char::from(rng.sample(Alphanumeric)).to_ascii_lowercase())
        .collect();
    format!("{prefix}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_verify_only_against_their_hash() {
        let (key, prefix, h) = generate();
        assert!(key.starts_with(&prefix) && prefix.starts_with(KEY_SCHEME));
        assert_eq!(lookup_prefix(&key), Some(prefix.as_str()));
        assert!(verify(&key, &h));
        let (other, _, _) = generate();
        assert_ne!(key, other);
        assert!(!verify(&other, &h));
        assert_eq!(lookup_prefix("tdm-short"), None);
        assert_eq!(lookup_prefix("sk-abc"), None);
        let mut bad = key.clone();
        bad.pop();
        bad.push('!');
        assert_eq!(lookup_prefix(&bad), None);
    }
}
