//! What the gateway measures of each upstream: requests in flight, and moving averages
//! (EWMA) of time to first token and decode speed, which the router's latency estimate reads.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Fewest tokens of an answer whose decode speed is measured.
pub const MIN_DECODE_TOKENS: usize = 8;
/// Weight of a new sample in the moving averages.
const EWMA_ALPHA: f64 = 0.2;
/// Time to first token assumed before the first measurement (seconds).
pub const DEFAULT_TTFT_S: f64 = 0.25;
/// Decode speed assumed before the first measurement (tokens per second per request).
pub const DEFAULT_TOK_S: f64 = 50.0;

#[derive(Debug, Default)]
struct Averages {
    ttft_s: Option<f64>,
    tok_s: Option<f64>,
}

/// Live measurements of one upstream.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    in_flight: AtomicUsize,
    averages: Mutex<Averages>,
}

impl UpstreamStats {
    /// Requests the gateway has in flight there.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight (until [`UpstreamStats::end`]).
    pub fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request no longer in flight.
    pub fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// The measured time to first token (seconds), or the default.
    pub fn ttft_s(&self) -> f64 {
        self.lock().ttft_s.unwrap_or(DEFAULT_TTFT_S)
    }

    /// The measured decode speed per request (tokens per second), or the default.
    pub fn tok_s(&self) -> f64 {
        self.lock().tok_s.unwrap_or(DEFAULT_TOK_S)
    }

    /// The measured time to first token and decode speed, where measured.
    pub fn measured(&self) -> (Option<f64>, Option<f64>) {
        let a = self.lock();
        (a.ttft_s, a.tok_s)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Averages> {
        self.averages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a time to first token.
    pub fn observe_ttft(&self, ttft: Duration) {
        let mut a = self.lock();
        a.ttft_s = Some(ewma(a.ttft_s, ttft.as_secs_f64()));
    }

    /// Records a decode: `tokens` after the first one, in `time` (answers shorter than
    /// [`MIN_DECODE_TOKENS`] say too little about the speed and are skipped).
    pub fn observe_decode(&self, tokens: usize, time: Duration) {
        if tokens < MIN_DECODE_TOKENS || time.is_zero() {
            return;
        }
        let rate = (tokens - 1) as f64 / time.as_secs_f64();
        let mut a = self.lock();
        a.tok_s = Some(ewma(a.tok_s, rate));
    }
}

fn ewma(old: Option<f64>, sample: f64) -> f64 {
    match old {
        Some(o) => o + EWMA_ALPHA * (sample - o),
        None => sample,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_move_towards_samples_and_in_flight_counts() {
        let s = UpstreamStats::default();
        assert_eq!(s.ttft_s(), DEFAULT_TTFT_S);
        s.observe_ttft(Duration::from_millis(100));
        assert!((s.ttft_s() - 0.1).abs() < 1e-9);
        s.observe_ttft(Duration::from_millis(200));
        assert!((s.ttft_s() - 0.12).abs() < 1e-9);
        s.observe_decode(11, Duration::from_millis(100));
        assert!((s.tok_s() - 100.0).abs() < 1e-6);
        s.begin();
        s.begin();
        assert_eq!(s.in_flight(), 2);
        s.end();
        s.end();
        assert_eq!(s.in_flight(), 0);
    }
}
