//! Session threads: one single-threaded tokio runtime per thread, each session
//! staying on the thread it was handed to (as HAProxy's threads keep their
//! connections). No work stealing moves a session between cores, and no worker
//! wakes another for it: on a small machine shared with the database and the
//! clients, that is where a proxy's time goes.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// The session threads; each ends (dropping what still runs on it) when `stop` is cancelled.
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

impl Workers {
    /// Start `n` threads (at least one), each running its runtime until `stop`.
    pub fn start(n: usize, stop: CancellationToken) -> std::io::Result<Workers> {
        let mut handles = Vec::new();
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            handles.push(rt.handle().clone());
            let stop = stop.clone();
            std::thread::Builder::new().name(format!("baton-session-{i}")).spawn(move || {
                rt.block_on(stop.cancelled());
            })?;
        }
        Ok(Workers { handles, next: AtomicUsize::new(0) })
    }

    /// The thread the next session goes to (round robin).
    pub fn pick(&self) -> &Handle {
        &self.handles[self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len()]
    }
}
