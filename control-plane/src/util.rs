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

/// A request id with `prefix` that sorts by time: milliseconds since the epoch, then 80 random
/// bits (records keyed by it are appended to an index rather than scattered through it).
pub fn request_id(prefix: &str) -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let random = rand::random::<u128>() & ((1u128 << 80) - 1);
    format!("{prefix}{:012x}{random:020x}", ms & 0xffff_ffff_ffff)
}
