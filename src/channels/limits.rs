//! Outbound rate limits: how fast Herald sends to a provider, per tenant or per relay.
//! A message over the limit waits for its turn rather than failing.

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::time::Duration;

/// A limit in messages per second per key; `0` is no limit.
pub struct OutboundLimit {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
}

impl OutboundLimit {
    /// `per_second` messages a second for each key, evenly spaced: a provider that counts
    /// per second never sees a burst above the rate.
    pub fn per_second(per_second: u32) -> Self {
        let quota = NonZeroU32::new(per_second).and_then(|rate| {
            Quota::with_period(Duration::from_secs(1) / rate.get())
                .map(|quota| quota.allow_burst(NonZeroU32::MIN))
        });
        OutboundLimit {
            limiter: quota.map(RateLimiter::keyed),
        }
    }

    /// Waits until `key` may send one more message.
    pub async fn wait(&self, key: &str) {
        if let Some(limiter) = &self.limiter {
            limiter.until_key_ready(&key.to_owned()).await;
            // Keys not seen for a while are dropped, so that memory stays bounded.
            if limiter.len() > 4096 {
                limiter.retain_recent();
            }
        }
    }
}
