//! Short-lived read-through caches in front of the store for the reads on
//! every request's path: the caller's account (or, for a token, its
//! subject's role) and the addressed key with its current material. A write through this edge invalidates its entry at
//! once; other edges see it within the TTL (`huawei.cache_ttl_ms`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keymesh_store::{Account, KeyRecord, Material, Role};

/// A key and the material new ciphertexts use; the material is shared so a
/// request borrows it from the cache instead of copying it.
pub type KeyEntry = Arc<(KeyRecord, Option<Arc<Material>>)>;

/// Bound on entries per map: a flood of distinct ids must not grow memory.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug)]
struct Ttl<V> {
    ttl: Duration,
    map: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> Ttl<V> {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
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
        if map.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            map.retain(|_, (at, _)| at.elapsed() < ttl);
            if map.len() >= MAX_ENTRIES {
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
    accounts: Ttl<Option<Arc<Account>>>,
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
            accounts: Ttl::new(ttl),
            keys: Ttl::new(ttl),
            subjects: Ttl::new(ttl),
        }
    }

    /// `Some(None)` caches "no such access key" too.
    pub fn account(&self, access_key: &str) -> Option<Option<Arc<Account>>> {
        self.accounts.get(access_key)
    }

    pub fn put_account(&self, access_key: &str, a: Option<Arc<Account>>) {
        self.accounts.put(access_key.to_owned(), a);
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
