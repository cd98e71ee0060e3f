//! Connection ids: the id a client was given in its greeting is its first
//! backend's own thread id (so `CONNECTION_ID()` matches it), and this registry
//! says which backend thread each such id names now, after the session moved to
//! another server. `KILL [QUERY|CONNECTION] <id>` and COM_PROCESS_KILL from any
//! session are translated through it to the target's current thread, sent on the
//! killer's own backend connection (so the server's privilege rules apply).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A backend thread: the server's address and its thread id there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    pub addr: String,
    pub id: u32,
}

/// Client connection id -> current backend thread, for every live session.
#[derive(Debug, Default)]
pub struct Threads {
    map: Mutex<HashMap<u32, Thread>>,
}

impl Threads {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Thread>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claim `client_id` for a session now on `thread`; None if a live session
    /// already has that id (its first backend was another server's thread with
    /// the same number): the caller connects again for a fresh id.
    pub fn register(self: &Arc<Self>, client_id: u32, thread: Thread) -> Option<Registration> {
        let mut m = self.lock();
        if m.contains_key(&client_id) {
            return None;
        }
        m.insert(client_id, thread);
        Some(Registration { threads: self.clone(), client_id })
    }

    /// Is `id` some live session's client id?
    pub fn is_client_id(&self, id: u32) -> bool {
        self.lock().contains_key(&id)
    }

    /// The backend thread client id `id` names now.
    pub fn lookup(&self, id: u32) -> Option<Thread> {
        self.lock().get(&id).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A session's claim on its client id; released when the session ends.
#[derive(Debug)]
pub struct Registration {
    threads: Arc<Threads>,
    client_id: u32,
}

impl Registration {
    pub fn client_id(&self) -> u32 {
        self.client_id
    }

    /// The session moved: its id now names `thread`.
    pub fn moved(&self, thread: Thread) {
        self.threads.lock().insert(self.client_id, thread);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.threads.lock().remove(&self.client_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_follow_moves() {
        let t = Arc::new(Threads::default());
        let a = t.register(42, Thread { addr: "a".into(), id: 42 }).unwrap();
        assert!(t.register(42, Thread { addr: "b".into(), id: 42 }).is_none());
        a.moved(Thread { addr: "b".into(), id: 7 });
        assert_eq!(t.lookup(42), Some(Thread { addr: "b".into(), id: 7 }));
        drop(a);
        assert!(t.lookup(42).is_none());
        assert!(t.register(42, Thread { addr: "b".into(), id: 42 }).is_some());
    }
}
