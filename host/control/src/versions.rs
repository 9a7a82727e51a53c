//! Org version reads shared between concurrent requests.
//!
//! A request must see every change committed before it arrived, so its
//! version read must *start* after its arrival. Requests of one org that
//! arrive while a read is running wait for the next read, and share it: it
//! starts after all of them arrived. Under load that is one store read per
//! round trip of the store instead of one per request, and a request waits
//! at most for the read before its own. The embedded store's reads are
//! in-process and cheaper than this sharing, so they are not shared.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use super::store::Store;
use silo_core::error::{Error, Result};

type Read = Shared<BoxFuture<'static, std::result::Result<Option<i64>, Arc<Error>>>>;

/// One org's reads: the one waiting to start (joined by arrivals), and the
/// turn that lets one run at a time.
#[derive(Default)]
struct Slot {
    next: Mutex<Option<Read>>,
    turn: tokio::sync::Mutex<()>,
}

/// Version reads per org.
#[derive(Default)]
pub(crate) struct VersionReads(Mutex<HashMap<String, Arc<Slot>>>);

/// Orgs tracked at once; past it the map starts over (a dropped slot only
/// costs a read of its own).
const ORGS: usize = 100_000;

impl VersionReads {
    /// `org`'s version, read after this call began.
    pub(crate) async fn read(&self, store: &Store, org: &str) -> Result<Option<i64>> {
        // In-process reads of the embedded store cost less than sharing.
        if store.local().is_some() {
            return store.org_version(org).await;
        }
        let slot = {
            let mut map = self
                .0
                .lock()
                .map_err(|_| Error::Internal("version reads poisoned".into()))?;
            if map.len() >= ORGS && !map.contains_key(org) {
                map.clear();
            }
            map.entry(org.to_owned()).or_default().clone()
        };
        let read = {
            let mut next = slot
                .next
                .lock()
                .map_err(|_| Error::Internal("version reads poisoned".into()))?;
            match next.as_ref() {
                // Not started yet: it will read after this arrival.
                Some(read) => read.clone(),
                None => {
                    let (store, org, owner) = (store.clone(), org.to_owned(), slot.clone());
                    let read = async move {
                        let _turn = owner.turn.lock().await;
                        // From here on, arrivals wait for a later read.
                        if let Ok(mut next) = owner.next.lock() {
                            *next = None;
                        }
                        store.org_version(&org).await.map_err(Arc::new)
                    }
                    .boxed()
                    .shared();
                    *next = Some(read.clone());
                    read
                }
            }
        };
        read.await.map_err(|e| match &*e {
            Error::Internal(m) => Error::Internal(m.clone()),
            other => Error::Internal(other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Organization;

    /// Reads that arrive together share one, and a read that begins after a
    /// commit always sees it, however many reads are in flight.
    #[tokio::test]
    async fn a_read_sees_every_change_committed_before_it_began() {
        let dir = std::env::temp_dir().join(format!("silo-versions-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir.join("s.db").display().to_string())
            .await
            .unwrap();
        let org = Organization {
            id: "org_v".into(),
            name: "v".into(),
            created_at: 0,
        };
        store.insert_org(&org).await.unwrap();
        let reads = Arc::new(VersionReads::default());
        for want in 0..20i64 {
            let all = futures_util::future::join_all((0..16).map(|_| {
                let (reads, store) = (reads.clone(), store.clone());
                tokio::spawn(async move { reads.read(&store, "org_v").await })
            }))
            .await;
            for got in all {
                assert_eq!(got.unwrap().unwrap(), Some(want));
            }
            sqlx::query("UPDATE org_versions SET version = version + 1 WHERE org_id = $1")
                .bind("org_v")
                .execute(store.pool())
                .await
                .unwrap();
        }
        assert_eq!(reads.read(&store, "org_none").await.unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
