//! Token bucket rate limiting, free of clocks: callers pass the current time, so the
//! arithmetic is tested without sleeping.

use std::time::{Duration, Instant};

/// Tokens accrue at `rate` per second up to `burst`; each message spends one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A bucket with one token in it, so the first message goes at once. The burst is
    /// 10 ms worth of tokens, at least one: a sender woken late by a coarse timer catches
    /// up without bursting far above the rate.
    pub fn new(rate: f64, now: Instant) -> TokenBucket {
        let burst = (rate * 0.010).max(1.0);
        TokenBucket {
            rate,
            burst,
            tokens: 1.0,
            updated: now,
        }
    }

    /// The most tokens the bucket holds.
    pub fn burst(&self) -> f64 {
        self.burst
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.tokens.floor() as u64
    }

    /// Spends `count` tokens (no more than [`TokenBucket::available`] said).
    pub fn spend(&mut self, count: u64) {
        self.tokens = (self.tokens - count as f64).max(0.0);
    }

    /// When the next whole token will be there.
    pub fn next_token_at(&self) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        self.updated + Duration::from_secs_f64(missing / self.rate)
    }

    fn refill(&mut self, now: Instant) {
        if let Some(elapsed) = now.checked_duration_since(self.updated) {
            self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.burst);
            self.updated = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_message_goes_at_once_then_tokens_follow_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000.0, start);
        assert_eq!(bucket.available(start), 1);
        bucket.spend(1);
        assert_eq!(bucket.available(start), 0);
        assert_eq!(bucket.next_token_at(), start + Duration::from_millis(1));
        assert_eq!(bucket.available(start + Duration::from_micros(500)), 0);
        assert_eq!(bucket.available(start + Duration::from_millis(1)), 1);
    }

    #[test]
    fn an_idle_bucket_holds_at_most_its_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(20_000.0, start);
        assert_eq!(bucket.burst(), 200.0);
        assert_eq!(bucket.available(start + Duration::from_secs(60)), 200);
        let mut slow = TokenBucket::new(5.0, start);
        assert_eq!(slow.available(start + Duration::from_secs(60)), 1);
    }

    #[test]
    fn spending_everything_available_keeps_the_long_run_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(2_500.0, start);
        let mut sent = 0;
        let mut now = start;
        // A sender woken every 3 ms (a coarse timer) for one second.
        while now < start + Duration::from_secs(1) {
            let tokens = bucket.available(now);
            bucket.spend(tokens);
            sent += tokens;
            now += Duration::from_millis(3);
        }
        assert!((2_450..=2_550).contains(&sent), "{sent}");
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let start = Instant::now() + Duration::from_secs(1);
        let mut bucket = TokenBucket::new(100.0, start);
        bucket.spend(1);
        assert_eq!(bucket.available(start - Duration::from_millis(500)), 0);
    }
}
