//! [`Passage`]: how a caller whose address failed too often still gets in with a key that
//! verifies, without letting a flood through to the registry.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use governor::{clock::Clock as _, middleware::NoOpMiddleware, nanos::Nanos};

use super::{Clock, Quota, allowance::Allowance};
use crate::KeyId;

/// The default budget of lookups for blocked addresses: 10 per second, all of a guard's
/// blocked clients together.
pub const DEFAULT_PASSAGE_PER_SECOND: u32 = 10;

/// How many key ids that verified from a blocked address are remembered at once.
pub const DEFAULT_PASSED_KEYS: usize = 10_000;

/// How long a key id that verified from a blocked address goes straight to its lookup.
pub const PASSED_KEY_LIFETIME: Duration = Duration::from_secs(600);

/// The way in for keys presented from an address that has failed too often (a NAT, a
/// proxy, an IPv6 /64 shared with an attacker).
///
/// Only generated keys (`kg_…`, which name their key id and whose checksum is checked
/// first) and tokens can pass; an opaque key from a blocked address is refused before
/// any lookup.
/// A key id that verified from a blocked address in the last ten minutes passes at once:
/// its lookup is served by the registry (a cache hit in the Redis and SQL registries).
/// Any other key id, and any token (whose signature check costs CPU), takes one from a
/// shared budget (default 10 per second for all blocked addresses together); with the
/// budget spent, it is refused as before. So a
/// flood of well-formed made-up keys from blocked addresses causes at most the budget's
/// lookups, and a caller whose key verified once keeps working while its neighbour is
/// blocked.
pub(crate) struct Passage {
    quota: Quota,
    budget: Allowance<NoOpMiddleware<Nanos>>,
    clock: Clock,
    /// Key ids that verified from a blocked address, and when.
    passed: Mutex<HashMap<KeyId, Nanos>>,
    capacity: usize,
}

impl Passage {
    pub(crate) fn new(per_second: NonZeroU32, clock: Clock) -> Self {
        let quota = Quota::per_second(per_second);
        Self {
            budget: Allowance::new(&quota, &clock),
            quota,
            clock,
            passed: Mutex::new(HashMap::new()),
            capacity: DEFAULT_PASSED_KEYS,
        }
    }

    /// The budget, per second.
    pub(crate) fn per_second(&self) -> u32 {
        self.quota.burst()
    }

    /// Whether a key with `key_id`, presented from a blocked address, may be looked up.
    pub(crate) fn may_pass(&self, key_id: &KeyId) -> bool {
        let now = self.clock.now();
        let passed = self.lock().get(key_id).copied();
        if passed.is_some_and(|at| now.saturating_sub(at) < lifetime()) {
            return true;
        }
        self.take_from_budget()
    }

    /// Whether the shared budget allows one more check for a blocked address (for
    /// credentials that name no key id: tokens).
    pub(crate) fn take_from_budget(&self) -> bool {
        self.budget.check(&self.quota).outcome.is_ok()
    }

    /// Notes that a key with `key_id` verified from a blocked address. Beyond the
    /// capacity, the expired entries are dropped first; if none has expired, the key id
    /// is not remembered (and takes from the budget next time).
    pub(crate) fn note_passed(&self, key_id: KeyId) {
        let now = self.clock.now();
        let mut passed = self.lock();
        if passed.len() >= self.capacity && !passed.contains_key(&key_id) {
            passed.retain(|_, at| now.saturating_sub(*at) < lifetime());
            if passed.len() >= self.capacity {
                return;
            }
        }
        passed.insert(key_id, now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KeyId, Nanos>> {
        self.passed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn lifetime() -> Nanos {
    Nanos::from(PASSED_KEY_LIFETIME)
}

impl std::fmt::Debug for Passage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passage")
            .field("per_second", &self.per_second())
            .field("passed", &self.lock().len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_bounds_unknown_key_ids_and_a_verified_one_passes_freely() {
        let clock = Clock::manual();
        let passage = Passage::new(NonZeroU32::new(3).unwrap(), clock.clone());
        let made_up: Vec<KeyId> = (0..10).map(|_| KeyId::generate().unwrap()).collect();
        let admitted: usize = made_up.iter().filter(|id| passage.may_pass(id)).count();
        assert_eq!(admitted, 3, "the budget");

        let honest = KeyId::generate().unwrap();
        assert!(!passage.may_pass(&honest), "the budget is spent");
        passage.note_passed(honest);
        for _ in 0..100 {
            assert!(passage.may_pass(&honest));
        }
        clock.advance(PASSED_KEY_LIFETIME);
        // Forgotten after its lifetime; the budget has refilled meanwhile.
        assert!(passage.may_pass(&honest));
        assert!(passage.may_pass(&honest));
        assert!(passage.may_pass(&honest));
        assert!(!passage.may_pass(&honest));
    }

    #[test]
    fn remembered_key_ids_are_bounded() {
        let clock = Clock::manual();
        let mut passage = Passage::new(NonZeroU32::MIN, clock.clone());
        passage.capacity = 4;
        for _ in 0..10 {
            passage.note_passed(KeyId::generate().unwrap());
        }
        assert_eq!(passage.lock().len(), 4);
        clock.advance(PASSED_KEY_LIFETIME);
        passage.note_passed(KeyId::generate().unwrap());
        assert_eq!(passage.lock().len(), 1, "expired entries make room");
    }
}
