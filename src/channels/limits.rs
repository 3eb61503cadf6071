//! Outbound rate limits: how fast Herald sends to a provider, per tenant or per relay.
//! A message over the limit waits for its turn rather than failing.

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;

/// A limit in messages per second per key; `0` is no limit.
pub struct OutboundLimit {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
}

impl OutboundLimit {
    /// `per_second` messages a second for each key, with no burst beyond it.
    pub fn per_second(per_second: u32) -> Self {
        OutboundLimit {
            limiter: NonZeroU32::new(per_second)
                .map(|rate| RateLimiter::keyed(Quota::per_second(rate))),
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
