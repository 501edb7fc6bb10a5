//! Short-lived read-through caches in front of the store for the reads on
//! every request's path: the caller's account (or, for a token, its
//! subject's role) and the addressed key with its current material. A write
//! through this edge invalidates its entry at once; other edges see it within the TTL (`huawei.cache_ttl_ms`).
//!
//! Access keys the store does not know are remembered apart, in a bounded
//! negative map: a flood of made-up keys fills and clears only that map,
//! never evicting a real account.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keymesh_store::{Account, KeyRecord, Material, Role};

/// A key and the material new ciphertexts use; the material is shared so a
/// request borrows it from the cache instead of copying it.
pub type KeyEntry = Arc<(KeyRecord, Option<Arc<Material>>)>;

/// Bound on entries per map: a flood of distinct ids must not grow memory.
const MAX_ENTRIES: usize = 10_000;
/// Bound on remembered unknown access keys (at most 128 bytes each).
const MAX_UNKNOWN: usize = 10_000;

#[derive(Debug)]
struct Ttl<V> {
    ttl: Duration,
    max: usize,
    map: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> Ttl<V> {
    fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, V)>> {
        // Entries are replaced whole: a poisoned map is still consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, k: &str) -> Option<V> {
        if self.ttl.is_zero() {
            return None;
        }
        let map = self.lock();
        map.get(k)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, k: String, v: V) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.lock();
        if map.len() >= self.max {
            let ttl = self.ttl;
            map.retain(|_, (at, _)| at.elapsed() < ttl);
            if map.len() >= self.max {
                map.clear();
            }
        }
        map.insert(k, (Instant::now(), v));
    }

    fn remove(&self, k: &str) {
        self.lock().remove(k);
    }
}

#[derive(Debug)]
pub struct Cache {
    accounts: Ttl<Arc<Account>>,
    /// Access keys the store did not know (the negative cache).
    unknown: Ttl<()>,
    keys: Ttl<KeyEntry>,
    /// X-Auth-Token subjects: a user's best role in a project (`None`: no
    /// account), so a deleted or downgraded account revokes its tokens
    /// within the TTL.
    subjects: Ttl<Option<Role>>,
}

fn key_of(project_id: &str, key_id: &str) -> String {
    format!("{project_id}/{key_id}")
}

impl Cache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            accounts: Ttl::new(ttl, MAX_ENTRIES),
            unknown: Ttl::new(ttl, MAX_UNKNOWN),
            keys: Ttl::new(ttl, MAX_ENTRIES),
            // Filled only after a token's signature verified: bounded like accounts.
            subjects: Ttl::new(ttl, MAX_ENTRIES),
        }
    }

    /// `Some(None)` caches "no such access key" too.
    pub fn account(&self, access_key: &str) -> Option<Option<Arc<Account>>> {
        if let Some(a) = self.accounts.get(access_key) {
            return Some(Some(a));
        }
        self.unknown.get(access_key).map(|()| None)
    }

    /// Remember an account, or (`None`) that the store has no such key.
    pub fn put_account(&self, access_key: &str, a: Option<Arc<Account>>) {
        match a {
            Some(a) => {
                self.unknown.remove(access_key);
                self.accounts.put(access_key.to_owned(), a);
            }
            None => {
                // Bounded apart: a flood of made-up keys clears only this map.
                if access_key.len() <= 128 {
                    self.unknown.put(access_key.to_owned(), ());
                }
            }
        }
    }

    /// `Some(None)` caches "this user has no account in the project" too.
    pub fn subject(&self, project_id: &str, user_id: &str) -> Option<Option<Role>> {
        self.subjects.get(&key_of(project_id, user_id))
    }

    pub fn put_subject(&self, project_id: &str, user_id: &str, role: Option<Role>) {
        self.subjects.put(key_of(project_id, user_id), role);
    }

    pub fn key(&self, project_id: &str, key_id: &str) -> Option<KeyEntry> {
        self.keys.get(&key_of(project_id, key_id))
    }

    pub fn put_key(&self, project_id: &str, key_id: &str, e: KeyEntry) {
        self.keys.put(key_of(project_id, key_id), e);
    }

    /// After any write to the key through this edge.
    pub fn forget_key(&self, project_id: &str, key_id: &str) {
        self.keys.remove(&key_of(project_id, key_id));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use keymesh_store::Role;

    fn account(ak: &str) -> Arc<Account> {
        Arc::new(Account {
            access_key: ak.to_owned(),
            secret: keymesh_store::AccountSecret::Clear(zeroize::Zeroizing::new("s".repeat(40))),
            project_id: "p".into(),
            user_id: "u".into(),
            role: Role::Full,
            created_ms: 0,
        })
    }

    #[test]
    fn unknown_key_flood_never_evicts_a_known_account() {
        let cache = Cache::new(Duration::from_secs(60));
        cache.put_account("KNOWN", Some(account("KNOWN")));
        // Many times the negative bound of distinct made-up keys.
        for i in 0..(3 * MAX_UNKNOWN + 7) {
            let ak = format!("UNKNOWN{i}");
            assert!(cache.account(&ak).is_none());
            cache.put_account(&ak, None);
        }
        assert!(matches!(cache.account("KNOWN"), Some(Some(a)) if a.access_key == "KNOWN"));
        // The negative side is bounded and still answers for recent keys.
        assert!(cache.unknown.lock().len() <= MAX_UNKNOWN);
        let last = format!("UNKNOWN{}", 3 * MAX_UNKNOWN + 6);
        assert!(matches!(cache.account(&last), Some(None)));
        // A key created since is found once the store says so.
        cache.put_account(&last, Some(account(&last)));
        assert!(matches!(cache.account(&last), Some(Some(_))));
    }

    #[test]
    fn oversized_unknown_keys_are_not_remembered() {
        let cache = Cache::new(Duration::from_secs(60));
        let long = "A".repeat(4096);
        cache.put_account(&long, None);
        assert!(cache.account(&long).is_none());
    }
}
