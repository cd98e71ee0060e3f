//! Closing the old term's backend connections when a failover begins (issue 11,
//! item 6), and refusing acknowledgements from them afterwards.
//!
//! A primary that stops answering health checks may still commit what its
//! sessions send, slowly. A failover reads the GTIDs baton acknowledged
//! (`elect`) and promotes a replica containing them; a commit acknowledged after
//! that read, from a connection to the old primary, would be a lost write. So the
//! emergency path calls [`BackendFence::close_all`] first: every registered
//! backend socket is shut down (a dup of its descriptor, `shutdown(SHUT_RDWR)`,
//! so the session's pending read ends at once and it answers its documented
//! "outcome unknown" error), and the fence's generation moves on. A session
//! records a GTID only through [`BackendFence::acknowledge`], under the same lock,
//! with the generation its connection was registered at: one from before the
//! fence is refused, and the session answers 9105 instead of the OK. Connections
//! made after the fence (to whichever primary) have the new generation.

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

/// One cluster's registered backend sockets and fence generation.
#[derive(Default)]
pub struct BackendFence {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    next_id: u64,
    /// id -> (generation, a dup of the socket).
    sockets: HashMap<u64, (u64, TcpStream)>,
}

/// A backend connection's place in the fence; dropped with the connection.
pub struct Registration {
    fence: Arc<BackendFence>,
    id: u64,
    /// The fence generation when the connection was registered.
    pub generation: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.fence.lock().sockets.remove(&self.id);
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").field("id", &self.id).field("generation", &self.generation).finish()
    }
}

impl BackendFence {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a backend socket at the current generation. If its descriptor
    /// cannot be duplicated (out of descriptors), it is registered without one:
    /// it cannot be shut down, but its acknowledgements are still fenced.
    pub fn register(self: &Arc<Self>, socket: &impl AsFd) -> Registration {
        let generation = self.generation();
        self.register_at(socket, generation)
    }

    /// Register a backend socket at `generation`, read before the connection
    /// was opened ([`BackendFence::generation`]): a fence that came while it was
    /// connecting shuts it down at once, and its acknowledgements are refused.
    pub fn register_at(self: &Arc<Self>, socket: &impl AsFd, generation: u64) -> Registration {
        let dup = socket.as_fd().try_clone_to_owned().ok().map(TcpStream::from);
        let mut i = self.lock();
        i.next_id += 1;
        let id = i.next_id;
        match dup {
            Some(d) if generation < i.generation => {
                let _ = d.shutdown(Shutdown::Both);
            }
            Some(d) => {
                i.sockets.insert(id, (generation, d));
            }
            None => {}
        }
        Registration { fence: self.clone(), id, generation }
    }

    /// Shut down every registered socket and move to a new generation: later
    /// acknowledgements from those connections are refused. Returns how many
    /// sockets were shut down.
    pub fn close_all(&self) -> usize {
        let mut i = self.lock();
        i.generation += 1;
        let mut n = 0;
        for (_, s) in i.sockets.values() {
            if s.shutdown(Shutdown::Both).is_ok() {
                n += 1;
            }
        }
        i.sockets.clear();
        n
    }

    /// Record an acknowledgement (`record`) for a connection registered at
    /// `generation` (None: a connection that could not be registered, always
    /// recorded), unless a fence came since. False: refused, not recorded; the
    /// client must not be told its write succeeded.
    pub fn acknowledge(&self, generation: Option<u64>, record: impl FnOnce()) -> bool {
        let i = self.lock();
        if generation.is_some_and(|g| g < i.generation) {
            return false;
        }
        record();
        drop(i);
        true
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn close_all_ends_pending_reads_and_refuses_old_acknowledgements() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server_side, _) = listener.accept().unwrap();
        let fence = Arc::new(BackendFence::default());
        let reg = fence.register(&server_side);
        let mut recorded = 0;
        assert!(fence.acknowledge(Some(reg.generation), || recorded += 1));
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 1];
            server_side.read(&mut buf)
        });
        assert_eq!(fence.close_all(), 1);
        assert_eq!(reader.join().unwrap().unwrap(), 0, "the pending read ends (EOF)");
        assert!(!fence.acknowledge(Some(reg.generation), || recorded += 1));
        assert_eq!(recorded, 1);
        let fresh = fence.register(&client);
        assert!(fence.acknowledge(Some(fresh.generation), || recorded += 1));
        // Connected before a fence, registered after it: shut down, refused.
        let before = fence.generation();
        fence.close_all();
        let late = fence.register_at(&client, before);
        assert!(!fence.acknowledge(Some(late.generation), || recorded += 1));
        let mut c = client.try_clone().unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(c.read(&mut buf).unwrap(), 0, "shut down at once");
        drop(late);
        drop(reg);
        drop(fresh);
        assert!(fence.lock().sockets.is_empty());
    }
}
