//! When each key was last used, and from where: kept per node and written in one batch every
//! few seconds (by the janitor), never with a database write per request. The time is
//! approximate: up to one flush interval late, and a node that dies loses what it had not
//! flushed yet.

use crate::store::{KeyUse, Store, StoreError};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

#[derive(Default)]
pub struct KeyUsage {
    /// Key id → the latest use seen since the last flush.
    used: Mutex<HashMap<String, (i64, Option<IpAddr>)>>,
}

impl KeyUsage {
    /// Notes a use: one lock and, for a key already noted, no allocation.
    pub fn record(&self, key_id: &str, at: i64, ip: Option<IpAddr>) {
        let Ok(mut used) = self.used.lock() else {
            return;
        };
        match used.get_mut(key_id) {
            Some(last) if last.0 >= at => {}
            Some(last) => *last = (at, ip),
            None => {
                used.insert(key_id.to_owned(), (at, ip));
            }
        }
    }

    /// Writes what was noted since the last flush.
    pub async fn flush(&self, store: &Store) -> Result<(), StoreError> {
        let used: Vec<KeyUse> = match self.used.lock() {
            Ok(mut used) => used
                .drain()
                .map(|(key_id, (at, ip))| KeyUse { key_id, at, ip })
                .collect(),
            Err(_) => return Ok(()),
        };
        if used.is_empty() {
            return Ok(());
        }
        store.record_keys_used(&used).await
    }
}
