//! Per-tenant ingress rate limits (GCRA, through governor): events per second with a
//! burst, the same for every tenant unless configuration gives a tenant its own. Idle
//! tenants' state is evicted, so memory stays bounded however many tenants there are.

use crate::domain::TenantId;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

/// Per-tenant ingress rate limits, as configured (`rate_limits.*`).
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// The limit of every tenant without one of its own.
    pub default: RateLimit,
    /// Tenants with limits of their own.
    pub tenants: HashMap<TenantId, RateLimit>,
}

/// One rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Events per second.
    pub per_second: NonZeroU32,
    /// Events at once above the rate: never fewer than a second's worth.
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// `per_second` events a second, `burst` at once (raised to `per_second` if lower).
    pub fn new(per_second: NonZeroU32, burst: u32) -> Self {
        RateLimit {
            per_second,
            burst: per_second.max(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN)),
        }
    }
}

fn quota(limit: &RateLimit) -> Quota {
    Quota::per_second(limit.per_second).allow_burst(limit.burst)
}

/// Why events were not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the rate: they pass after this long.
    Wait(Duration),
    /// More events at once than the tenant's burst: they can never pass together.
    OverBurst {
        /// The tenant's burst.
        burst: u32,
    },
}

/// The limits of every tenant.
pub struct RateLimits {
    shared: DefaultKeyedRateLimiter<TenantId>,
    own: HashMap<TenantId, (DefaultDirectRateLimiter, NonZeroU32)>,
    default_burst: NonZeroU32,
}

impl RateLimits {
    /// Limits as configured.
    pub fn new(settings: &RateLimitSettings) -> Self {
        let own = settings
            .tenants
            .iter()
            .map(|(id, limit)| {
                let limiter = RateLimiter::direct(quota(limit));
                (id.clone(), (limiter, limit.burst))
            })
            .collect();
        RateLimits {
            shared: RateLimiter::keyed(quota(&settings.default)),
            own,
            default_burst: settings.default.burst,
        }
    }

    /// Admits `events` events of `tenant` now, or says why not.
    pub fn admit(&self, tenant: &TenantId, events: u32) -> Result<(), Refusal> {
        let events = NonZeroU32::new(events).unwrap_or(NonZeroU32::MIN);
        let (checked, burst) = match self.own.get(tenant) {
            Some((limiter, burst)) => (limiter.check_n(events), *burst),
            None => (self.shared.check_key_n(tenant, events), self.default_burst),
        };
        let now = DefaultClock::default().now();
        match checked {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Refusal::Wait(not_until.wait_time_from(now))),
            Err(_) => Err(Refusal::OverBurst { burst: burst.get() }),
        }
    }

    /// Forgets tenants that have been idle long enough to be back at a full burst.
    pub fn evict_idle(&self) {
        self.shared.retain_recent();
        self.shared.shrink_to_fit();
    }

    /// How many tenants' state is held.
    pub fn tracked(&self) -> usize {
        self.shared.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(tenants: &[(&str, u32)]) -> RateLimitSettings {
        let limit = |n: u32| RateLimit::new(NonZeroU32::new(n).unwrap(), n);
        RateLimitSettings {
            default: limit(5),
            tenants: tenants
                .iter()
                .map(|(id, n)| (TenantId::parse(id).unwrap(), limit(*n)))
                .collect(),
        }
    }

    #[test]
    fn a_tenant_over_its_limit_waits_while_another_is_unaffected() {
        let limits = RateLimits::new(&settings(&[("vip", 100)]));
        let (a, b, vip) = (
            TenantId::parse("a").unwrap(),
            TenantId::parse("b").unwrap(),
            TenantId::parse("vip").unwrap(),
        );
        assert!(limits.admit(&a, 5).is_ok());
        let Err(Refusal::Wait(wait)) = limits.admit(&a, 1) else {
            panic!("a waits")
        };
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limits.admit(&b, 5).is_ok(), "b has its own allowance");
        assert!(
            limits.admit(&vip, 50).is_ok(),
            "vip has its configured limit"
        );
    }

    #[test]
    fn more_events_at_once_than_the_burst_are_refused_for_good_naming_the_burst() {
        let limits = RateLimits::new(&settings(&[("vip", 100)]));
        let a = TenantId::parse("a").unwrap();
        assert_eq!(
            limits.admit(&a, 6),
            Err(Refusal::OverBurst { burst: 5 }),
            "waiting could never let six through a burst of five"
        );
        assert!(limits.admit(&a, 5).is_ok(), "nothing was spent");
        assert_eq!(
            limits.admit(&TenantId::parse("vip").unwrap(), 101),
            Err(Refusal::OverBurst { burst: 100 })
        );
    }

    #[test]
    fn idle_tenants_are_evicted() {
        let limits = RateLimits::new(&settings(&[]));
        for i in 0..100 {
            limits
                .admit(&TenantId::parse(&format!("t{i}")).unwrap(), 1)
                .unwrap();
        }
        assert_eq!(limits.tracked(), 100);
        std::thread::sleep(Duration::from_millis(1100));
        limits.evict_idle();
        assert_eq!(limits.tracked(), 0);
    }
}
