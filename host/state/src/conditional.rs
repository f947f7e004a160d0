//! Small documents written only with create-if-absent, in an object store or a shared
//! directory: where a cluster coordinator keeps its state (jobs, leadership) so that a
//! restarted coordinator finds it and two coordinators cannot both write it.
//!
//! ```text
//! <prefix>/<key>          one document; created once, never overwritten
//! ```
//!
//! Every write is a [`ConditionalStore::create`]: an S3 PUT with `If-None-Match: *`, or a hard
//! link of a fully written temporary file on a local or network file system (both through
//! `object_store`'s `PutMode::Create`). Versioned state is a series of keys (`…/<version>`):
//! whoever creates version `n + 1` first wins, and the other learns it lost. This is the
//! conditional write Flink's Kubernetes HA and ZooKeeper modes build on; no consensus protocol
//! of our own.

use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::StateError;
use crate::store_url::StoreUrl;

/// Largest document read back; a coordinator's records are a few KiB.
pub const DOCUMENT_BYTES_MAX: u64 = 16 << 20;

/// Documents under one prefix of an object store, written create-if-absent.
pub struct ConditionalStore {
    url: StoreUrl,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
}

impl std::fmt::Debug for ConditionalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConditionalStore").field("url", &self.url.text).finish_non_exhaustive()
    }
}

impl ConditionalStore {
    /// Connects to the store at `url` (see [`crate::RemoteStore::open`] for credentials).
    pub fn open(url: &StoreUrl) -> Result<Self, StateError> {
        let (store, prefix) = crate::remote::connect(url)?;
        Ok(Self { url: url.clone(), store, prefix })
    }

    pub fn url(&self) -> &StoreUrl {
        &self.url
    }

    fn path(&self, key: &str) -> Result<ObjectPath, StateError> {
        let mut path = self.prefix.clone();
        for part in key.split('/') {
            if part.is_empty() || part == "." || part == ".." || part.starts_with('.') {
                return Err(StateError::Limit(format!("document key {key:?}: empty, dot or hidden part")));
            }
            path = path.clone().join(part);
        }
        Ok(path)
    }

    fn error(&self, e: &object_store::Error) -> StateError {
        StateError::Remote { url: self.url.text.clone(), message: e.to_string() }
    }

    /// Creates `key` holding `bytes` unless it exists. `Ok(false)`: it existed (someone else
    /// wrote it first) and is unchanged.
    pub async fn create(&self, key: &str, bytes: Vec<u8>) -> Result<bool, StateError> {
        let path = self.path(key)?;
        let options = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(&path, PutPayload::from(bytes), options).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(self.error(&e)),
        }
    }

    /// The document at `key`, or `None`.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let path = self.path(key)?;
        match self.store.get(&path).await {
            Ok(got) => {
                if got.meta.size > DOCUMENT_BYTES_MAX {
                    return Err(StateError::Limit(format!(
                        "{}/{key}: {} bytes, more than the {DOCUMENT_BYTES_MAX} a document may have",
                        self.url.text, got.meta.size
                    )));
                }
                Ok(Some(got.bytes().await.map_err(|e| self.error(&e))?.to_vec()))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(&e)),
        }
    }

    /// The keys directly below `dir` (documents and folders), sorted.
    pub async fn list(&self, dir: &str) -> Result<Vec<String>, StateError> {
        let base = if dir.is_empty() { self.prefix.clone() } else { self.path(dir)? };
        let listed = self.store.list_with_delimiter(Some(&base)).await.map_err(|e| self.error(&e))?;
        let mut names: Vec<String> = listed
            .objects
            .iter()
            .map(|o| &o.location)
            .chain(listed.common_prefixes.iter())
            .filter_map(|p| p.filename().map(str::to_owned))
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Deletes `key` (absent is fine): for pruning versions no reader needs any more.
    pub async fn delete(&self, key: &str) -> Result<(), StateError> {
        let path = self.path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &std::path::Path) -> ConditionalStore {
        let url = StoreUrl::parse(&format!("file://{}", dir.display())).expect("url");
        ConditionalStore::open(&url).expect("opens")
    }

    #[tokio::test]
    async fn the_first_creator_wins_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (store(dir.path()), store(dir.path()));
        assert!(a.create("jobs/wc/000001", b"a".to_vec()).await.expect("creates"));
        assert!(!b.create("jobs/wc/000001", b"b".to_vec()).await.expect("answers"));
        assert_eq!(b.get("jobs/wc/000001").await.expect("reads"), Some(b"a".to_vec()));
        assert!(b.create("jobs/wc/000002", b"b".to_vec()).await.expect("creates"));
        assert_eq!(a.list("jobs/wc").await.expect("lists"), vec!["000001", "000002"]);
        assert_eq!(a.list("jobs").await.expect("lists"), vec!["wc"]);
        assert_eq!(a.get("jobs/none").await.expect("reads"), None);
        a.delete("jobs/wc/000001").await.expect("deletes");
        assert_eq!(a.list("jobs/wc").await.expect("lists"), vec!["000002"]);
        assert!(a.create("../escape", vec![]).await.is_err());
    }

    #[tokio::test]
    async fn racing_creators_of_one_key_see_exactly_one_success() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stores: Vec<ConditionalStore> = (0..8).map(|_| store(dir.path())).collect();
        let wins = futures_util::future::join_all(
            stores.iter().enumerate().map(|(i, s)| s.create("leader/000007", vec![i as u8])),
        )
        .await;
        assert_eq!(wins.into_iter().filter(|w| matches!(w, Ok(true))).count(), 1);
    }
}
