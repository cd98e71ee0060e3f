//! The embedded file store: one JSON file, written atomically, read as watched state.
//!
//! Writes go temp file -> fsync -> rename -> fsync(dir), so a crash leaves either the
//! old or the new file, never a torn one. Readers get a `watch::Receiver` holding the
//! latest [`Topology`]; a poll task re-reads the file so a change made by another
//! process (an operator, another tool) is seen too.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, Mutex};

use crate::config::ClusterConfig;
use crate::error::ControlError;
use crate::topology::{ClusterRecord, Topology};

/// Handle to the file store. Cheap to clone.
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    tx: watch::Sender<Arc<Topology>>,
    /// Serialises writers so a read-modify-write is atomic within this process.
    write_lock: Mutex<()>,
}

impl FileStore {
    /// Open (or create) the store, adding a record (term 1) for every configured
    /// cluster the file does not know yet.
    pub fn open(path: &Path, clusters: &[ClusterConfig]) -> Result<FileStore, ControlError> {
        let mut topo = read_file(path)?.unwrap_or_default();
        let mut changed = false;
        for c in clusters {
            if !topo.clusters.contains_key(&c.name) {
                topo.clusters.insert(c.name.clone(), ClusterRecord { primary: c.primary.clone(), term: 1, servers: c.servers.clone() });
                changed = true;
            }
        }
        if changed {
            write_file(path, &topo)?;
        }
        let (tx, _) = watch::channel(Arc::new(topo));
        Ok(FileStore { inner: Arc::new(Inner { path: path.to_path_buf(), tx, write_lock: Mutex::new(()) }) })
    }

    /// The latest topology, as watched state.
    pub fn watch(&self) -> watch::Receiver<Arc<Topology>> {
        self.inner.tx.subscribe()
    }

    /// The latest topology now.
    pub fn current(&self) -> Arc<Topology> {
        self.inner.tx.borrow().clone()
    }

    /// Replace one cluster's record. The new term must be newer than the stored one:
    /// a term never goes back, whoever writes.
    pub async fn put_cluster(&self, name: &str, record: ClusterRecord) -> Result<(), ControlError> {
        let _guard = self.inner.write_lock.lock().await;
        let mut topo = read_file(&self.inner.path)?.unwrap_or_default();
        let current = topo.clusters.get(name).ok_or_else(|| ControlError::UnknownCluster(name.into()))?;
        if record.term <= current.term {
            return Err(ControlError::StaleTerm { cluster: name.into(), attempted: record.term, current: current.term });
        }
        topo.clusters.insert(name.into(), record);
        write_file(&self.inner.path, &topo)?;
        self.inner.tx.send_replace(Arc::new(topo));
        Ok(())
    }

    /// Re-read the file now and publish it if it changed.
    pub fn reload(&self) -> Result<(), ControlError> {
        if let Some(topo) = read_file(&self.inner.path)? {
            self.inner.tx.send_if_modified(|cur| {
                if **cur != topo {
                    *cur = Arc::new(topo);
                    true
                } else {
                    false
                }
            });
        }
        Ok(())
    }

    /// Poll the file for changes by other processes until `stop` resolves.
    pub async fn poll(self, interval: Duration, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut last: Option<SystemTime> = None;
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let mtime = std::fs::metadata(&self.inner.path).and_then(|m| m.modified()).ok();
            if mtime != last {
                last = mtime;
                if let Err(e) = self.reload() {
                    tracing::warn!(error = %e, "topology file unreadable; keeping the last good state");
                }
            }
        }
    }
}

fn read_file(path: &Path) -> Result<Option<Topology>, ControlError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| ControlError::StoreCorrupt { path: path.into(), message: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ControlError::StoreIo { path: path.into(), source }),
    }
}

fn write_file(path: &Path, topo: &Topology) -> Result<(), ControlError> {
    use std::io::Write;
    let io = |source| ControlError::StoreIo { path: path.into(), source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    let body = serde_json::to_vec_pretty(topo).expect("topology serialises");
    f.write_all(&body).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(primary: &str) -> ClusterConfig {
        let text = format!("name = \"main\"\nservers = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\nprimary = \"{primary}\"\n");
        toml::from_str(&text).unwrap()
    }

    #[tokio::test]
    async fn creates_records_and_refuses_stale_terms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/topology.json");
        let store = FileStore::open(&path, &[cluster("127.0.0.1:1")]).unwrap();
        let mut rx = store.watch();
        assert_eq!(rx.borrow().cluster("main").unwrap().term, 1);

        let rec = ClusterRecord { primary: "127.0.0.1:2".into(), term: 2, servers: vec![] };
        store.put_cluster("main", rec.clone()).await.unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().cluster("main").unwrap().primary, "127.0.0.1:2");

        let err = store.put_cluster("main", ClusterRecord { term: 2, ..rec }).await.unwrap_err();
        assert!(matches!(err, ControlError::StaleTerm { current: 2, .. }));

        // Reopening keeps the stored record rather than the config's primary.
        let again = FileStore::open(&path, &[cluster("127.0.0.1:1")]).unwrap();
        assert_eq!(again.current().cluster("main").unwrap().term, 2);
    }

    #[tokio::test]
    async fn sees_changes_made_by_another_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topology.json");
        let store = FileStore::open(&path, &[cluster("127.0.0.1:1")]).unwrap();
        let mut topo = (*store.current()).clone();
        topo.clusters.get_mut("main").unwrap().term = 7;
        write_file(&path, &topo).unwrap();
        store.reload().unwrap();
        assert_eq!(store.current().cluster("main").unwrap().term, 7);
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topology.json");
        std::fs::write(&path, b"{not json").unwrap();
        let err = FileStore::open(&path, &[cluster("127.0.0.1:1")]).err().unwrap();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
