//! The request path's reads, cached per organization version ([`Versioned`]):
//! sessions, grants, datasets and datasources.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use silo_core::error::Result;

use crate::model::{Dataset, Datasource, EmbedUser, GroupGrant, Session};

/// Reads cached per (org, key), each valid only while the org's version
/// (which the store bumps in the same transaction as any change to what is
/// cached) is the one it was read at: hosts sharing a store see a change,
/// revocation included, on the next request, each reading one number
/// instead of the session, user, memberships, grants, datasets and
/// datasource. A version counter rather than LISTEN/NOTIFY: a notification
/// arrives some time after the commit, the counter is read by the request
/// itself, and it works the same on SQLite.
pub(crate) struct Versioned<V>(Mutex<HashMap<(String, String), (i64, V)>>);

impl<V> Default for Versioned<V> {
    fn default() -> Self {
        Versioned(Mutex::new(HashMap::new()))
    }
}

/// Entries of one cache; past it the cache starts over.
const CACHE_ENTRIES: usize = 10_000;

impl<V: Clone> Versioned<V> {
    /// The value cached for `key` at `version`, if any.
    fn get(&self, org: &str, key: &str, version: Option<i64>) -> Option<V> {
        let version = version?;
        let map = self.0.lock().ok()?;
        map.get(&(org.to_owned(), key.to_owned()))
            .filter(|(v, _)| *v == version)
            .map(|(_, value)| value.clone())
    }

    /// Caches `value`, read after the org's version was `version`.
    fn put(&self, org: &str, key: &str, version: Option<i64>, value: V) {
        if let (Some(version), Ok(mut map)) = (version, self.0.lock()) {
            if map.len() >= CACHE_ENTRIES {
                map.clear();
            }
            map.insert((org.to_owned(), key.to_owned()), (version, value));
        }
    }

    /// The cached value at `version`, or `load`'s, cached.
    pub(crate) async fn get_or_load<F>(
        &self,
        org: &str,
        key: &str,
        version: Option<i64>,
        load: F,
    ) -> Result<V>
    where
        F: std::future::Future<Output = Result<V>>,
    {
        if let Some(v) = self.get(org, key, version) {
            return Ok(v);
        }
        let v = load.await?;
        self.put(org, key, version, v.clone());
        Ok(v)
    }
}

/// What the request path reads, cached per org version.
#[derive(Default)]
pub(crate) struct Caches {
    /// Per session id: the session and its user.
    pub(crate) sessions: Versioned<Arc<(Session, EmbedUser)>>,
    /// Per embed user id: its groups' grants.
    pub(crate) grants: Versioned<Arc<Vec<GroupGrant>>>,
    /// Per dataset id.
    pub(crate) datasets: Versioned<Arc<Dataset>>,
    /// Per datasource id: its record, sealed credential and revision.
    pub(crate) datasources: Versioned<Arc<(Datasource, Option<String>, i64)>>,
    /// Per datasource id: its datasets' ids by name.
    pub(crate) names: Versioned<Arc<HashMap<String, String>>>,
}
