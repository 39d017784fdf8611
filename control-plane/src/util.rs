//! Small helpers several modules share.

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A random response id with `prefix` (`chatcmpl-`, `cmpl-`).
pub fn response_id(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::random::<u128>())
}
